/**
 * Internal snapshots on images bitback makes itself, checked with bitback's own reader and
 * `checkQcow2` (no peers needed; the interop with qemu-img is in test/e2e/qcow2-snapshots*).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { BitbackError } from '../../errors.js';
import { Random } from '../../block/testing/pattern.js';
import { checkQcow2 } from '../check/index.js';
import { createQcow2, type CreateQcow2Options } from '../create.js';
import { Qcow2Image } from '../image/index.js';
import { SnapshotExistsError, applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from './index.js';

const K = 1024;
let dir: string;
let serial = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-snapshots-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function newImage(options: Partial<CreateQcow2Options> = {}): Promise<string> {
  const path = join(dir, `image-${serial++}.qcow2`);
  await createQcow2(path, { size: 2 * 1024 * K, clusterSize: 4 * K, ...options });
  return path;
}

async function write(path: string, offset: number, data: Uint8Array, compressed = false): Promise<void> {
  const image = await Qcow2Image.open(path);
  try {
    if (compressed) await image.writeCompressed(offset, data);
    else await image.write(offset, data);
  } finally {
    await image.close();
  }
}

async function content(path: string): Promise<Uint8Array> {
  const image = await Qcow2Image.open(path, { readOnly: true });
  try {
    return await image.read(0, image.size);
  } finally {
    await image.close();
  }
}

async function assertConsistent(path: string, step: string): Promise<void> {
  const result = await checkQcow2(path);
  assert.equal(result.corruptions + result['check-errors'] + result.leaks, 0, `${step}: ${JSON.stringify(result.findings.slice(0, 5))}`);
}

async function rejectsWith(promise: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => e instanceof BitbackError && e.code === code && pattern.test(e.message));
}

test('createSnapshot() numbers snapshots as QEMU does and lists them in table order', async () => {
  const path = await newImage();
  await write(path, 0, new Random(1).nonZeroBytes(20 * K));
  const before = Math.floor(Date.now() / 1000);
  const a = await createSnapshot(path, 'first');
  const b = await createSnapshot(path, 'second', { id: '7' });
  const c = await createSnapshot(path, 'third');
  assert.deepEqual([a.id, b.id, c.id], ['1', '7', '8']);
  const listed = await listSnapshots(path);
  assert.deepEqual(listed.map((s) => [s.id, s.name]), [['1', 'first'], ['7', 'second'], ['8', 'third']]);
  for (const s of listed) {
    assert.ok(s.dateSeconds >= before && s.dateSeconds <= Math.ceil(Date.now() / 1000), `date ${s.dateSeconds}`);
    assert.equal(s.dateNanoseconds % 1000, 0, 'microsecond precision, as QEMU stores it');
    assert.equal(s.diskSize, 2 * 1024 * K);
    assert.equal(s.vmStateSize, 0);
    assert.equal(s.icount, 0n);
  }
  await assertConsistent(path, 'after three snapshots');
});

test('a snapshot keeps its content while the active layer is rewritten, and applySnapshot() brings it back', async () => {
  const path = await newImage();
  const random = new Random(2);
  await write(path, 0, random.nonZeroBytes(64 * K));
  await write(path, 1024 * K, random.nonZeroBytes(8 * K));
  const atSnapshot = await content(path);
  await createSnapshot(path, 'base');
  await assertConsistent(path, 'after create');
  await write(path, 4 * K, random.nonZeroBytes(10 * K)); // over shared clusters and a shared L2 table
  await write(path, 1500 * K, random.nonZeroBytes(4 * K)); // new allocation
  const changed = await content(path);
  assert.notDeepEqual(changed, atSnapshot);
  await assertConsistent(path, 'after writes');
  await applySnapshot(path, 'base');
  await assertConsistent(path, 'after apply');
  assert.deepEqual(await content(path), atSnapshot);
  // Applying keeps the snapshot: change and apply again.
  await write(path, 0, random.nonZeroBytes(4 * K));
  await applySnapshot(path, '1');
  assert.deepEqual(await content(path), atSnapshot);
  await assertConsistent(path, 'after the second apply');
});

test('deleteSnapshot() in the middle keeps the others and gives clusters back', async () => {
  const path = await newImage();
  const random = new Random(3);
  const states: Uint8Array[] = [];
  for (let i = 0; i < 3; i++) {
    await write(path, i * 16 * K, random.nonZeroBytes(24 * K));
    states.push(await content(path));
    await createSnapshot(path, `s${i}`);
  }
  await deleteSnapshot(path, 's1');
  await assertConsistent(path, 'after deleting the middle snapshot');
  assert.deepEqual((await listSnapshots(path)).map((s) => s.name), ['s0', 's2']);
  await applySnapshot(path, 's0');
  assert.deepEqual(await content(path), states[0]);
  await applySnapshot(path, 's2');
  assert.deepEqual(await content(path), states[2]);
  await deleteSnapshot(path, 's0');
  await deleteSnapshot(path, '3'); // by id
  assert.deepEqual(await listSnapshots(path), []);
  await assertConsistent(path, 'after deleting every snapshot');
  assert.deepEqual(await content(path), states[2]);
});

test('after the last snapshot is deleted every cluster is owned again (writes go in place)', async () => {
  const path = await newImage();
  await write(path, 0, new Random(4).nonZeroBytes(32 * K));
  await createSnapshot(path, 'x');
  await deleteSnapshot(path, 'x');
  const size = (await stat(path)).size;
  await write(path, 0, new Random(5).nonZeroBytes(32 * K));
  assert.equal((await stat(path)).size, size, 'an owned cluster is rewritten in place, so the file does not grow');
  await assertConsistent(path, 'after writing');
});

test('compressed clusters are shared with a snapshot and counted once per entry', async () => {
  const path = await newImage();
  for (let i = 0; i < 4; i++) await write(path, i * 4 * K, new Uint8Array(4 * K).fill(i + 1), true);
  const atSnapshot = await content(path);
  await createSnapshot(path, 'c');
  await assertConsistent(path, 'after create');
  await write(path, 4 * K + 100, new Uint8Array(10).fill(9));
  await applySnapshot(path, 'c');
  assert.deepEqual(await content(path), atSnapshot);
  await deleteSnapshot(path, 'c');
  await assertConsistent(path, 'after delete');
});

test('version 2 images and 512-byte clusters take snapshots too', async () => {
  for (const options of [{ compat: '0.10' as const }, { clusterSize: 512 }]) {
    const path = await newImage(options);
    await write(path, 0, new Random(6).nonZeroBytes(40 * K));
    const atSnapshot = await content(path);
    await createSnapshot(path, 'v');
    await write(path, 1000, new Random(7).nonZeroBytes(3 * K));
    await assertConsistent(path, `${JSON.stringify(options)} after writes`);
    await applySnapshot(path, 'v');
    assert.deepEqual(await content(path), atSnapshot);
    await deleteSnapshot(path, 'v');
    await assertConsistent(path, `${JSON.stringify(options)} after delete`);
  }
});

test('createSnapshot() refuses a name or id that is taken, and an empty name', async () => {
  const path = await newImage();
  await createSnapshot(path, 'dup');
  await assert.rejects(createSnapshot(path, 'dup'), (e: unknown) => e instanceof SnapshotExistsError && e.code === 'ALREADY_EXISTS' && /already has a snapshot named 'dup'/.test(e.message));
  await rejectsWith(createSnapshot(path, 'other', { id: '1' }), 'ALREADY_EXISTS', /id '1'/);
  await rejectsWith(createSnapshot(path, ''), 'INVALID_ARGUMENT', /name is empty/);
  assert.equal((await listSnapshots(path)).length, 1);
});

test('applySnapshot() and deleteSnapshot() refuse an unknown snapshot', async () => {
  const path = await newImage();
  await createSnapshot(path, 'only');
  await rejectsWith(applySnapshot(path, 'nope'), 'NOT_FOUND', /no snapshot with the id or name 'nope'/);
  await rejectsWith(deleteSnapshot(path, '2'), 'NOT_FOUND', /'2'/);
});

test('1-bit refcounts cannot share a cluster: createSnapshot() refuses and changes nothing', async () => {
  const path = await newImage({ refcountBits: 1 });
  await write(path, 0, new Random(8).nonZeroBytes(8 * K));
  const size = (await stat(path)).size;
  await rejectsWith(createSnapshot(path, 'no'), 'OUT_OF_RANGE', /1-bit refcounts hold at most 1/);
  assert.equal((await stat(path)).size, size);
  await assertConsistent(path, 'after the refusal');
  // An empty image shares nothing: that works, as with QEMU.
  const empty = await newImage({ refcountBits: 1 });
  await createSnapshot(empty, 'fine');
  await assertConsistent(empty, 'empty image with a snapshot');
});

test('createSnapshot() refuses a file it cannot write', async (t) => {
  const path = await newImage();
  const { chmod } = await import('node:fs/promises');
  await chmod(path, 0o444);
  if (process.getuid?.() !== 0) {
    await rejectsWith(createSnapshot(path, 'ro'), 'READ_ONLY', /not writable/);
    return;
  }
  // Root may write any file whatever its mode; an immutable file (chattr +i) it may not.
  const { spawnSync } = await import('node:child_process');
  const set = spawnSync('chattr', ['+i', path], { encoding: 'utf8' });
  if (set.status !== 0) {
    t.skip(`running as root and chattr +i is not available here: ${set.stderr || set.error?.message}`);
    return;
  }
  try {
    await rejectsWith(createSnapshot(path, 'ro'), 'READ_ONLY', /not writable/);
  } finally {
    spawnSync('chattr', ['-i', path]);
  }
});

test('listSnapshots() of a missing file is NotFound', async () => {
  await rejectsWith(listSnapshots(join(dir, 'missing.qcow2')), 'NOT_FOUND', /missing\.qcow2/);
});
