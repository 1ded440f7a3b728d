/**
 * The one base error class of bitback.
 *
 * Every error that bitback raises on purpose is a {@link BitbackError}: it carries a stable
 * machine-readable `code` (never reworded once released), a message of the form
 * `Cannot <action>: <reason>`, and a `retryable` flag that says whether trying the same
 * operation again can help (a dropped connection can; a corrupt image cannot).
 *
 * Layers define subclasses for their domain; the CLI maps codes to exit statuses in one place
 * (`src/cli/exit-codes.ts`). Input that comes from the wire or from a file must never reach an
 * `assert`: it is validated and reported with one of these errors.
 */

/** Stable error codes. Add new ones at the end of their group; never rename one. */
export type ErrorCode =
  // arguments and usage
  | 'INVALID_ARGUMENT'
  | 'OUT_OF_RANGE'
  | 'NOT_SUPPORTED'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  // state
  | 'BITMAP_STATE'
  | 'READ_ONLY'
  | 'CLOSED'
  | 'BUSY'
  // I/O and data
  | 'IO_ERROR'
  | 'NO_SPACE'
  | 'VERIFY_FAILED'
  | 'CORRUPT'
  | 'PROTOCOL'
  | 'INTERNAL';

/** Options accepted by every bitback error. */
export interface BitbackErrorOptions {
  /** The error that caused this one, kept for diagnostics. */
  cause?: unknown;
  /** True when repeating the same operation later may succeed. */
  retryable?: boolean;
}

/**
 * The base class of every error bitback raises deliberately.
 *
 * `action` is what was being attempted ("read block device", "parse size '12Q'") and `reason`
 * why it failed; the message is `Cannot ${action}: ${reason}`.
 */
export class BitbackError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly action: string;
  readonly reason: string;

  constructor(code: ErrorCode, action: string, reason: string, options: BitbackErrorOptions = {}) {
    super(`Cannot ${action}: ${reason}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.action = action;
    this.reason = reason;
    this.retryable = options.retryable ?? false;
  }
}

/** A caller passed a value that is malformed or makes no sense (not a range problem). */
export class InvalidArgumentError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('INVALID_ARGUMENT', action, reason, options);
  }
}

/** An offset, length or size lies outside what the object allows. */
export class OutOfRangeError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('OUT_OF_RANGE', action, reason, options);
  }
}

/** The operation is valid in general but this object or peer does not implement it. */
export class NotSupportedError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('NOT_SUPPORTED', action, reason, options);
  }
}

/** A named thing (file, bitmap, export, backup) does not exist. */
export class NotFoundError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('NOT_FOUND', action, reason, options);
  }
}

/** A write was attempted on something that is read-only. */
export class ReadOnlyError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('READ_ONLY', action, reason, options);
  }
}

/** The object was closed before or during the operation. */
export class ClosedError extends BitbackError {
  constructor(action: string, reason = 'it is closed', options?: BitbackErrorOptions) {
    super('CLOSED', action, reason, options);
  }
}

/**
 * An I/O operation failed. `errno` is the POSIX error name (`EIO`, `ENOSPC`, ...) when known,
 * so that the NBD server can report it on the wire and tests can check it.
 */
export class IoError extends BitbackError {
  readonly errno: string;

  constructor(action: string, reason: string, errno = 'EIO', options?: BitbackErrorOptions) {
    super(errno === 'ENOSPC' ? 'NO_SPACE' : 'IO_ERROR', action, reason, options);
    this.errno = errno;
  }
}

/** Data read back did not match what was expected (pattern check, digest). */
export class VerifyError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('VERIFY_FAILED', action, reason, options);
  }
}

/** Returns true when `e` is a bitback error with the given code. */
export function hasCode(e: unknown, code: ErrorCode): e is BitbackError {
  return e instanceof BitbackError && e.code === code;
}

/**
 * Turns a Node.js system error (from `fs`, `net`) into an {@link IoError} that names the action,
 * keeping its errno. Anything that is already a {@link BitbackError} is returned unchanged.
 */
export function fromSystemError(action: string, e: unknown): BitbackError {
  if (e instanceof BitbackError) return e;
  const err = e as NodeJS.ErrnoException;
  const errno = typeof err?.code === 'string' ? err.code : 'EIO';
  const reason = typeof err?.message === 'string' ? err.message : String(e);
  return new IoError(action, reason, errno, { cause: e, retryable: errno === 'EAGAIN' || errno === 'EINTR' });
}
