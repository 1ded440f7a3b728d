/**
 * Internal snapshots against the real qemu-img, both ways: what `qemu-img snapshot -c` makes,
 * bitback lists, applies and deletes; what bitback makes, qemu-img lists, applies and deletes.
 * Content is checked with `qemu-img compare` against raw copies taken with `qemu-img convert`
 * at snapshot time, and `qemu-img check` must find no error and no leak after every step.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Random } from '../../src/block/testing/pattern.js';
import { Qcow2Image } from '../../src/qcow2/image/index.js';
import { checkImage, compareImages, qemuImg, qemuIo, run } from '../../src/qcow2/image/testing/qemu-tools.js';
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots, snapshotInfo } from '../../src/qcow2/snapshots/index.js';
import { runBitback } from '../helpers/cli.js';
import { needPeers } from '../helpers/peers.js';

const skip = needPeers('qemu-img', 'qemu-io');
const K = 1024;
let dir: string;
let serial = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-snapshots-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function scratch(name: string): string {
  return join(dir, `${serial++}-${name}`);
}

/** qemu-img check finds nothing at all (no corruption, no leak, no error). */
async function assertClean(path: string, step: string): Promise<void> {
  const report = await checkImage(path);
  assert.deepEqual([report.corruptions, report.leaks, report.checkErrors], [0, 0, 0], `${step}: ${report.text}`);
}

/** A raw copy of the image's current content, taken by qemu-img. */
async function rawCopy(path: string, name: string): Promise<string> {
  const raw = scratch(`${name}.raw`);
  await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', path, raw);
  return raw;
}

async function assertContent(path: string, raw: string, step: string): Promise<void> {
  assert.equal(await compareImages(path, 'qcow2', raw, 'raw'), undefined, step);
}

interface QemuSnapshotInfo {
  id: string;
  name: string;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  'vm-state-size': number;
  icount?: number;
}

async function qemuSnapshots(path: string): Promise<QemuSnapshotInfo[]> {
  const info = JSON.parse(await qemuImg('info', '--output=json', '-f', 'qcow2', path)) as { snapshots?: QemuSnapshotInfo[] };
  return info.snapshots ?? [];
}

/** Writes through bitback's own engine, as `bitback io` does. */
async function bitbackWrite(path: string, offset: number, data: Uint8Array): Promise<void> {
  const image = await Qcow2Image.open(path);
  try {
    await image.write(offset, data);
  } finally {
    await image.close();
  }
}

/** The image configurations every round trip runs on. */
const CONFIGS: Array<{ name: string; create: string[]; backing?: boolean }> = [
  { name: '64 KiB clusters', create: [] },
  { name: '512-byte clusters', create: ['-o', 'cluster_size=512'] },
  { name: 'version 2', create: ['-o', 'compat=0.10'] },
  { name: 'a backing file', create: [], backing: true },
];

async function makeImage(config: (typeof CONFIGS)[number]): Promise<string> {
  const path = scratch('disk.qcow2');
  if (config.backing === true) {
    const base = scratch('base.qcow2');
    await qemuImg('create', '-q', '-f', 'qcow2', base, '4M');
    await qemuIo(base, ['write -P 0x11 0 4M']);
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', path, '4M');
  } else {
    await qemuImg('create', '-q', '-f', 'qcow2', ...config.create, path, '4M');
  }
  // Plain, compressed and zeroed clusters.
  await qemuIo(path, ['write -P 0x21 0 200k', 'write -c -P 0x22 1M 64k', 'write -c -P 0x23 1088k 64k', 'write -z 3M 128k']);
  return path;
}

