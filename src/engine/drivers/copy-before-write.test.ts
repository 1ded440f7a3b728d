import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createQcow2 } from '../../qcow2/index.js';
import { connectInProcess } from '../../qmp/client/in-process.js';
import type { QmpClient } from '../../qmp/client/qmp-client.js';
import { createEngine } from '../create.js';
import type { Engine } from '../engine.js';
import { appendCopyBeforeWrite, copyBeforeWriteOf, dropCopyBeforeWrite } from '../fleecing/index.js';
import { BlockPermission } from '../graph/permissions.js';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-cbw-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** An engine with `disk0` (qcow2, 4 MiB of 0x5a) and `fleece` (empty qcow2) in a fresh folder. */
async function start(name: string): Promise<{ engine: Engine; qmp: QmpClient; run: (command: string, args?: Record<string, unknown>) => Promise<unknown> }> {
  const d = join(dir, name);
  await rm(d, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.mkdir(d));
  await createQcow2(join(d, 'disk.qcow2'), { size: 4 * MiB });
  await createQcow2(join(d, 'fleece.qcow2'), { size: 4 * MiB });
  await createQcow2(join(d, 'big.qcow2'), { size: 4 * MiB, clusterSize: MiB });
  const engine = createEngine();
  const qmp = await connectInProcess(engine.qmp);
  const run = async (command: string, args?: Record<string, unknown>): Promise<unknown> => {
    try {
      return await qmp.execute(command, args);
    } catch (e) {
      return { error: (e as { desc?: string }).desc ?? String(e) };
    }
  };
  await run('blockdev-add', { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: join(d, 'disk.qcow2') } });
  await engine.graph.require('disk0').write(0, new Uint8Array(4 * MiB).fill(0x5a));
  await run('blockdev-add', { driver: 'qcow2', 'node-name': 'fleece', file: { driver: 'file', filename: join(d, 'fleece.qcow2') }, backing: null });
  await run('blockdev-add', { driver: 'qcow2', 'node-name': 'big', file: { driver: 'file', filename: join(d, 'big.qcow2') }, backing: null });
  return { engine, qmp, run };
}

async function stop(engine: Engine, qmp: QmpClient): Promise<void> {
  await qmp.close();
  await engine.close();
}

