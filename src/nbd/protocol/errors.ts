/**
 * Errors of the NBD layer and the mapping between POSIX errno names (as `IoError` carries them)
 * and NBD error values (proto.md "Error values").
 */
import { BitbackError, IoError, type BitbackErrorOptions, type ErrorCode } from '../../errors.js';
import {
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOMEM,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  replyTypeName,
} from './constants.js';

/**
 * The peer sent bytes that break the protocol (bad magic, impossible length, unexpected reply).
 * Never retryable on the same connection; the connection is dropped.
 */
export class NbdProtocolError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('PROTOCOL', action, reason, options);
  }
}

/**
 * The server answered an option with an error reply during negotiation (export not found, TLS
 * required, option unsupported...). `replyType` is the NBD_REP_ERR_* value; `serverMessage` the
 * text the server attached, if any.
 */
export class NbdOptionError extends BitbackError {
  readonly replyType: number;
  readonly serverMessage: string;

  constructor(action: string, replyType: number, serverMessage: string, options?: BitbackErrorOptions) {
    const detail = serverMessage === '' ? replyTypeName(replyType) : `${replyTypeName(replyType)}: ${serverMessage}`;
    super(optionErrorCode(replyType), action, `the server answered ${detail}`, options);
    this.replyType = replyType;
    this.serverMessage = serverMessage;
  }
}

function optionErrorCode(replyType: number): ErrorCode {
  switch (replyType) {
    case NBD_REP_ERR_UNKNOWN:
      return 'NOT_FOUND';
    case NBD_REP_ERR_UNSUP:
      return 'NOT_SUPPORTED';
    case NBD_REP_ERR_POLICY:
    case NBD_REP_ERR_TLS_REQD:
      return 'NOT_SUPPORTED';
    default:
      return 'PROTOCOL';
  }
}

/**
 * A command failed on the server: the reply carried an NBD error value. `errno` is its POSIX
 * name (so `ENOSPC` gets code `NO_SPACE`), `nbdErrno` the value on the wire, and `serverMessage`
 * the text of a structured error chunk, if any.
 */
export class NbdCommandError extends IoError {
  readonly nbdErrno: number;
  readonly serverMessage: string;

  constructor(action: string, nbdErrno: number, serverMessage = '', options?: BitbackErrorOptions) {
    const name = nbdErrnoName(nbdErrno);
    super(action, serverMessage === '' ? `the server answered ${name}` : `the server answered ${name}: ${serverMessage}`, name, {
      ...options,
      retryable: options?.retryable ?? nbdErrno === NBD_ESHUTDOWN,
    });
    this.nbdErrno = nbdErrno;
    this.serverMessage = serverMessage;
  }
}

const NAMES: ReadonlyArray<readonly [string, number]> = [
  ['EPERM', NBD_EPERM],
  ['EIO', NBD_EIO],
  ['ENOMEM', NBD_ENOMEM],
  ['EINVAL', NBD_EINVAL],
  ['ENOSPC', NBD_ENOSPC],
  ['EOVERFLOW', NBD_EOVERFLOW],
  ['ENOTSUP', NBD_ENOTSUP],
  ['ESHUTDOWN', NBD_ESHUTDOWN],
];

/**
 * The NBD error value to send for a POSIX errno name. The spec lists few values; others map to
 * the nearest one (EROFS/EACCES → EPERM, EDQUOT/EFBIG → ENOSPC, EOPNOTSUPP → ENOTSUP, the rest → EIO),
 * as proto.md "Error values" asks servers to do.
 */
export function nbdErrnoFor(errno: string): number {
  for (const [name, value] of NAMES) if (name === errno) return value;
  switch (errno) {
    case 'EROFS':
    case 'EACCES':
      return NBD_EPERM;
    case 'EDQUOT':
    case 'EFBIG':
      return NBD_ENOSPC;
    case 'EOPNOTSUPP':
      return NBD_ENOTSUP;
    case 'ERANGE':
      return NBD_EINVAL;
    default:
      return NBD_EIO;
  }
}

/**
 * The POSIX name of an NBD error value. An unknown value is reported as EINVAL, as proto.md
 * "Error values" asks of clients.
 */
export function nbdErrnoName(value: number): string {
  for (const [name, v] of NAMES) if (v === value) return name;
  return 'EINVAL';
}