for (const config of CONFIGS) {
  test(`snapshots made by qemu-img are listed, applied and deleted by bitback (${config.name})`, { skip }, async () => {
    const path = await makeImage(config);
    await qemuImg('snapshot', '-c', 'one', path);
    const rawOne = await rawCopy(path, 'one');
    await qemuIo(path, ['write -P 0x31 64k 300k', 'write -P 0x32 1040k 8k']);
    await qemuImg('snapshot', '-c', 'two', path);
    const rawTwo = await rawCopy(path, 'two');
    await qemuIo(path, ['write -P 0x41 0 4k', 'write -z 1M 64k']);
    await qemuImg('snapshot', '-c', 'three', path);

    const ours = await listSnapshots(path);
    assert.deepEqual(ours.map(snapshotInfo), await qemuSnapshots(path), 'same ids, names, dates, sizes');

    await applySnapshot(path, 'one');
    await assertClean(path, 'after applying one');
    await assertContent(path, rawOne, 'content of snapshot one');
    await deleteSnapshot(path, 'two'); // the middle one
    await assertClean(path, 'after deleting two');
    assert.deepEqual((await qemuSnapshots(path)).map((s) => s.name), ['one', 'three']);
    await applySnapshot(path, '3');
    await assertClean(path, 'after applying three');
    await applySnapshot(path, 'one');
    await assertContent(path, rawOne, 'one again');
    await deleteSnapshot(path, 'one');
    await deleteSnapshot(path, 'three');
    await assertClean(path, 'after deleting all');
    await assertContent(path, rawOne, 'the active layer after deleting every snapshot');
    assert.notEqual(await compareImages(path, 'qcow2', rawTwo, 'raw'), undefined, 'the contents differ between snapshots');
  });

  test(`snapshots made by bitback are listed, applied and deleted by qemu-img (${config.name})`, { skip }, async () => {
    const path = await makeImage(config);
    const one = await createSnapshot(path, 'one');
    await assertClean(path, 'after create');
    const rawOne = await rawCopy(path, 'one');
    const random = new Random(serial);
    await bitbackWrite(path, 60 * K, random.nonZeroBytes(100 * K)); // over shared clusters
    await bitbackWrite(path, 1024 * K + 512, random.nonZeroBytes(1000)); // into a compressed cluster
    await qemuIo(path, ['write -P 0x51 2M 64k']);
    await assertClean(path, 'after writes over the snapshot');
    const two = await createSnapshot(path, 'two');
    const rawTwo = await rawCopy(path, 'two');
    await createSnapshot(path, 'three');
    await bitbackWrite(path, 0, random.nonZeroBytes(8 * K));

    assert.deepEqual(await qemuSnapshots(path), (await listSnapshots(path)).map(snapshotInfo));
    assert.deepEqual([one.id, two.id], ['1', '2']);
    const listing = await qemuImg('snapshot', '-l', path);
    assert.match(listing, /^1 +one +0 B /m);
    assert.match(listing, /^3 +three +0 B /m);

    await qemuImg('snapshot', '-a', 'one', path);
    await assertClean(path, 'after qemu-img applied one');
    await assertContent(path, rawOne, 'content of snapshot one');
    await qemuImg('snapshot', '-d', 'two', path);
    await assertClean(path, 'after qemu-img deleted two');
    assert.deepEqual((await listSnapshots(path)).map((s) => s.name), ['one', 'three']);
    await qemuImg('snapshot', '-a', 'three', path);
    await qemuImg('snapshot', '-d', 'one', path);
    await qemuImg('snapshot', '-d', 'three', path);
    await assertClean(path, 'after qemu-img deleted all');
    await assertContent(path, rawTwo, 'three had the content of two');
  });
}

test('writes through bitback after a snapshot leave it intact, with the image opened once for many writes', { skip }, async () => {
  const path = scratch('writes.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', path, '8M');
  await qemuIo(path, ['write -P 0x61 0 1M', 'write -c -P 0x62 2M 64k']);
  await createSnapshot(path, 'frozen');
  const raw = await rawCopy(path, 'frozen');
  const image = await Qcow2Image.open(path);
  const random = new Random(11);
  for (let i = 0; i < 40; i++) await image.write(random.below(8 * 1024 * K - 16 * K), random.nonZeroBytes(1 + random.below(16 * K)));
  await image.writeZeroes(100 * K, 300 * K, { mayTrim: true });
  await image.trim(2 * 1024 * K, 64 * K);
  await image.close();
  await assertClean(path, 'after the writes');
  assert.notEqual(await compareImages(path, 'qcow2', raw, 'raw'), undefined);
  await qemuImg('snapshot', '-a', 'frozen', path);
  await assertContent(path, raw, 'the snapshot after the writes');
  await assertClean(path, 'after apply');
});

