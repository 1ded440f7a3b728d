/**
 * Errors of `qcow2/check/`: a problem that stops the check (or a repair) before it can produce
 * a result. Everything the check can count is a finding instead (see `findings.ts`).
 */
import { BitbackError, type BitbackErrorOptions, type ErrorCode } from '../../errors.js';

/**
 * The image could not be checked: its header or a table the check depends on is unreadable,
 * unsupported, or too big. Names the image (`path`) and the qcow2 field the problem is about;
 * `code` is `CORRUPT` for a broken image, `NOT_SUPPORTED` for a valid one this check does not
 * handle (encryption, an unknown incompatible feature, more than 2^31 clusters), and the code of
 * the cause otherwise.
 */
export class Qcow2CheckError extends BitbackError {
  /** The image file as given to `checkQcow2`. */
  readonly path: string;
  /** The field the problem is about (`header.l1_size`, `snapshot[3]`, ...). */
  readonly field: string;

  constructor(code: ErrorCode, path: string, field: string, reason: string, options?: BitbackErrorOptions) {
    super(code, `check qcow2 image ${path}`, `${field}: ${reason}`, options);
    this.path = path;
    this.field = field;
  }
}

/**
 * A repair was refused before anything was written: the image has damage that this repair
 * mode does not fix (code `NOT_SUPPORTED`). The message says what and which `qemu-img` command
 * can do it.
 */
export class Qcow2RepairRefusedError extends BitbackError {
  /** The image file as given to `checkQcow2`. */
  readonly path: string;

  constructor(path: string, reason: string, options?: BitbackErrorOptions) {
    super('NOT_SUPPORTED', `repair qcow2 image ${path}`, reason, options);
    this.path = path;
  }
}

/**
 * Wraps an error of the format codecs (which carry a `field` but do not know the file) into a
 * {@link Qcow2CheckError} naming the image, keeping its code. Other errors pass through.
 * @internal
 */
export function inImage(path: string, e: unknown): unknown {
  if (e instanceof Qcow2CheckError || !(e instanceof BitbackError)) return e;
  const field = (e as { field?: unknown }).field;
  return new Qcow2CheckError(e.code, path, typeof field === 'string' ? field : 'image', e.reason, { cause: e });
}
