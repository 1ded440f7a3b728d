/**
 * Errors of the bitmap layer.
 */
import { BitbackError, type BitbackErrorOptions } from '../errors.js';

/**
 * A bitmap is in the wrong state for the operation: busy (frozen by a job, exported),
 * inconsistent, or without the successor that `abdicate`/`reclaim` need. The reasons use
 * QEMU's wording where QEMU has one, e.g.
 * `Bitmap 'b0' is currently in use by another operation and cannot be used`.
 */
export class BitmapStateError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('BITMAP_STATE', action, reason, options);
  }
}

/**
 * Bytes that should hold a serialized bitmap (the compact form) are malformed. `field` names
 * the part that is wrong (`magic`, `version`, `granularity_bits`, `runs`, `crc32`, ...), as in
 * `docs/bitmap-compact-format.md`.
 */
export class BitmapFormatError extends BitbackError {
  /** The field of the format that failed validation. */
  readonly field: string;

  constructor(field: string, reason: string, action = 'decode compact bitmap', options?: BitbackErrorOptions) {
    super('CORRUPT', action, `${field}: ${reason}`, options);
    this.field = field;
  }
}
