/**
 * The one place where error codes become process exit statuses. Scripts rely on these numbers:
 * never change one, only add.
 *
 * | status | meaning |
 * |---|---|
 * | 0 | success |
 * | 1 | a check failed: data differs, pattern mismatch, verification failed |
 * | 2 | wrong usage: bad argument, option or value, out-of-range request |
 * | 3 | something named does not exist |
 * | 4 | I/O error or no space left |
 * | 5 | corrupt data or protocol violation |
 * | 6 | wrong state: busy, read-only, closed, bitmap in use or inconsistent, already exists |
 * | 7 | not supported |
 * | 70 | internal error (a bug: please report it) |
 */
import { BitbackError, type ErrorCode } from '../errors.js';

const STATUS: Record<ErrorCode, number> = {
  VERIFY_FAILED: 1,
  INVALID_ARGUMENT: 2,
  OUT_OF_RANGE: 2,
  NOT_FOUND: 3,
  IO_ERROR: 4,
  NO_SPACE: 4,
  CORRUPT: 5,
  PROTOCOL: 5,
  BITMAP_STATE: 6,
  READ_ONLY: 6,
  CLOSED: 6,
  BUSY: 6,
  ALREADY_EXISTS: 6,
  NOT_SUPPORTED: 7,
  INTERNAL: 70,
};

/** Exit status for an internal error (EX_SOFTWARE). */
export const EXIT_INTERNAL = 70;

/** The exit status for an error thrown by a command. Unknown errors are internal errors. */
export function exitStatusFor(e: unknown): number {
  return e instanceof BitbackError ? STATUS[e.code] : EXIT_INTERNAL;
}
