/**
 * The same QMP scripts against QEMU 7.2 (`-M none`) and against `bitback daemon`: every reply
 * (return value or error class and text) must match, then the images each side left behind
 * must hold the same data and the same persistent bitmaps, and the exports show the same maps.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { needPeers } from '../helpers/peers.js';
import { startBitbackPeer, startQemuPeer, type QmpOutcome, type QmpPeer, runOnBoth } from '../helpers/qmp-peers.js';

const exec = promisify(execFile);
const skip = needPeers('qemu-system-x86_64', 'qemu-img', 'nbdinfo');

/** One step of a script: a command and its arguments (`$D` is the peer's folder). */
type Step = [command: string, args?: Record<string, unknown>];

/** What of a reply is compared: query replies are reduced to what both sides define alike. */
function normalize(command: string, outcome: QmpOutcome): unknown {
  if (!('return' in outcome)) return outcome;
  if (command === 'query-named-block-nodes') {
    const nodes = outcome.return as Array<Record<string, unknown>>;
    return nodes
      .filter((n) => !String(n['node-name']).startsWith('#'))
      .map((n) => ({
        'node-name': n['node-name'],
        drv: n.drv,
        ro: n.ro,
        'virtual-size': (n.image as Record<string, unknown>)['virtual-size'],
        'dirty-bitmaps': n['dirty-bitmaps'] ?? [],
      }));
  }
  if (command === 'blockdev-snapshot-delete-internal-sync') {
    // Dates and the VM clock differ between any two runs.
    const info = outcome.return as Record<string, unknown>;
    return { id: info.id, name: info.name, 'vm-state-size': info['vm-state-size'] };
  }
  return outcome;
}

/** Runs `steps` on both peers, comparing each reply. */
const runBoth = (qemu: QmpPeer, bitback: QmpPeer, steps: Step[]): Promise<void> => runOnBoth(qemu, bitback, steps, normalize);

async function qemuImg(args: string[]): Promise<string> {
  return (await exec('qemu-img', args)).stdout;
}

/**
 * Persistent bitmaps of an image as `qemu-img info` lists them, by name: QEMU appends the
 * bitmaps new in a session to the directory newest first, bitback in creation order.
 */
async function storedBitmaps(path: string): Promise<unknown> {
  const info = JSON.parse(await qemuImg(['info', '--output=json', path])) as { 'format-specific'?: { data?: { bitmaps?: Array<{ name: string }> } } };
  return (info['format-specific']?.data?.bitmaps ?? []).sort((a, b) => a.name.localeCompare(b.name));
}

/** Starts both peers with a 64 MiB qcow2 image `disk.qcow2` in each folder. */
async function startBoth(): Promise<[QmpPeer, QmpPeer]> {
  const qemu = await startQemuPeer();
  let bitback: QmpPeer | undefined;
  try {
    bitback = await startBitbackPeer();
    for (const peer of [qemu, bitback]) {
      await qemuImg(['create', '-q', '-f', 'qcow2', `${peer.dir}/disk.qcow2`, '64M']);
      await qemuImg(['create', '-q', '-f', 'qcow2', `${peer.dir}/other.qcow2`, '16M']);
      await qemuImg(['create', '-q', '-f', 'qcow2', `${peer.dir}/o2.qcow2`, '64M']);
      await qemuImg(['create', '-q', '-f', 'raw', `${peer.dir}/other.raw`, '16M']);
    }
    return [qemu, bitback];
  } catch (e) {
    await qemu.stop();
    await bitback?.stop();
    throw e;
  }
}

const addDisk: Step = ['blockdev-add', { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: '$D/disk.qcow2' } }];
const write = (node: string, command: string): Step => ['human-monitor-command', { 'command-line': `qemu-io ${node} "${command}"` }];
const sha = (name: string): Step => ['x-debug-block-dirty-bitmap-sha256', { node: 'disk0', name }];

