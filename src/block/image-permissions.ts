/**
 * QEMU 7.2's block permissions (include/block/block-common.h BLK_PERM_*; GRAPH_MOD, bit 4, is gone
 * by 7.2) and what each open of an image holds and shares, as qemu-img and qemu-io take them.
 * The lock bytes that carry them between processes are image-lock.ts.
 */
import { InvalidArgumentError } from '../errors.js';

/** QEMU 7.2's block permissions (BLK_PERM_*, include/block/block-common.h) as bits. */
export const BlockPermission = {
  /** Reads return consistent data (no one else changes it under the reader). */
  CONSISTENT_READ: 0x01,
  WRITE: 0x02,
  /** Writes that do not change what a reader sees (e.g. copy-on-read, a mirror's target). */
  WRITE_UNCHANGED: 0x04,
  RESIZE: 0x08,
} as const;

/** Every permission (BLK_PERM_ALL of QEMU 7.2). */
export const ALL_PERMISSIONS = 0x0f;

/** QEMU's names of the permissions, by bit number (block.c `bdrv_perm_names`). */
export const PERMISSION_NAMES: readonly string[] = ['consistent read', 'write', 'write unchanged', 'resize'];

/** Permissions held and shared, as {@link BlockPermission} bits. */
export interface ImagePermissions {
  /** What this user does (reads consistently, writes, resizes). */
  perm: number;
  /** What other users may do at the same time. */
  shared: number;
}

/** Like QEMU's file-posix `locking` option. */
export type LockingMode = 'auto' | 'on' | 'off';

/** How an image open takes the locks (the `lock` option of the raw and qcow2 opens). */
export interface ImageLockOptions {
  /** `'auto'` (default), `'on'` or `'off'`: what happens where locks cannot be taken (image-lock.ts). */
  locking?: LockingMode;
  /**
   * qemu-img `-U` / QEMU `force-share=on`: share every permission, so that an image another
   * process writes can still be read (its data may then be inconsistent). Read-only opens only.
   * The held permissions are still locked, as QEMU does. Default false.
   */
  forceShare?: boolean;
  /**
   * Do not let others write or resize even a raw file while it is open (qemu-img convert's
   * source, BDRV_O_NO_SHARE). qcow2 files never share those anyway. Default false.
   */
  noShare?: boolean;
  /**
   * Hold and share exactly these instead of the defaults (for the engine's block graph, which
   * computes them from its edges); `forceShare` and `noShare` are then ignored.
   */
  permissions?: ImagePermissions;
}

/** What an open of an image file does, for {@link defaultImagePermissions}. */
export interface ImageAccess {
  /** Opened read-only. */
  readOnly: boolean;
  forceShare?: boolean;
  noShare?: boolean;
  /** No guest data is read, only metadata (qemu-img info, BDRV_O_NO_IO): no permission is held. */
  noIo?: boolean;
}

/**
 * The permissions qemu-img and qemu-io 7.2 take on the file of an image (checked with strace):
 *
 * | file of | perm | shared |
 * |---|---|---|
 * | qcow2, read-only (info, map, check, compare, convert source, qemu-io -r) | consistent read | consistent read, write unchanged |
 * | qcow2, writable (qemu-io, bitmap, check -r, snapshot -c, a QEMU `-blockdev`) | consistent read, write, resize | consistent read, write unchanged |
 * | qcow2, qemu-img info | none | consistent read, write unchanged |
 * | raw, read-only (map, compare, qemu-io -r, a backing file) | consistent read | all |
 * | raw, writable (qemu-io -f raw, convert target) | consistent read, write | all |
 * | raw, qemu-img info | none | all (no lock at all) |
 * | raw, convert source (`noShare`) | consistent read | consistent read, write unchanged |
 * | any, `-U` (`forceShare`) | as above | all |
 *
 * A qcow2 file never shares write and resize (block.c `bdrv_default_perms_for_storage`: the
 * format's metadata must stay consistent), even when opened read-only. `forceShare` on a
 * writable open throws `InvalidArgumentError` ("force-share=on can only be used with read-only
 * images", as QEMU).
 */
export function defaultImagePermissions(format: 'raw' | 'qcow2', access: ImageAccess): ImagePermissions {
  if (access.forceShare === true && !access.readOnly) {
    throw new InvalidArgumentError('open image with force-share', 'force-share=on can only be used with read-only images');
  }
  const { CONSISTENT_READ, WRITE, WRITE_UNCHANGED, RESIZE } = BlockPermission;
  let perm = access.noIo === true ? 0 : CONSISTENT_READ;
  if (!access.readOnly) perm |= format === 'qcow2' ? WRITE | RESIZE : WRITE;
  let shared = format === 'qcow2' || access.noShare === true ? CONSISTENT_READ | WRITE_UNCHANGED : ALL_PERMISSIONS;
  if (access.forceShare === true) shared = ALL_PERMISSIONS;
  return { perm, shared };
}

/** QEMU's names of the bits of `perm`, comma-separated ("consistent read, write"). */
export function permissionNames(perm: number): string {
  return PERMISSION_NAMES.filter((_, i) => (perm & (1 << i)) !== 0).join(', ');
}

/**
 * The permissions an open asks for: `options.permissions` when given, else
 * {@link defaultImagePermissions} for the format and access.
 */
export function requestedPermissions(format: 'raw' | 'qcow2', readOnly: boolean, options: ImageLockOptions = {}): ImagePermissions {
  if (options.permissions !== undefined) return options.permissions;
  return defaultImagePermissions(format, {
    readOnly,
    ...(options.forceShare ? { forceShare: true } : {}),
    ...(options.noShare ? { noShare: true } : {}),
  });
}

/** Throws `InvalidArgumentError` unless `perm` and `shared` are sets of the four permission bits. */
export function checkPermissions(p: ImagePermissions): void {
  for (const [name, value] of [['perm', p?.perm], ['shared', p?.shared]] as const) {
    if (!Number.isInteger(value) || (value as number) < 0 || ((value as number) & ~ALL_PERMISSIONS) !== 0) {
      throw new InvalidArgumentError('set image permissions', `${name} ${String(value)} is not a set of permission bits (0..${ALL_PERMISSIONS})`);
    }
  }
}
