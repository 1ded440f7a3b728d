/**
 * QEMU-compatible image locking, so that bitback and QEMU (qemu-system, qemu-img, qemu-io,
 * qemu-nbd, qemu-storage-daemon) never write one image at the same time, nor read one that the
 * other changes under it.
 *
 * QEMU 7.2's file-posix driver (block/file-posix.c `raw_apply_lock_bytes`,
 * `raw_check_lock_bytes`, `raw_handle_perm_lock`) keeps, on every image file it opens, shared
 * (F_RDLCK) open file description locks on single bytes:
 * - byte 100 + i while it holds permission i ("perm" bytes),
 * - byte 200 + i while it does not share permission i with other users ("shared" bytes),
 *
 * with the permission bits of include/block/block-common.h: consistent read 0, write 1, write
 * unchanged 2, resize 3 (BLK_PERM_ALL 0x0f: GRAPH_MOD, bit 4, is gone by 7.2; strace of
 * qemu-img 7.2 shows bytes 100..103 and 200..203 only). Taking permissions is two steps: lock the
 * bytes of the old and new permissions together, then test (F_OFD_GETLK with a write lock) the
 * shared byte of every permission wanted and the perm byte of every permission not shared;
 * a test that finds a lock of another open file description fails with
 * `Failed to get "write" lock` / `Failed to get shared "write" lock` and the hint
 * `Is another process using the image [PATH]?`, and the old bytes are restored. On success the
 * bytes no longer needed are unlocked. Closing releases everything (perm 0, share all).
 *
 * OFD locks belong to the open file description, so two opens of one image in one process
 * conflict exactly as two processes do.
 *
 * What each open holds and shares is `defaultImagePermissions` (image-permissions.ts; its
 * table was read off `strace` of qemu-img and qemu-io 7.2). This module re-exports it.
 *
 * Where locks cannot be taken:
 * - `locking: 'off'` (QEMU's `file.locking=off`): none are taken or tested.
 * - The native addon is not built (Node has no fcntl locks): with `locking: 'auto'` (the
 *   default) an open that would write fails with `NotSupportedError` (writing without the locks
 *   could corrupt an image a VM runs on), and a read-only open goes on without locks after a
 *   process warning (code BITBACK_NO_IMAGE_LOCKS): it cannot harm the image, but nothing keeps
 *   a writer from changing what it reads; `locking: 'on'` fails for both.
 * - The kernel has no OFD locks (Linux before 3.15): `'auto'` goes on without locks after the
 *   same warning (QEMU's `auto` does so silently); `'on'` fails (QEMU would fall back to POSIX
 *   locks, which a second open in the same process silently drops: bitback does not).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { ClosedError, NotFoundError, NotSupportedError, fromSystemError } from '../errors.js';
import { findLockHolders } from './image-lock-holders.js';
import { ImageLockedError } from './image-lock-error.js';
import {
  ALL_PERMISSIONS,
  BlockPermission,
  PERMISSION_NAMES,
  checkPermissions,
  type ImagePermissions,
  type LockingMode,
} from './image-permissions.js';
import { nativeAddon, type NativeAddon } from './native.js';

export {
  ALL_PERMISSIONS,
  BlockPermission,
  PERMISSION_NAMES,
  defaultImagePermissions,
  permissionNames,
  requestedPermissions,
  type ImageAccess,
  type ImageLockOptions,
  type ImagePermissions,
  type LockingMode,
} from './image-permissions.js';

/** First "perm" lock byte: byte 100 + i is locked while permission i is held. */
export const LOCK_PERM_BASE = 100;
/** First "shared" lock byte: byte 200 + i is locked while permission i is not shared. */
export const LOCK_SHARED_BASE = 200;

/** A permission change prepared by {@link ImageLock.prepare}: commit or abort it, once. */
export interface PreparedLockChange {
  /** Makes the new permissions current and unlocks the bytes no longer needed. */
  commit(): void;
  /** Restores the bytes of the permissions before the change. */
  abort(): void;
}

/**
 * The QEMU lock bytes of one open image file. Synchronous (fcntl does not block: conflicts are
 * reported, never waited for). Starts holding nothing and sharing everything; {@link set} or
 * {@link prepare} take permissions; {@link release} gives everything back and must run before
 * the descriptor is closed (a closed descriptor number may be reused by another file).
 */
export class ImageLock {
  /** The image file (for messages). */
  readonly path: string;
  readonly #fd: number;
  /** Undefined when this lock takes no locks (locking off or unavailable). */
  readonly #addon: NativeAddon | undefined;
  #current: ImagePermissions = { perm: 0, shared: ALL_PERMISSIONS };
  /** Bits whose perm / shared bytes are locked now. */
  #lockedPerm = 0;
  #lockedUnshared = 0;
  #released = false;

  private constructor(fd: number, path: string, addon: NativeAddon | undefined) {
    this.#fd = fd;
    this.path = path;
    this.#addon = addon;
  }

