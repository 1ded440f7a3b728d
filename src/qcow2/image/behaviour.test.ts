/**
 * Behaviour of Qcow2Image beyond the BlockDevice contract: backing chains, block status depth,
 * zero clusters that keep or free their host cluster, trims over a backing file, compressed
 * writes, the header bits it must clear, the hooks for bitmaps, and refcount table growth.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ExtentFlags } from '../../block/block-device.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { Random } from '../../block/testing/pattern.js';
import { createQcow2 } from '../create.js';
import { decodeImageHeader, encodeImageHeader } from '../format/index.js';
import { Qcow2Image } from './image.js';

const K = 1024;
const MiB = 1024 * K;
const CLUSTER = 64 * K;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-behaviour-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The depth (QEMU allocation depth) that `blockStatus` reports for each byte offset in `offsets`. */
async function depthsAt(image: Qcow2Image, offsets: number[]): Promise<Array<number | undefined>> {
  const result: Array<number | undefined> = [];
  for (const offset of offsets) {
    const [extent] = await image.blockStatus(offset, 1);
    result.push(extent!.depth);
  }
  return result;
}

test('a read through a three-deep chain returns each layer where it is the topmost, and zeroes past a short base', async () => {
  const size = 4 * MiB;
  const random = new Random(11);
  const base = random.nonZeroBytes(3 * MiB); // shorter than the disk
  await writeFile(join(dir, 'chain-base.raw'), base);
  await createQcow2(join(dir, 'chain-mid.qcow2'), { size, backingFile: 'chain-base.raw', backingFormat: 'raw' });
  await createQcow2(join(dir, 'chain-top.qcow2'), { backingFile: 'chain-mid.qcow2' }); // size and format from the backing file
  const model = new Uint8Array(size);
  model.set(base);
  const mid = await Qcow2Image.open(join(dir, 'chain-mid.qcow2'));
  const midData = random.nonZeroBytes(300 * K);
  await mid.write(100 * K, midData);
  model.set(midData, 100 * K);
  await mid.writeZeroes(2 * MiB, 2 * CLUSTER);
  model.fill(0, 2 * MiB, 2 * MiB + 2 * CLUSTER);
  await mid.close();
  const top = await Qcow2Image.open(join(dir, 'chain-top.qcow2'));
  try {
    const topData = random.nonZeroBytes(5000);
    await top.write(350 * K, topData); // partly over the middle layer's data: copy-on-write from it
    model.set(topData, 350 * K);
    assert.deepEqual(await top.read(0, size), model);
    assert.equal(top.size, size);
    assert.deepEqual(
      top.backingChain.map((layer) => [layer.filename, layer.format, layer.probed]),
      [
        ['chain-mid.qcow2', 'qcow2', false], // createQcow2 stored the format it probed
        ['chain-base.raw', 'raw', false],
      ],
    );
    assert.equal(top.backingChain[1]!.path, join(dir, 'chain-base.raw'));
    assert.deepEqual(await depthsAt(top, [0, 100 * K, 350 * K, 2 * MiB, 3.5 * MiB]), [2 + 1, 2, 1, 2, 0]);
    const [zero] = await top.blockStatus(2 * MiB, CLUSTER);
    assert.equal(zero!.flags, ExtentFlags.HOLE | ExtentFlags.ZERO, "a zero cluster holds no data: HOLE | ZERO, as QEMU reports it");
  } finally {
    await top.close();
  }
  // Without the backing format extension the format is probed.
  const path = join(dir, 'chain-top.qcow2');
  const bytes = new Uint8Array(await readFile(path));
  const decoded = decodeImageHeader(bytes.subarray(0, CLUSTER));
  delete decoded.extensions.backingFormat;
  bytes.set(encodeImageHeader(decoded), 0);
  await writeFile(path, bytes);
  const probed = await Qcow2Image.open(path, { readOnly: true });
  assert.deepEqual(probed.backingChain.map((layer) => [layer.format, layer.probed]), [['qcow2', true], ['raw', false]]);
  assert.deepEqual(await probed.read(0, size), model);
  await probed.close();
});

test("backing 'none' reads unallocated clusters as zero, and a BlockDevice replaces the backing file", async () => {
  const path = join(dir, 'override.qcow2');
  await createQcow2(join(dir, 'override-base.qcow2'), { size: MiB });
  await createQcow2(path, { backingFile: 'override-base.qcow2', backingFormat: 'qcow2' });
  const base = await Qcow2Image.open(join(dir, 'override-base.qcow2'));
  await base.write(0, new Uint8Array(MiB).fill(0x33));
  await base.close();
  const alone = await Qcow2Image.open(path, { backing: 'none' });
  assert.deepEqual(await alone.read(0, 8), new Uint8Array(8));
  assert.deepEqual(alone.backingChain, []);
  await alone.close();
  const memory = new MemoryBlockDevice(MiB);
  await memory.write(0, new Uint8Array(8).fill(0x77));
  const overridden = await Qcow2Image.open(path, { backing: memory });
  assert.deepEqual(await overridden.read(0, 9), new Uint8Array([0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0x77, 0]));
  await overridden.close();
  assert.deepEqual(await memory.read(0, 1), new Uint8Array([0x77]), 'the caller still owns the device');
  await memory.close();
});