test('refcount_bits=1: qemu-img and bitback both refuse a snapshot of an image with data, bitback without a leak', { skip }, async () => {
  const ours = scratch('rc1-ours.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'refcount_bits=1', ours, '1M');
  await qemuIo(ours, ['write -P 1 0 64k']);
  const theirs = scratch('rc1-theirs.qcow2');
  await qemuImg('convert', '-O', 'qcow2', '-o', 'refcount_bits=1', ours, theirs);
  const qemu = await run('qemu-img', ['snapshot', '-c', 's', theirs]);
  assert.notEqual(qemu.code, 0, 'qemu-img refuses it');
  await assert.rejects(createSnapshot(ours, 's'), /1-bit refcounts hold at most 1/);
  await assertClean(ours, 'bitback changed nothing');
  assert.deepEqual(await qemuSnapshots(ours), []);
});

test('persistent bitmaps are kept as they are by create, apply and delete', { skip }, async () => {
  const path = scratch('bitmaps.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', path, '4M');
  await qemuIo(path, ['write -P 1 0 128k']);
  await qemuImg('bitmap', '--add', path, 'b0');
  const bitmapsOf = async (): Promise<unknown> => (JSON.parse(await qemuImg('info', '--output=json', path)) as { 'format-specific': { data: { bitmaps?: unknown } } })['format-specific'].data.bitmaps;
  const before = await bitmapsOf();
  assert.ok(Array.isArray(before) && before.length === 1);
  await createSnapshot(path, 's');
  await applySnapshot(path, 's');
  await deleteSnapshot(path, 's');
  assert.deepEqual(await bitmapsOf(), before);
  await assertClean(path, 'with the bitmap');
});

test('bitback snapshot prints what qemu-img snapshot -l and qemu-img info print, and maps errors to exit statuses', { skip }, async () => {
  const path = scratch('cli.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', path, '1M');
  await qemuImg('snapshot', '-c', 'from-qemu', path);
  let result = await runBitback(['snapshot', '-c', 'flag-form', path]);
  assert.equal(result.status, 0, result.stderr);
  result = await runBitback(['snapshot', 'create', path, 'verb-form']);
  assert.equal(result.status, 0, result.stderr);
  result = await runBitback(['snapshot', '-l', path]);
  assert.equal(result.stdout, await qemuImg('snapshot', '-l', path));
  result = await runBitback(['snapshot', 'list', '--json', path]);
  assert.deepEqual(JSON.parse(result.stdout), await qemuSnapshots(path));
  result = await runBitback(['snapshot', 'create', path, 'flag-form']);
  assert.equal(result.status, 6, 'a taken name');
  assert.match(result.stderr, /already has a snapshot named 'flag-form'/);
  result = await runBitback(['snapshot', '-a', 'nope', path]);
  assert.equal(result.status, 3, 'an unknown snapshot');
  result = await runBitback(['snapshot', 'apply', path]);
  assert.equal(result.status, 2, 'a missing NAME');
  result = await runBitback(['snapshot', '-d', '2', path]);
  assert.equal(result.status, 0, result.stderr);
  result = await runBitback(['snapshot', 'delete', path, 'verb-form']);
  assert.equal(result.status, 0, result.stderr);
  assert.deepEqual((await qemuSnapshots(path)).map((s) => s.name), ['from-qemu']);
  await assertClean(path, 'after the CLI');
  assert.ok((await stat(path)).size > 0);
});
