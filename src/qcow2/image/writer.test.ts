/**
 * The allocating write path: data written outside the lock, claims on the guest clusters being
 * allocated, batched metadata writes, and clean-up after a failed data write.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { needPeers } from '../../../test/helpers/peers.js';
import { Random } from '../../block/testing/pattern.js';
import { createQcow2 } from '../create.js';
import { ImageFile } from './image-file.js';
import { Qcow2Image } from './image.js';
import { checkImage, qemuImg } from './testing/qemu-tools.js';

const K = 1024;
const CLUSTER = 64 * K;
let dir: string;
let serial = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-writer-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function freshImage(size = 8 * 1024 * K): Promise<string> {
  const path = join(dir, `image-${serial++}.qcow2`);
  await createQcow2(path, { size });
  return path;
}

/** Records the (position, length) of every write to an image file while `body` runs. */
async function recordWrites(body: () => Promise<void>): Promise<Array<[number, number]>> {
  const original = ImageFile.prototype.write;
  const writes: Array<[number, number]> = [];
  ImageFile.prototype.write = function (this: ImageFile, position: number, data: Uint8Array): Promise<void> {
    writes.push([position, data.length]);
    return original.call(this, position, data);
  };
  try {
    await body();
  } finally {
    ImageFile.prototype.write = original;
  }
  return writes;
}

test('two writes racing into the halves of one unallocated cluster allocate it once and both land', async () => {
  const random = new Random(7);
  const first = random.nonZeroBytes(CLUSTER / 2);
  const second = random.nonZeroBytes(CLUSTER / 2);
  const at = 3 * CLUSTER;

  const sequential = await freshImage();
  const one = await Qcow2Image.open(sequential);
  await one.write(at, first);
  await one.write(at + CLUSTER / 2, second);
  await one.close();

  const racing = await freshImage();
  const image = await Qcow2Image.open(racing);
  await Promise.all([image.write(at, first), image.write(at + CLUSTER / 2, second)]);
  assert.deepEqual(await image.read(at, CLUSTER / 2), first);
  assert.deepEqual(await image.read(at + CLUSTER / 2, CLUSTER / 2), second);
  await image.close();
  assert.equal((await stat(racing)).size, (await stat(sequential)).size, 'no second host cluster was allocated');
});

test('reads racing an allocating write over a backing file see all of the old or all of the new content', async () => {
  const base = await freshImage(2 * 1024 * K);
  const below = await Qcow2Image.open(base);
  await below.write(0, new Uint8Array(4 * CLUSTER).fill(0x11));
  await below.close();
  const path = join(dir, `top-${serial++}.qcow2`);
  await createQcow2(path, { backingFile: base, backingFormat: 'qcow2' });
  const image = await Qcow2Image.open(path);
  const fresh = new Uint8Array(2 * CLUSTER).fill(0x5a);
  const reads: Array<Promise<Uint8Array>> = [];
  const writing = image.write(CLUSTER / 2, fresh); // partial first and last clusters: copy-on-write from the backing file
  for (let i = 0; i < 20; i++) {
    reads.push(image.read(CLUSTER / 2, 2 * CLUSTER));
    await new Promise((resolve) => setImmediate(resolve));
  }
  await writing;
  const old = new Uint8Array(2 * CLUSTER).fill(0x11);
  for (const [i, result] of (await Promise.all(reads)).entries()) {
    assert.ok(Buffer.from(result).equals(old) || Buffer.from(result).equals(fresh), `read ${i} is neither all old nor all new`);
  }
  assert.deepEqual(await image.read(CLUSTER / 2, 2 * CLUSTER), fresh);
  assert.deepEqual(await image.read(0, CLUSTER / 2), new Uint8Array(CLUSTER / 2).fill(0x11));
  await image.close();
});