test('writeZeroes without mayTrim keeps the host cluster for the next write; with mayTrim frees it for reuse', async () => {
  const path = join(dir, 'zero-keep.qcow2');
  await createQcow2(path, { size: 4 * MiB });
  const image = await Qcow2Image.open(path);
  try {
    await image.write(0, new Uint8Array(2 * CLUSTER).fill(1));
    const allocated = (await stat(path)).size;
    await image.writeZeroes(0, CLUSTER);
    assert.deepEqual(await image.blockStatus(0, CLUSTER), [{ offset: 0, length: CLUSTER, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 1 }]);
    await image.write(10, new Uint8Array([5]));
    assert.equal((await stat(path)).size, allocated, 'the zeroed cluster took the write: the file did not grow');
    const expected = new Uint8Array(CLUSTER);
    expected[10] = 5;
    assert.deepEqual(await image.read(0, CLUSTER), expected);
    await image.writeZeroes(CLUSTER, CLUSTER, { mayTrim: true });
    await image.write(3 * CLUSTER, new Uint8Array(CLUSTER).fill(9));
    assert.equal((await stat(path)).size, allocated, 'the freed host cluster was reused');
    assert.deepEqual(await image.read(3 * CLUSTER, 4), new Uint8Array(4).fill(9));
    assert.deepEqual(await image.read(CLUSTER, 4), new Uint8Array(4));
  } finally {
    await image.close();
  }
});

test('trim over a backing file reads as zero on version 3 and keeps the data on version 2', async () => {
  await createQcow2(join(dir, 'trim-base.qcow2'), { size: MiB });
  const base = await Qcow2Image.open(join(dir, 'trim-base.qcow2'));
  await base.write(0, new Uint8Array(MiB).fill(0x44));
  await base.close();
  for (const compat of ['1.1', '0.10'] as const) {
    const path = join(dir, `trim-${compat}.qcow2`);
    await createQcow2(path, { backingFile: 'trim-base.qcow2', backingFormat: 'qcow2', compat });
    const image = await Qcow2Image.open(path);
    await image.write(CLUSTER, new Uint8Array(CLUSTER).fill(0x55));
    await image.trim(0, 4 * CLUSTER + 100);
    const data = await image.read(0, 5 * CLUSTER);
    if (compat === '1.1') {
      assert.ok(image.capabilities.trimZeroes);
      assert.ok(data.subarray(0, 4 * CLUSTER + 100).every((b) => b === 0), 'v3: the trimmed range reads as zero');
      assert.ok(data.subarray(4 * CLUSTER + 100).every((b) => b === 0x44), 'v3: the rest still comes from the backing file');
    } else {
      assert.ok(!image.capabilities.trimZeroes);
      assert.ok(data.subarray(CLUSTER, 2 * CLUSTER).every((b) => b === 0x55), 'v2: data over a backing file stays');
    }
    await image.close();
  }
});

test('compressed writes store whole clusters deflated, and partial writes over them copy the old data', async () => {
  const path = join(dir, 'compressed.qcow2');
  await createQcow2(path, { size: 8 * MiB });
  const image = await Qcow2Image.open(path, { compress: true });
  const model = new Uint8Array(8 * MiB);
  for (let i = 0; i < model.length; i++) model[i] = (i >> 9) % 7; // compressible, not zero
  try {
    await image.write(0, model);
    const size = (await stat(path)).size;
    assert.ok(size < MiB, `8 MiB of compressible data took ${size} bytes`);
    const patchBytes = new Uint8Array(1000).fill(0xab);
    await image.write(CLUSTER + 5, patchBytes); // partial: copy-on-write from a compressed cluster
    model.set(patchBytes, CLUSTER + 5);
    await image.writeZeroes(3 * CLUSTER, CLUSTER, { mayTrim: true });
    model.fill(0, 3 * CLUSTER, 4 * CLUSTER);
    assert.deepEqual(await image.read(0, model.length), model);
  } finally {
    await image.close();
  }
  const reopened = await Qcow2Image.open(path);
  assert.deepEqual(await reopened.read(0, model.length), model);
  const incompressible = new Random(3).nonZeroBytes(CLUSTER);
  await reopened.writeCompressed(5 * CLUSTER, incompressible); // allocated already: a normal write
  await reopened.writeCompressed(100 * CLUSTER, new Uint8Array(CLUSTER).fill(1));
  assert.deepEqual(await reopened.read(5 * CLUSTER, CLUSTER), incompressible);
  assert.deepEqual(await reopened.read(100 * CLUSTER, CLUSTER), new Uint8Array(CLUSTER).fill(1));
  await assert.rejects(reopened.writeCompressed(100, new Uint8Array(CLUSTER)), { code: 'INVALID_ARGUMENT' });
  await reopened.close();
});

