/**
 * Qcow2Image reading images that QEMU wrote, checked against a model of the data built from
 * the operations (never from our own writer): a backing chain three deep, compressed clusters
 * from `qemu-img convert -c`, extended L2 entries, zstd; and writing over an internal
 * snapshot, which must leave the snapshot intact (copy-on-write of shared clusters).
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ExtentFlags } from '../../src/block/block-device.js';
import { Random } from '../../src/block/testing/pattern.js';
import { Qcow2Image } from '../../src/qcow2/image/index.js';
import { checkImage, qemuImg, qemuIo } from '../../src/qcow2/image/testing/qemu-tools.js';
import { needPeers } from '../helpers/peers.js';

const K = 1024;
const MiB = 1024 * K;
const CLUSTER = 64 * K;
const skip = needPeers('qemu-img', 'qemu-io');
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-qcow2-read-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Random qemu-io writes and zero-writes, recorded in `model` as they will land. */
function randomCommands(random: Random, model: Uint8Array, count: number, zeroes: boolean): { commands: string[]; touched: Array<[number, number, boolean]> } {
  const commands: string[] = [];
  const touched: Array<[number, number, boolean]> = [];
  for (let i = 0; i < count; i++) {
    const offset = random.below(model.length / 512) * 512;
    const length = Math.min(model.length - offset, random.between(1, 3 * CLUSTER / 512) * 512);
    if (zeroes && random.chance(0.25)) {
      commands.push(`write -z ${offset} ${length}`);
      model.fill(0, offset, offset + length);
      touched.push([offset, length, false]);
    } else {
      const pattern = 1 + random.below(255);
      commands.push(`write -P 0x${pattern.toString(16)} ${offset} ${length}`);
      model.fill(pattern, offset, offset + length);
      touched.push([offset, length, true]);
    }
  }
  return { commands, touched };
}

test('a backing chain three deep made by qemu-img create -b -F qcow2 and written by qemu-io reads as the model says', { skip }, async () => {
  const size = 6 * MiB;
  const random = new Random(303);
  const model = new Uint8Array(size);
  /** Per cluster, the layer (1 = top) a data write last allocated it in, and whether a zero-write touched it above that. */
  const dataLayer = new Array<number>(size / CLUSTER).fill(0);
  const names = ['chain-base.qcow2', 'chain-mid.qcow2', 'chain-top.qcow2'];
  await qemuImg('create', '-q', '-f', 'qcow2', join(dir, names[0]!), String(size));
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', names[0]!, '-F', 'qcow2', join(dir, names[1]!));
  await qemuImg('create', '-q', '-f', 'qcow2', '-b', names[1]!, '-F', 'qcow2', join(dir, names[2]!));
  for (const [i, name] of names.entries()) {
    const layer = names.length - i; // base is layer 3 seen from the top
    const { commands, touched } = randomCommands(random, model, 25, i > 0);
    await qemuIo(join(dir, name), commands);
    for (const [offset, length, data] of touched) {
      for (let c = Math.floor(offset / CLUSTER); c <= Math.floor((offset + length - 1) / CLUSTER); c++) dataLayer[c] = data ? layer : -1;
    }
  }
  const top = await Qcow2Image.open(join(dir, names[2]!), { readOnly: true });
  try {
    assert.deepEqual(await top.read(0, size), model);
    assert.deepEqual(
      top.backingChain.map((file) => [file.filename, file.format]),
      [
        [names[1], 'qcow2'],
        [names[0], 'qcow2'],
      ],
    );
    for (const [cluster, layer] of dataLayer.entries()) {
      if (layer === -1) continue; // a zero-write was the last to touch it: QEMU may or may not allocate
      const [extent] = await top.blockStatus(cluster * CLUSTER, CLUSTER);
      assert.equal(extent!.depth, layer, `depth of cluster ${cluster}`);
      assert.equal(extent!.flags & ExtentFlags.HOLE, layer === 0 ? ExtentFlags.HOLE : 0, `HOLE of cluster ${cluster}`);
    }
  } finally {
    await top.close();
  }
});

