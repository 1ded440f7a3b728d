/**
 * Qcow2Image against QEMU: the same random sequence of writes, zero-writes and trims applied
 * by us and by qemu-io (to an image qemu-img created) must give images that `qemu-img compare`
 * calls identical, both ways, and ours must pass `qemu-img check` with no errors and no leaks.
 * Also: images whose refcount table has to grow, and compressed images we write.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Random } from '../../src/block/testing/pattern.js';
import { createQcow2, type CreateQcow2Options } from '../../src/qcow2/create.js';
import { Qcow2Image } from '../../src/qcow2/image/index.js';
import { checkImage, compareImages, qemuImg, qemuIo } from '../../src/qcow2/image/testing/qemu-tools.js';
import { needPeers } from '../helpers/peers.js';

const K = 1024;
const MiB = 1024 * K;
const skip = needPeers('qemu-img', 'qemu-io');
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-qcow2-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** One request of a sequence; `pattern` is the byte a write fills its range with (qemu-io `-P`). */
interface Op {
  kind: 'write' | 'zero' | 'zero-unmap' | 'trim';
  offset: number;
  length: number;
  pattern: number;
}

/** `count` requests, starting and ending near cluster and sector boundaries, up to three clusters long. */
function randomOps(random: Random, size: number, cluster: number, count: number): Op[] {
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const unit = random.chance(0.5) ? cluster : 512;
    const offset = Math.min(size - 1, random.below(Math.floor(size / unit)) * unit + (random.chance(0.3) ? random.below(unit) : 0));
    const length = Math.max(1, Math.min(size - offset, random.chance(0.5) ? random.between(1, 3) * cluster : random.between(1, 3 * cluster)));
    const roll = random.below(100);
    const kind = roll < 55 ? 'write' : roll < 70 ? 'zero' : roll < 85 ? 'zero-unmap' : 'trim';
    ops.push({ kind, offset, length, pattern: 1 + random.below(255) });
  }
  return ops;
}

async function applyOurs(image: Qcow2Image, ops: Op[]): Promise<void> {
  for (const op of ops) {
    if (op.kind === 'write') await image.write(op.offset, new Uint8Array(op.length).fill(op.pattern));
    else if (op.kind === 'trim') await image.trim(op.offset, op.length);
    else await image.writeZeroes(op.offset, op.length, { mayTrim: op.kind === 'zero-unmap' });
  }
}

/**
 * The qemu-io commands for `ops`. A trim becomes `discard` where QEMU's discard gives the same
 * content as ours: always on version 2 (both leave partial clusters alone), and on version 3
 * when it covers whole clusters; otherwise (our v3 trim zeroes the partial ends) `write -z -u`.
 */
function qemuCommands(ops: Op[], cluster: number, size: number, version: number): string[] {
  return ops.map((op) => {
    const range = `${op.offset} ${op.length}`;
    switch (op.kind) {
      case 'write':
        return `write -P 0x${op.pattern.toString(16)} ${range}`;
      case 'zero':
        return `write -z ${range}`;
      case 'zero-unmap':
        return `write -z -u ${range}`;
      case 'trim': {
        const aligned = op.offset % cluster === 0 && ((op.offset + op.length) % cluster === 0 || op.offset + op.length === size);
        return version === 2 || aligned ? `discard ${range}` : `write -z -u ${range}`;
      }
    }
  });
}

interface Scenario {
  name: string;
  size: number;
  options: CreateQcow2Options;
  /** qemu-img create options for the same image. */
  qemuOptions: string[];
  /** A raw backing file with data, shared by both images. */
  rawBacking?: boolean;
}

const scenarios: Scenario[] = [
  { name: 'version 3, 64 KiB clusters', size: 4 * MiB, options: {}, qemuOptions: [] },
  { name: 'version 2, 64 KiB clusters', size: 4 * MiB, options: { compat: '0.10' }, qemuOptions: ['-o', 'compat=0.10'] },
  { name: '512-byte clusters, 64-bit refcounts', size: 3 * MiB, options: { clusterSize: 512, refcountBits: 64 }, qemuOptions: ['-o', 'cluster_size=512,refcount_bits=64'] },
  { name: '1 MiB clusters', size: 12 * MiB, options: { clusterSize: MiB }, qemuOptions: ['-o', 'cluster_size=1M'] },
  { name: 'version 3 over a raw backing file with data', size: 4 * MiB, options: { backingFormat: 'raw' }, qemuOptions: ['-F', 'raw'], rawBacking: true },
];

