/**
 * blkdebug and nbd nodes on QEMU 7.2 (`-M none`) and on `bitback daemon`, one script each: every
 * QMP reply must match, then what qemu-io printed (its "read failed: ..." / "write failed: ..."
 * lines and the bytes it read or wrote), what NBD clients saw of an export whose reads fail,
 * and the images left behind.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { access, rm } from 'node:fs/promises';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { spawnWatched, type WatchedProcess } from '../helpers/child.js';
import { needPeers } from '../helpers/peers.js';
import { startBitbackPeer, startQemuPeer, type QmpOutcome, type QmpPeer, runOnBoth } from '../helpers/qmp-peers.js';

const exec = promisify(execFile);
const skip = needPeers('qemu-system-x86_64', 'qemu-img', 'qemu-io', 'qemu-nbd', 'nbdcopy');

/** One step of a script: a command and its arguments (`$D` is the peer's folder). */
type Step = [command: string, args?: Record<string, unknown>];

const io = (node: string, command: string): Step => ['human-monitor-command', { 'command-line': `qemu-io ${node} "${command}"` }];
const addDisk: Step = ['blockdev-add', { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: '$D/disk.qcow2' } }];
const blkdebug = (name: string, options: Record<string, unknown>): Step => ['blockdev-add', { driver: 'blkdebug', 'node-name': name, image: 'disk0', ...options }];
/** A raw node over a new blkdebug node over disk0 (the raw node fires read_aio, write_aio and the flush events on it). */
const rawOver = (name: string, debugName: string, options: Record<string, unknown>): Step => [
  'blockdev-add',
  { driver: 'raw', 'node-name': name, file: { driver: 'blkdebug', 'node-name': debugName, image: 'disk0', ...options } },
];

/** What of a reply is compared: node lists are reduced to what both sides define alike. */
function normalize(command: string, outcome: QmpOutcome): unknown {
  if (!('return' in outcome) || command !== 'query-named-block-nodes') return outcome;
  return (outcome.return as Array<Record<string, unknown>>)
    .filter((n) => !String(n['node-name']).startsWith('#'))
    .map((n) => ({ 'node-name': n['node-name'], drv: n.drv, ro: n.ro, 'virtual-size': (n.image as Record<string, unknown>)['virtual-size'] }))
    .sort((a, b) => String(a['node-name']).localeCompare(String(b['node-name'])));
}

/** Runs `steps` on both peers, comparing each reply. */
const runBoth = (qemu: QmpPeer, bitback: QmpPeer, steps: Step[]): Promise<void> => runOnBoth(qemu, bitback, steps, normalize);

/** qemu-io's lines that do not depend on timing: bytes read or written, failures, map lines. */
function ioLines(output: string): string[] {
  return output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^(read|wrote|discard) \d+\/\d+ bytes at offset \d+$/.test(l) || /^\w+ failed: /.test(l) || / bytes +(not )?allocated at offset /.test(l));
}

async function qemuImg(args: string[]): Promise<string> {
  return (await exec('qemu-img', args)).stdout;
}

/** Runs a program, returning its exit status and standard error (with `$D` for `dir`). */
async function outcomeOf(program: string, args: string[], dir: string): Promise<{ status: number; stderr: string }> {
  try {
    await exec(program, args.map((a) => a.replaceAll('$D', dir)));
    return { status: 0, stderr: '' };
  } catch (e) {
    const err = e as { code?: number; stderr?: string };
    return { status: err.code ?? -1, stderr: (err.stderr ?? '').replaceAll(dir, '$D') };
  }
}

