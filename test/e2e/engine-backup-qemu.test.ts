/**
 * Backup jobs on QEMU 7.2 and on the engine, one script each, compared step by step: every
 * reply, the job events, the bitmaps (SHA-256 and counts) after each job, and the backup images.
 *
 * 1. The incremental backup cycle of QEMU's docs/interop/bitmaps.rst: a full backup that starts a
 *    bitmap in the same transaction, writes, incrementals with `sync: bitmap`, and a restore by
 *    chaining the targets.
 * 2. The matrix of qemu-iotests 257: bitmap-mode on-success / never / always × sync bitmap / full /
 *    top × no failure (writes during the job, then finalize) / a read failure part-way (blkdebug,
 *    on both sides) / a cancel before finalizing; then a recovery backup.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { needPeers } from '../helpers/peers.js';
import { startBitbackPeer, startQemuPeer, type QmpOutcome, type QmpPeer, runOnBoth } from '../helpers/qmp-peers.js';

const exec = promisify(execFile);
const skip = needPeers('qemu-system-x86_64', 'qemu-img');
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;

type Step = [command: string, args?: Record<string, unknown>];

/** Waits until `peer` sent JOB_STATUS_CHANGE `status` for job `id` (counting from event `from`). */
async function waitStatus(peer: QmpPeer, id: string, statuses: string[], from = 0): Promise<string> {
  for (let i = 0; i < 3000; i++) {
    const hit = peer
      .events()
      .slice(from)
      .find((e) => e.event === 'JOB_STATUS_CHANGE' && (e.data as { id: string }).id === id && statuses.includes((e.data as { status: string }).status));
    if (hit !== undefined) return (hit.data as { status: string }).status;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`${peer.kind}: job ${id} never reached ${statuses.join('/')}; events: ${JSON.stringify(peer.events().slice(from))}`);
}

/** Events without the parts that depend on timing. */
function eventSummary(peer: QmpPeer, from: number): unknown[] {
  return peer
    .events()
    .slice(from)
    .filter((e) => e.event !== 'SHUTDOWN')
    .map((e) => {
      const data = { ...(e.data as Record<string, unknown>) };
      return { event: e.event, ...data };
    });
}

function normalize(command: string, outcome: QmpOutcome): unknown {
  if (!('return' in outcome)) return outcome;
  if (command === 'query-named-block-nodes') {
    return (outcome.return as Array<Record<string, unknown>>)
      .filter((n) => !String(n['node-name']).startsWith('#'))
      .map((n) => ({ 'node-name': n['node-name'], 'dirty-bitmaps': ((n['dirty-bitmaps'] as Array<Record<string, unknown>> | undefined) ?? []).filter((b) => b.name !== undefined) }));
  }
  return outcome;
}

const runBoth = (qemu: QmpPeer, bitback: QmpPeer, steps: Step[]): Promise<void> => runOnBoth(qemu, bitback, steps, normalize);

async function withPeers(body: (qemu: QmpPeer, bitback: QmpPeer) => Promise<void>): Promise<void> {
  const qemu = await startQemuPeer();
  let bitback: QmpPeer | undefined;
  try {
    bitback = await startBitbackPeer();
    await body(qemu, bitback);
  } finally {
    await qemu.stop();
    await bitback?.stop();
  }
}

async function createImages(peers: QmpPeer[], names: string[]): Promise<void> {
  for (const peer of peers) for (const name of names) await exec('qemu-img', ['create', '-q', '-f', 'qcow2', `${peer.dir}/${name}.qcow2`, String(SIZE)]);
}

const io = (node: string, command: string): Step => ['human-monitor-command', { 'command-line': `qemu-io ${node} "${command}"` }];
const qcow2 = (name: string, extra: Record<string, unknown> = {}): Step => ['blockdev-add', { driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: `$D/${name}.qcow2` }, ...extra }];