test('the first change clears auto-clear bits and keeps unknown header extensions; opening does not', async () => {
  const path = join(dir, 'autoclear.qcow2');
  await createQcow2(path, { size: MiB });
  const bytes = new Uint8Array(await readFile(path));
  const decoded = decodeImageHeader(bytes.subarray(0, CLUSTER));
  decoded.header.autoclearFeatures = 1n << 5n; // a bit nobody here knows
  decoded.extensions.unknown = [{ type: 0x12345678, data: new Uint8Array([1, 2, 3]) }];
  bytes.set(encodeImageHeader(decoded), 0);
  await writeFile(path, bytes);
  const readHeader = async () => decodeImageHeader(new Uint8Array(await readFile(path)).subarray(0, CLUSTER));

  const untouched = await Qcow2Image.open(path);
  await untouched.read(0, 10);
  await untouched.close();
  assert.equal((await readHeader()).header.autoclearFeatures, 1n << 5n);

  const image = await Qcow2Image.open(path);
  await image.write(0, new Uint8Array([1]));
  await image.close();
  const after = await readHeader();
  assert.equal(after.header.autoclearFeatures, 0n);
  assert.deepEqual(after.extensions.unknown, [{ type: 0x12345678, data: new Uint8Array([1, 2, 3]) }]);
});

test('write listeners see every change before it is made, and close hooks run before the file closes', async () => {
  const path = join(dir, 'hooks.qcow2');
  await createQcow2(path, { size: MiB });
  const image = await Qcow2Image.open(path);
  const seen: Array<[number, number]> = [];
  const remove = image.onWrite((offset, length) => seen.push([offset, length]));
  let closedWithData: Uint8Array | undefined;
  image.onClose(async () => {
    closedWithData = await image.read(0, 1).catch(() => undefined);
  });
  await image.write(5, new Uint8Array(3));
  await image.writeZeroes(100, 7);
  await image.trim(CLUSTER, CLUSTER);
  await image.write(0, new Uint8Array(0)); // empty: nothing to record
  remove();
  await image.write(9, new Uint8Array(1));
  await image.close();
  assert.deepEqual(seen, [
    [5, 3],
    [100, 7],
    [CLUSTER, CLUSTER],
  ]);
  assert.equal(closedWithData, undefined, 'new requests are refused once close has begun, also from hooks');
});

test('writing past what the first refcount block covers grows the refcount table, and the data survives a reopen', async () => {
  const path = join(dir, 'growth.qcow2');
  // 512-byte clusters with 64-bit refcounts: a block counts 64 clusters, the first table 64 blocks (2 MiB).
  await createQcow2(path, { size: 8 * MiB, clusterSize: 512, refcountBits: 64 });
  const tableBefore = new DataView((await readFile(path)).buffer).getBigUint64(48);
  const data = new Random(5).nonZeroBytes(6 * MiB);
  const image = await Qcow2Image.open(path, { l2CacheBytes: 4096, refcountCacheBytes: 4096 });
  for (let offset = 0; offset < data.length; offset += 300 * K) await image.write(offset, data.subarray(offset, offset + 300 * K));
  await image.close();
  const view = new DataView((await readFile(path)).buffer);
  assert.notEqual(view.getBigUint64(48), tableBefore, 'the refcount table moved');
  assert.ok(view.getUint32(56) > 1, 'the refcount table has more than one cluster');
  const reopened = await Qcow2Image.open(path, { readOnly: true });
  assert.deepEqual(await reopened.read(0, data.length), data);
  await reopened.close();
});

test('a read-only image refuses every change with ReadOnlyError', async () => {
  const path = join(dir, 'readonly.qcow2');
  await createQcow2(path, { size: MiB });
  const image = await Qcow2Image.open(path, { readOnly: true });
  assert.ok(image.capabilities.readOnly);
  await assert.rejects(image.write(0, new Uint8Array(1)), { code: 'READ_ONLY' });
  await assert.rejects(image.writeZeroes(0, 1), { code: 'READ_ONLY' });
  await assert.rejects(image.trim(0, CLUSTER), { code: 'READ_ONLY' });
  await image.close();
});
