import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, open, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { inCI } from '../../test/helpers/peers.js';
import { ImageLockedError } from './image-lock-error.js';
import { deviceName, findLockHolders, parseProcLockLine } from './image-lock-holders.js';
import {
  ALL_PERMISSIONS,
  BlockPermission,
  ImageLock,
  LOCK_PERM_BASE,
  LOCK_SHARED_BASE,
  defaultImagePermissions,
  holdImageLock,
  lockImageFile,
  permissionNames,
  type ImagePermissions,
} from './image-lock.js';
import { nativeAddon } from './native.js';

const { CONSISTENT_READ: CR, WRITE: W, WRITE_UNCHANGED: WU, RESIZE: R } = BlockPermission;
const noAddon = nativeAddon() === undefined && !inCI ? 'native addon not built (npm install builds it)' : false;

let dir: string;
let counter = 0;
const handles: FileHandle[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-image-lock-'));
});
after(async () => {
  for (const h of handles) await h.close().catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

async function newFile(): Promise<string> {
  const path = join(dir, `image-${counter++}`);
  await writeFile(path, new Uint8Array(4096));
  return path;
}

/** A new open file description of `path` (each one is a separate lock owner). */
async function openFd(path: string, flags = 'r'): Promise<FileHandle> {
  const handle = await open(path, flags);
  handles.push(handle);
  return handle;
}

/** The QEMU lock bytes (100..103, 200..203) that some open file description holds, seen from a fresh one. */
async function lockedBytes(path: string): Promise<number[]> {
  const probe = await open(path, 'r');
  try {
    const addon = nativeAddon()!;
    const bytes: number[] = [];
    for (const base of [LOCK_PERM_BASE, LOCK_SHARED_BASE]) {
      for (let i = 0; i < 4; i++) if (addon.testLock(probe.fd, base + i, 1, 'write') !== null) bytes.push(base + i);
    }
    return bytes;
  } finally {
    await probe.close();
  }
}

const qcow2Writable = defaultImagePermissions('qcow2', { readOnly: false });
const qcow2ReadOnly = defaultImagePermissions('qcow2', { readOnly: true });

test('defaultImagePermissions() gives what qemu-img and qemu-io 7.2 lock (read off strace)', () => {
  const cases: Array<[string, ImagePermissions, ImagePermissions]> = [
    ['qcow2 writable (qemu-io, qemu-img bitmap, QEMU -blockdev)', qcow2Writable, { perm: CR | W | R, shared: CR | WU }],
    ['qcow2 read-only (map, check, compare, qemu-io -r)', qcow2ReadOnly, { perm: CR, shared: CR | WU }],
    ['qcow2 qemu-img info', defaultImagePermissions('qcow2', { readOnly: true, noIo: true }), { perm: 0, shared: CR | WU }],
    ['qcow2 -U', defaultImagePermissions('qcow2', { readOnly: true, forceShare: true }), { perm: CR, shared: ALL_PERMISSIONS }],
    ['qcow2 info -U', defaultImagePermissions('qcow2', { readOnly: true, noIo: true, forceShare: true }), { perm: 0, shared: ALL_PERMISSIONS }],
    ['raw writable (qemu-io -f raw)', defaultImagePermissions('raw', { readOnly: false }), { perm: CR | W, shared: ALL_PERMISSIONS }],
    ['raw read-only (map, compare, backing file)', defaultImagePermissions('raw', { readOnly: true }), { perm: CR, shared: ALL_PERMISSIONS }],
    ['raw convert source (BDRV_O_NO_SHARE)', defaultImagePermissions('raw', { readOnly: true, noShare: true }), { perm: CR, shared: CR | WU }],
  ];
  for (const [name, actual, expected] of cases) assert.deepEqual(actual, expected, name);
  assert.throws(() => defaultImagePermissions('qcow2', { readOnly: false, forceShare: true }), { code: 'INVALID_ARGUMENT', message: /force-share=on can only be used with read-only images/ });
  assert.equal(permissionNames(ALL_PERMISSIONS), 'consistent read, write, write unchanged, resize');
  assert.equal(permissionNames(0), '');
});

test('a writable qcow2 lock holds bytes 100, 101, 103, 201 and 203, as QEMU -blockdev does, and release frees them', { skip: noAddon }, async () => {
  const path = await newFile();
  const lock = ImageLock.create((await openFd(path)).fd, path, { writer: true });
  assert.equal(lock.active, true);
  lock.set(qcow2Writable);
  assert.deepEqual(await lockedBytes(path), [100, 101, 103, 201, 203]);
  assert.deepEqual(lock.permissions, qcow2Writable);
  lock.release();
  assert.deepEqual(await lockedBytes(path), []);
  lock.release(); // a second release does nothing
  assert.throws(() => lock.set(qcow2ReadOnly), { code: 'CLOSED' });
});

test('two opens in one process conflict as two processes do: a second writer is refused "write"', { skip: noAddon }, async () => {
  const path = await newFile();
  const first = await lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: `open ${path}` });
  await assert.rejects(lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: `open ${path} again` }), (e: unknown) => {
    assert.ok(e instanceof ImageLockedError);
    assert.equal(e.code, 'BUSY');
    assert.equal(e.permission, 'write');
    assert.equal(e.shared, false);
    assert.deepEqual(e.holders.map((h) => [h.pid, h.self]), [[process.pid, true]]);
    assert.equal(e.message, `Cannot open ${path} again: Failed to get "write" lock: another open in this process (pid ${process.pid}) does not share "write". Is another process using the image [${path}]?`);
    return true;
  });
  // The refused open left nothing behind: the bytes are the first open's only.
  assert.deepEqual(await lockedBytes(path), [100, 101, 103, 201, 203]);
  first.release();
});

