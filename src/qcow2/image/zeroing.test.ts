import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createQcow2 } from '../create.js';
import { Qcow2Image } from './image.js';

const CLUSTER = 4096;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-zeroing-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

// Regression: a range with no whole cluster that crosses a cluster boundary was checked for
// zeroes on its first cluster only, so the data in the second one survived.
for (const [name, change] of [
  ['writeZeroes()', (image: Qcow2Image, offset: number, length: number) => image.writeZeroes(offset, length)],
  ['trim()', (image: Qcow2Image, offset: number, length: number) => image.trim(offset, length)],
] as const) {
  test(`${name} of the end of a zero cluster and the start of a data cluster zeroes the data part`, async () => {
    const path = join(dir, `${name.replace(/\W/g, '')}.qcow2`);
    await createQcow2(path, { size: 16 * CLUSTER, clusterSize: CLUSTER });
    const image = await Qcow2Image.open(path);
    await image.write(3 * CLUSTER, new Uint8Array(CLUSTER).fill(0xab)); // cluster 2 stays unallocated
    await change(image, 3 * CLUSTER - 1000, 2000);
    const expected = new Uint8Array(2 * CLUSTER);
    expected.fill(0xab, CLUSTER + 1000);
    assert.deepEqual(await image.read(2 * CLUSTER, 2 * CLUSTER), expected);
    await image.close();
  });
}