for (const scenario of scenarios) {
  test(`qemu-img compare finds our image and qemu-io's identical after the same random sequence (${scenario.name})`, { skip }, async () => {
    const slug = scenario.name.replace(/\W+/g, '-');
    const ours = join(dir, `${slug}-ours.qcow2`);
    const theirs = join(dir, `${slug}-theirs.qcow2`);
    const random = new Random(0x1234 + scenario.size + (scenario.options.clusterSize ?? 0));
    const backing: CreateQcow2Options = {};
    const qemuBacking: string[] = [];
    if (scenario.rawBacking === true) {
      await writeFile(join(dir, `${slug}-base.raw`), random.nonZeroBytes(scenario.size - 100 * K)); // shorter than the disk
      backing.backingFile = `${slug}-base.raw`;
      qemuBacking.push('-b', `${slug}-base.raw`);
    }
    await createQcow2(ours, { size: scenario.size, ...scenario.options, ...backing });
    await qemuImg('create', '-q', '-f', 'qcow2', ...scenario.qemuOptions, ...qemuBacking, theirs, String(scenario.size));
    const cluster = scenario.options.clusterSize ?? 64 * K;
    const version = scenario.options.compat === '0.10' ? 2 : 3;
    for (let round = 0; round < 2; round++) {
      const ops = randomOps(random, scenario.size, cluster, 50);
      const image = await Qcow2Image.open(ours);
      await applyOurs(image, ops);
      await image.close();
      await qemuIo(theirs, qemuCommands(ops, cluster, scenario.size, version));
      assert.equal(await compareImages(ours, 'qcow2', theirs, 'qcow2'), undefined, `round ${round}: ours vs theirs`);
      assert.equal(await compareImages(theirs, 'qcow2', ours, 'qcow2'), undefined, `round ${round}: theirs vs ours`);
      const report = await checkImage(ours);
      assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
    }
  });
}

test('an image written far past the first refcount block and table passes qemu-img check and reads like the data', { skip }, async () => {
  const path = join(dir, 'growth.qcow2');
  const model = join(dir, 'growth.raw');
  const size = 10 * MiB;
  // 512-byte clusters, 64-bit refcounts: one block counts 32 KiB of file, the first table 2 MiB.
  await createQcow2(path, { size, clusterSize: 512, refcountBits: 64 });
  const random = new Random(77);
  const data = new Uint8Array(size);
  const image = await Qcow2Image.open(path, { l2CacheBytes: 8 * K, refcountCacheBytes: 8 * K });
  for (let i = 0; i < 60; i++) {
    const offset = random.below(size - 400 * K);
    const chunk = random.nonZeroBytes(random.between(1, 400 * K));
    await image.write(offset, chunk);
    data.set(chunk, offset);
  }
  await image.close();
  await writeFile(model, data);
  const report = await checkImage(path);
  assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
  assert.equal(await compareImages(path, 'qcow2', model, 'raw'), undefined);
});

test('compressed clusters we write are read by QEMU and pass qemu-img check', { skip }, async () => {
  for (const clusterSize of [512, 64 * K, 2 * MiB]) {
    const path = join(dir, `compressed-${clusterSize}.qcow2`);
    const model = join(dir, `compressed-${clusterSize}.raw`);
    const size = 6 * MiB;
    await createQcow2(path, { size, clusterSize });
    const data = new Uint8Array(size);
    const random = new Random(clusterSize);
    for (let i = 0; i < size; i++) data[i] = (i >>> 10) % 3 === 0 ? 0 : (i * 7) >>> 8;
    data.set(random.nonZeroBytes(100 * K), 2 * MiB); // incompressible: stored plainly
    const image = await Qcow2Image.open(path, { compress: true });
    await image.write(0, data);
    await image.write(77777, data.subarray(0, 3000)); // partial: copy-on-write from compressed clusters
    data.copyWithin(77777, 0, 3000);
    await image.close();
    await writeFile(model, data);
    const report = await checkImage(path);
    assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
    assert.match(report.text, /"compressed-clusters": [1-9]/);
    assert.equal(await compareImages(path, 'qcow2', model, 'raw'), undefined, `${clusterSize}-byte clusters`);
  }
});
