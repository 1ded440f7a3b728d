/**
 * Turning the replies the server sends for one request into its result (proto.md "Simple reply
 * message", "Structured reply chunk message", "Structured reply types"): READ data assembled
 * from OFFSET_DATA and OFFSET_HOLE chunks, checked to cover the request exactly once; block status
 * descriptors per negotiated context; error chunks as `NbdCommandError`.
 *
 * A reply that breaks the rules for its own request (overlapping chunks, a chunk type the
 * command cannot get, a missing context) fails that request with `NbdProtocolError`; the byte
 * stream is still in step, so the connection goes on. Violations that break the stream itself
 * are the connection's business.
 */
import { BitbackError } from '../../errors.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  commandName,
} from '../protocol/constants.js';
import { NbdCommandError, NbdProtocolError } from '../protocol/errors.js';
import { type ReplyFrame } from '../protocol/transmission-decoder.js';
import {
  decodeBlockStatus,
  decodeErrorPayload,
  decodeOffsetData,
  decodeOffsetHole,
  type StatusDescriptor,
} from '../protocol/transmission.js';
import { Coverage } from './coverage.js';

/** Block status descriptors by context name. */
export type StatusReply = Map<string, StatusDescriptor[]>;

/** One request from the moment it is queued until its reply is complete. */
export interface PendingRequest {
  readonly type: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
  /** WRITE data (borrowed from the caller until the request settles). */
  readonly payload?: Uint8Array;
  /** READ: where the data goes (`into` at `at`), or undefined to return a buffer of its own. */
  readonly into?: Uint8Array;
  readonly at: number;
  /** Names the request in errors ("read 4096 bytes at 0 of NBD export 'x' at unix:/s"). */
  readonly describe: () => string;
  resolve(value: Uint8Array | StatusReply | undefined): void;
  reject(error: BitbackError): void;
  /** Assembly state, filled as replies arrive. */
  state?: AssemblyState;
}

/** What has arrived so far for a request. */
interface AssemblyState {
  /** READ: the buffer being filled (a view of `into`, a fresh buffer, or a whole data chunk). */
  data?: Uint8Array;
  coverage?: Coverage;
  status?: StatusReply;
  /** The first error of the reply; the request fails with it once the reply is done. */
  failure?: BitbackError;
}

/** What negotiation decided, as the assembly needs it. */
export interface ReplyContext {
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** Negotiated meta contexts by id. */
  contexts: ReadonlyMap<number, string>;
}

/** The action of a request, for messages: "read 4096 bytes at 0", "flush". */
export function requestAction(type: number, offset: number, length: number): string {
  switch (type) {
    case NBD_CMD_READ:
      return `read ${length} bytes at ${offset}`;
    case NBD_CMD_WRITE:
      return `write ${length} bytes at ${offset}`;
    case NBD_CMD_WRITE_ZEROES:
      return `write ${length} zero bytes at ${offset}`;
    case NBD_CMD_TRIM:
      return `trim ${length} bytes at ${offset}`;
    case NBD_CMD_CACHE:
      return `cache ${length} bytes at ${offset}`;
    case NBD_CMD_BLOCK_STATUS:
      return `query the block status of ${length} bytes at ${offset}`;
    case NBD_CMD_FLUSH:
      return 'flush';
    default:
      return `send ${commandName(type)}`;
  }
}

/**
 * Settles `request` with a simple reply (a simple reply is always the whole reply). `frame.data`
 * is present for a successful READ without structured replies.
 */
export function completeSimple(request: PendingRequest, frame: Extract<ReplyFrame, { kind: 'simple' }>, context: ReplyContext): void {
  if (frame.error !== 0) {
    request.reject(new NbdCommandError(request.describe(), frame.error));
    return;
  }
  if (request.type === NBD_CMD_BLOCK_STATUS) {
    request.reject(violation(request, 'the server sent a simple reply, which cannot carry block status'));
    return;
  }
  if (request.type !== NBD_CMD_READ) {
    request.resolve(undefined);
    return;
  }
  const data = frame.data;
  if (context.structuredReplies || data === undefined || data.length !== request.length) {
    request.reject(violation(request, 'the server sent a simple reply to a READ'));
    return;
  }
  if (request.into === undefined) {
    request.resolve(data);
    return;
  }
  request.into.set(data, request.at);
  request.resolve(request.into.subarray(request.at, request.at + request.length));
}

