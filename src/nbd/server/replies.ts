/**
 * Reply messages of the transmission phase in the form the connection writes them: a list of
 * buffers (header, then payload pieces, never copied together) that go out whole, one after the
 * other. Simple replies, structured chunks or extended chunks, as negotiated (proto.md "Simple
 * reply message", "Structured reply chunk message"; extended headers: every reply is a chunk).
 *
 * Headers are written here field by field into small buffers cut from Node's shared allocation
 * pool: they are built for every request, and the general codecs of `protocol/` (which the
 * tests hold these to) cost a fresh `ArrayBuffer` and `DataView` each.
 */
import {
  EXTENDED_REPLY_HEADER_SIZE,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
  encodeErrorPayload,
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

/** A reply and the read buffer it carries, if that buffer goes back to a pool once written. */
export interface Reply {
  parts: ReplyParts;
  /** A buffer of the server's `BufferPool` that `parts` refer to. */
  borrowed?: Uint8Array;
}

/**
 * One chunk's header followed by `room` bytes for the start of its payload, which the caller
 * writes from the returned buffer's `length - room`. `length` is the whole payload's length.
 */
export function chunkHead(mode: ReplyMode, request: NbdRequest, type: number, done: boolean, length: number, room: number): Buffer {
  const flags = done ? NBD_REPLY_FLAG_DONE : 0;
  if (mode.extended) {
    const head = Buffer.allocUnsafe(EXTENDED_REPLY_HEADER_SIZE + room);
    putU32(head, 0, NBD_EXTENDED_REPLY_MAGIC);
    putU16(head, 4, flags);
    putU16(head, 6, type);
    head.writeBigUInt64BE(request.cookie, 8);
    putU64(head, 16, request.offset);
    putU64(head, 24, length);
    return head;
  }
  const head = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE + room);
  putU32(head, 0, NBD_STRUCTURED_REPLY_MAGIC);
  putU16(head, 4, flags);
  putU16(head, 6, type);
  head.writeBigUInt64BE(request.cookie, 8);
  putU32(head, 16, length);
  return head;
}

/** One chunk: its header and its payload pieces (the length is their sum). */
export function chunkParts(mode: ReplyMode, request: NbdRequest, type: number, done: boolean, payload: Uint8Array[]): ReplyParts {
  let length = 0;
  for (const piece of payload) length += piece.length;
  return [chunkHead(mode, request, type, done, length, 0), ...payload];
}

/** A simple reply header (the READ data, if any, follows it). */
export function simpleReply(request: NbdRequest, errno: number): Buffer {
  const head = Buffer.allocUnsafe(SIMPLE_REPLY_SIZE);
  putU32(head, 0, NBD_SIMPLE_REPLY_MAGIC);
  putU32(head, 4, errno);
  head.writeBigUInt64BE(request.cookie, 8);
  return head;
}

/**
 * Success without data: a simple reply, or with extended headers (which forbid simple replies)
 * an NBD_REPLY_TYPE_NONE chunk with DONE.
 */
export function successReply(mode: ReplyMode, request: NbdRequest): ReplyParts {
  if (mode.extended) return [chunkHead(mode, request, NBD_REPLY_TYPE_NONE, true, 0, 0)];
  return [simpleReply(request, 0)];
}

/**
 * A failure: with structured replies an NBD_REPLY_TYPE_ERROR chunk (DONE) carrying `message`,
 * otherwise a simple reply with the error value (and no data, even for READ).
 */
export function errorReply(mode: ReplyMode, request: NbdRequest, errno: number, message: string): ReplyParts {
  if (mode.structured || mode.extended) return chunkParts(mode, request, NBD_REPLY_TYPE_ERROR, true, [encodeErrorPayload(errno, message)]);
  return [simpleReply(request, errno)];
}

/** Big-endian 16 bits at `at` (the value taken modulo 2^16). */
export function putU16(target: Uint8Array, at: number, value: number): void {
  target[at] = value >>> 8;
  target[at + 1] = value;
}

/** Big-endian 32 bits at `at` (the value taken modulo 2^32). */
export function putU32(target: Uint8Array, at: number, value: number): void {
  target[at] = value >>> 24;
  target[at + 1] = value >>> 16;
  target[at + 2] = value >>> 8;
  target[at + 3] = value;
}

/**
 * Big-endian 64 bits at `at` of a non-negative number (as the protocol's `WireWriter.u64`:
 * values past 2^53, which only an out-of-range request echoes back, keep their approximation).
 */
export function putU64(target: Uint8Array, at: number, value: number): void {
  putU32(target, at, value / 0x100000000);
  putU32(target, at + 4, value % 0x100000000);
}
