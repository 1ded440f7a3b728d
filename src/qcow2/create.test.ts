/**
 * createQcow2: the layout qemu-img create makes (byte for byte where QEMU's own layout is
 * deterministic), what qemu-img check and info say of our images, and the refusals.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { needPeers } from '../../test/helpers/peers.js';
import { ExtentFlags } from '../block/block-device.js';
import { createQcow2, type CreateQcow2Options } from './create.js';
import { decodeImageHeader } from './format/index.js';
import { Qcow2Image } from './image/index.js';
import { checkImage, qemuImg } from './image/testing/qemu-tools.js';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-create-'));
  await writeFile(join(dir, 'base.raw'), new Uint8Array(3 * MiB + 1000));
  await createQcow2(join(dir, 'base.qcow2'), { size: 10 * MiB });
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Our options and the qemu-img create arguments that should make the same file. */
const twins: Array<[string, CreateQcow2Options, string[]]> = [
  ['defaults', { size: 10 * MiB }, ['10M']],
  ['compat 0.10', { size: 10 * MiB, compat: '0.10' }, ['-o', 'compat=0.10', '10M']],
  ['512-byte clusters, 64-bit refcounts', { size: 100 * MiB, clusterSize: 512, refcountBits: 64 }, ['-o', 'cluster_size=512,refcount_bits=64', '100M']],
  ['4 KiB clusters, 1-bit refcounts, odd size', { size: 1000, clusterSize: 4096, refcountBits: 1 }, ['-o', 'cluster_size=4096,refcount_bits=1', '1000']],
  ['1 MiB clusters', { size: 3 * 1024 * MiB, clusterSize: MiB }, ['-o', 'cluster_size=1M', '3G']],
  ['2 MiB clusters', { size: 5 * 1024 * MiB, clusterSize: 2 * MiB }, ['-o', 'cluster_size=2M', '5G']],
  ['empty', { size: 0 }, ['0']],
  ['metadata preallocation', { size: 3 * MiB, preallocation: 'metadata' }, ['-o', 'preallocation=metadata', '3M']],
  ['a raw backing file, size taken from it', { backingFile: 'base.raw', backingFormat: 'raw' }, ['-b', 'base.raw', '-F', 'raw']],
  ['a qcow2 backing file, format probed', { backingFile: 'base.qcow2' }, ['-b', 'base.qcow2', '-F', 'qcow2']],
  ['version 2 over a backing file', { backingFile: 'base.qcow2', compat: '0.10', size: 20 * MiB }, ['-b', 'base.qcow2', '-F', 'qcow2', '-o', 'compat=0.10', '20M']],
];

for (const [name, options, qemuArgs] of twins) {
  test(`createQcow2 makes the same file as qemu-img create: ${name}`, { skip: needPeers('qemu-img') }, async () => {
    const ours = join(dir, `twin-${name.replace(/\W+/g, '-')}.qcow2`);
    const theirs = join(dir, `qemu-${name.replace(/\W+/g, '-')}.qcow2`);
    await createQcow2(ours, options);
    const sizeArgument = options.size === undefined ? [] : qemuArgs.slice(-1);
    const optionArguments = options.size === undefined ? qemuArgs : qemuArgs.slice(0, -1);
    await qemuImg('create', '-q', '-f', 'qcow2', ...optionArguments, theirs, ...sizeArgument);
    assert.deepEqual(new Uint8Array(await readFile(ours)), new Uint8Array(await readFile(theirs)));
  });
}

