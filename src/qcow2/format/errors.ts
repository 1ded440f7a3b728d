/**
 * Errors of the qcow2 format codecs.
 *
 * - {@link Qcow2FormatError} (code `CORRUPT`): the bytes break the qcow2 spec.
 * - {@link Qcow2UnsupportedError} (code `NOT_SUPPORTED`, a `NotSupportedError`): the bytes are
 *   valid qcow2 but use something this codec (or QEMU) does not handle: encryption, an unknown
 *   incompatible feature, a size beyond QEMU's limits or beyond 2^53.
 * - `InvalidArgumentError`: an encoder was given a value that cannot be written.
 *
 * Both decode errors carry the `field` they are about, named like the spec names it
 * (`header.cluster_bits`, `l2[17]`, `bitmap_directory[0].name`), and the message names the field
 * and the offending value: `Cannot decode qcow2 header.cluster_bits: 30 is outside 9..21`.
 */
import { BitbackError, InvalidArgumentError, NotSupportedError, type BitbackErrorOptions } from '../../errors.js';

/** The bytes of a qcow2 structure violate the spec: the image is corrupt. */
export class Qcow2FormatError extends BitbackError {
  /** The field the problem is about (`header.l1_size`, `l2[3]`, ...). */
  readonly field: string;

  constructor(field: string, reason: string, options?: BitbackErrorOptions) {
    super('CORRUPT', `decode qcow2 ${field}`, reason, options);
    this.field = field;
  }
}

/** The bytes are valid qcow2 but use a feature or a size that is not supported. */
export class Qcow2UnsupportedError extends NotSupportedError {
  /** The field the problem is about. */
  readonly field: string;

  constructor(field: string, reason: string, options?: BitbackErrorOptions) {
    super(`decode qcow2 ${field}`, reason, options);
    this.field = field;
  }
}

/**
 * Which way a shared validation runs: on bytes read from an image (`decode`: errors are
 * {@link Qcow2FormatError} / {@link Qcow2UnsupportedError}) or on a value about to be written
 * (`encode`: errors are `InvalidArgumentError`, because the caller passed it).
 * @internal
 */
export type Direction = 'decode' | 'encode';

/**
 * The error for a problem found in `field` while running in `direction`. `unsupported` marks
 * valid-but-unsupported values (decoded as {@link Qcow2UnsupportedError}).
 * @internal
 */
export function problem(direction: Direction, field: string, reason: string, unsupported = false): BitbackError {
  if (direction === 'encode') return new InvalidArgumentError(`encode qcow2 ${field}`, reason);
  return unsupported ? new Qcow2UnsupportedError(field, reason) : new Qcow2FormatError(field, reason);
}

/**
 * The error for a structure that claims more bytes than were given.
 * @internal
 */
export function truncated(field: string, needed: number, available: number): Qcow2FormatError {
  return new Qcow2FormatError(field, `needs ${needed} bytes but only ${available} are available`);
}
