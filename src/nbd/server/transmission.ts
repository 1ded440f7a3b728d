/**
 * One request of the transmission phase (proto.md "Request types"): checked, run on the export's
 * device, and answered. Never rejects: every failure becomes an error reply with the value the
 * spec prescribes. NBD_CMD_DISC is the connection's business and never comes here.
 */
import { type BlockDevice } from '../../block/block-device.js';
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
  NBD_STATE_ZERO,
  blockStatusReplyType,
  commandName,
  encodeBlockStatus,
  type NbdRequest,
  type RequestFrame,
  type StatusDescriptor,
} from '../protocol/index.js';
import { nbdFailureOf } from './errors-map.js';
import { contextExtents, type SelectedContext } from './meta-contexts.js';
import { type BufferPool } from './buffer-pool.js';
import { type KnownData } from './known-data.js';
import { readPieces, encodeReadReply } from './read-reply.js';
import { chunkParts, errorReply, successReply, type Reply, type ReplyMode, type ReplyParts } from './replies.js';
import { type SessionSetup } from './negotiation.js';

/** Most descriptors in one block status chunk (QEMU's limit: 1 MiB of compact descriptors). */
const MAX_STATUS_EXTENTS = 128 * 1024;
/** Most device `blockStatus` calls behind one context's reply. */
const MAX_STATUS_CALLS = 1024;

/** What a connection in transmission serves, fixed at NBD_OPT_GO. */
export interface Session extends ReplyMode {
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly contexts: readonly SelectedContext[];
  readonly maxPayload: number;
  /** Descriptors per block status chunk. */
  readonly maxExtents: number;
  /** Where READ data is read into, for devices that can read into a given buffer. */
  readonly buffers: BufferPool | undefined;
  /** The export's ranges lately reported as data. */
  readonly knownData: KnownData;
}

/** Builds the session of a connection entering transmission. */
export function makeSession(setup: SessionSetup, maxPayload: number, buffers?: BufferPool): Session {
  const descriptorSize = setup.extended ? 16 : 8;
  return {
    device: setup.export.spec.device,
    readOnly: setup.export.readOnly,
    structured: setup.structured || setup.extended,
    extended: setup.extended,
    contexts: setup.contexts,
    maxPayload,
    maxExtents: Math.max(1, Math.min(MAX_STATUS_EXTENTS, Math.floor((maxPayload - 8) / descriptorSize))),
    buffers,
    knownData: setup.export.knownData,
  };
}

/**
 * The bytes a request holds while in flight: its WRITE payload, or the data its reply will carry.
 * The connection stops reading while the sum is past its budget.
 */
export function requestCost(session: Session, frame: RequestFrame): number {
  if (frame.kind === 'payload-too-big') return 0;
  const payload = frame.payload?.length ?? 0;
  const { type, length } = frame.request;
  if (type === NBD_CMD_READ && length <= session.maxPayload) return payload + length;
  if (type === NBD_CMD_BLOCK_STATUS) return payload + session.contexts.length * session.maxExtents * (session.extended ? 16 : 8);
  return payload;
}

