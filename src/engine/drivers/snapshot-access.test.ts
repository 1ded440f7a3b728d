import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExtentFlags } from '../../block/block-device.js';
import { connectInProcess } from '../../qmp/client/in-process.js';
import { createEngine } from '../create.js';
import { copyBeforeWriteOf } from '../fleecing/index.js';

const MiB = 1024 * 1024;
const C = 64 * 1024;

/** An engine with `src` and `tgt` (memory-like null-co nodes of 4 MiB), `cbw` over them and `snap` over `cbw`. */
async function start(snapOptions: Record<string, unknown> = {}) {
  const engine = createEngine();
  const qmp = await connectInProcess(engine.qmp);
  await qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'src', size: 4 * MiB, 'read-zeroes': true });
  await qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'tgt', size: 4 * MiB, 'read-zeroes': true });
  await qmp.execute('blockdev-add', { driver: 'copy-before-write', 'node-name': 'cbw', file: 'src', target: 'tgt' });
  await qmp.execute('blockdev-add', { driver: 'snapshot-access', 'node-name': 'snap', file: 'cbw', ...snapOptions });
  return {
    engine,
    snap: engine.graph.require('snap'),
    close: async () => {
      await qmp.close();
      await engine.close();
    },
  };
}

test('snapshot-access refuses writes and zero-writes with ENOTSUP and does nothing on flush', async () => {
  const { snap, close } = await start();
  try {
    await assert.rejects(snap.write(0, new Uint8Array(1)), { errno: 'ENOTSUP', reason: 'Operation not supported' });
    await assert.rejects(snap.writeZeroes(0, C), { errno: 'ENOTSUP' });
    await snap.flush();
    assert.equal(snap.size, 4 * MiB);
    assert.equal(snap.filename, 'json:{"read-zeroes": true, "driver": "null-co"}');
  } finally {
    await close();
  }
});

test('snapshot-access reads the filter\'s view and reports its block status', async () => {
  const { snap, close } = await start();
  try {
    assert.deepEqual(await snap.read(MiB, 4), new Uint8Array(4));
    assert.deepEqual(await snap.blockStatus(0, C), [{ offset: 0, length: C, flags: ExtentFlags.ZERO }]);
  } finally {
    await close();
  }
});

test('a discard on snapshot-access with discard=unmap takes the clusters out of the view; without it, nothing happens', async () => {
  const plain = await start();
  try {
    await plain.snap.trim(0, MiB);
    assert.deepEqual(await plain.snap.read(0, 1), new Uint8Array(1));
  } finally {
    await plain.close();
  }
  const unmapping = await start({ discard: 'unmap' });
  try {
    await unmapping.snap.trim(C, MiB);
    await assert.rejects(unmapping.snap.read(C, 1), { errno: 'EACCES', reason: 'Permission denied' });
    await assert.rejects(unmapping.snap.blockStatus(C, 1), { errno: 'EACCES' });
    assert.deepEqual(await unmapping.snap.read(0, C), new Uint8Array(C));
    assert.equal(copyBeforeWriteOf(unmapping.engine.graph.require('cbw'))!.state.dirtyBytes, 4 * MiB - MiB);
  } finally {
    await unmapping.close();
  }
});

test('snapshot-access over a node that is not a copy-before-write filter fails reads with ENOTSUP and accepts discards', async () => {
  const engine = createEngine();
  const qmp = await connectInProcess(engine.qmp);
  try {
    await qmp.execute('blockdev-add', { driver: 'null-co', 'node-name': 'n', size: MiB });
    await qmp.execute('blockdev-add', { driver: 'snapshot-access', 'node-name': 'snap', file: 'n', discard: 'unmap' });
    const snap = engine.graph.require('snap');
    await assert.rejects(snap.read(0, 1), { errno: 'ENOTSUP' });
    await assert.rejects(snap.blockStatus(0, 1), { errno: 'ENOTSUP' });
    await snap.trim(0, C);
  } finally {
    await qmp.close();
    await engine.close();
  }
});