test('a read-only qcow2 open of an image open for writing is refused a shared "write" lock; -U shares it', { skip: noAddon }, async () => {
  const path = await newFile();
  const writer = await lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: 'write' });
  await assert.rejects(lockImageFile((await openFd(path)).fd, path, qcow2ReadOnly, { action: 'read' }), (e: unknown) => {
    assert.ok(e instanceof ImageLockedError);
    assert.equal(e.permission, 'write');
    assert.equal(e.shared, true);
    assert.match(e.message, /^Cannot read: Failed to get shared "write" lock: another open in this process \(pid \d+\) holds "write"\. Is another process using the image \[.*\]\?$/);
    return true;
  });
  const forced = await lockImageFile((await openFd(path)).fd, path, defaultImagePermissions('qcow2', { readOnly: true, forceShare: true }), { action: 'read -U' });
  // qemu-img info takes no permission: only -U lets it see a written image.
  await assert.rejects(holdImageLock(path, defaultImagePermissions('qcow2', { readOnly: true, noIo: true }), { action: 'info' }), { code: 'BUSY', message: /Failed to get shared "write" lock/ });
  const info = await holdImageLock(path, defaultImagePermissions('qcow2', { readOnly: true, noIo: true, forceShare: true }), { action: 'info -U' });
  assert.equal(info.lock, undefined);
  await info.close();
  forced.release();
  writer.release();
});

test('read-only opens coexist, and keep writers out until the last one closes', { skip: noAddon }, async () => {
  const path = await newFile();
  const a = await lockImageFile((await openFd(path)).fd, path, qcow2ReadOnly, { action: 'a' });
  const b = await lockImageFile((await openFd(path)).fd, path, qcow2ReadOnly, { action: 'b' });
  assert.deepEqual(await lockedBytes(path), [100, 201, 203]);
  await assert.rejects(lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: 'w' }), { code: 'BUSY', message: /Failed to get "write" lock/ });
  a.release();
  await assert.rejects(lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: 'w' }), { code: 'BUSY' });
  b.release();
  const w = await lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: 'w' });
  w.release();
});

