import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Random } from '../../block/testing/pattern.js';
import { createQcow2 } from '../create.js';
import { Qcow2Image } from './image.js';

const K = 1024;
const CLUSTER = 64 * K;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-reader-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('readInto() a used buffer gives what read() gives over data, zero, compressed and unallocated clusters and past a short backing file', async () => {
  const random = new Random(42);
  const base = join(dir, 'base.raw');
  const backingContent = random.nonZeroBytes(5 * CLUSTER + 1000); // ends inside cluster 5
  await writeFile(base, backingContent);
  const path = join(dir, 'top.qcow2');
  await createQcow2(path, { size: 16 * CLUSTER, backingFile: base, backingFormat: 'raw' });
  const image = await Qcow2Image.open(path);
  await image.write(CLUSTER + 100, random.nonZeroBytes(CLUSTER)); // partial clusters 1 and 2
  await image.writeZeroes(3 * CLUSTER, CLUSTER); // a zero cluster over the backing file
  await image.writeCompressed(8 * CLUSTER, new Uint8Array(CLUSTER).fill(0x42));
  await image.write(10 * CLUSTER, random.nonZeroBytes(2 * CLUSTER));

  for (const [offset, length] of [
    [0, 16 * CLUSTER],
    [CLUSTER / 2, 5 * CLUSTER],
    [5 * CLUSTER + 500, CLUSTER], // across the end of the backing file
    [8 * CLUSTER + 7, 3 * CLUSTER],
    [13 * CLUSTER, 1],
  ] as const) {
    const target = new Uint8Array(length).fill(0xee);
    await image.readInto(offset, target);
    assert.deepEqual(target, await image.read(offset, length), `${length} bytes at ${offset}`);
  }
  const past = new Uint8Array(CLUSTER);
  await assert.rejects(image.readInto(16 * CLUSTER - 10, past), (e: Error & { code?: string }) => e.code === 'OUT_OF_RANGE');
  await image.close();
});

test('readInto() of a range beyond the backing file reads zeroes, and a backing file that is a qcow2 image reads through readInto too', async () => {
  const base = join(dir, 'base.qcow2');
  await createQcow2(base, { size: 2 * CLUSTER });
  const below = await Qcow2Image.open(base);
  const content = new Random(5).nonZeroBytes(2 * CLUSTER);
  await below.write(0, content);
  await below.close();
  const path = join(dir, 'over-qcow2.qcow2');
  await createQcow2(path, { size: 4 * CLUSTER, backingFile: base, backingFormat: 'qcow2' });
  const image = await Qcow2Image.open(path, { readOnly: true });
  const target = new Uint8Array(4 * CLUSTER).fill(0xee);
  await image.readInto(0, target);
  const expected = new Uint8Array(4 * CLUSTER);
  expected.set(content);
  assert.deepEqual(target, expected);
  await image.close();
});
