/**
 * Limits, option and result types of {@link DirtyBitmap}, and the argument checks they imply.
 */
import { InvalidArgumentError } from '../errors.js';
import type { DirtyBitmap } from './dirty-bitmap.js';

/** Smallest granularity, in bytes (QEMU: 512). */
export const MIN_GRANULARITY = 512;
/** Largest granularity, in bytes (QEMU: 2 GiB, 31 granularity bits in qcow2). */
export const MAX_GRANULARITY = 2 ** 31;
/** Most granules a bitmap may have; larger bitmaps are refused rather than allocated. */
export const MAX_GRANULES = 2 ** 32;
/** Longest bitmap name, in UTF-8 bytes (QEMU's BDRV_BITMAP_MAX_NAME_SIZE). */
export const MAX_NAME_BYTES = 1023;

/** Options of {@link DirtyBitmap}'s constructor. */
export interface DirtyBitmapOptions {
  /** Size of the disk in bytes: a non-negative safe integer, any alignment. */
  size: number;
  /** Bytes per bit: a power of two from 512 B to 2 GiB. */
  granularity: number;
  /** Non-empty name of at most 1023 UTF-8 bytes; undefined for an anonymous bitmap. */
  name?: string;
  /** Stored in the image when it is closed (qcow2 bitmaps extension). Default false. */
  persistent?: boolean;
  /** Records writes (`recordWrite`). Default true, or false for an inconsistent bitmap. */
  enabled?: boolean;
  /** Loaded from an image where it was left in use: never trusted (see `markInconsistent`). */
  inconsistent?: boolean;
}

/** One run of `extents()`: bytes `[offset, offset + length)` are all dirty or all clean. */
export interface BitmapExtent {
  /** Start in bytes. */
  offset: number;
  /** Length in bytes, > 0. */
  length: number;
  dirty: boolean;
}

/** One run of `dirtyExtents()`: bytes `[offset, offset + length)` are all dirty. */
export interface DirtyExtent {
  /** Start in bytes. */
  offset: number;
  /** Length in bytes, > 0. */
  length: number;
}

/** Options of {@link DirtyBitmap.copy}. */
export interface CopyOptions {
  /** Whether the copy records writes. Default true. */
  enabled?: boolean;
  /** Default false. */
  persistent?: boolean;
}

/** How `assertUsable` is going to use the bitmap. */
export type BitmapUse = 'modify' | 'read';

/** True for a power of two from 512 to 2^31. */
export function isValidGranularity(granularity: number): boolean {
  return (
    Number.isInteger(granularity) &&
    granularity >= MIN_GRANULARITY &&
    granularity <= MAX_GRANULARITY &&
    Number.isInteger(Math.log2(granularity))
  );
}

/**
 * Throws InvalidArgumentError unless `name` is a non-empty string of at most
 * {@link MAX_NAME_BYTES} UTF-8 bytes (QEMU's limits for bitmap names).
 */
export function checkName(action: string, name: string): void {
  if (typeof name !== 'string' || name === '') throw new InvalidArgumentError(action, 'a bitmap name must be a non-empty string');
  const bytes = new TextEncoder().encode(name).length;
  if (bytes > MAX_NAME_BYTES) {
    throw new InvalidArgumentError(action, `the name is ${bytes} bytes long, more than ${MAX_NAME_BYTES}`);
  }
}

/**
 * The `maxLength` of `extents()`: undefined means unlimited (Infinity); otherwise it must be a
 * positive safe integer (bytes), else InvalidArgumentError.
 */
export function checkMaxLength(maxLength: number | undefined): number {
  if (maxLength === undefined) return Infinity;
  if (!Number.isSafeInteger(maxLength) || maxLength <= 0) {
    throw new InvalidArgumentError('list extents of a dirty bitmap', `maxLength ${maxLength} is not a positive integer`);
  }
  return maxLength;
}
