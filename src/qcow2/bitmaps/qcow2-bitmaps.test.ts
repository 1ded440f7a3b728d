/**
 * Qcow2Bitmaps on images made by bitback: storing and loading, the in_use protocol of mode
 * `track`, immediate stores of mode `edit`, and the operations' refusals. Expected bits come
 * from an independent granule model; `qemu-img check` judges the refcounts.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { needPeers } from '../../../test/helpers/peers.js';
import { DirtyBitmap } from '../../bitmap/index.js';
import { hasCode } from '../../errors.js';
import { createQcow2, type CreateQcow2Options } from '../create.js';
import { AutoclearFeature, decodeBitmapDirectory, decodeBitmapTable } from '../format/index.js';
import { Qcow2Image } from '../image/index.js';
import { checkImage } from '../image/testing/qemu-tools.js';
import { Qcow2Bitmaps, defaultGranularity } from './index.js';
import { GranuleModel, prng } from './testing/granule-model.js';

const K = 1024;
const M = K * K;
let dir: string;
let counter = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-bitmaps-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function newImage(options: CreateQcow2Options): Promise<string> {
  const path = join(dir, `image-${counter++}.qcow2`);
  await createQcow2(path, options);
  return path;
}

function code(c: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(hasCode(e, c as never), `expected code ${c}, got ${String(e)}`);
    return true;
  };
}

async function assertClean(path: string, leaks = 0): Promise<void> {
  const report = await checkImage(path);
  assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, leaks], report.text);
}

const peers = needPeers('qemu-img');

test('defaultGranularity() is the cluster size clamped to 4 KiB .. 64 KiB', () => {
  assert.equal(defaultGranularity(512), 4096);
  assert.equal(defaultGranularity(4096), 4096);
  assert.equal(defaultGranularity(16384), 16384);
  assert.equal(defaultGranularity(65536), 65536);
  assert.equal(defaultGranularity(2 * M), 65536);
});

for (const [label, options] of [
  ['64 KiB clusters', { size: 3 * M + 1536 }],
  ['512-byte clusters (many bitmap data clusters)', { size: 3 * M + 1536, clusterSize: 512 }],
] as Array<[string, CreateQcow2Options]>) {
  test(`writes recorded by a tracking image are stored on close and load back exactly (${label})`, { skip: peers }, async () => {
    const path = await newImage(options);
    const granularities = [512, 4096, 65536, M];
    const models = granularities.map((g) => new GranuleModel(options.size!, g));
    const bitmaps = await Qcow2Bitmaps.attach(await Qcow2Image.open(path));
    assert.equal(bitmaps.mode, 'track');
    for (const g of granularities) await bitmaps.add(`g${g}`, { granularity: g });
    await bitmaps.add('off', { granularity: 4096, disabled: true });
    const random = prng(7);
    const image = bitmaps.image;
    for (let i = 0; i < 40; i++) {
      const offset = random(image.size - 1);
      const length = 1 + random(Math.min(image.size - offset, 200 * K));
      const kind = random(3);
      if (kind === 0) await image.write(offset, new Uint8Array(length).fill(i + 1));
      else if (kind === 1) await image.writeZeroes(offset, length);
      else await image.trim(offset, length);
      for (const m of models) m.write(offset, length);
    }
    await image.write(image.size - 1, new Uint8Array(1)); // the partial last granule
    for (const m of models) m.write(image.size - 1, 1);
    await bitmaps.close();
    await assertClean(path);

    const loaded = await Qcow2Bitmaps.open(path, { readOnly: true });
    assert.equal(loaded.mode, 'read-only');
    for (const [i, g] of granularities.entries()) {
      assert.deepEqual(loaded.dirtyExtents(`g${g}`), models[i]!.extents(), `granularity ${g}`);
      const info = loaded.list().find((b) => b.name === `g${g}`)!;
      assert.deepEqual([info.granularity, info.flags, info.count], [g, ['auto'], models[i]!.count()]);
    }
    assert.deepEqual(loaded.dirtyExtents('off'), []);
    assert.deepEqual(loaded.list().find((b) => b.name === 'off')!.flags, []);
    await loaded.close();
  });
}

test('attaching in track mode marks stored bitmaps in use before any write, and close clears it', async () => {
  const path = await newImage({ size: 4 * M });
  const editor = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  await editor.add('b0');
  await editor.image.close();

  const tracking = await Qcow2Bitmaps.open(path);
  // A second open of an image open for writing needs force-share, as qemu-img info -U.
  const meanwhile = await Qcow2Bitmaps.open(path, { readOnly: true, lock: { forceShare: true } });
  assert.deepEqual(meanwhile.list().map((b) => [b.name, b.inconsistent, b.flags]), [['b0', true, ['in-use']]]);
  await meanwhile.close();
  await tracking.image.write(0, new Uint8Array(10));
  await tracking.close();
  const after = await Qcow2Bitmaps.open(path, { readOnly: true });
  assert.deepEqual(after.list().map((b) => [b.name, b.inconsistent, b.flags]), [['b0', false, ['auto']]]);
  assert.deepEqual(after.dirtyExtents('b0'), [{ offset: 0, length: 65536 }]);
  await after.close();
});

test('a tracking image that is not closed leaves its bitmaps inconsistent: only removal works on them', { skip: peers }, async () => {
  const path = await newImage({ size: 4 * M });
  const tracking = await Qcow2Bitmaps.open(path);
  await tracking.add('new'); // never stored: disappears
  // The image is locked while open: look at what a kill would leave, a copy of the file now.
  const copied = join(dir, `copied-${counter++}.qcow2`);
  await copyFile(path, copied);
  const editor = await Qcow2Bitmaps.open(copied, { mode: 'edit' });
  assert.deepEqual(editor.list(), []);
  await editor.close();

  const path2 = await newImage({ size: 4 * M });
  const e2 = await Qcow2Bitmaps.open(path2, { mode: 'edit' });
  await e2.add('b0');
  await e2.add('b1', { granularity: 512 });
  await e2.close();
  const running = await Qcow2Bitmaps.open(path2);
  await running.image.write(M, new Uint8Array(4 * K).fill(9));
  // What a kill would leave: the file as it is now, never closed.
  const killed = join(dir, `killed-${counter++}.qcow2`);
  await copyFile(path2, killed);
  await running.close();

  const loaded = await Qcow2Bitmaps.open(killed, { mode: 'edit' });
  assert.deepEqual(loaded.list().map((b) => [b.name, b.inconsistent, b.recording, b.count]), [['b0', true, false, 0], ['b1', true, false, 0]]);
  assert.throws(() => loaded.dirtyExtents('b0'), code('BITMAP_STATE'));
  await assert.rejects(loaded.clear('b0'), code('BITMAP_STATE'));
  await assert.rejects(loaded.enable('b0'), code('BITMAP_STATE'));
  await assert.rejects(loaded.disable('b0'), code('BITMAP_STATE'));
  await loaded.add('fresh');
  await assert.rejects(loaded.merge('fresh', 'b1'), code('BITMAP_STATE'));
  await assert.rejects(loaded.merge('b1', 'fresh'), code('BITMAP_STATE'));
  await loaded.remove('b0');
  await loaded.remove('b1');
  await loaded.close();
  await assertClean(killed);
  await tracking.close();
  await assertClean(path);
});

test('edit mode stores each change at once and refuses guest writes', { skip: peers }, async () => {
  const path = await newImage({ size: 2 * M, clusterSize: 4096 });
  const editor = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  await editor.add('a', { granularity: 8192 });
  await editor.add('b', { disabled: true });
  const view = await Qcow2Bitmaps.open(path, { readOnly: true, lock: { forceShare: true } });
  assert.deepEqual(view.list().map((b) => [b.name, b.granularity, b.flags]), [['a', 8192, ['auto']], ['b', 4096, []]]);
  await view.close();
  await assert.rejects(editor.image.write(0, new Uint8Array(1)), code('READ_ONLY'));
  await editor.enable('b');
  await editor.disable('a');
  await editor.remove('a');
  await editor.close();
  const reloaded = await Qcow2Bitmaps.open(path, { readOnly: true });
  assert.deepEqual(reloaded.list().map((b) => [b.name, b.flags]), [['b', ['auto']]]);
  await reloaded.close();
  await assertClean(path);
});

test('removing bitmaps frees their clusters; removing the last one drops the extension and auto-clear bit 0', { skip: peers }, async () => {
  const path = await newImage({ size: 8 * M, clusterSize: 512 });
  const tracking = await Qcow2Bitmaps.open(path);
  await tracking.add('x', { granularity: 512 });
  await tracking.add('y', { granularity: 1024 });
  for (let i = 0; i < 8 * M; i += 64 * K) await tracking.image.write(i, new Uint8Array(512).fill(1));
  await tracking.close();
  await assertClean(path);
  const editor = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  await editor.remove('x');
  await editor.close();
  await assertClean(path);
  const last = await Qcow2Bitmaps.open(path); // track mode: removal is stored at once too
  await last.remove('y');
  const header = last.image.imageHeader;
  assert.equal(header.extensions.bitmaps, undefined);
  assert.equal(header.header.autoclearFeatures & AutoclearFeature.BITMAPS, 0n);
  await last.close();
  await assertClean(path);
});

for (const directoryReused of [false, true]) {
  const what = directoryReused ? 'a directory that now holds other data is ignored' : 'its bitmaps load as inconsistent';
  test(`a bitmaps extension without auto-clear bit 0 is never trusted: ${what}, and clusters a repair freed are never freed again or pointed to`, { skip: peers }, async () => {
    const path = await newImage({ size: 8 * M, clusterSize: 4096 });
    const editor = await Qcow2Bitmaps.open(path, { mode: 'edit' });
    await editor.add('old', { granularity: 512 });
    await editor.close();
    const tracked = await Qcow2Bitmaps.open(path);
    await tracked.image.write(0, new Uint8Array(4 * M).fill(0x11)); // dirties every data cluster of 'old'
    await tracked.close();
    // A repair that keeps the extension frees what it now sees as leaks (the directory, the
    // table, the data clusters), and a writer reuses those clusters.
    const reuse = await Qcow2Image.open(path);
    const internals = reuse.internals;
    const extension = reuse.imageHeader.extensions.bitmaps!;
    const [entry] = decodeBitmapDirectory(await internals.readHost(extension.bitmapDirectoryOffset, extension.bitmapDirectorySize), 0, extension, {
      geometry: reuse.geometry,
      virtualSize: reuse.size,
    });
    const table = decodeBitmapTable(await internals.readHost(entry!.bitmapTableOffset, entry!.bitmapTableSize * 8), 0, entry!.bitmapTableSize, reuse.geometry);
    await internals.exclusive(async () => {
      if (directoryReused) await internals.freeClusters(extension.bitmapDirectoryOffset, 1);
      await internals.freeClusters(entry!.bitmapTableOffset, 1);
      for (const e of table) if (e.kind === 'data') await internals.freeClusters(e.hostOffset, 1);
    });
    await reuse.write(5 * M - 256 * K, new Uint8Array(256 * K).fill(0x22));
    await reuse.close();
    // The directory stays a leak when nothing reused it: it is never freed.
    const leaks = directoryReused ? 0 : 1;
    await assertClean(path, leaks);

    const loaded = await Qcow2Bitmaps.open(path);
    const old: Array<[string, boolean]> = directoryReused ? [] : [['old', true]];
    assert.deepEqual(loaded.list().map((b) => [b.name, b.inconsistent]), old);
    await loaded.add('new');
    await loaded.image.write(0, new Uint8Array(100));
    await loaded.close();
    await assertClean(path, leaks);
    const after = await Qcow2Bitmaps.open(path, { mode: 'edit' });
    assert.deepEqual(after.list().map((b) => [b.name, b.inconsistent]), [...old, ['new', false]]);
    assert.deepEqual(after.dirtyExtents('new'), [{ offset: 0, length: 4096 }]);
    if (!directoryReused) await after.remove('old');
    await after.close();
    await assertClean(path, leaks);
    const data = await Qcow2Image.open(path, { readOnly: true });
    assert.ok((await data.read(5 * M - 256 * K, 256 * K)).every((b) => b === 0x22), 'guest data in reused clusters survived');
    await data.close();
  });
}

test('merge ORs across granularities and images; a refused merge leaves the target unchanged', async () => {
  const size = 2 * M + 512;
  const path = await newImage({ size });
  const other = await newImage({ size });
  const small = await newImage({ size: M });
  const a = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  const writes: Array<[number, number]> = [[1000, 10], [70 * K, 3 * K], [size - 1, 1]];
  const src = new DirtyBitmap({ size, granularity: 512 });
  const srcModel = new GranuleModel(size, 512);
  for (const [o, l] of writes) {
    src.set(o, l);
    srcModel.write(o, l);
  }
  await a.add('dst', { granularity: 128 * K });
  const dstModel = new GranuleModel(size, 128 * K);
  await a.merge('dst', src);
  dstModel.merge(srcModel);
  assert.deepEqual(a.dirtyExtents('dst'), dstModel.extents());

  const b = await Qcow2Bitmaps.open(other, { mode: 'edit' });
  await b.add('fine', { granularity: 512 });
  await b.merge('fine', a.get('dst')!); // coarse into fine: every fine granule the coarse ones cover
  const fineModel = new GranuleModel(size, 512);
  fineModel.merge(dstModel);
  assert.deepEqual(b.dirtyExtents('fine'), fineModel.extents());
  await b.close();
  const reopened = await Qcow2Bitmaps.open(other, { readOnly: true });
  assert.deepEqual(reopened.dirtyExtents('fine'), fineModel.extents());
  await reopened.close();

  const c = await Qcow2Bitmaps.open(small, { mode: 'edit' });
  await c.add('x');
  await assert.rejects(a.merge('dst', c.get('x')!), code('INVALID_ARGUMENT'));
  await assert.rejects(a.merge('dst', 'nope'), code('NOT_FOUND'));
  const busy = new DirtyBitmap({ size, granularity: 512, name: 'busy' });
  busy.set(0, size);
  busy.setBusy(true);
  await assert.rejects(a.merge('dst', busy), code('BITMAP_STATE'));
  assert.deepEqual(a.dirtyExtents('dst'), dstModel.extents());
  await c.close();
  await a.close();
});

test('operations refuse what QEMU refuses, with typed errors', async () => {
  const path = await newImage({ size: M });
  const v2 = await newImage({ size: M, compat: '0.10' });
  const bitmaps = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  await bitmaps.add('b');
  await assert.rejects(bitmaps.add('b'), code('ALREADY_EXISTS'));
  await assert.rejects(bitmaps.add('g', { granularity: 256 }), code('INVALID_ARGUMENT'));
  await assert.rejects(bitmaps.add('g', { granularity: 3000 }), code('INVALID_ARGUMENT'));
  await assert.rejects(bitmaps.add('g', { granularity: 2 ** 32 }), code('INVALID_ARGUMENT'));
  await assert.rejects(bitmaps.add(''), code('INVALID_ARGUMENT'));
  await assert.rejects(bitmaps.add('n'.repeat(1024)), code('INVALID_ARGUMENT'));
  await bitmaps.add('n'.repeat(1023), { granularity: 2 ** 31 }); // the limits themselves are fine
  await assert.rejects(bitmaps.remove('nope'), code('NOT_FOUND'));
  await assert.rejects(bitmaps.clear('nope'), code('NOT_FOUND'));
  const frozen = bitmaps.get('b')!.createSuccessor();
  await assert.rejects(bitmaps.remove('b'), code('BITMAP_STATE'));
  await assert.rejects(bitmaps.clear('b'), code('BITMAP_STATE'));
  await assert.rejects(bitmaps.enable('b'), code('BITMAP_STATE'));
  assert.throws(() => bitmaps.dirtyExtents('b'), code('BITMAP_STATE'));
  assert.ok(frozen !== undefined);
  bitmaps.get('b')!.reclaim();
  await bitmaps.close();
  await assert.rejects(bitmaps.add('late'), code('CLOSED'));

  const readOnly = await Qcow2Bitmaps.open(path, { readOnly: true });
  await assert.rejects(readOnly.add('x'), code('READ_ONLY'));
  await assert.rejects(readOnly.clear('b'), code('READ_ONLY'));
  await assert.rejects(readOnly.remove('b'), code('READ_ONLY'));
  await readOnly.close();

  const old = await Qcow2Bitmaps.open(v2, { mode: 'edit' });
  await assert.rejects(old.add('x'), (e: unknown) => code('NOT_SUPPORTED')(e) && /v2/.test(String(e)));
  await old.add('transient', { persistent: false }); // QEMU allows those on version 2
  await old.close();
});

test('a frozen bitmap is stored with its successor\'s bits; a non-persistent bitmap records but is not stored', async () => {
  const path = await newImage({ size: 4 * M });
  const bitmaps = await Qcow2Bitmaps.open(path);
  const b = await bitmaps.add('b');
  const transient = await bitmaps.add('t', { persistent: false });
  await bitmaps.image.write(0, new Uint8Array(1));
  b.createSuccessor(); // a job runs and never finishes
  await bitmaps.image.write(2 * M, new Uint8Array(1));
  assert.deepEqual([...transient.dirtyExtents()], [{ offset: 0, length: 65536 }, { offset: 2 * M, length: 65536 }]);
  await bitmaps.close();
  const loaded = await Qcow2Bitmaps.open(path, { readOnly: true });
  assert.deepEqual(loaded.list().map((x) => x.name), ['b']);
  assert.deepEqual(loaded.dirtyExtents('b'), [{ offset: 0, length: 65536 }, { offset: 2 * M, length: 65536 }]);
  await loaded.close();
});
