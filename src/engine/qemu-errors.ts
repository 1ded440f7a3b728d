/**
 * QEMU's wording for the engine's errors, and the one place where engine errors become QMP
 * errors: a handler throws `QmpError` to pick a class, or any `BitbackError` whose `reason` is
 * already QEMU's text (it becomes a `GenericError` with that text, as most QEMU errors are).
 */
import { BitbackError, InvalidArgumentError } from '../errors.js';
import { QmpError } from '../qmp/protocol/errors.js';

/** The C library's `strerror` texts for the errnos a host file can fail with. */
const STRERROR: Record<string, string> = {
  ENOENT: 'No such file or directory',
  EACCES: 'Permission denied',
  EPERM: 'Operation not permitted',
  EROFS: 'Read-only file system',
  EISDIR: 'Is a directory',
  ENOTDIR: 'Not a directory',
  ENOSPC: 'No space left on device',
  EIO: 'Input/output error',
  EAGAIN: 'Resource temporarily unavailable',
  EINVAL: 'Invalid argument',
  ELOOP: 'Too many levels of symbolic links',
  ENAMETOOLONG: 'File name too long',
  EMFILE: 'Too many open files',
  ENOTSUP: 'Operation not supported',
  ETIMEDOUT: 'Connection timed out',
};

/** `strerror(errno)` for an errno name (`ENOENT`), or the name itself when unknown. */
export function strerror(errno: string): string {
  const known = STRERROR[errno];
  if (known !== undefined) return known;
  // Errno numbers the system does not name travel as `E<n>`; glibc prints them so.
  const number = /^E(\d+)$/.exec(errno);
  return number !== null ? `Unknown error ${number[1]}` : errno;
}

/** The errno name of a Node.js system error, or EIO. */
export function errnoOf(e: unknown): string {
  const code = (e as { code?: unknown; errno?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('E')) return code;
  const errno = (e as { errno?: unknown } | null)?.errno;
  return typeof errno === 'string' ? errno : 'EIO';
}

/** QEMU's "Could not open 'PATH': REASON" for a failed open of a host file. */
export function couldNotOpen(path: string, e: unknown): InvalidArgumentError {
  return new InvalidArgumentError(`open '${path}'`, `Could not open '${path}': ${strerror(errnoOf(e))}`, { cause: e });
}

/** A QEMU `GenericError` with `desc`. */
export function genericError(desc: string): QmpError {
  return new QmpError('GenericError', desc);
}

/**
 * The QMP error for anything an engine handler threw: `QmpError` as it is; another
 * `BitbackError` as a GenericError carrying its reason (the engine writes QEMU's texts as
 * reasons); anything else unchanged (the server reports it as an internal error).
 */
export function toQmpError(e: unknown): unknown {
  if (e instanceof QmpError || !(e instanceof BitbackError)) return e;
  return new QmpError('GenericError', e.reason, { cause: e });
}