describe('the engine against QEMU 7.2, one script each', { skip }, () => {
  let qemu: QmpPeer;
  let bitback: QmpPeer;
  beforeEach(async () => {
    [qemu, bitback] = await startBoth();
  });
  afterEach(async () => {
    await qemu?.stop();
    await bitback?.stop();
  });

  test('node commands: blockdev-add and blockdev-del with their errors, and query-named-block-nodes', async () => {
    await runBoth(qemu, bitback, [
      ['blockdev-add', { driver: 'file', filename: '$D/disk.qcow2' }],
      ['blockdev-add', { driver: 'file', filename: '$D/disk.qcow2', 'node-name': '1x' }],
      ['blockdev-add', { driver: 'file', filename: '$D/disk.qcow2', 'node-name': 'a'.repeat(32) }],
      ['blockdev-add', { driver: 'file', filename: '$D/missing', 'node-name': 'f0' }],
      ['blockdev-add', { driver: 'qcow2', 'node-name': 'd1', file: 'nosuch' }],
      ['blockdev-add', { driver: 'null-co', 'node-name': 'n0', size: 1 << 20 }],
      ['blockdev-add', { driver: 'null-co', 'node-name': 'n0' }],
      ['blockdev-add', { driver: 'raw', 'node-name': 'r0', file: 'n0' }],
      ['blockdev-del', { 'node-name': 'n0' }],
      ['blockdev-del', { 'node-name': 'nosuch' }],
      ['query-named-block-nodes'],
      ['blockdev-del', { 'node-name': 'r0' }],
      ['blockdev-del', { 'node-name': 'n0' }],
      ['query-named-block-nodes'],
    ]);
  });

  test('bitmap commands: every state change and error, recording writes made with qemu-io, the same SHA-256 after each step', async () => {
    await runBoth(qemu, bitback, [
      addDisk,
      ['blockdev-add', { driver: 'null-co', 'node-name': 'small', size: 1 << 20 }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'b0' }],
      ['block-dirty-bitmap-add', { node: 'nosuch', name: 'b0' }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: '' }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'g', granularity: 1000 }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'g', granularity: 4294967296 }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'fine', granularity: 512, persistent: true }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'off', disabled: true, persistent: true }],
      ['block-dirty-bitmap-add', { node: 'small', name: 'p', persistent: true }],
      ['block-dirty-bitmap-add', { node: 'small', name: 't' }],
      write('disk0', 'write -P 0x5a 0 64k'),
      write('disk0', 'write -P 0x11 1000 3000'),
      write('disk0', 'write -z 1M 128k'),
      write('disk0', 'discard 4M 64k'),
      sha('b0'),
      ['blockdev-add', { driver: 'qcow2', 'node-name': 'unmapped', discard: 'unmap', file: { driver: 'file', filename: '$D/other.qcow2' } }],
      ['block-dirty-bitmap-add', { node: 'unmapped', name: 'u' }],
      write('unmapped', 'write -P 0x33 0 1M'),
      write('unmapped', 'discard 256k 64k'),
      ['x-debug-block-dirty-bitmap-sha256', { node: 'unmapped', name: 'u' }],
      ['block-dirty-bitmap-clear', { node: 'unmapped', name: 'u' }],
      write('unmapped', 'discard 512k 64k'),
      ['x-debug-block-dirty-bitmap-sha256', { node: 'unmapped', name: 'u' }],
      sha('fine'),
      sha('off'),
      ['query-named-block-nodes'],
      ['block-dirty-bitmap-disable', { node: 'disk0', name: 'b0' }],
      write('disk0', 'write -P 0x22 8M 64k'),
      sha('b0'),
      ['block-dirty-bitmap-merge', { node: 'disk0', target: 'off', bitmaps: ['b0', 'fine'] }],
      sha('off'),
      ['block-dirty-bitmap-merge', { node: 'disk0', target: 'off', bitmaps: ['nosuch'] }],
      ['block-dirty-bitmap-merge', { node: 'disk0', target: 'off', bitmaps: [{ node: 'small', name: 't' }] }],
      ['block-dirty-bitmap-merge', { node: 'disk0', target: 'nosuch', bitmaps: ['b0'] }],
      ['block-dirty-bitmap-clear', { node: 'disk0', name: 'fine' }],
      sha('fine'),
      ['block-dirty-bitmap-enable', { node: 'disk0', name: 'b0' }],
      ['block-dirty-bitmap-remove', { node: 'disk0', name: 'nosuch' }],
      ['block-dirty-bitmap-remove', { node: 'nosuch', name: 'b0' }],
      ['block-dirty-bitmap-clear', { node: 'disk0', name: 'nosuch' }],
      ['x-debug-block-dirty-bitmap-sha256', { node: 'disk0', name: 'nosuch' }],
      ['query-named-block-nodes'],
      ['blockdev-del', { 'node-name': 'disk0' }],
      ['blockdev-del', { 'node-name': 'small' }],
    ]);
    // Closed on both sides: the images hold the same data and the same stored bitmaps.
    await qemuImg(['compare', '-q', `${qemu.dir}/disk.qcow2`, `${bitback.dir}/disk.qcow2`]);
    assert.deepEqual(await storedBitmaps(`${bitback.dir}/disk.qcow2`), await storedBitmaps(`${qemu.dir}/disk.qcow2`));
  });

  test('transactions of bitmap actions: all or nothing, with QEMU\'s errors', async () => {
    const tx = (actions: Array<[string, Record<string, unknown>]>, properties?: Record<string, unknown>): Step => [
      'transaction',
      { actions: actions.map(([type, data]) => ({ type, data })), ...(properties !== undefined ? { properties } : {}) },
    ];
    await runBoth(qemu, bitback, [
      addDisk,
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true }],
      write('disk0', 'write -P 0x5a 0 64k'),
      tx([['block-dirty-bitmap-add', { node: 'disk0', name: 'b1' }], ['block-dirty-bitmap-disable', { node: 'disk0', name: 'b0' }], ['abort', {}]]),
      ['query-named-block-nodes'],
      tx([['block-dirty-bitmap-add', { node: 'disk0', name: 'b1' }]], { 'completion-mode': 'grouped' }),
      tx([['block-dirty-bitmap-remove', { node: 'disk0', name: 'b0' }], ['block-dirty-bitmap-add', { node: 'disk0', name: 'b0' }]]),
      tx([['block-dirty-bitmap-add', { node: 'disk0', name: 'b2' }], ['block-dirty-bitmap-add', { node: 'disk0', name: 'b2' }]]),
      tx([['block-dirty-bitmap-clear', { node: 'disk0', name: 'b0' }], ['block-dirty-bitmap-add', { node: 'nosuch', name: 'x' }]]),
      sha('b0'),
      tx([['block-dirty-bitmap-remove', { node: 'disk0', name: 'b0' }], ['block-dirty-bitmap-remove', { node: 'disk0', name: 'b0' }]]),
      tx([['block-dirty-bitmap-merge', { node: 'disk0', target: 'b0', bitmaps: ['b0'] }], ['block-dirty-bitmap-clear', { node: 'disk0', name: 'b0' }]]),
      sha('b0'),
      write('disk0', 'write -P 0x5a 1M 64k'),
      // The backup cycle's checkpoint: freeze the old bitmap and start a new one, at one instant.
      tx([['block-dirty-bitmap-disable', { node: 'disk0', name: 'b0' }], ['block-dirty-bitmap-add', { node: 'disk0', name: 'b1', persistent: true }]]),
      write('disk0', 'write -P 0x5a 2M 64k'),
      sha('b0'),
      sha('b1'),
      tx([['block-dirty-bitmap-merge', { node: 'disk0', target: 'b1', bitmaps: ['b0'] }], ['block-dirty-bitmap-remove', { node: 'disk0', name: 'b0' }]]),
      sha('b1'),
      tx([]),
      tx([['bogus', {}]]),
      ['query-named-block-nodes'],
      ['blockdev-del', { 'node-name': 'disk0' }],
    ]);
    await qemuImg(['compare', '-q', `${qemu.dir}/disk.qcow2`, `${bitback.dir}/disk.qcow2`]);
    assert.deepEqual(await storedBitmaps(`${bitback.dir}/disk.qcow2`), await storedBitmaps(`${qemu.dir}/disk.qcow2`));
  });

  test('external snapshots: an overlay takes the place of a node under its export, the node becomes its read-only backing', async () => {
    await runBoth(qemu, bitback, [
      addDisk,
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true }],
      write('disk0', 'write -P 0x5a 0 1M'),
      ['nbd-server-start', { addr: { type: 'unix', data: { path: '$D/nbd.sock' } } }],
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', writable: true }],
      ['blockdev-snapshot-sync', { 'node-name': 'nosuch', 'snapshot-file': '$D/o1.qcow2', 'snapshot-node-name': 'o1' }],
      ['blockdev-snapshot-sync', { 'node-name': 'disk0', 'snapshot-file': '$D/o1.qcow2' }],
      ['blockdev-snapshot-sync', { 'node-name': 'disk0', 'snapshot-file': '$D/o1.qcow2', 'snapshot-node-name': 'disk0' }],
      ['blockdev-snapshot-sync', { 'node-name': 'disk0', 'snapshot-file': '$D/o1.qcow2', 'snapshot-node-name': 'o1', format: 'raw' }],
      ['blockdev-snapshot-sync', { 'node-name': 'disk0', 'snapshot-file': '$D/o1.qcow2', 'snapshot-node-name': 'o1' }],
      write('disk0', 'write -P 0x11 0 64k'),
      write('o1', 'write -P 0x22 64k 64k'),
      ['query-block-exports'],
      ['query-named-block-nodes'],
      sha('b0'),
      ['blockdev-add', { driver: 'qcow2', 'node-name': 'o2', file: { driver: 'file', filename: '$D/o2.qcow2' }, backing: null }],
      ['blockdev-snapshot', { node: 'o1', overlay: 'nosuch' }],
      ['blockdev-snapshot', { node: 'o1', overlay: 'o2' }],
      ['blockdev-snapshot', { node: 'o1', overlay: 'o2' }],
      write('o2', 'write -P 0x33 128k 64k'),
      ['blockdev-del', { 'node-name': 'o1' }],
      ['blockdev-del', { 'node-name': 'disk0' }],
    ]);
    // The export now serves o2 (over o1 over disk0): the same bytes on both sides.
    const read = async (peer: QmpPeer): Promise<string> => {
      await exec('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///disk0?socket=${peer.dir}/nbd.sock`, `${peer.dir}/export.raw`]);
      return (await exec('sha256sum', [`${peer.dir}/export.raw`])).stdout.split(' ')[0]!;
    };
    assert.equal(await read(bitback), await read(qemu));
    await runBoth(qemu, bitback, [
      ['block-export-del', { id: 'e0' }],
      ['nbd-server-stop'],
      ['blockdev-del', { 'node-name': 'o2' }],
      ['blockdev-del', { 'node-name': 'o1' }],
      ['blockdev-del', { 'node-name': 'disk0' }],
    ]);
    for (const file of ['disk.qcow2', 'o1.qcow2', 'o2.qcow2']) {
      await qemuImg(['compare', '-q', '-f', 'qcow2', '-F', 'qcow2', `${qemu.dir}/${file}`, `${bitback.dir}/${file}`]);
    }
    assert.deepEqual(await storedBitmaps(`${bitback.dir}/disk.qcow2`), await storedBitmaps(`${qemu.dir}/disk.qcow2`));
  });

  test('internal snapshots of a node in use: taken, refused and deleted as QEMU does, the image the same afterwards', async () => {
    await runBoth(qemu, bitback, [
      addDisk,
      ['blockdev-add', { driver: 'raw', 'node-name': 'r0', file: { driver: 'file', filename: '$D/other.raw' } }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 't0' }],
      write('disk0', 'write -P 0x5a 0 1M'),
      ['blockdev-snapshot-internal-sync', { device: 'nosuch', name: 's1' }],
      ['blockdev-snapshot-internal-sync', { device: 'r0', name: 's1' }],
      ['blockdev-snapshot-internal-sync', { device: 'disk0', name: '' }],
      ['blockdev-snapshot-internal-sync', { device: 'disk0', name: 's1' }],
      ['blockdev-snapshot-internal-sync', { device: 'disk0', name: 's1' }],
      write('disk0', 'write -P 0x11 64k 64k'),
      sha('b0'),
      sha('t0'),
      ['transaction', { actions: [{ type: 'blockdev-snapshot-internal-sync', data: { device: 'disk0', name: 's2' } }, { type: 'abort', data: {} }] }],
      ['transaction', { actions: [{ type: 'blockdev-snapshot-internal-sync', data: { device: 'disk0', name: 's3' } }] }],
      ['blockdev-snapshot-delete-internal-sync', { device: 'disk0', name: 'nosuch' }],
      ['blockdev-snapshot-delete-internal-sync', { device: 'disk0' }],
      ['blockdev-snapshot-delete-internal-sync', { device: 'disk0', name: 's1', id: '9' }],
      ['blockdev-snapshot-delete-internal-sync', { device: 'disk0', id: '1' }],
      write('disk0', 'write -P 0x22 2M 64k'),
      ['blockdev-snapshot-internal-sync', { device: 'disk0', name: 's4' }],
      ['query-named-block-nodes'],
      ['blockdev-add', { driver: 'raw', 'node-name': 'top', file: 'disk0' }],
      ['blockdev-snapshot-internal-sync', { device: 'disk0', name: 's5' }],
      ['blockdev-del', { 'node-name': 'top' }],
      ['blockdev-del', { 'node-name': 'disk0' }],
    ]);
    const snapshots = async (peer: QmpPeer): Promise<unknown> =>
      (JSON.parse(await qemuImg(['info', '--output=json', `${peer.dir}/disk.qcow2`])) as { snapshots?: Array<{ id: string; name: string }> }).snapshots?.map((x) => [x.id, x.name]);
    assert.deepEqual(await snapshots(bitback), await snapshots(qemu));
    await qemuImg(['check', '-q', `${bitback.dir}/disk.qcow2`]);
    await qemuImg(['compare', '-q', `${qemu.dir}/disk.qcow2`, `${bitback.dir}/disk.qcow2`]);
    for (const snapshot of ['s3', 's4']) {
      const read = async (peer: QmpPeer): Promise<string> => {
        await qemuImg(['convert', '-l', `snapshot.name=${snapshot}`, '-O', 'raw', `${peer.dir}/disk.qcow2`, `${peer.dir}/${snapshot}.raw`]);
        return (await exec('sha256sum', [`${peer.dir}/${snapshot}.raw`])).stdout.split(' ')[0]!;
      };
      assert.equal(await read(bitback), await read(qemu), `snapshot ${snapshot}`);
    }
    assert.deepEqual(await storedBitmaps(`${bitback.dir}/disk.qcow2`), await storedBitmaps(`${qemu.dir}/disk.qcow2`));
  });

  test('NBD exports: the server, exports with a bitmap and their errors, and what nbdinfo maps', async () => {
    await runBoth(qemu, bitback, [
      addDisk,
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'e' }],
      write('disk0', 'write -P 0x5a 2M 192k'),
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0' }],
      ['nbd-server-start', { addr: { type: 'unix', data: { path: '$D/nbd.sock' } } }],
      ['nbd-server-start', { addr: { type: 'unix', data: { path: '$D/nbd2.sock' } } }],
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', bitmaps: ['e'] }],
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', bitmaps: ['nosuch'] }],
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'nosuch' }],
      ['block-dirty-bitmap-disable', { node: 'disk0', name: 'e' }],
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', bitmaps: ['e'] }],
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0' }],
      ['block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'disk0' }],
      ['block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'disk0', name: 'other', writable: true, bitmaps: ['e'] }],
      ['block-dirty-bitmap-remove', { node: 'disk0', name: 'e' }],
      ['block-dirty-bitmap-enable', { node: 'disk0', name: 'e' }],
      ['query-named-block-nodes'],
      ['query-block-exports'],
    ]);
    for (const context of ['base:allocation', 'qemu:dirty-bitmap:e']) {
      const map = async (peer: QmpPeer): Promise<string> => (await exec('nbdinfo', [`--map=${context}`, `nbd+unix:///disk0?socket=${peer.dir}/nbd.sock`])).stdout;
      assert.equal(await map(bitback), await map(qemu), `nbdinfo --map=${context}`);
    }
    await runBoth(qemu, bitback, [
      ['block-export-del', { id: 'nosuch' }],
      ['blockdev-del', { 'node-name': 'disk0' }],
      ['block-export-del', { id: 'e0' }],
      ['query-block-exports'],
      ['nbd-server-stop'],
      ['nbd-server-stop'],
      ['blockdev-del', { 'node-name': 'disk0' }],
    ]);
    assert.deepEqual(
      bitback.events().filter((e) => e.event === 'BLOCK_EXPORT_DELETED'),
      qemu.events().filter((e) => e.event === 'BLOCK_EXPORT_DELETED'),
    );
  });
});
