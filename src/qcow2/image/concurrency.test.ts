/**
 * Requests in flight together: 200 random writes (disjoint, but many sharing clusters, so that
 * several race to allocate the same unallocated cluster) must all land, and the image must
 * stay consistent (`qemu-img check`: no errors, no leaks).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { needPeers } from '../../../test/helpers/peers.js';
import { Random } from '../../block/testing/pattern.js';
import { createQcow2, type CreateQcow2Options } from '../create.js';
import { Qcow2Image } from './image.js';
import { checkImage } from './testing/qemu-tools.js';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-concurrency-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** `count` disjoint ranges in `[0, size)` of random lengths, in random order. */
function disjointRanges(random: Random, size: number, count: number): Array<[number, number]> {
  const cuts = new Set<number>();
  while (cuts.size < 2 * count) cuts.add(random.below(size));
  const sorted = [...cuts].sort((a, b) => a - b);
  const ranges: Array<[number, number]> = [];
  for (let i = 0; i < sorted.length; i += 2) ranges.push([sorted[i]!, sorted[i + 1]! - sorted[i]!]);
  for (let i = ranges.length - 1; i > 0; i--) {
    const j = random.below(i + 1);
    [ranges[i], ranges[j]] = [ranges[j]!, ranges[i]!];
  }
  return ranges;
}

const shapes: Array<[string, Omit<CreateQcow2Options, 'size'>]> = [
  ['64 KiB clusters', {}],
  ['512-byte clusters, 64-bit refcounts', { clusterSize: 512, refcountBits: 64 }],
  ['version 2', { compat: '0.10' }],
];

for (const [name, options] of shapes) {
  test(`200 concurrent random writes into a fresh image (${name}) all land, and qemu-img check finds no errors or leaks`, { skip: needPeers('qemu-img') }, async () => {
    const size = 4 * MiB;
    const path = join(dir, `${name.replace(/\W+/g, '-')}.qcow2`);
    await createQcow2(path, { size, ...options });
    const random = new Random(0xc0c0 + name.length);
    const model = new Uint8Array(size);
    const image = await Qcow2Image.open(path);
    const requests: Array<Promise<unknown>> = [];
    for (const [offset, length] of disjointRanges(random, 3 * MiB, 200)) {
      if (random.chance(0.15)) {
        requests.push(image.writeZeroes(offset, length, { mayTrim: random.chance(0.5) }));
      } else {
        const data = random.nonZeroBytes(length);
        model.set(data, offset);
        requests.push(image.write(offset, data));
      }
      if (random.chance(0.2)) requests.push(image.read(random.below(size - 4096), 4096));
    }
    // Twenty small writes racing into one unallocated cluster, past the random ones.
    const hot = 3 * MiB + 5000;
    for (let i = 0; i < 20; i++) {
      const data = new Uint8Array(100).fill(i + 1);
      model.set(data, hot + i * 100);
      requests.push(image.write(hot + i * 100, data));
    }
    await Promise.all(requests);
    assert.deepEqual(await image.read(0, size), model);
    await image.close();

    const report = await checkImage(path);
    assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
    const reopened = await Qcow2Image.open(path, { readOnly: true });
    assert.deepEqual(await reopened.read(0, size), model);
    await reopened.close();
  });
}
