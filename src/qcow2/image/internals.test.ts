/**
 * Qcow2Internals: contiguous allocation through the refcounts (also where refcount blocks are
 * missing and the table must grow), host reads and writes that stay out of the image's own
 * metadata, and rewriting the first cluster without undoing what the image changed since open.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { needPeers } from '../../../test/helpers/peers.js';
import { Random } from '../../block/testing/pattern.js';
import { createQcow2 } from '../create.js';
import { decodeImageHeader } from '../format/index.js';
import { Qcow2Image } from './image.js';
import { checkImage } from './testing/qemu-tools.js';

const K = 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-internals-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('allocated clusters are counted exactly (qemu-img check sees them as leaks) and freeing them leaves a clean image', { skip: needPeers('qemu-img') }, async () => {
  const path = join(dir, 'allocate.qcow2');
  // 512-byte clusters with 64-bit refcounts: a block counts 64 clusters, so 300 contiguous
  // clusters need new blocks, and the first table (2 MiB of file) has to grow.
  await createQcow2(path, { size: 4 * 1024 * K, clusterSize: 512, refcountBits: 64 });
  const image = await Qcow2Image.open(path);
  const data = new Random(1).nonZeroBytes(1800 * K);
  await image.write(0, data);
  const internals = image.internals;
  const first = await internals.exclusive(() => internals.allocateClusters(300));
  const second = await internals.exclusive(() => internals.allocateClusters(3));
  assert.equal(first % 512, 0);
  assert.ok(second >= first + 300 * 512 || second + 3 * 512 <= first, 'the runs do not overlap');
  const payload = new Random(2).nonZeroBytes(300 * 512);
  await internals.exclusive(() => internals.writeHost(first, payload));
  assert.deepEqual(await internals.readHost(first, payload.length), payload);
  await image.write(1900 * K, data.subarray(0, 200 * K)); // guest writes go elsewhere
  assert.deepEqual(await internals.readHost(first, payload.length), payload);
  await image.close();

  const leaked = await checkImage(path);
  assert.deepEqual([leaked.checkErrors, leaked.corruptions, leaked.leaks], [0, 0, 303], leaked.text);
  const reopened = await Qcow2Image.open(path);
  assert.ok(reopened.imageHeader.header.refcountTableClusters > 1, 'the refcount table grew');
  await reopened.internals.exclusive(async () => {
    await reopened.internals.freeClusters(first, 300);
    await reopened.internals.freeClusters(second, 3);
  });
  assert.deepEqual(await reopened.read(0, data.length), data);
  await reopened.close();
  const clean = await checkImage(path);
  assert.deepEqual([clean.checkErrors, clean.corruptions, clean.leaks], [0, 0, 0], clean.text);
});

test('host writes into the header, the L1 table or the refcount table are refused', async () => {
  const path = join(dir, 'forbidden.qcow2');
  await createQcow2(path, { size: 1024 * K });
  const image = await Qcow2Image.open(path);
  const { header } = image.imageHeader;
  for (const offset of [0, 100, header.l1TableOffset, header.refcountTableOffset + 8]) {
    await assert.rejects(image.internals.writeHost(offset, new Uint8Array(8)), { code: 'INVALID_ARGUMENT' }, `offset ${offset}`);
  }
  await image.close();
  const readOnly = await Qcow2Image.open(path, { readOnly: true });
  await assert.rejects(readOnly.internals.allocateClusters(1), { code: 'READ_ONLY' });
  await readOnly.close();
});

test('writeImageHeader keeps the moved refcount table and maintained auto-clear bits, and refuses structural changes', async () => {
  const path = join(dir, 'header.qcow2');
  await createQcow2(path, { size: 4 * 1024 * K, clusterSize: 512, refcountBits: 64 });
  const image = await Qcow2Image.open(path);
  await image.write(0, new Uint8Array(3000 * K).fill(1)); // grows the refcount table
  const internals = image.internals;
  const next = internals.imageHeader();
  next.header.autoclearFeatures = 1n << 5n;
  next.extensions.unknown = [{ type: 0x0badcafe, data: new Uint8Array([9, 8, 7]) }];
  await assert.rejects(internals.writeImageHeader(next), { code: 'INVALID_ARGUMENT' }, 'bit 5 is not maintained yet');
  internals.maintainAutoclear(1n << 5n);
  await internals.exclusive(() => internals.writeImageHeader(next));
  await image.write(0, new Uint8Array([2]));
  const bad = internals.imageHeader();
  bad.header.l1TableOffset += 512;
  await assert.rejects(internals.writeImageHeader(bad), { code: 'INVALID_ARGUMENT' });
  await image.close();

  const stored = decodeImageHeader(new Uint8Array(await readFile(path)).subarray(0, 512));
  assert.equal(stored.header.autoclearFeatures, 1n << 5n);
  assert.deepEqual(stored.extensions.unknown, [{ type: 0x0badcafe, data: new Uint8Array([9, 8, 7]) }]);
  assert.ok(stored.header.refcountTableClusters > 1, 'the header still points to the grown refcount table');
  const reopened = await Qcow2Image.open(path, { readOnly: true });
  const expected = new Uint8Array(3000 * K).fill(1);
  expected[0] = 2;
  assert.deepEqual(await reopened.read(0, expected.length), expected);
  await reopened.close();

  // A bit set in the file survives the first change only when it is declared maintained.
  const autoclear = async (): Promise<bigint> => decodeImageHeader(new Uint8Array(await readFile(path)).subarray(0, 512)).header.autoclearFeatures;
  const keeper = await Qcow2Image.open(path);
  keeper.internals.maintainAutoclear(1n << 5n);
  await keeper.write(1, new Uint8Array([3]));
  await keeper.close();
  assert.equal(await autoclear(), 1n << 5n);
  const stranger = await Qcow2Image.open(path);
  await stranger.write(1, new Uint8Array([4]));
  await stranger.close();
  assert.equal(await autoclear(), 0n);
});
