/**
 * Images whose metadata lies: each must give a typed error that names the image and the field,
 * never a crash, a hang, or a write into metadata.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { BitbackError, NotFoundError } from '../../errors.js';
import { createQcow2 } from '../create.js';
import { Qcow2FormatError, decodeImageHeader, encodeImageHeader } from '../format/index.js';
import { Qcow2Image } from './image.js';

const MiB = 1024 * 1024;
const CLUSTER = 65536;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-corrupt-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A fresh 4 MiB image with one data cluster written at guest offset 0; returns its path. */
async function imageWithData(name: string): Promise<string> {
  const path = join(dir, name);
  await createQcow2(path, { size: 4 * MiB });
  const image = await Qcow2Image.open(path);
  await image.write(0, new Uint8Array(CLUSTER).fill(0x42));
  await image.close();
  return path;
}

/** Changes bytes of the file at `path` through a DataView of the whole file. */
async function patch(path: string, edit: (view: DataView) => void): Promise<void> {
  const bytes = new Uint8Array(await readFile(path));
  edit(new DataView(bytes.buffer));
  await writeFile(path, bytes);
}

/** Offsets read straight from the header, as the spec places them. */
function header(view: DataView): { l1: number; refcountTable: number } {
  return { l1: Number(view.getBigUint64(40)), refcountTable: Number(view.getBigUint64(48)) };
}

/** Expects `attempt` to reject with a BitbackError of `code` whose field is `field` and whose message names `path`. */
async function expectTyped(attempt: () => Promise<unknown>, code: string, field: string | undefined, path: string): Promise<BitbackError> {
  try {
    await attempt();
  } catch (e) {
    assert.ok(e instanceof BitbackError, `expected a BitbackError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (field !== undefined) assert.equal((e as BitbackError & { field?: string }).field, field, e.message);
    assert.ok(e.message.includes(path), `the message names the image: ${e.message}`);
    return e;
  }
  assert.fail('expected a rejection');
}

test('an L1 table offset past the end of the file is a format error naming header.l1_table_offset', async () => {
  const path = await imageWithData('l1-past-eof.qcow2');
  await patch(path, (view) => view.setBigUint64(40, BigInt(1024 * MiB)));
  await expectTyped(() => Qcow2Image.open(path), 'CORRUPT', 'header.l1_table_offset', path);
});

test('an L2 entry with an unaligned host offset is a format error naming the entry, on read and write', async () => {
  const path = await imageWithData('l2-unaligned.qcow2');
  await patch(path, (view) => {
    const l2 = Number(view.getBigUint64(header(view).l1) & 0x00fffffffffffe00n);
    view.setBigUint64(l2, view.getBigUint64(l2) + 512n);
  });
  const image = await Qcow2Image.open(path);
  try {
    const error = await expectTyped(() => image.read(0, 4096), 'CORRUPT', 'l1[0].l2[0]', path);
    assert.ok(error instanceof Qcow2FormatError);
    await expectTyped(() => image.write(100, new Uint8Array(10)), 'CORRUPT', 'l1[0].l2[0]', path);
    // The rest of the disk is still usable.
    assert.deepEqual(await image.read(CLUSTER, 16), new Uint8Array(16));
  } finally {
    await image.close();
  }
});

test('a refcount table offset of 0 is a format error naming header.refcount_table_offset', async () => {
  const path = await imageWithData('reftable-zero.qcow2');
  await patch(path, (view) => view.setBigUint64(48, 0n));
  await expectTyped(() => Qcow2Image.open(path), 'CORRUPT', 'header.refcount_table_offset', path);
});

test('cluster_bits 30 is refused naming header.cluster_bits', async () => {
  const path = await imageWithData('cluster-bits.qcow2');
  await patch(path, (view) => view.setUint32(20, 30));
  // Valid qcow2 but beyond QEMU's 2 MiB limit: unsupported rather than corrupt.
  await expectTyped(() => Qcow2Image.open(path), 'NOT_SUPPORTED', 'header.cluster_bits', path);
});

test('a backing chain that loops (a -> b -> a) is a format error naming the chain', async () => {
  const a = join(dir, 'loop-a.qcow2');
  const b = join(dir, 'loop-b.qcow2');
  await createQcow2(a, { size: MiB });
  await createQcow2(b, { backingFile: 'loop-a.qcow2', backingFormat: 'qcow2' });
  const first = new Uint8Array(await readFile(a)).subarray(0, CLUSTER);
  const decoded = decodeImageHeader(first);
  const rewritten = encodeImageHeader({ ...decoded, backingFile: 'loop-b.qcow2', extensions: { ...decoded.extensions, backingFormat: 'qcow2' } });
  await patch(a, (view) => new Uint8Array(view.buffer).set(rewritten, 0));
  const error = await expectTyped(() => Qcow2Image.open(a), 'CORRUPT', 'header.backing_file', a);
  assert.match(error.message, /loop-a\.qcow2 -> .*loop-b\.qcow2 -> .*loop-a\.qcow2/);
  // With the chain not followed, the image itself opens.
  const alone = await Qcow2Image.open(a, { backing: 'none', readOnly: true });
  await alone.close();
});

test('a missing backing file is a NotFoundError naming it', async () => {
  const base = join(dir, 'gone-base.qcow2');
  const top = join(dir, 'gone-top.qcow2');
  await createQcow2(base, { size: MiB });
  await createQcow2(top, { backingFile: 'gone-base.qcow2' });
  await rm(base);
  const error = await expectTyped(() => Qcow2Image.open(top), 'NOT_FOUND', undefined, top);
  assert.ok(error instanceof NotFoundError);
  assert.ok(error.message.includes('gone-base.qcow2'), error.message);
});

test('an L2 entry that points into the L1 table never lets a write land there', async () => {
  const path = await imageWithData('l2-into-l1.qcow2');
  let l1 = 0;
  await patch(path, (view) => {
    l1 = header(view).l1;
    const l2 = Number(view.getBigUint64(l1) & 0x00fffffffffffe00n);
    view.setBigUint64(l2, 0x8000000000000000n | BigInt(l1));
  });
  const before = new Uint8Array(await readFile(path)).slice(l1, l1 + 8);
  const image = await Qcow2Image.open(path);
  try {
    await expectTyped(() => image.write(0, new Uint8Array(512).fill(7)), 'CORRUPT', 'l1[0].l2[0]', path);
  } finally {
    await image.close();
  }
  assert.deepEqual(new Uint8Array(await readFile(path)).slice(l1, l1 + 8), before, 'the L1 table is unchanged');
});

test('a refcount block that overlaps the L1 table is a format error when opening for writing', async () => {
  const path = await imageWithData('refblock-on-l1.qcow2');
  await patch(path, (view) => {
    const { l1, refcountTable } = header(view);
    view.setBigUint64(refcountTable, BigInt(l1));
  });
  await expectTyped(() => Qcow2Image.open(path), 'CORRUPT', 'refcount_table[0]', path);
  const readOnly = await Qcow2Image.open(path, { readOnly: true });
  assert.deepEqual(await readOnly.read(0, 4), new Uint8Array(4).fill(0x42));
  await readOnly.close();
});

test('an absurd l1_size is refused before anything is allocated for it', async () => {
  const path = await imageWithData('l1-size.qcow2');
  await patch(path, (view) => view.setUint32(36, 0xffffffff));
  const error = await expectTyped(() => Qcow2Image.open(path), 'NOT_SUPPORTED', 'header.l1_size', path);
  assert.match(error.message, /32 MiB/);
});