test('closing the descriptor drops the locks (they belong to the open file description)', { skip: noAddon }, async () => {
  const path = await newFile();
  const handle = await open(path, 'r+');
  await lockImageFile(handle.fd, path, qcow2Writable, { action: 'w' });
  assert.deepEqual(await lockedBytes(path), [100, 101, 103, 201, 203]);
  await handle.close();
  assert.deepEqual(await lockedBytes(path), []);
});

test('set() changes permissions: new bytes first, the ones no longer needed after, the old ones kept on a conflict', { skip: noAddon }, async () => {
  const path = await newFile();
  const lock = ImageLock.create((await openFd(path, 'r+')).fd, path, { writer: true });
  lock.set(qcow2ReadOnly);
  assert.deepEqual(await lockedBytes(path), [100, 201, 203]);
  lock.set(qcow2Writable);
  assert.deepEqual(await lockedBytes(path), [100, 101, 103, 201, 203]);
  lock.set({ perm: CR, shared: ALL_PERMISSIONS });
  assert.deepEqual(await lockedBytes(path), [100]);

  const other = await lockImageFile((await openFd(path)).fd, path, { perm: CR, shared: CR }, { action: 'other' });
  assert.throws(() => lock.set(qcow2Writable), (e: unknown) => e instanceof ImageLockedError && e.permission === 'write' && !e.shared && e.holders.length === 0);
  assert.deepEqual(lock.permissions, { perm: CR, shared: ALL_PERMISSIONS });
  other.release();
  assert.deepEqual(await lockedBytes(path), [100]);
  lock.release();
});

test('prepare() then abort() restores the bytes of before; commit() keeps only the new ones', { skip: noAddon }, async () => {
  const path = await newFile();
  const lock = ImageLock.create((await openFd(path, 'r+')).fd, path, { writer: true });
  lock.set({ perm: CR, shared: ALL_PERMISSIONS });
  const change = lock.prepare({ perm: W, shared: CR });
  // Prepared: the union of before and after is locked.
  assert.deepEqual(await lockedBytes(path), [100, 101, 201, 202, 203]);
  change.abort();
  change.commit(); // settled already: nothing happens
  assert.deepEqual(await lockedBytes(path), [100]);
  assert.deepEqual(lock.permissions, { perm: CR, shared: ALL_PERMISSIONS });
  lock.prepare({ perm: W, shared: CR }).commit();
  assert.deepEqual(await lockedBytes(path), [101, 201, 202, 203]);
  assert.deepEqual(lock.permissions, { perm: W, shared: CR });
  lock.release();
});

test('permission sets outside the four bits are refused', { skip: noAddon }, async () => {
  const path = await newFile();
  const lock = ImageLock.create((await openFd(path)).fd, path, { writer: false });
  for (const bad of [{ perm: 0x10, shared: 0 }, { perm: 0, shared: -1 }, { perm: 1.5, shared: 0 }]) {
    assert.throws(() => lock.set(bad), { code: 'INVALID_ARGUMENT' });
  }
});

test("locking 'off' takes and tests no lock", { skip: noAddon }, async () => {
  const path = await newFile();
  const writer = await lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: 'w' });
  const unlocked = await lockImageFile((await openFd(path, 'r+')).fd, path, qcow2Writable, { action: 'w2', locking: 'off' });
  assert.equal(unlocked.active, false);
  assert.deepEqual(unlocked.permissions, qcow2Writable);
  unlocked.release();
  writer.release();
});

