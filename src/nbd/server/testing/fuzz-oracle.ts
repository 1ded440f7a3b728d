/**
 * Test-only: what proto.md prescribes for a request or an option, written from the spec's text
 * (independently of the server's code), for the server fuzz test to compare the server with.
 * Where several errors apply the spec does not say which wins, so the oracle returns every
 * acceptable error value.
 */
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  type NbdRequest,
} from '../../protocol/index.js';

/** What the connection negotiated and serves. */
export interface FuzzSession {
  size: number;
  maxPayload: number;
  readOnly: boolean;
  structured: boolean;
  extended: boolean;
  contexts: number;
}

/**
 * The error values the spec allows for `request` (empty: it must succeed). `payloadLength` is
 * what the client sent after the header.
 */
export function expectedErrors(session: FuzzSession, request: NbdRequest, payloadLength: number): Set<number> {
  const errors = new Set<number>();
  const { type, flags, offset, length } = request;
  // "Block size constraints": a payload past the maximum → NBD_EINVAL (the payload is dropped).
  if (payloadLength > session.maxPayload) return new Set([NBD_EINVAL]);
  // "Error values": unknown commands, unknown flags and flags not documented for the command → EINVAL.
  const allowed: Record<number, number> = {
    [NBD_CMD_READ]: NBD_CMD_FLAG_FUA | (session.structured ? NBD_CMD_FLAG_DF : 0),
    [NBD_CMD_WRITE]: NBD_CMD_FLAG_FUA | (session.extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0),
    [NBD_CMD_FLUSH]: NBD_CMD_FLAG_FUA,
    [NBD_CMD_TRIM]: NBD_CMD_FLAG_FUA,
    [NBD_CMD_CACHE]: NBD_CMD_FLAG_FUA,
    [NBD_CMD_WRITE_ZEROES]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
    [NBD_CMD_BLOCK_STATUS]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE,
  };
  const mask = allowed[type];
  if (mask === undefined) return new Set([NBD_EINVAL]);
  if ((flags & ~mask) !== 0) errors.add(NBD_EINVAL);
  if (payloadLength > 0 && type !== NBD_CMD_WRITE) errors.add(NBD_EINVAL);
  const outside = offset + length > session.size;
  const writing = type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES || type === NBD_CMD_TRIM;
  // "Error values": EPERM for writes and trims on a read-only export.
  if (writing && session.readOnly) errors.add(NBD_EPERM);
  switch (type) {
    case NBD_CMD_READ:
      if (outside || length > session.maxPayload) errors.add(NBD_EINVAL);
      break;
    case NBD_CMD_WRITE:
    case NBD_CMD_WRITE_ZEROES:
      if (outside) errors.add(NBD_ENOSPC);
      break;
    case NBD_CMD_TRIM:
    case NBD_CMD_CACHE:
      if (outside) errors.add(NBD_EINVAL);
      break;
    case NBD_CMD_FLUSH:
      if (offset !== 0 || length !== 0) errors.add(NBD_EINVAL);
      break;
    case NBD_CMD_BLOCK_STATUS:
      if (!session.structured || session.contexts === 0 || length === 0 || outside) errors.add(NBD_EINVAL);
      break;
    default:
      errors.add(NBD_EINVAL);
  }
  return errors;
}

/** The contexts of an export as QEMU names them, and what LIST and SET queries select. */
export function expectedContexts(all: readonly string[], queries: readonly string[], list: boolean): string[] {
  if (!list) return all.filter((name) => queries.includes(name));
  if (queries.length === 0) return [...all];
  const wildcards = ['base:', 'qemu:', 'qemu:dirty-bitmap:'];
  return all.filter((name) => queries.some((q) => q === name || (wildcards.includes(q) && name.startsWith(q))));
}