  /**
   * The locks of the image file open as `fd`. `writer` says whether the open will write: it
   * decides what happens when locks cannot be taken (see the module comment). Throws
   * `NotSupportedError` (naming `action`) when locking is required but impossible.
   */
  static create(fd: number, path: string, options: { locking?: LockingMode; writer: boolean; action?: string }): ImageLock {
    const locking = options.locking ?? 'auto';
    const action = options.action ?? `lock image ${path}`;
    if (locking === 'off') return new ImageLock(fd, path, undefined);
    const addon = nativeAddon();
    if (addon === undefined) {
      const reason = "the native addon that takes QEMU's image locks is not built (npm install builds it; needs a C compiler)";
      if (locking === 'on') throw new NotSupportedError(action, reason);
      if (options.writer) {
        throw new NotSupportedError(action, `${reason}; without the locks a write could corrupt an image that QEMU has open. Open it read-only, or with locking off if nothing else uses it`);
      }
      warnUnlocked(`${reason}: images are opened for reading without locks`);
      return new ImageLock(fd, path, undefined);
    }
    if (!ofdLocksWork(addon, fd, action)) {
      const reason = 'the kernel has no open file description locks (F_OFD_SETLK)';
      if (locking === 'on') throw new NotSupportedError(action, reason);
      warnUnlocked(`${reason}: images are opened without locks`);
      return new ImageLock(fd, path, undefined);
    }
    return new ImageLock(fd, path, addon);
  }

  /** True when this lock really takes and tests locks. */
  get active(): boolean {
    return this.#addon !== undefined;
  }