test('raw files share everything by default: two writers coexist, a convert source (noShare) keeps writers out', { skip: noAddon }, async () => {
  const path = await newFile();
  const rawWriter = defaultImagePermissions('raw', { readOnly: false });
  const lockRaw = async (permissions: ImagePermissions, flags = 'r'): Promise<ImageLock> => lockImageFile((await openFd(path, flags)).fd, path, permissions, { action: 'open raw' });
  const a = await lockRaw(rawWriter, 'r+');
  const b = await lockRaw(rawWriter, 'r+');
  const reader = await lockRaw(defaultImagePermissions('raw', { readOnly: true }));
  const convertSource = defaultImagePermissions('raw', { readOnly: true, noShare: true });
  await assert.rejects(lockRaw(convertSource), { code: 'BUSY', message: /Failed to get shared "write" lock/ });
  a.release();
  b.release();
  const source = await lockRaw(convertSource);
  await assert.rejects(lockRaw(rawWriter, 'r+'), { code: 'BUSY', message: /Failed to get "write" lock/ });
  source.release();
  reader.release();
  assert.deepEqual(await lockedBytes(path), []);
});

test('without the native addon, writable opens fail clearly and read-only ones go on unlocked with a warning', async () => {
  const path = await newFile();
  const module = fileURLToPath(new URL('./image-lock.js', import.meta.url));
  const script = `
    const { open } = await import('node:fs/promises');
    const { defaultImagePermissions, lockImageFile } = await import(${JSON.stringify(module)});
    process.on('warning', (w) => console.log('warning', w.code));
    const path = ${JSON.stringify(path)};
    const handle = await open(path, 'r+');
    const lock = (readOnly, options = {}) => lockImageFile(handle.fd, path, defaultImagePermissions('qcow2', { readOnly }), { action: 'open ' + path, ...options });
    console.log('read-only', (await lock(true)).active);
    try { await lock(false); } catch (e) { console.log('writable', e.code, e.message); }
    console.log('off', (await lock(false, { locking: 'off' })).active);
    try { await lock(true, { locking: 'on' }); } catch (e) { console.log('on', e.code); }
    await handle.close();
  `;
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, BITBACK_NO_NATIVE: '1' }, encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout.trim().split('\n');
  // The warning event comes on a later tick: compare without order.
  assert.deepEqual(lines.filter((l) => !l.startsWith('writable')).sort(), ['off false', 'on NOT_SUPPORTED', 'read-only false', 'warning BITBACK_NO_IMAGE_LOCKS']);
  assert.match(lines.find((l) => l.startsWith('writable')) ?? '', /^writable NOT_SUPPORTED Cannot open .*: the native addon that takes QEMU's image locks is not built/);
});

test('parseProcLockLine() reads /proc/locks and fdinfo lines, skipping waiters', () => {
  assert.deepEqual(parseProcLockLine('1: OFDLCK ADVISORY  READ -1 fe:00:2146338 100 101'), {
    kind: 'OFDLCK', mode: 'read', pid: -1, device: 'fe:00', inode: '2146338', start: 100, end: 101,
  });
  assert.deepEqual(parseProcLockLine('lock:\t3: POSIX  ADVISORY  WRITE 1234 08:01:99 0 EOF'), {
    kind: 'POSIX', mode: 'write', pid: 1234, device: '08:01', inode: '99', start: 0, end: Infinity,
  });
  assert.equal(parseProcLockLine('1: -> POSIX  ADVISORY  WRITE 1234 08:01:99 0 EOF'), undefined);
  assert.equal(parseProcLockLine('garbage'), undefined);
  assert.equal(deviceName(0xfe00n), 'fe:00');
  assert.equal(deviceName((259n << 8n) | 3n), '103:03');
  assert.equal(deviceName(((0x1234n & ~0xfffn) << 32n) | ((0x1234n & 0xfffn) << 8n) | 0x56n), '1234:56');
});

test('findLockHolders() names this process for an OFD lock it holds, and nobody for a free byte', { skip: noAddon }, async () => {
  const path = await newFile();
  const lock = await lockImageFile((await openFd(path)).fd, path, qcow2ReadOnly, { action: 'r' });
  const holders = await findLockHolders(path, 100);
  assert.deepEqual(holders.map((h) => [h.pid, h.self, typeof h.command]), [[process.pid, true, 'string']]);
  assert.deepEqual(await findLockHolders(path, 101), []);
  assert.deepEqual(await findLockHolders(join(dir, 'missing'), 100), []);
  lock.release();
});