describe('backup jobs against QEMU 7.2', { skip }, () => {
  test('the incremental backup cycle of bitmaps.rst: full + bitmap in one transaction, incrementals, restore by chaining', async () => {
    await withPeers(async (qemu, bitback) => {
      await createImages([qemu, bitback], ['disk0', 'full', 'inc1', 'inc2']);
      await runBoth(qemu, bitback, [qcow2('disk0'), io('disk0', 'write -P 0x11 0 2M'), io('disk0', 'write -P 0x12 32M 1M'), qcow2('full')]);
      const events = [qemu.events().length, bitback.events().length];
      await runBoth(qemu, bitback, [
        [
          'transaction',
          {
            actions: [
              { type: 'block-dirty-bitmap-add', data: { node: 'disk0', name: 'b0', granularity: 65536, persistent: true } },
              { type: 'blockdev-backup', data: { 'job-id': 'full', device: 'disk0', target: 'full', sync: 'full' } },
            ],
          },
        ],
      ]);
      for (const [i, peer] of [qemu, bitback].entries()) await waitStatus(peer, 'full', ['null'], events[i]);
      assert.deepEqual(eventSummary(bitback, events[1]!), eventSummary(qemu, events[0]!));
      for (const [n, writes] of [
        [1, ['write -P 0x21 64k 64k', 'write -P 0x22 10M 300k']],
        [2, ['write -P 0x31 1M 1M', 'write -z 32M 64k', 'write -P 0x32 60M 4k']],
      ] as const) {
        const target = `inc${n}`;
        const parent = n === 1 ? 'full' : `inc${n - 1}`;
        for (const peer of [qemu, bitback]) await exec('qemu-img', ['rebase', '-u', '-F', 'qcow2', '-b', `${peer.dir}/${parent}.qcow2`, `${peer.dir}/${target}.qcow2`]);
        await runBoth(qemu, bitback, [...writes.map((w) => io('disk0', w)), qcow2(target, { backing: null }), ['x-debug-block-dirty-bitmap-sha256', { node: 'disk0', name: 'b0' }]]);
        const before = [qemu.events().length, bitback.events().length];
        await runBoth(qemu, bitback, [['blockdev-backup', { 'job-id': target, device: 'disk0', target, sync: 'incremental', bitmap: 'b0' }]]);
        for (const [i, peer] of [qemu, bitback].entries()) await waitStatus(peer, target, ['null'], before[i]);
        assert.deepEqual(eventSummary(bitback, before[1]!), eventSummary(qemu, before[0]!));
        await runBoth(qemu, bitback, [['x-debug-block-dirty-bitmap-sha256', { node: 'disk0', name: 'b0' }], ['query-named-block-nodes']]);
      }
      await runBoth(qemu, bitback, [['blockdev-del', { 'node-name': 'inc2' }], ['blockdev-del', { 'node-name': 'inc1' }], ['blockdev-del', { 'node-name': 'full' }], ['blockdev-del', { 'node-name': 'disk0' }]]);
      for (const peer of [qemu, bitback]) {
        // Restore = the newest incremental read through its chain: the disk as it is.
        await exec('qemu-img', ['compare', '-q', `${peer.dir}/inc2.qcow2`, `${peer.dir}/disk0.qcow2`]);
        await exec('qemu-img', ['check', '-q', `${peer.dir}/inc2.qcow2`]);
      }
      for (const image of ['full', 'inc1', 'inc2']) {
        await exec('qemu-img', ['compare', '-q', `${qemu.dir}/${image}.qcow2`, `${bitback.dir}/${image}.qcow2`]);
      }
    });
  });

  test('a compressed full backup: the same data as QEMU\'s, stored compressed, and the target writes normally afterwards', async () => {
    await withPeers(async (qemu, bitback) => {
      await createImages([qemu, bitback], ['disk0', 'full']);
      await runBoth(qemu, bitback, [qcow2('disk0'), io('disk0', 'write -P 0x11 0 4M'), io('disk0', 'write -P 0x22 16M 1M'), qcow2('full')]);
      const from = [qemu.events().length, bitback.events().length];
      await runBoth(qemu, bitback, [['blockdev-backup', { 'job-id': 'c', device: 'disk0', target: 'full', sync: 'full', compress: true }]]);
      for (const [i, peer] of [qemu, bitback].entries()) await waitStatus(peer, 'c', ['null'], from[i]);
      assert.deepEqual(eventSummary(bitback, from[1]!), eventSummary(qemu, from[0]!));
      await runBoth(qemu, bitback, [io('full', 'write -P 0x33 32M 64k'), ['blockdev-del', { 'node-name': 'full' }], ['blockdev-del', { 'node-name': 'disk0' }]]);
      await exec('qemu-img', ['compare', '-q', `${qemu.dir}/full.qcow2`, `${bitback.dir}/full.qcow2`]);
      await exec('qemu-img', ['check', '-q', `${bitback.dir}/full.qcow2`]);
      const allocated = async (peer: QmpPeer): Promise<number> => (JSON.parse((await exec('qemu-img', ['info', '--output=json', `${peer.dir}/full.qcow2`])).stdout) as { 'actual-size': number })['actual-size'];
      assert.ok((await allocated(bitback)) < 2 * MiB, `5 MiB of patterns take ${await allocated(bitback)} bytes: not compressed`);
    });
  });

  test('jobs on nodes in use: a running backup\'s target cannot be backed up, used as a target or deleted, as QEMU refuses', async () => {
    await withPeers(async (qemu, bitback) => {
      await createImages([qemu, bitback], ['d0', 't1', 't2']);
      await runBoth(qemu, bitback, [qcow2('d0'), qcow2('t1'), qcow2('t2'), io('d0', 'write -P 0x11 0 8M')]);
      const from = [qemu.events().length, bitback.events().length];
      await runBoth(qemu, bitback, [
        ['blockdev-backup', { 'job-id': 'j1', device: 'd0', target: 't1', sync: 'full', speed: 1024 }],
        ['blockdev-backup', { 'job-id': 'j1', device: 'd0', target: 't2', sync: 'full' }],
        ['blockdev-backup', { 'job-id': 'j3', device: 't2', target: 't1', sync: 'full' }],
        ['blockdev-backup', { 'job-id': 'j4', device: 't1', target: 't2', sync: 'full' }],
        ['blockdev-del', { 'node-name': 't1' }],
        ['blockdev-del', { 'node-name': 'd0' }],
        ['job-cancel', { id: 'j1' }],
      ]);
      for (const [i, peer] of [qemu, bitback].entries()) await waitStatus(peer, 'j1', ['null'], from[i]);
      await runBoth(qemu, bitback, [['blockdev-del', { 'node-name': 't1' }], ['blockdev-del', { 'node-name': 'd0' }]]);
    });
  });

  // qemu-iotests 257's write groups.
  const GROUPS = [
    [['0x49', 0x0000000], ['0x6c', 0x0100000], ['0x6f', 0x2000000], ['0x76', 0x3ff0000]],
    [['0x65', 0x0000000], ['0x77', 0x00f8000], ['0x72', 0x2008000], ['0x69', 0x3fe0000]],
    [['0x74', 0x0010000], ['0x69', 0x00e8000], ['0x6e', 0x2018000], ['0x67', 0x3fe0000, 0x20000]],
    [['0xaa', 0x0010000, 0x30000], ['0xbb', 0x00d8000], ['0xcc', 0x2028000], ['0xdd', 0x3fc0000]],
  ] as const;
  const writes = (node: string, group: number): Step[] => GROUPS[group]!.map(([p, o, s]) => io(node, `write -P ${p} 0x${o.toString(16)} 0x${(s ?? 0x10000).toString(16)}`));
  const sha: Step = ['x-debug-block-dirty-bitmap-sha256', { node: 'drive0', name: 'bitmap0' }];

  for (const sync of ['bitmap', 'full', 'top'] as const) {
    test(`qemu-iotests 257, sync ${sync}: each bitmap mode without failure, with a read failure part-way, and cancelled`, async () => {
      for (const mode of ['on-success', 'never', 'always'] as const) {
        for (const failure of ['none', 'intermediate', 'simulated'] as const) {
          if (mode === 'never' && sync !== 'bitmap') continue; // refused by both: "has no meaningful effect"
          await withPeers(async (qemu, bitback) => {
            const label = `${sync}/${mode}/${failure}`;
            await createImages([qemu, bitback], ['disk', 'ref0', 't1', 't2']);
            // drive0 = raw over blkdebug over the qcow2 image: a read through drive0 fires
            // blkdebug's read_aio on both sides (bitback's qcow2 node reads its file itself).
            const blkdebug: Record<string, unknown> = { driver: 'blkdebug', 'node-name': 'dbg', image: 'disk' };
            if (failure === 'intermediate') {
              blkdebug['set-state'] = [
                { event: 'flush_to_disk', state: 1, new_state: 2 },
                { event: 'read_aio', state: 2, new_state: 3 },
              ];
              blkdebug['inject-error'] = [{ event: 'read_aio', errno: 5, state: 3, immediately: false, once: true }];
            }
            await runBoth(qemu, bitback, [qcow2('disk'), ['blockdev-add', blkdebug], ['blockdev-add', { driver: 'raw', 'node-name': 'drive0', file: 'dbg' }], ...writes('drive0', 0)]);
            await runBoth(qemu, bitback, [['block-dirty-bitmap-add', { node: 'drive0', name: 'bitmap0', granularity: 65536 }], ...writes('drive0', 1), sha, qcow2('t1')]);
            if (failure === 'intermediate') await runBoth(qemu, bitback, [io('drive0', 'flush')]);
            const from = [qemu.events().length, bitback.events().length];
            await runBoth(qemu, bitback, [
              [
                'blockdev-backup',
                {
                  'job-id': 'backup_1',
                  device: 'drive0',
                  target: 't1',
                  sync,
                  bitmap: 'bitmap0',
                  'bitmap-mode': mode,
                  'filter-node-name': 'backup-top',
                  'auto-finalize': false,
                  'x-perf': { 'max-workers': 1, 'max-chunk': 65536 },
                },
              ],
            ]);
            const reached = await Promise.all([qemu, bitback].map((peer, i) => waitStatus(peer, 'backup_1', ['pending', 'concluded'], from[i])));
            assert.equal(reached[1], reached[0], `${label}: the job ended differently`);
            if (reached[0] === 'pending') {
              await runBoth(qemu, bitback, [...writes('backup-top', 2), sha]);
              await runBoth(qemu, bitback, [failure === 'simulated' ? ['job-cancel', { id: 'backup_1' }] : ['job-finalize', { id: 'backup_1' }]]);
            }
            await Promise.all([qemu, bitback].map((peer, i) => waitStatus(peer, 'backup_1', ['null'], from[i])));
            assert.deepEqual(eventSummary(bitback, from[1]!), eventSummary(qemu, from[0]!), `${label}: job events`);
            await runBoth(qemu, bitback, [sha, ['query-named-block-nodes'], ...writes('drive0', 3), sha, qcow2('t2')]);
            const second = [qemu.events().length, bitback.events().length];
            await runBoth(qemu, bitback, [
              ['blockdev-backup', { 'job-id': 'backup_2', device: 'drive0', target: 't2', sync: 'bitmap', bitmap: 'bitmap0', 'bitmap-mode': mode, 'auto-finalize': false, 'x-perf': { 'max-workers': 1, 'max-chunk': 65536 } }],
            ]);
            await Promise.all([qemu, bitback].map((peer, i) => waitStatus(peer, 'backup_2', ['pending'], second[i])));
            await runBoth(qemu, bitback, [['job-finalize', { id: 'backup_2' }]]);
            await Promise.all([qemu, bitback].map((peer, i) => waitStatus(peer, 'backup_2', ['null'], second[i])));
            assert.deepEqual(eventSummary(bitback, second[1]!), eventSummary(qemu, second[0]!), `${label}: recovery job events`);
            await runBoth(qemu, bitback, [sha, ['query-named-block-nodes'], ['blockdev-del', { 'node-name': 't1' }], ['blockdev-del', { 'node-name': 't2' }]]);
            for (const image of ['t1', 't2']) {
              await exec('qemu-img', ['compare', '-q', `${qemu.dir}/${image}.qcow2`, `${bitback.dir}/${image}.qcow2`]).catch((e: unknown) => {
                throw new Error(`${label}: ${image} differs: ${String((e as { stdout?: string }).stdout ?? e)}`);
              });
            }
          });
        }
      }
    });
  }
});