test('compressed clusters made by qemu-img convert -c read back as the source', { skip }, async () => {
  for (const clusterSize of [4096, CLUSTER, 2 * MiB]) {
    const source = join(dir, `convert-${clusterSize}.raw`);
    const target = join(dir, `convert-${clusterSize}.qcow2`);
    const size = 5 * MiB + 512;
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (i >>> 11) % 5 === 0 ? 0 : ((i >>> 4) * 31) & 0xff;
    data.set(new Random(clusterSize).nonZeroBytes(50 * K), MiB + 333);
    await writeFile(source, data);
    await qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, source, target);
    assert.match((await checkImage(target)).text, /"compressed-clusters": [1-9]/);
    const image = await Qcow2Image.open(target, { readOnly: true });
    assert.deepEqual(await image.read(0, size), data, `${clusterSize}-byte clusters, whole read`);
    const random = new Random(9);
    for (let i = 0; i < 40; i++) {
      const offset = random.below(size - 10000);
      const length = random.between(1, 10000);
      assert.deepEqual(await image.read(offset, length), data.subarray(offset, offset + length), `read ${offset}+${length}`);
    }
    await image.close();
  }
});

test('an image with extended L2 entries reads per subcluster, and opens read-only only', { skip }, async () => {
  const path = join(dir, 'extended.qcow2');
  const size = 4 * MiB;
  await qemuImg('create', '-q', '-f', 'raw', join(dir, 'extended-base.raw'), String(size));
  await qemuIo(join(dir, 'extended-base.raw'), ['write -P 0x99 0 4M'], 'raw');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on', '-b', 'extended-base.raw', '-F', 'raw', path);
  const model = new Uint8Array(size).fill(0x99);
  const { commands } = randomCommands(new Random(44), model, 40, true);
  await qemuIo(path, commands);
  await assert.rejects(Qcow2Image.open(path), { code: 'NOT_SUPPORTED' });
  const image = await Qcow2Image.open(path, { readOnly: true });
  assert.ok(image.info.extendedL2);
  assert.deepEqual(await image.read(0, size), model);
  for (let offset = 0; offset < size; ) {
    const extents = await image.blockStatus(offset, size - offset);
    for (const extent of extents) {
      const bytes = model.subarray(extent.offset, extent.offset + extent.length);
      if ((extent.flags & ExtentFlags.ZERO) !== 0) assert.ok(bytes.every((b) => b === 0), `ZERO extent ${JSON.stringify(extent)} holds data`);
    }
    const last = extents[extents.length - 1]!;
    offset = last.offset + last.length;
  }
  await image.close();
});

test('a zstd-compressed cluster is refused with NotSupportedError, the rest of the image reads', { skip }, async () => {
  const path = join(dir, 'zstd.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', path, '1M');
  await qemuIo(path, ['write -c -P 0x11 0 64k', 'write -P 0x22 64k 64k']);
  const image = await Qcow2Image.open(path, { readOnly: true });
  await assert.rejects(image.read(0, 10), { code: 'NOT_SUPPORTED', message: /zstd/ });
  assert.deepEqual(await image.read(CLUSTER, 4), new Uint8Array(4).fill(0x22));
  await image.close();
});

test('writing over an internal snapshot copies the shared clusters and tables; the snapshot keeps its data', { skip }, async () => {
  const path = join(dir, 'snapshot.qcow2');
  const size = 4 * MiB;
  await qemuImg('create', '-q', '-f', 'qcow2', path, String(size));
  const before = new Uint8Array(size);
  const random = new Random(55);
  await qemuIo(path, randomCommands(random, before, 30, false).commands);
  await qemuImg('snapshot', '-c', 'before', path);
  const now = before.slice();
  const image = await Qcow2Image.open(path);
  for (let i = 0; i < 40; i++) {
    const offset = random.below(size - 3 * CLUSTER);
    const length = random.between(1, 3 * CLUSTER);
    const roll = random.below(10);
    if (roll < 6) {
      const data = random.nonZeroBytes(length);
      await image.write(offset, data);
      now.set(data, offset);
    } else if (roll < 8) {
      await image.writeZeroes(offset, length, { mayTrim: roll === 7 });
      now.fill(0, offset, offset + length);
    } else {
      await image.trim(offset, length); // version 3: the range reads as zero
      now.fill(0, offset, offset + length);
    }
  }
  assert.deepEqual(await image.read(0, size), now);
  await image.close();
  const report = await checkImage(path);
  assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', '-l', 'snapshot.name=before', path, join(dir, 'snapshot-before.raw'));
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', path, join(dir, 'snapshot-now.raw'));
  assert.deepEqual(new Uint8Array(await readFile(join(dir, 'snapshot-before.raw'))), before, 'the snapshot kept its data');
  assert.deepEqual(new Uint8Array(await readFile(join(dir, 'snapshot-now.raw'))), now, 'the active layer has the new data');
});
