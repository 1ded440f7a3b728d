/**
 * What the server sends when a device call fails: the NBD error value (proto.md "Error values")
 * and a message for the structured error chunk.
 */
import { BitbackError, IoError } from '../../errors.js';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_ENOTSUP, NBD_EPERM, NBD_ESHUTDOWN, nbdErrnoFor } from '../protocol/index.js';

/** An NBD error value and the text that explains it. */
export interface NbdFailure {
  /** One of the NBD_E* values. */
  errno: number;
  message: string;
}

/**
 * Maps an error thrown by a `BlockDevice` to an NBD error value: `IoError.errno` through
 * `nbdErrnoFor`, read-only → EPERM, out of range and invalid arguments → EINVAL, not supported →
 * ENOTSUP (what QEMU answers for EOPNOTSUPP, and what NBD_CMD_FLAG_FAST_ZERO needs), a closed
 * device → ESHUTDOWN (the server is going away), no space → ENOSPC, anything else → EIO.
 */
export function nbdFailureOf(e: unknown): NbdFailure {
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof IoError) return { errno: nbdErrnoFor(e.errno), message };
  if (!(e instanceof BitbackError)) return { errno: NBD_EIO, message };
  switch (e.code) {
    case 'READ_ONLY':
      return { errno: NBD_EPERM, message };
    case 'OUT_OF_RANGE':
    case 'INVALID_ARGUMENT':
      return { errno: NBD_EINVAL, message };
    case 'NOT_SUPPORTED':
      return { errno: NBD_ENOTSUP, message };
    case 'CLOSED':
      return { errno: NBD_ESHUTDOWN, message };
    case 'NO_SPACE':
      return { errno: NBD_ENOSPC, message };
    default:
      return { errno: NBD_EIO, message };
  }
}