test('a write whose data write fails frees the clusters it allocated, so the next write reuses them', async () => {
  const data = new Uint8Array(2 * CLUSTER).fill(9);
  const reference = await freshImage();
  const plain = await Qcow2Image.open(reference);
  await plain.write(0, data);
  await plain.close();

  const path = await freshImage();
  const image = await Qcow2Image.open(path);
  await image.write(5 * CLUSTER, new Uint8Array(100).fill(1)); // the L2 table exists before the failing write
  await image.trim(5 * CLUSTER, CLUSTER);
  const original = ImageFile.prototype.write;
  ImageFile.prototype.write = function (this: ImageFile, position: number, bytes: Uint8Array): Promise<void> {
    if (bytes.length >= CLUSTER) return Promise.reject(new Error('simulated EIO'));
    return original.call(this, position, bytes);
  };
  try {
    await assert.rejects(image.write(0, data), (e: Error) => /simulated EIO/.test(e.message + String(e.cause)));
  } finally {
    ImageFile.prototype.write = original;
  }
  assert.deepEqual(await image.read(0, 2 * CLUSTER), new Uint8Array(2 * CLUSTER), 'the failed write changed no mapping');
  await image.write(0, data);
  assert.deepEqual(await image.read(0, 2 * CLUSTER), data);
  await image.close();
  assert.equal((await stat(path)).size, (await stat(reference)).size, 'the clusters of the failed write were reused');
});

test('a write that allocates clusters between ones it writes in place makes one refcount write and one L2 write', async () => {
  const path = await freshImage();
  const image = await Qcow2Image.open(path);
  await image.write(0, new Uint8Array(8 * CLUSTER).fill(1));
  for (const cluster of [1, 3, 5]) await image.trim(cluster * CLUSTER, CLUSTER);
  const header = image.internals.imageHeader().header;
  const refcountBlock = Number(new DataView((await image.internals.readHost(header.refcountTableOffset, 8)).buffer).getBigUint64(0));
  const l2Table = Number(new DataView((await image.internals.readHost(header.l1TableOffset, 8)).buffer).getBigUint64(0) & 0x00fffffffffffe00n);
  const data = new Random(3).nonZeroBytes(8 * CLUSTER);
  const writes = await recordWrites(() => image.write(0, data));
  const inside = (start: number): number => writes.filter(([position]) => position >= start && position < start + CLUSTER).length;
  assert.equal(inside(refcountBlock), 1, 'refcount writes');
  assert.equal(inside(l2Table), 1, 'L2 writes');
  assert.deepEqual(await image.read(0, 8 * CLUSTER), data);
  await image.close();
  const reopened = await Qcow2Image.open(path, { readOnly: true });
  assert.deepEqual(await reopened.read(0, 8 * CLUSTER), data);
  await reopened.close();
});

for (const clusterSize of [512, 4096]) {
  test(`concurrent writes, zero-writes, trims and reads over an internal snapshot and compressed clusters (${clusterSize}-byte clusters) all land, and qemu-img check finds no errors or leaks`, { skip: needPeers('qemu-img') }, async () => {
    const size = 2 * 1024 * K;
    const path = join(dir, `snapshot-${clusterSize}.qcow2`);
    await createQcow2(path, { size, clusterSize, refcountBits: 16 });
    const random = new Random(clusterSize);
    const model = new Uint8Array(size);
    let image = await Qcow2Image.open(path);
    for (let i = 0; i < 20; i++) {
      const offset = random.below(size - 40 * K);
      const data = random.nonZeroBytes(random.between(1, 40 * K));
      model.set(data, offset);
      await image.write(offset, data);
    }
    const compressedAt = Math.floor(size / 2 / clusterSize) * clusterSize;
    await image.writeCompressed(compressedAt, new Uint8Array(clusterSize).fill(7));
    model.fill(7, compressedAt, compressedAt + clusterSize);
    await image.close();
    await qemuImg('snapshot', '-c', 'before', path); // every cluster and L2 table now shared

    image = await Qcow2Image.open(path);
    const cuts = [...new Set(Array.from({ length: 300 }, () => random.below(size)))].sort((a, b) => a - b);
    const requests: Array<Promise<unknown>> = [];
    for (let i = 0; i + 1 < cuts.length; i += 2) {
      const [offset, length] = [cuts[i]!, cuts[i + 1]! - cuts[i]!];
      const kind = random.below(10);
      if (kind === 0) {
        model.fill(0, offset, offset + length);
        requests.push(image.writeZeroes(offset, length, { mayTrim: random.chance(0.5) }));
      } else if (kind === 1) {
        model.fill(0, offset, offset + length); // version 3: a trimmed range reads as zero
        requests.push(image.trim(offset, length));
      } else {
        const data = random.nonZeroBytes(length);
        model.set(data, offset);
        requests.push(image.write(offset, data));
      }
      if (random.chance(0.3)) requests.push(image.read(random.below(size - 9000), 9000));
    }
    await Promise.all(requests);
    assert.deepEqual(await image.read(0, size), model);
    await image.close();
    const report = await checkImage(path);
    assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
  });
}
