import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createQcow2 } from '../../qcow2/index.js';
import { connectInProcess } from '../../qmp/client/in-process.js';
import type { QmpClient } from '../../qmp/client/qmp-client.js';
import { createEngine } from '../create.js';
import type { Engine } from '../engine.js';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-driver-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Started {
  engine: Engine;
  qmp: QmpClient;
  d: string;
  socket: string;
  run: (command: string, args?: Record<string, unknown>) => Promise<unknown>;
  io: (node: string, command: string) => Promise<string[]>;
}

/**
 * An engine exporting `disk0` (a 4 MiB qcow2 image; 0x5a in its first MiB, then bitmap `b0`
 * records a write of 64 KiB at 2 MiB and is disabled) as `ex`, writable, with `b0`, on a
 * unix socket: the engine's nbd nodes connect to the engine's own export.
 */
async function start(name: string): Promise<Started> {
  const d = join(dir, name);
  await mkdir(d);
  await createQcow2(join(d, 'disk.qcow2'), { size: 4 * MiB });
  const log: string[] = [];
  const engine = createEngine({ ioLog: (line) => log.push(line) });
  const qmp = await connectInProcess(engine.qmp);
  const run = async (command: string, args?: Record<string, unknown>): Promise<unknown> => {
    try {
      return await qmp.execute(command, args);
    } catch (e) {
      return { error: (e as { desc?: string }).desc ?? String(e) };
    }
  };
  const io = async (node: string, command: string): Promise<string[]> => {
    log.length = 0;
    const reply = await run('human-monitor-command', { 'command-line': `qemu-io ${node} "${command}"` });
    assert.equal(reply, '');
    return log.filter((l) => !l.includes('ops/sec'));
  };
  const socket = join(d, 'nbd.sock');
  await run('blockdev-add', { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: join(d, 'disk.qcow2') } });
  await io('disk0', 'write -P 0x5a 0 1M');
  await run('block-dirty-bitmap-add', { node: 'disk0', name: 'b0' });
  await io('disk0', 'write -P 0x44 2M 64k');
  await run('block-dirty-bitmap-disable', { node: 'disk0', name: 'b0' });
  await run('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
  assert.deepEqual(await run('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', name: 'ex', writable: true, bitmaps: ['b0'] }), {});
  return { engine, qmp, d, socket, run, io };
}

async function stop({ engine, qmp }: Started): Promise<void> {
  await qmp.close();
  await engine.close();
}

test('an nbd node reads and writes an export and is named by its URI', async () => {
  const s = await start('rw');
  try {
    assert.deepEqual(await s.run('blockdev-add', { driver: 'nbd', 'node-name': 'n0', server: { type: 'unix', path: s.socket }, export: 'ex' }), {});
    assert.deepEqual(await s.io('n0', 'read -P 0x5a 0 1M'), ['read 1048576/1048576 bytes at offset 0']);
    assert.deepEqual(await s.io('n0', 'write -P 0x77 3M 4k'), ['wrote 4096/4096 bytes at offset 3145728']);
    assert.deepEqual(await s.io('disk0', 'read -P 0x77 3M 4k'), ['read 4096/4096 bytes at offset 3145728']);
    const nodes = (await s.run('query-named-block-nodes')) as Array<Record<string, unknown>>;
    const n0 = nodes.find((n) => n['node-name'] === 'n0')!;
    assert.equal(n0.file, `nbd+unix:///ex?socket=${s.socket}`);
    assert.equal((n0.image as Record<string, unknown>)['virtual-size'], 4 * MiB);
  } finally {
    await stop(s);
  }
});

test('with x-dirty-bitmap, block status shows the dirty areas as holes, as QEMU\'s hack does', async () => {
  const s = await start('bitmap');
  try {
    assert.deepEqual(await s.run('blockdev-add', { driver: 'nbd', 'node-name': 'n0', server: { type: 'unix', path: s.socket }, export: 'ex', 'x-dirty-bitmap': 'qemu:dirty-bitmap:b0' }), {});
    assert.deepEqual(await s.io('n0', 'map'), [
      '2 MiB (0x200000) bytes     allocated at offset 0 bytes (0x0)',
      '64 KiB (0x10000) bytes not allocated at offset 2 MiB (0x200000)',
      '1.938 MiB (0x1f0000) bytes     allocated at offset 2.062 MiB (0x210000)',
    ]);
    assert.deepEqual(await s.run('blockdev-add', { driver: 'nbd', 'node-name': 'n1', server: { type: 'unix', path: s.socket }, export: 'ex', 'x-dirty-bitmap': 'qemu:dirty-bitmap:nope' }), {
      error: 'Could not open image: Invalid argument',
    });
  } finally {
    await stop(s);
  }
});

test('blockdev-add nbd fails with QEMU\'s texts', async () => {
  const s = await start('errors');
  try {
    const add = (extra: Record<string, unknown>) => s.run('blockdev-add', { driver: 'nbd', 'node-name': 'n', server: { type: 'unix', path: s.socket }, export: 'ex', ...extra });
    const missing = join(s.d, 'nope.sock');
    assert.deepEqual(await add({ server: { type: 'unix', path: missing } }), { error: `Failed to connect to '${missing}': No such file or directory` });
    assert.deepEqual(await add({ export: 'nope' }), { error: 'Requested export not available' });
    assert.deepEqual(await add({ export: undefined }), { error: 'Requested export not available' });
    assert.deepEqual(await add({ 'tls-creds': 't0' }), { error: "No TLS credentials with id 't0'" });
    assert.deepEqual(await add({ server: { type: 'inet', host: '127.0.0.1', port: 'abc' } }), {
      error: 'address resolution failed for 127.0.0.1:abc: Servname not supported for ai_socktype',
    });
    assert.deepEqual(await add({ server: { type: 'fd', str: '3' } }), { error: "File descriptor named '3' has not been found" });
    assert.match(String((await add({ server: { type: 'vsock', cid: '1', port: '2' } }) as { error: string }).error), /unix and inet/);
    assert.match(String((await add({ 'reconnect-delay': 5 }) as { error: string }).error), /does not reconnect/);
  } finally {
    await stop(s);
  }
});

test('a read-only export opens a writable nbd node only with auto-read-only, which makes the node read-only', async () => {
  const s = await start('readonly');
  try {
    await s.run('block-export-add', { type: 'nbd', id: 'e1', 'node-name': 'disk0', name: 'ro' });
    const add = (name: string, extra: Record<string, unknown>) => s.run('blockdev-add', { driver: 'nbd', 'node-name': name, server: { type: 'unix', path: s.socket }, export: 'ro', ...extra });
    assert.deepEqual(await add('n0', {}), { error: 'Could not open image: Permission denied' });
    assert.deepEqual(await add('n1', { 'auto-read-only': true }), {});
    assert.deepEqual(await s.run('human-monitor-command', { 'command-line': 'qemu-io n1 "write 0 512"' }), 'Block node is read-only\r\n');
    assert.deepEqual(await add('n2', { 'read-only': true }), {});
  } finally {
    await stop(s);
  }
});
