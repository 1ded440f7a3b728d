/**
 * Reply messages of the transmission phase in the form the connection writes them: a list of
 * buffers (header, then payload pieces, never copied together) that go out whole, one after the
 * other. Simple replies, structured chunks or extended chunks, as negotiated (proto.md "Simple
 * reply message", "Structured reply chunk message"; extended headers: every reply is a chunk).
 */
import {
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  encodeChunkHeader,
  encodeErrorPayload,
  encodeSimpleReply,
  type NbdRequest,
} from '../protocol/index.js';

/** What was negotiated about replies. */
export interface ReplyMode {
  /** Structured replies (NBD_OPT_STRUCTURED_REPLY, or implied by extended headers). */
  structured: boolean;
  /** Extended headers: every reply is an extended chunk, no simple replies. */
  extended: boolean;
}

/** The buffers of one reply (all of them are written together, in order). */
export type ReplyParts = Uint8Array[];

/** One chunk: its header and its payload pieces (the length is their sum). */
export function chunkParts(mode: ReplyMode, request: NbdRequest, type: number, done: boolean, payload: Uint8Array[]): ReplyParts {
  const length = payload.reduce((n, p) => n + p.length, 0);
  const header = encodeChunkHeader({ flags: done ? NBD_REPLY_FLAG_DONE : 0, type, cookie: request.cookie, offset: request.offset, length }, mode.extended);
  return [header, ...payload];
}

/**
 * Success without data: a simple reply, or with extended headers (which forbid simple replies)
 * an NBD_REPLY_TYPE_NONE chunk with DONE.
 */
export function successReply(mode: ReplyMode, request: NbdRequest): ReplyParts {
  if (mode.extended) return chunkParts(mode, request, NBD_REPLY_TYPE_NONE, true, []);
  return [encodeSimpleReply(request.cookie, 0)];
}

/**
 * A failure: with structured replies an NBD_REPLY_TYPE_ERROR chunk (DONE) carrying `message`,
 * otherwise a simple reply with the error value (and no data, even for READ).
 */
export function errorReply(mode: ReplyMode, request: NbdRequest, errno: number, message: string): ReplyParts {
  if (mode.structured || mode.extended) return chunkParts(mode, request, NBD_REPLY_TYPE_ERROR, true, [encodeErrorPayload(errno, message)]);
  return [encodeSimpleReply(request.cookie, errno)];
}