/** Waits until `path` exists (a socket a server is about to create), failing if `proc` exits first. */
async function untilExists(path: string, proc: WatchedProcess): Promise<void> {
  for (;;) {
    try {
      await access(path);
      return;
    } catch {
      if (proc.exited()) throw new Error(`the server exited before creating ${path}:\n${proc.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
}

describe('blkdebug and nbd nodes against QEMU 7.2, one script each', { skip }, () => {
  let qemu: QmpPeer;
  let bitback: QmpPeer;
  beforeEach(async () => {
    qemu = await startQemuPeer();
    try {
      bitback = await startBitbackPeer();
      for (const peer of [qemu, bitback]) await qemuImg(['create', '-q', '-f', 'qcow2', `${peer.dir}/disk.qcow2`, '64M']);
    } catch (e) {
      await qemu.stop();
      await bitback?.stop();
      throw e;
    }
  });
  afterEach(async () => {
    await qemu?.stop();
    await bitback?.stop();
  });

  /** Stops both peers (keeping their folders), then compares what qemu-io printed on each; returns the folders. */
  async function stopAndCompareOutput(): Promise<[string, string]> {
    await qemu.stop({ keepDir: true });
    await bitback.stop({ keepDir: true });
    assert.deepEqual(ioLines(bitback.output()), ioLines(qemu.output()), 'qemu-io printed different lines');
    return [qemu.dir, bitback.dir];
  }

  test('blkdebug above a qcow2 node: its rules, limits and errors as QEMU applies them to qemu-io\'s requests', async () => {
    await runBoth(qemu, bitback, [
      addDisk,
      io('disk0', 'write -P 0x5a 0 1M'),
      // read_aio is fired by a format driver on its file: never on a node above the format node.
      blkdebug('bd1', { 'inject-error': [{ event: 'read_aio' }] }),
      io('bd1', 'read -P 0x5a 0 64k'),
      io('bd1', 'write -P 0x11 0 64k'),
      io('bd1', 'read -P 0x11 0 64k'),
      // none fires when the node opens: a sector rule, and a once rule for writes.
      blkdebug('bd2', {
        'inject-error': [
          { event: 'none', errno: 28, sector: 7 },
          { event: 'none', errno: 1, iotype: 'write', once: true },
        ],
      }),
      io('bd2', 'read 0 4k'),
      io('bd2', 'read 4k 4k'),
      io('bd2', 'write -P 0x22 64k 4k'),
      io('bd2', 'write -P 0x22 64k 4k'),
      io('bd2', 'flush'),
      // pwritev fires before a write reaches blkdebug, pwritev_done after it (also after a failure).
      blkdebug('bd3', {
        'inject-error': [
          { event: 'pwritev', errno: 1, once: true },
          { event: 'pwritev_done', errno: 28, iotype: 'read' },
        ],
      }),
      io('bd3', 'write -P 0x33 128k 512'),
      io('bd3', 'read 128k 512'),
      io('bd3', 'write -P 0x33 128k 512'),
      // align and max-transfer shape the requests the rules see.
      blkdebug('bd4', {
        align: 4096,
        'max-transfer': 8192,
        'inject-error': [
          { event: 'pwritev_rmw_after_head', errno: 28, once: true, iotype: 'write' },
          { event: 'none', errno: 5, sector: 40 },
        ],
      }),
      io('bd4', 'read 0 16k'),
      io('bd4', 'read 16k 8k'),
      io('bd4', 'write -P 0x44 192k 1k'),
      io('bd4', 'write -P 0x44 192k 1k'),
      io('bd4', 'read 16k 8k'),
      blkdebug('bd5', { discard: 'unmap', 'opt-discard': 8192, 'inject-error': [{ event: 'none', errno: 28, iotype: 'discard', sector: 80 }] }),
      io('bd5', 'discard 256k 64k'),
      io('bd5', 'discard 0 64k'),
      io('bd5', 'discard 512 2k'),
      blkdebug('bd6', { 'opt-write-zero': 8192, 'inject-error': [{ event: 'none', errno: 28, iotype: 'write' }] }),
      io('bd6', 'write -z 512k 8k'),
      io('bd6', 'write -z 520k 8k'),
      io('bd6', 'write -z 600k 4k'),
      // Errors, in QEMU's order: the config file before the image, the limits after it.
      blkdebug('bad', { align: 3 }),
      blkdebug('bad', { align: -1 }),
      blkdebug('bad', { align: 4096, 'max-transfer': 1000 }),
      blkdebug('bad', { 'opt-discard': 512, 'max-discard': 1000 }),
      blkdebug('bad', { config: '$D/nope.conf', image: 'nosuch' }),
      blkdebug('bad', { image: 'nosuch', align: 3 }),
      blkdebug('bad', { 'inject-error': [{ event: 'bogus' }] }),
      blkdebug('bad', { 'inject-error': [{ event: 'none', iotype: 'bogus' }] }),
      // Permissions taken and unshared on the image.
      blkdebug('bd7', { 'unshare-child-perms': ['write'] }),
      blkdebug('bad', { 'take-child-perms': ['write'] }),
      ['blockdev-del', { 'node-name': 'bd7' }],
      ['query-named-block-nodes'],
      ...['bd1', 'bd2', 'bd3', 'bd4', 'bd5', 'bd6'].map((name): Step => ['blockdev-del', { 'node-name': name }]),
    ]);
    const [qemuDir, bitbackDir] = await stopAndCompareOutput();
    try {
      await qemuImg(['compare', '-q', `${qemuDir}/disk.qcow2`, `${bitbackDir}/disk.qcow2`]);
    } finally {
      await rm(qemuDir, { recursive: true, force: true });
      await rm(bitbackDir, { recursive: true, force: true });
    }
  });

  test(
    'blkdebug under a raw node: read_aio once and not once, in a state set by write_aio, max-transfer pieces, flush_to_disk after a write',
    async () => {
      await runBoth(qemu, bitback, [
        addDisk,
        rawOver('r1', 'bd1', { 'inject-error': [{ event: 'read_aio', once: true }] }),
        io('r1', 'read 0 64k'),
        io('r1', 'read 0 64k'),
        io('bd1', 'read 0 64k'),
        rawOver('r2', 'bd2', {
          'inject-error': [{ event: 'read_aio', state: 2, errno: 28 }],
          'set-state': [
            { event: 'write_aio', state: 1, new_state: 2 },
            { event: 'write_aio', state: 1, new_state: 3 },
            { event: 'read_aio', state: 2, new_state: 1 },
          ],
        }),
        io('r2', 'read 0 64k'),
        io('r2', 'write -P 0x55 0 64k'),
        io('r2', 'read 0 64k'),
        io('r2', 'read 0 64k'),
        io('r2', 'write -P 0x66 64k 64k'),
        rawOver('r3', 'bd3', {
          'max-transfer': 4096,
          'inject-error': [
            { event: 'read_aio', errno: 28, once: true },
            { event: 'read_aio', errno: 1, sector: 24 },
          ],
        }),
        io('r3', 'read 0 16k'),
        io('bd3', 'read 0 16k'),
        io('bd3', 'read 0 12k'),
        rawOver('r4', 'bd4', { 'inject-error': [{ event: 'flush_to_disk', errno: 28, iotype: 'read' }] }),
        io('r4', 'flush'),
        io('r4', 'read 0 4k'),
        io('r4', 'write -P 0x77 1M 4k'),
        io('r4', 'flush'),
        io('r4', 'read 0 4k'),
        ...['r1', 'r2', 'r3', 'r4'].map((name): Step => ['blockdev-del', { 'node-name': name }]),
      ]);
      const [qemuDir, bitbackDir] = await stopAndCompareOutput();
      try {
        await qemuImg(['compare', '-q', `${qemuDir}/disk.qcow2`, `${bitbackDir}/disk.qcow2`]);
      } finally {
        await rm(qemuDir, { recursive: true, force: true });
        await rm(bitbackDir, { recursive: true, force: true });
      }
    },
  );

  test('an NBD export of a blkdebug node fails qemu-img convert, nbdcopy and qemu-io the same way as QEMU\'s', async () => {
    await runBoth(qemu, bitback, [
      addDisk,
      io('disk0', 'write -P 0x5a 0 1M'),
      blkdebug('bd', { 'inject-error': [{ event: 'none', errno: 5, sector: 100 }] }),
      blkdebug('bdw', { 'inject-error': [{ event: 'none', errno: 28, iotype: 'write' }] }),
      ['nbd-server-start', { addr: { type: 'unix', data: { path: '$D/nbd.sock' } } }],
      ['block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'bd', name: 'bd' }],
      ['block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'bdw', name: 'bdw', writable: true }],
    ]);
    const uri = (name: string): string => `nbd+unix:///${name}?socket=$D/nbd.sock`;
    const clients: Array<[string, string[]]> = [
      ['qemu-img', ['convert', '-f', 'raw', '-O', 'raw', uri('bd'), '$D/out.raw']],
      ['qemu-io', ['-f', 'raw', '-c', 'read 0 4k', '-c', 'write -P 0x11 8k 4k', uri('bdw')]],
    ];
    for (const [program, args] of clients) {
      const theirs = await outcomeOf(program, args, qemu.dir);
      const ours = await outcomeOf(program, args, bitback.dir);
      assert.deepEqual(ours, theirs, `${program} ${args.join(' ')}`);
    }
    // QEMU's server drops the connection after a failed read, bitback's answers EIO: nbdcopy fails either way.
    for (const peer of [qemu, bitback]) assert.equal((await outcomeOf('nbdcopy', [uri('bd'), '$D/out2.raw'], peer.dir)).status, 1, peer.kind);
    await runBoth(qemu, bitback, [
      ['block-export-del', { id: 'e0' }],
      ['block-export-del', { id: 'e1' }],
    ]);
  });

  test('an nbd node reads and writes a qemu-nbd export, shows its dirty bitmap as QEMU does and waits open-timeout for a late server', async () => {
    const servers: WatchedProcess[] = [];
    try {
      for (const peer of [qemu, bitback]) {
        const src = `${peer.dir}/src.qcow2`;
        await qemuImg(['create', '-q', '-f', 'qcow2', src, '4M']);
        await exec('qemu-io', ['-c', 'write -P 0x33 0 1M', src]);
        await qemuImg(['bitmap', '--add', src, 'b0']);
        await exec('qemu-io', ['-c', 'write -P 0x44 2M 1M', src]);
        const server = spawnWatched('qemu-nbd', ['-t', '-e', '8', '-f', 'qcow2', '-B', 'b0', '-x', 'ex', '-k', `${peer.dir}/src.sock`, src]);
        servers.push(server);
        await untilExists(`${peer.dir}/src.sock`, server);
      }
      const nbd = (name: string, options: Record<string, unknown> = {}): Step => [
        'blockdev-add',
        { driver: 'nbd', 'node-name': name, server: { type: 'unix', path: '$D/src.sock' }, export: 'ex', ...options },
      ];
      await runBoth(qemu, bitback, [
        nbd('n0'),
        nbd('n1', { 'x-dirty-bitmap': 'qemu:dirty-bitmap:b0', 'read-only': true }),
        nbd('bad', { export: 'nope' }),
        nbd('bad', { 'tls-creds': 't0' }),
        nbd('bad', { 'x-dirty-bitmap': 'qemu:dirty-bitmap:nope' }),
        nbd('bad', { server: { type: 'unix', path: '$D/nope.sock' } }),
        nbd('bad', { server: { type: 'inet', host: '127.0.0.1', port: 'abc' } }),
        nbd('bad', { server: { type: 'fd', str: '3' } }),
        io('n0', 'read -P 0x33 0 1M'),
        io('n0', 'write -P 0x55 3M 1M'),
        io('n0', 'write -z 1M 1M'),
        io('n0', 'flush'),
        io('n1', 'map'),
        io('n1', 'write 0 4k'),
        ['query-named-block-nodes'],
        ['blockdev-del', { 'node-name': 'n1' }],
        ['blockdev-del', { 'node-name': 'n0' }],
      ]);
      // open-timeout: the node is added while no server listens yet; one starts meanwhile.
      const late: Array<Promise<QmpOutcome>> = [];
      for (const peer of [qemu, bitback]) {
        late.push(peer.run('blockdev-add', { driver: 'nbd', 'node-name': 'late', server: { type: 'unix', path: '$D/late.sock' }, export: 'ex', 'open-timeout': 60 }));
        servers.push(spawnWatched('qemu-nbd', ['-t', '-f', 'qcow2', '-x', 'ex', '-k', `${peer.dir}/late.sock`, `${peer.dir}/disk.qcow2`]));
      }
      const [theirs, ours] = await Promise.all(late);
      assert.deepEqual(ours, theirs);
      assert.deepEqual(ours, { return: {} });
      await runBoth(qemu, bitback, [['blockdev-del', { 'node-name': 'late' }]]);
    } finally {
      for (const server of servers) await server.terminate();
    }
    const [qemuDir, bitbackDir] = await stopAndCompareOutput();
    try {
      await qemuImg(['compare', '-q', `${qemuDir}/src.qcow2`, `${bitbackDir}/src.qcow2`]);
    } finally {
      await rm(qemuDir, { recursive: true, force: true });
      await rm(bitbackDir, { recursive: true, force: true });
    }
  });
});