/** Command flags each command accepts (proto.md "Command flags"); FUA is valid on every command. */
function allowedFlags(session: Session, type: number): number | undefined {
  switch (type) {
    case NBD_CMD_READ:
      // NBD_FLAG_SEND_DF is advertised only with structured replies.
      return NBD_CMD_FLAG_FUA | (session.structured ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE:
      // With extended headers a WRITE may say that its length is a payload length.
      return NBD_CMD_FLAG_FUA | (session.extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0);
    case NBD_CMD_FLUSH:
    case NBD_CMD_TRIM:
    case NBD_CMD_CACHE:
      return NBD_CMD_FLAG_FUA;
    case NBD_CMD_WRITE_ZEROES:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
      return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
      return undefined;
  }
}

/** Answers one request. Resolves with the whole reply; never rejects. */
export function handleRequest(session: Session, frame: RequestFrame): Promise<Reply> {
  const request = frame.request;
  if (frame.kind === 'payload-too-big') {
    // proto.md "Block size constraints": the server SHOULD report NBD_EINVAL for a request larger
    // than the advertised maximum; "Error values": it SHOULD NOT return NBD_EOVERFLOW except for
    // READ with DF or (extended headers) a command *without* payload whose length is past the
    // maximum — so a WRITE gets EINVAL. The payload was read and dropped: the stream is intact.
    return failed(session, request, NBD_EINVAL, `${commandName(request.type)} carries ${request.length} bytes, more than the maximum payload of ${session.maxPayload}`);
  }
  const allowed = allowedFlags(session, request.type);
  // proto.md "Error values": NBD_EINVAL for an unknown command, an unknown flag, or a flag not
  // documented for the command.
  if (allowed === undefined) return failed(session, request, NBD_EINVAL, `${commandName(request.type)} is not a command this server knows`);
  if ((request.flags & ~allowed) !== 0) {
    return failed(session, request, NBD_EINVAL, `${commandName(request.type)} does not accept flags 0x${(request.flags & ~allowed).toString(16)}`);
  }
  if (frame.payload !== undefined && request.type !== NBD_CMD_WRITE) return failed(session, request, NBD_EINVAL, `${commandName(request.type)} takes no payload`);
  // READ, by far the most frequent, in as few asynchronous steps as possible.
  if (request.type === NBD_CMD_READ) return read(session, request);
  return other(session, request, frame.payload);
}

function failed(session: Session, request: NbdRequest, errno: number, message: string): Promise<Reply> {
  return Promise.resolve(fail(session, request, errno, message));
}

function failure(session: Session, request: NbdRequest, e: unknown): Reply {
  const { errno, message } = nbdFailureOf(e);
  return fail(session, request, errno, message);
}

function fail(session: Session, request: NbdRequest, errno: number, message: string): Reply {
  return { parts: errorReply(session, request, errno, message) };
}

/** Whether `[offset, offset + length)` lies past the export (or is not a safe range at all). */
function outside(session: Session, request: NbdRequest): boolean {
  const end = request.offset + request.length;
  return !Number.isSafeInteger(end) || end > session.device.size;
}

function pastTheEnd(session: Session, request: NbdRequest): string {
  return `${request.offset}+${request.length} is past the export size ${session.device.size}`;
}

/** Never rejects. */
async function read(session: Session, request: NbdRequest): Promise<Reply> {
  const { offset, length, flags } = request;
  // proto.md "Error values": NBD_EINVAL for a read beyond the size of the device.
  if (outside(session, request)) return fail(session, request, NBD_EINVAL, pastTheEnd(session, request));
  // "Block size constraints": a length past the advertised maximum → NBD_EINVAL (the spec lets
  // a server serve larger structured reads; this one does not).
  if (length > session.maxPayload) return fail(session, request, NBD_EINVAL, `a read of ${length} bytes is past the maximum payload of ${session.maxPayload}`);
  const sparse = session.structured && (flags & NBD_CMD_FLAG_DF) === 0;
  try {
    const source = { device: session.device, pool: session.buffers, known: session.knownData };
    return encodeReadReply(session, request, await readPieces(source, offset, length, sparse));
  } catch (e) {
    return failure(session, request, e);
  }
}

/** Every command but READ. Never rejects. */
async function other(session: Session, request: NbdRequest, payload: Uint8Array | undefined): Promise<Reply> {
  try {
    return { parts: await run(session, request, payload) };
  } catch (e) {
    return failure(session, request, e);
  } finally {
    // What this server changed is no longer known to be data (a zeroed or trimmed range may now
    // be a hole). Forgotten once the change is done: a block status that ran before it may have
    // recorded the range meanwhile.
    if (changes(request.type) && !outside(session, request)) session.knownData.forget(request.offset, request.offset + request.length);
  }
}

function changes(type: number): boolean {
  return type === NBD_CMD_WRITE || type === NBD_CMD_WRITE_ZEROES || type === NBD_CMD_TRIM;
}

async function run(session: Session, request: NbdRequest, payload: Uint8Array | undefined): Promise<ReplyParts> {
  const { device } = session;
  const { offset, length, flags } = request;
  const failWith = (errno: number, message: string): ReplyParts => errorReply(session, request, errno, message);
  const fua = (flags & NBD_CMD_FLAG_FUA) !== 0;
  const writing = request.type === NBD_CMD_WRITE || request.type === NBD_CMD_WRITE_ZEROES || request.type === NBD_CMD_TRIM;
  // proto.md "Error values": NBD_EPERM for a write or trim on a read-only export.
  if (writing && session.readOnly) return failWith(NBD_EPERM, 'the export is read-only');
  switch (request.type) {
    case NBD_CMD_WRITE: {
      // proto.md "Error values": NBD_ENOSPC for a write beyond the size of the device.
      if (outside(session, request)) return failWith(NBD_ENOSPC, pastTheEnd(session, request));
      await device.write(offset, payload ?? new Uint8Array(0), { fua });
      return successReply(session, request);
    }
    case NBD_CMD_WRITE_ZEROES: {
      // proto.md "NBD_CMD_WRITE_ZEROES": NBD_ENOSPC beyond the size of the device.
      if (outside(session, request)) return failWith(NBD_ENOSPC, pastTheEnd(session, request));
      await device.writeZeroes(offset, length, {
        fua,
        mayTrim: (flags & NBD_CMD_FLAG_NO_HOLE) === 0,
        fast: (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0,
      });
      return successReply(session, request);
    }
    case NBD_CMD_TRIM: {
      // proto.md "Error values": NBD_EINVAL for a trim beyond the size of the device.
      if (outside(session, request)) return failWith(NBD_EINVAL, pastTheEnd(session, request));
      await device.trim(offset, length, { fua });
      return successReply(session, request);
    }
    case NBD_CMD_FLUSH: {
      // proto.md "NBD_CMD_FLUSH": length and offset are reserved and MUST be zero.
      if (offset !== 0 || length !== 0) return failWith(NBD_EINVAL, `${commandName(request.type)} must have offset and length 0`);
      await device.flush();
      return successReply(session, request);
    }
    case NBD_CMD_CACHE: {
      // A hint that needs no action: the devices cache what they need. Out of range is EINVAL.
      if (outside(session, request)) return failWith(NBD_EINVAL, pastTheEnd(session, request));
      return successReply(session, request);
    }
    case NBD_CMD_BLOCK_STATUS:
      return blockStatus(session, request, outside(session, request) ? pastTheEnd(session, request) : undefined);
    default:
      return failWith(NBD_EINVAL, `${commandName(request.type)} is not a command this server knows`);
  }
}

async function blockStatus(session: Session, request: NbdRequest, outside: string | undefined): Promise<ReplyParts> {
  const fail = (errno: number, message: string): ReplyParts => errorReply(session, request, errno, message);
  // proto.md "Metadata querying": block status needs structured replies and at least one
  // selected context; servers SHOULD answer NBD_EINVAL otherwise.
  if (!session.structured) return fail(NBD_EINVAL, 'NBD_CMD_BLOCK_STATUS needs structured replies');
  if (session.contexts.length === 0) return fail(NBD_EINVAL, 'no metadata context was selected with NBD_OPT_SET_META_CONTEXT');
  if (request.length === 0) return fail(NBD_EINVAL, 'NBD_CMD_BLOCK_STATUS of length 0');
  // proto.md "NBD_CMD_BLOCK_STATUS": NBD_EINVAL for a range beyond the size of the device.
  if (outside !== undefined) return fail(NBD_EINVAL, outside);
  const reqOne = (request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
  const limits = { maxExtents: reqOne ? 1 : session.maxExtents, maxDeviceCalls: MAX_STATUS_CALLS };
  const chunks: Uint8Array[][] = [];
  for (const context of session.contexts) {
    const extents = await contextExtents(context.source, session.device, request.offset, request.length, limits);
    if (context.source.kind === 'allocation') recordData(session.knownData, request.offset, extents);
    chunks.push([encodeBlockStatus(context.id, reqOne ? extents.slice(0, 1) : extents, session.extended)]);
  }
  const type = blockStatusReplyType(session.extended);
  return chunks.flatMap((payload, i) => chunkParts(session, request, type, i === chunks.length - 1, payload));
}

/** Records the runs of a `base:allocation` answer from `offset` that do not read as zero. */
function recordData(known: KnownData, offset: number, runs: readonly StatusDescriptor[]): void {
  let position = offset;
  for (const run of runs) {
    if ((run.flags & NBD_STATE_ZERO) === 0) known.add(position, position + run.length);
    position += run.length;
  }
}