  /** The permissions held and shared now. */
  get permissions(): ImagePermissions {
    return { ...this.#current };
  }

  /**
   * Takes `next` at once: {@link prepare}, then commit. Throws `ImageLockedError` (holders not
   * looked up: see {@link lockImageFile}) and keeps the permissions it had.
   */
  set(next: ImagePermissions): void {
    this.prepare(next).commit();
  }

  /**
   * QEMU's prepare step (`RAW_PL_PREPARE`): locks the bytes of the current and the `next`
   * permissions together, then tests for other users: another holder of a permission `next`
   * does not share, or another user not sharing a permission `next` holds. On a conflict the
   * bytes are restored and `ImageLockedError` is thrown (code BUSY; `action` is "lock image
   * PATH"). Throws `IoError` when fcntl itself fails (another program's write lock on a byte:
   * EAGAIN), `InvalidArgumentError` for bits outside {@link ALL_PERMISSIONS}, `ClosedError`
   * after {@link release}. One change at a time: commit or abort it before the next prepare.
   */
  prepare(next: ImagePermissions): PreparedLockChange {
    checkPermissions(next);
    if (this.#released) throw new ClosedError(`lock image ${this.path}`, 'its lock was released');
    const before = this.#current;
    const settle = (commit: boolean): void => {
      if (commit) this.#current = { ...next };
      const target = commit ? next : before;
      try {
        this.#apply(target.perm, ~target.shared & ALL_PERMISSIONS, true);
      } catch {
        // Only unlocking is left to do here, which cannot conflict; QEMU warns and goes on too.
      }
    };
    let settled = false;
    const change: PreparedLockChange = {
      commit: () => {
        if (!settled) settle(true);
        settled = true;
      },
      abort: () => {
        if (!settled) settle(false);
        settled = true;
      },
    };
    const adds = (before.perm | next.perm) !== before.perm || (before.shared & next.shared) !== before.shared;
    if (this.#addon === undefined || !adds) return change;
    try {
      this.#apply(before.perm | next.perm, (~before.shared | ~next.shared) & ALL_PERMISSIONS, false);
      this.#check(next);
    } catch (e) {
      change.abort();
      throw e;
    }
    return change;
  }

  /**
   * Gives every permission back (holds nothing, shares everything) and unlocks every byte; later
   * calls do nothing, and {@link prepare} refuses. Call it before closing the descriptor.
   */
  release(): void {
    if (this.#released) return;
    this.prepare({ perm: 0, shared: ALL_PERMISSIONS }).commit();
    this.#released = true;
  }

  /**
   * Locks the perm bytes of `perm` and the shared bytes of `unshared` (each byte once); with
   * `unlock`, also unlocks the bytes that are locked but not asked for. QEMU's
   * `raw_apply_lock_bytes`.
   */
  #apply(perm: number, unshared: number, unlock: boolean): void {
    const addon = this.#addon;
    if (addon === undefined) return;
    for (let i = 0; i < PERMISSION_NAMES.length; i++) {
      const bit = 1 << i;
      this.#lockedPerm = this.#setByte(addon, LOCK_PERM_BASE + i, bit, perm, this.#lockedPerm, unlock);
      this.#lockedUnshared = this.#setByte(addon, LOCK_SHARED_BASE + i, bit, unshared, this.#lockedUnshared, unlock);
    }
  }

  /** Locks or unlocks one byte as `wanted` says; returns the new `locked` mask. */
  #setByte(addon: NativeAddon, byte: number, bit: number, wanted: number, locked: number, unlock: boolean): number {
    const action = `lock image ${this.path}`;
    if ((wanted & bit) !== 0 && (locked & bit) === 0) {
      try {
        addon.setLock(this.#fd, byte, 1, 'read');
      } catch (e) {
        throw fromSystemError(`${action} (byte ${byte})`, e);
      }
      return locked | bit;
    }
    if (unlock && (wanted & bit) === 0 && (locked & bit) !== 0) {
      try {
        addon.setLock(this.#fd, byte, 1, 'unlock');
      } catch (e) {
        throw fromSystemError(`unlock image ${this.path} (byte ${byte})`, e);
      }
      return locked & ~bit;
    }
    return locked;
  }

  /** QEMU's `raw_check_lock_bytes`: tests the bytes other users lock against `next`. */
  #check(next: ImagePermissions): void {
    const addon = this.#addon as NativeAddon;
    const action = `lock image ${this.path}`;
    const test = (byte: number): boolean => {
      try {
        return addon.testLock(this.#fd, byte, 1, 'write') !== null;
      } catch (e) {
        throw fromSystemError(`${action} (test byte ${byte})`, e);
      }
    };
    for (let i = 0; i < PERMISSION_NAMES.length; i++) {
      if ((next.perm & (1 << i)) !== 0 && test(LOCK_SHARED_BASE + i)) {
        throw new ImageLockedError(action, this.path, PERMISSION_NAMES[i] as string, false);
      }
    }
    for (let i = 0; i < PERMISSION_NAMES.length; i++) {
      if ((next.shared & (1 << i)) === 0 && test(LOCK_PERM_BASE + i)) {
        throw new ImageLockedError(action, this.path, PERMISSION_NAMES[i] as string, true);
      }
    }
  }
}

/**
 * Takes QEMU's locks for `permissions` on the image file open as `fd` (see {@link ImageLock}):
 * what the raw and qcow2 opens call. On a conflict, the processes holding the conflicting byte
 * are looked up (image-lock-holders.ts) and the `ImageLockedError` names them and `action`.
 * `writer` defaults to whether `permissions` include write, write unchanged or resize.
 */
export async function lockImageFile(
  fd: number,
  path: string,
  permissions: ImagePermissions,
  options: { locking?: LockingMode; action: string; writer?: boolean },
): Promise<ImageLock> {
  const writer = options.writer ?? (permissions.perm & (BlockPermission.WRITE | BlockPermission.WRITE_UNCHANGED | BlockPermission.RESIZE)) !== 0;
  const lock = ImageLock.create(fd, path, { ...(options.locking ? { locking: options.locking } : {}), writer, action: options.action });
  try {
    lock.set(permissions);
  } catch (e) {
    if (!(e instanceof ImageLockedError)) throw e;
    const byte = (e.shared ? LOCK_PERM_BASE : LOCK_SHARED_BASE) + PERMISSION_NAMES.indexOf(e.permission);
    throw e.with({ action: options.action, holders: await findLockHolders(path, byte) });
  }
  return lock;
}

/** An image lock on a descriptor of its own (from {@link holdImageLock}). */
export interface HeldImageLock {
  /** The lock; inactive when there was nothing to lock. */
  readonly lock: ImageLock | undefined;
  /** Releases the lock and closes its descriptor. A second call does nothing. */
  close(): Promise<void>;
}

/**
 * Opens `path` read-only only to hold QEMU's locks for `permissions` while the caller reads the
 * file by other means (qemu-img info reads the header with perm none, sharing what the format
 * shares). Permissions that hold nothing and share everything need no lock: nothing is opened.
 * Rejects like {@link lockImageFile}, and with `NotFoundError` when the file does not exist.
 */
export async function holdImageLock(path: string, permissions: ImagePermissions, options: { locking?: LockingMode; action: string }): Promise<HeldImageLock> {
  checkPermissions(permissions);
  if (permissions.perm === 0 && permissions.shared === ALL_PERMISSIONS) return { lock: undefined, close: async () => {} };
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(options.action, 'no such file', { cause: e });
    throw fromSystemError(options.action, e);
  }
  try {
    const lock = await lockImageFile(handle.fd, path, permissions, { ...options, writer: false });
    let closed = false;
    return {
      lock,
      close: async () => {
        if (closed) return;
        closed = true;
        lock.release();
        await handle.close();
      },
    };
  } catch (e) {
    await handle.close().catch(() => {});
    throw e;
  }
}

/** Whether F_OFD_GETLK works (once per process, as QEMU's `qemu_has_ofd_lock`). */
let ofdLocks: boolean | undefined;

function ofdLocksWork(addon: NativeAddon, fd: number, action: string): boolean {
  if (ofdLocks === undefined) {
    try {
      addon.testLock(fd, 0, 1, 'read');
      ofdLocks = true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EINVAL') throw fromSystemError(action, e);
      ofdLocks = false;
    }
  }
  return ofdLocks;
}

let warned = false;

function warnUnlocked(message: string): void {
  if (warned) return;
  warned = true;
  process.emitWarning(`bitback: ${message}; other programs are not kept from writing them meanwhile`, { code: 'BITBACK_NO_IMAGE_LOCKS' });
}