/**
 * Applies one chunk of a structured reply. Returns true when it was the last one (the request
 * is then settled).
 */
export function applyChunk(request: PendingRequest, frame: Extract<ReplyFrame, { kind: 'chunk' }>, context: ReplyContext): boolean {
  const state = (request.state ??= {});
  try {
    applyChunkPayload(request, state, frame, context);
  } catch (e) {
    state.failure ??= e instanceof BitbackError ? e : violation(request, String(e));
  }
  if ((frame.flags & NBD_REPLY_FLAG_DONE) === 0) return false;
  finish(request, state, context);
  return true;
}

function applyChunkPayload(request: PendingRequest, state: AssemblyState, frame: Extract<ReplyFrame, { kind: 'chunk' }>, context: ReplyContext): void {
  const { type, payload } = frame;
  if ((type & NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
    // Unknown error types carry at least the error and message of NBD_REPLY_TYPE_ERROR (proto.md).
    const { error, message, offset } = decodeErrorPayload(payload, type);
    if (error === 0) throw violation(request, 'an error chunk carries error value 0');
    if (type === NBD_REPLY_TYPE_ERROR_OFFSET && (offset! < request.offset || offset! >= request.offset + request.length)) {
      throw violation(request, `an error chunk names offset ${offset}, outside the request`);
    }
    state.failure ??= new NbdCommandError(request.describe(), error, message);
    return;
  }
  switch (type) {
    case NBD_REPLY_TYPE_NONE:
      if (payload.length !== 0) throw violation(request, 'an NBD_REPLY_TYPE_NONE chunk has a payload');
      if ((frame.flags & NBD_REPLY_FLAG_DONE) === 0) throw violation(request, 'an NBD_REPLY_TYPE_NONE chunk is not the last one');
      return;
    case NBD_REPLY_TYPE_OFFSET_DATA: {
      expectCommand(request, NBD_CMD_READ, 'NBD_REPLY_TYPE_OFFSET_DATA');
      const { offset, data } = decodeOffsetData(payload);
      const at = cover(request, state, offset, data.length, 'data');
      if (state.data === undefined && request.into === undefined && data.length === request.length) {
        // The whole request in one chunk: hand the chunk's own buffer to the caller, no copy.
        state.data = data;
        return;
      }
      destination(request, state).set(data, at);
      return;
    }
    case NBD_REPLY_TYPE_OFFSET_HOLE: {
      expectCommand(request, NBD_CMD_READ, 'NBD_REPLY_TYPE_OFFSET_HOLE');
      const { offset, length } = decodeOffsetHole(payload);
      const at = cover(request, state, offset, length, 'hole');
      const fresh = state.data === undefined && request.into === undefined;
      const target = destination(request, state);
      if (!fresh) target.fill(0, at, at + length);
      return;
    }
    case NBD_REPLY_TYPE_BLOCK_STATUS:
    case NBD_REPLY_TYPE_BLOCK_STATUS_EXT: {
      expectCommand(request, NBD_CMD_BLOCK_STATUS, type === NBD_REPLY_TYPE_BLOCK_STATUS ? 'NBD_REPLY_TYPE_BLOCK_STATUS' : 'NBD_REPLY_TYPE_BLOCK_STATUS_EXT');
      const wanted = context.extendedHeaders ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT : NBD_REPLY_TYPE_BLOCK_STATUS;
      if (type !== wanted) {
        throw violation(request, `the server sent ${type === NBD_REPLY_TYPE_BLOCK_STATUS_EXT ? 'NBD_REPLY_TYPE_BLOCK_STATUS_EXT without' : 'NBD_REPLY_TYPE_BLOCK_STATUS with'} extended headers`);
      }
      const { contextId, extents } = decodeBlockStatus(payload, type);
      const name = context.contexts.get(contextId);
      if (name === undefined) throw violation(request, `a block status chunk names context id ${contextId}, which was never negotiated`);
      const status = (state.status ??= new Map());
      if (status.has(name)) throw violation(request, `two block status chunks for context ${name}`);
      status.set(name, extents);
      return;
    }
    default:
      throw violation(request, `the server sent a chunk of unknown type ${type}`);
  }
}

/**
 * Where the data of an NBD_REPLY_TYPE_OFFSET_DATA chunk (`length` bytes at `offset`) goes: a view
 * of the READ's destination, the range then counting as covered; or undefined when the chunk is
 * not valid for `request` (another command, outside the request, overlapping), so that it takes
 * the ordinary path of {@link applyChunk}, which reports why.
 */
export function placeData(request: PendingRequest, offset: number, length: number): Uint8Array | undefined {
  if (request.type !== NBD_CMD_READ || offset < request.offset || offset + length > request.offset + request.length) return undefined;
  const state = (request.state ??= {});
  if (!(state.coverage ??= new Coverage()).add(offset, offset + length)) return undefined;
  const at = offset - request.offset;
  return destination(request, state).subarray(at, at + length);
}

/**
 * Ends a chunk whose data {@link placeData} placed. Returns true when it was the last one (the
 * request is then settled).
 */
export function endPlacedChunk(request: PendingRequest, flags: number, context: ReplyContext): boolean {
  if ((flags & NBD_REPLY_FLAG_DONE) === 0) return false;
  finish(request, (request.state ??= {}), context);
  return true;
}

/** Checks that `[offset, offset + length)` lies in the request and was not covered yet; returns its index in the request. */
function cover(request: PendingRequest, state: AssemblyState, offset: number, length: number, what: string): number {
  const end = offset + length;
  if (offset < request.offset || end > request.offset + request.length) {
    throw violation(request, `a ${what} chunk covers ${offset}+${length}, outside the request`);
  }
  const coverage = (state.coverage ??= new Coverage());
  if (!coverage.add(offset, end)) throw violation(request, `a ${what} chunk at ${offset}+${length} overlaps an earlier chunk`);
  return offset - request.offset;
}

/** The buffer READ data goes to, as a view of the request's range; made on first use. */
function destination(request: PendingRequest, state: AssemblyState): Uint8Array {
  if (state.data !== undefined) return state.data;
  state.data = request.into === undefined ? new Uint8Array(request.length) : request.into.subarray(request.at, request.at + request.length);
  return state.data;
}

function expectCommand(request: PendingRequest, command: number, chunk: string): void {
  if (request.type !== command) throw violation(request, `the server answered ${commandName(request.type)} with ${chunk}`);
}

function finish(request: PendingRequest, state: AssemblyState, context: ReplyContext): void {
  if (state.failure !== undefined) {
    request.reject(state.failure);
    return;
  }
  switch (request.type) {
    case NBD_CMD_READ: {
      const covered = state.coverage?.total ?? 0;
      if (covered !== request.length) {
        request.reject(violation(request, `the reply covers ${covered} of the ${request.length} bytes asked for`));
        return;
      }
      request.resolve(state.data!);
      return;
    }
    case NBD_CMD_BLOCK_STATUS: {
      const status = state.status ?? new Map<string, StatusDescriptor[]>();
      for (const name of context.contexts.values()) {
        if (!status.has(name)) {
          request.reject(violation(request, `the reply has no block status for context ${name}`));
          return;
        }
      }
      request.resolve(status);
      return;
    }
    default:
      request.resolve(undefined);
  }
}

function violation(request: PendingRequest, reason: string): NbdProtocolError {
  return new NbdProtocolError(request.describe(), reason);
}