test('an image we create passes qemu-img check and info shows its size, cluster size and backing file', { skip: needPeers('qemu-img') }, async () => {
  const cases: Array<[string, CreateQcow2Options, number]> = [
    ['info-1m.qcow2', { size: 64 * MiB + 512, clusterSize: MiB }, MiB],
    ['info-512.qcow2', { size: 7 * MiB, clusterSize: 512 }, 512],
    ['info-backed.qcow2', { backingFile: 'base.raw', backingFormat: 'raw', clusterSize: 4096 }, 4096],
    ['info-prealloc.qcow2', { size: 9 * MiB + 4096, clusterSize: 4096, refcountBits: 2, preallocation: 'metadata' }, 4096],
  ];
  for (const [file, options, clusterSize] of cases) {
    const path = join(dir, file);
    await createQcow2(path, options);
    const report = await checkImage(path);
    assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
    const info = JSON.parse(await qemuImg('info', '--output=json', path)) as Record<string, unknown>;
    const expectedSize = options.size === undefined ? Math.ceil((3 * MiB + 1000) / 512) * 512 : options.size;
    assert.equal(info['virtual-size'], expectedSize, file);
    assert.equal(info['cluster-size'], clusterSize, file);
    assert.equal(info['backing-filename'], options.backingFile, file);
    if (options.backingFile !== undefined) assert.equal(info['backing-filename-format'], 'raw', file);
  }
});

test('the header says what was asked for, with the size rounded up to 512 bytes', async () => {
  const path = join(dir, 'header.qcow2');
  await createQcow2(path, { size: 1_000_001, clusterSize: 8192, refcountBits: 8 });
  const { header, extensions, backingFile } = decodeImageHeader(new Uint8Array(await readFile(path)).subarray(0, 8192));
  assert.equal(header.version, 3);
  assert.equal(header.size, 1_000_448);
  assert.equal(header.clusterBits, 13);
  assert.equal(header.refcountOrder, 3);
  assert.equal(header.l1Size, 1); // 1024 entries of 8 KiB map 8 MiB per table
  assert.equal(backingFile, undefined);
  assert.equal(extensions.featureNames?.length, 8);
  const image = await Qcow2Image.open(path);
  assert.equal(image.size, 1_000_448);
  assert.deepEqual(await image.blockStatus(0, image.size), [{ offset: 0, length: image.size, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 0 }]);
  await image.close();
});

test('metadata preallocation allocates every cluster, reading as zero', async () => {
  const path = join(dir, 'prealloc.qcow2');
  await createQcow2(path, { size: 5 * MiB + 512, clusterSize: 4096, preallocation: 'metadata' });
  const image = await Qcow2Image.open(path);
  assert.deepEqual(await image.blockStatus(0, image.size), [{ offset: 0, length: image.size, flags: 0, depth: 1 }]);
  assert.ok((await image.read(0, image.size)).every((b) => b === 0));
  const before = (await stat(path)).size;
  await image.write(4096 * 100 + 7, new Uint8Array(5000).fill(3));
  await image.close();
  assert.equal((await stat(path)).size, before, 'writes go into the preallocated clusters');
});

test('createQcow2 refuses an existing file, bad options and a missing backing file', async () => {
  const path = join(dir, 'exists.qcow2');
  await createQcow2(path, { size: MiB });
  await assert.rejects(createQcow2(path, { size: MiB }), { code: 'ALREADY_EXISTS' });
  const bad: CreateQcow2Options[] = [
    {},
    { size: -1 },
    { size: 1.5 },
    { size: MiB, clusterSize: 256 },
    { size: MiB, clusterSize: 4 * MiB },
    { size: MiB, clusterSize: 3000 },
    { size: MiB, refcountBits: 128 },
    { size: MiB, refcountBits: 3 },
    { size: MiB, compat: '0.10', refcountBits: 8 },
    { size: MiB, backingFormat: 'raw' },
    { backingFile: 'base.raw', preallocation: 'metadata' },
    { size: 2 ** 50, clusterSize: 512 }, // needs an L1 table beyond QEMU's 32 MiB
  ];
  for (const [i, options] of bad.entries()) {
    await assert.rejects(createQcow2(join(dir, `bad-${i}.qcow2`), options), { code: 'INVALID_ARGUMENT' }, JSON.stringify(options));
    await assert.rejects(stat(join(dir, `bad-${i}.qcow2`)), { code: 'ENOENT' }, 'nothing is left behind');
  }
  await assert.rejects(createQcow2(join(dir, 'orphan.qcow2'), { backingFile: 'nowhere.qcow2' }), { code: 'NOT_FOUND' });
  await assert.rejects(createQcow2(join(dir, 'orphan2.qcow2'), { backingFile: 'nowhere.raw', backingFormat: 'raw' }), { code: 'NOT_FOUND' });
});