test('blockdev-add copy-before-write refuses a missing or unusable bitmap and a read-only target with QEMU\'s texts', async () => {
  const { engine, qmp, run } = await start('errors');
  try {
    await run('block-dirty-bitmap-add', { node: 'disk0', name: 'b0' });
    await run('blockdev-add', { driver: 'null-co', 'node-name': 'small', size: MiB });
    await run('block-dirty-bitmap-add', { node: 'small', name: 's' });
    const add = (extra: Record<string, unknown>) => run('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'disk0', target: 'fleece', ...extra });
    assert.deepEqual(await add({ bitmap: { node: 'nosuch', name: 'b0' } }), { error: "Node 'nosuch' not found" });
    assert.deepEqual(await add({ bitmap: { node: 'disk0', name: 'nosuch' } }), { error: "Dirty bitmap 'nosuch' not found" });
    assert.deepEqual(await add({ bitmap: { node: 'small', name: 's' } }), {
      error: "Cannot create block-copy-state: Failed to merge bitmap 's' to internal copy-bitmap: Bitmaps are of different sizes (destination size is 4194304, source size is 1048576) and can't be merged",
    });
    engine.graph.require('disk0').bitmaps.get('b0')!.setBusy(true);
    assert.deepEqual(await add({ bitmap: { node: 'disk0', name: 'b0' } }), {
      error: "Cannot create block-copy-state: Failed to merge bitmap 'b0' to internal copy-bitmap: Bitmap 'b0' is currently in use by another operation and cannot be used",
    });
    await run('blockdev-add', { driver: 'null-co', 'node-name': 'ro', 'read-only': true, size: 4 * MiB });
    assert.deepEqual(await add({ target: 'ro' }), { error: 'Block node is read-only' });
    assert.equal(engine.graph.get('cbw'), undefined);
    assert.equal(engine.graph.require('disk0').parents.size, 0);
    assert.deepEqual(engine.graph.require('disk0').listedBitmaps().map((b) => b.name), ['b0']);
  } finally {
    await stop(engine, qmp);
  }
});

test('the copy cluster size is the target\'s cluster size, at least 64 KiB, and 64 KiB for a target without clusters', async () => {
  const { engine, qmp, run } = await start('clusters');
  try {
    await run('blockdev-add', { driver: 'null-co', 'node-name': 'nul', size: 4 * MiB });
    await run('blockdev-add', { driver: 'copy-before-write', 'node-name': 'c1', file: 'disk0', target: 'big' });
    await run('blockdev-add', { driver: 'copy-before-write', 'node-name': 'c2', file: 'disk0', target: 'nul' });
    await run('blockdev-add', { driver: 'copy-before-write', 'node-name': 'c3', file: 'disk0', target: 'fleece' });
    const cluster = (name: string) => copyBeforeWriteOf(engine.graph.require(name))!.state.clusterSize;
    assert.deepEqual([cluster('c1'), cluster('c2'), cluster('c3')], [MiB, 64 * 1024, 64 * 1024]);
    assert.equal(copyBeforeWriteOf(engine.graph.require('disk0')), undefined);
  } finally {
    await stop(engine, qmp);
  }
});

test('the copy bitmap is listed on the source node and the done and access bitmaps on the filter, newest first, until the filter goes', async () => {
  const { engine, qmp, run } = await start('bitmaps');
  try {
    await run('block-dirty-bitmap-add', { node: 'disk0', name: 'b0' });
    await run('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'disk0', target: 'fleece' });
    await run('block-dirty-bitmap-add', { node: 'disk0', name: 'b1' });
    const disk = engine.graph.require('disk0');
    const filter = copyBeforeWriteOf(engine.graph.require('cbw'))!;
    assert.deepEqual(disk.listedBitmaps(), [disk.bitmaps.get('b1'), filter.state.copyBitmap, disk.bitmaps.get('b0')]);
    assert.deepEqual(engine.graph.require('cbw').listedBitmaps(), [filter.accessBitmap, filter.doneBitmap]);
    await engine.graph.require('cbw').write(MiB, new Uint8Array(10));
    assert.deepEqual([filter.state.copyBitmap.count(), filter.doneBitmap.count(), filter.accessBitmap.count()], [4 * MiB - 64 * 1024, 64 * 1024, 4 * MiB]);
    await run('blockdev-del', { 'node-name': 'cbw' });
    assert.deepEqual(disk.listedBitmaps().map((b) => b.name), ['b1', 'b0']);
  } finally {
    await stop(engine, qmp);
  }
});

test('once a snapshot-access node uses the filter, nobody else may write the source; reading it and writing through the filter still work', async () => {
  const { engine, qmp, run } = await start('permissions');
  try {
    const { WRITE } = BlockPermission;
    await run('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'disk0', target: 'fleece' });
    const disk = engine.graph.require('disk0');
    await engine.graph.detachBackend(engine.graph.attachBackend('qemu-io', disk, { perm: WRITE }));
    assert.deepEqual(await run('blockdev-add', { driver: 'snapshot-access', 'node-name': 'snap', file: 'cbw' }), {});
    assert.throws(() => engine.graph.attachBackend('qemu-io', disk, { perm: WRITE }), {
      reason:
        "Permission conflict on node 'disk0': permissions 'write' are both required by an unnamed block device (uses node 'disk0' as 'root' child) " +
        "and unshared by node 'cbw' (uses node 'disk0' as 'file' child).",
    });
    await engine.graph.detachBackend(engine.graph.attachBackend('qemu-io', disk));
    const through = engine.graph.attachBackend('qemu-io', engine.graph.require('cbw'), { perm: WRITE });
    await through.write(MiB, new Uint8Array(64 * 1024).fill(0x77));
    await engine.graph.detachBackend(through);
    assert.deepEqual(await engine.graph.require('snap').read(MiB, 4), new Uint8Array(4).fill(0x5a));
    assert.deepEqual(await disk.read(MiB, 4), new Uint8Array(4).fill(0x77));
    await run('blockdev-del', { 'node-name': 'snap' });
    await engine.graph.detachBackend(engine.graph.attachBackend('qemu-io', disk, { perm: WRITE }));
  } finally {
    await stop(engine, qmp);
  }
});

test('appendCopyBeforeWrite() puts the filter under every parent of the source but a fleecing image\'s backing edge, and dropCopyBeforeWrite() takes it out', async () => {
  const { engine, qmp, run } = await start('append');
  try {
    const { WRITE, CONSISTENT_READ } = BlockPermission;
    await run('blockdev-del', { 'node-name': 'fleece' });
    await run('blockdev-add', { driver: 'qcow2', 'node-name': 'fleece', file: { driver: 'file', filename: join(dir, 'append', 'fleece.qcow2') }, backing: 'disk0' });
    const disk = engine.graph.require('disk0');
    const fleece = engine.graph.require('fleece');
    const device = engine.graph.attachBackend('device', disk, { perm: WRITE | CONSISTENT_READ });
    const { node, filter } = await appendCopyBeforeWrite(engine, disk, fleece, 'cbw');
    assert.equal(node.name, 'cbw');
    assert.equal(device.node, node);
    assert.equal(fleece.child('backing')!.node, disk);
    assert.throws(() => engine.graph.attachBackend('qemu-io', disk, { perm: WRITE }), { code: 'BUSY' });
    await device.write(2 * MiB, new Uint8Array(64 * 1024).fill(1));
    assert.deepEqual(await fleece.read(2 * MiB, 2), new Uint8Array([0x5a, 0x5a]));
    assert.deepEqual(await disk.read(2 * MiB, 2), new Uint8Array([1, 1]));
    assert.equal(filter.state.dirtyBytes, 4 * MiB - 64 * 1024);
    await dropCopyBeforeWrite(engine, node);
    assert.equal(device.node, disk);
    assert.equal(engine.graph.get('cbw'), undefined);
    engine.graph.attachBackend('qemu-io', disk, { perm: WRITE });
    const unnamed = await appendCopyBeforeWrite(engine, disk, fleece);
    assert.match(unnamed.node.name, /^#block\d+$/);
  } finally {
    await stop(engine, qmp);
  }
});
