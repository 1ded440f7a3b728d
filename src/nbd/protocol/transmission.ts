/**
 * Codecs of the transmission phase (proto.md "Transmission"): requests (compact and extended
 * headers), simple replies, structured and extended reply chunks and the payloads of the chunk
 * types bitback uses. Pure: bytes in, values out. Streaming is `transmission-decoder.ts`.
 */
import {
  EXTENDED_REPLY_HEADER_SIZE,
  EXTENDED_REQUEST_HEADER_SIZE,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_EXTENDED_REQUEST_MAGIC,
  NBD_MAX_STRING,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  REQUEST_HEADER_SIZE,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
} from './constants.js';
import { NbdProtocolError } from './errors.js';
import { WireReader, WireWriter, utf8Length } from './wire.js';

/** One request. `length` is the effect length (bytes read, written, zeroed, queried). */
export interface NbdRequest {
  /** NBD_CMD_FLAG_* bits. */
  flags: number;
  /** NBD_CMD_* value. */
  type: number;
  /** Opaque 64-bit value the reply echoes ("handle" in older texts). */
  cookie: bigint;
  /** Byte offset. Values of 2^53 and more decode as approximate numbers (always out of range). */
  offset: number;
  /** Byte count: 32-bit with compact headers, 64-bit with extended headers. */
  length: number;
}

/** Encodes a request header (the WRITE payload is sent after it, unchanged). */
export function encodeRequest(request: NbdRequest, extended: boolean): Uint8Array {
  if (extended) {
    return new WireWriter(EXTENDED_REQUEST_HEADER_SIZE)
      .u32(NBD_EXTENDED_REQUEST_MAGIC).u16(request.flags).u16(request.type).u64Big(request.cookie)
      .u64(request.offset).u64(request.length).finish();
  }
  if (request.length > 0xffffffff) throw new RangeError(`request length ${request.length} needs extended headers`);
  return new WireWriter(REQUEST_HEADER_SIZE)
    .u32(NBD_REQUEST_MAGIC).u16(request.flags).u16(request.type).u64Big(request.cookie)
    .u64(request.offset).u32(request.length).finish();
}

/** A 64-bit field read without failing: values past 2^53 come back approximate (and too large for any disk). */
function looseU64(view: DataView, at: number): number {
  return view.getUint32(at) * 0x100000000 + view.getUint32(at + 4);
}

/**
 * Decodes a request header of {@link REQUEST_HEADER_SIZE} (compact) or
 * {@link EXTENDED_REQUEST_HEADER_SIZE} (extended) bytes. A wrong magic is a protocol error.
 */
export function decodeRequest(bytes: Uint8Array, extended: boolean): NbdRequest {
  const size = extended ? EXTENDED_REQUEST_HEADER_SIZE : REQUEST_HEADER_SIZE;
  if (bytes.length < size) throw new NbdProtocolError('decode request', `a header needs ${size} bytes, got ${bytes.length}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, size);
  const magic = view.getUint32(0);
  const expected = extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC;
  if (magic !== expected) {
    const why = magic === (extended ? NBD_REQUEST_MAGIC : NBD_EXTENDED_REQUEST_MAGIC)
      ? `the client sent a ${extended ? 'compact' : 'extended'} header, but ${extended ? 'extended' : 'compact'} headers were negotiated`
      : `bad magic 0x${magic.toString(16)}`;
    throw new NbdProtocolError('decode request', why);
  }
  return {
    flags: view.getUint16(4),
    type: view.getUint16(6),
    cookie: view.getBigUint64(8),
    offset: looseU64(view, 16),
    length: extended ? looseU64(view, 24) : view.getUint32(24),
  };
}

// ---- Replies --------------------------------------------------------------------------------

/** A simple reply (the READ data, if any, follows it unchanged). */
export function encodeSimpleReply(cookie: bigint, error: number): Uint8Array {
  return new WireWriter(SIMPLE_REPLY_SIZE).u32(NBD_SIMPLE_REPLY_MAGIC).u32(error).u64Big(cookie).finish();
}

/** The header of a structured or extended reply chunk. */
export interface ChunkHeader {
  /** NBD_REPLY_FLAG_* bits. */
  flags: number;
  /** NBD_REPLY_TYPE_* value. */
  type: number;
  cookie: bigint;
  /** Extended headers only: the offset of the request the chunk answers (0 otherwise). */
  offset: number;
  /** Payload length in bytes. */
  length: number;
}

/** Encodes a chunk header; the payload follows it. */
export function encodeChunkHeader(header: ChunkHeader, extended: boolean): Uint8Array {
  if (extended) {
    return new WireWriter(EXTENDED_REPLY_HEADER_SIZE)
      .u32(NBD_EXTENDED_REPLY_MAGIC).u16(header.flags).u16(header.type).u64Big(header.cookie)
      .u64(header.offset).u64(header.length).finish();
  }
  return new WireWriter(STRUCTURED_REPLY_HEADER_SIZE)
    .u32(NBD_STRUCTURED_REPLY_MAGIC).u16(header.flags).u16(header.type).u64Big(header.cookie)
    .u32(header.length).finish();
}

/** A whole chunk (header and payload) in one buffer; for small payloads. */
export function encodeChunk(header: Omit<ChunkHeader, 'length'>, payload: Uint8Array, extended: boolean): Uint8Array {
  const head = encodeChunkHeader({ ...header, length: payload.length }, extended);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

/** The 8-byte prefix of an NBD_REPLY_TYPE_OFFSET_DATA payload (the data follows it). */
export function encodeOffsetDataPrefix(offset: number): Uint8Array {
  return new WireWriter(8).u64(offset).finish();
}

/** Splits an NBD_REPLY_TYPE_OFFSET_DATA payload. `data` is a view of `payload`. */
export function decodeOffsetData(payload: Uint8Array): { offset: number; data: Uint8Array } {
  const r = new WireReader(payload, 'NBD_REPLY_TYPE_OFFSET_DATA chunk');
  const offset = r.u64('offset');
  if (r.remaining === 0) throw new NbdProtocolError('decode NBD_REPLY_TYPE_OFFSET_DATA chunk', 'it carries no data (the spec forbids empty data chunks)');
  return { offset, data: r.rest() };
}

/** The payload of NBD_REPLY_TYPE_OFFSET_HOLE. */
export function encodeOffsetHole(offset: number, length: number): Uint8Array {
  return new WireWriter(12).u64(offset).u32(length).finish();
}

export function decodeOffsetHole(payload: Uint8Array): { offset: number; length: number } {
  const r = new WireReader(payload, 'NBD_REPLY_TYPE_OFFSET_HOLE chunk');
  const offset = r.u64('offset');
  const length = r.u32('hole size');
  r.end();
  if (length === 0) throw new NbdProtocolError('decode NBD_REPLY_TYPE_OFFSET_HOLE chunk', 'the hole size is 0');
  return { offset, length };
}

/** One block status descriptor: a length and the context's flags for it. */
export interface StatusDescriptor {
  length: number;
  flags: number;
}

/** The reply type a block status chunk has with or without extended headers. */
export function blockStatusReplyType(extended: boolean): number {
  return extended ? NBD_REPLY_TYPE_BLOCK_STATUS_EXT : NBD_REPLY_TYPE_BLOCK_STATUS;
}

/**
 * The payload of NBD_REPLY_TYPE_BLOCK_STATUS (32-bit lengths and flags) or, with extended headers,
 * NBD_REPLY_TYPE_BLOCK_STATUS_EXT (a 32-bit count, then 64-bit lengths and flags).
 */
export function encodeBlockStatus(contextId: number, extents: readonly StatusDescriptor[], extended: boolean): Uint8Array {
  const w = new WireWriter(extended ? 8 + 16 * extents.length : 4 + 8 * extents.length).u32(contextId);
  if (extended) {
    w.u32(extents.length);
    for (const e of extents) w.u64(e.length).u64(e.flags);
  } else {
    for (const e of extents) w.u32(e.length).u32(e.flags);
  }
  return w.finish();
}

/** Decodes a block status payload of either type. Zero-length descriptors are a protocol error. */
export function decodeBlockStatus(payload: Uint8Array, type: number): { contextId: number; extents: StatusDescriptor[] } {
  const what = type === NBD_REPLY_TYPE_BLOCK_STATUS_EXT ? 'NBD_REPLY_TYPE_BLOCK_STATUS_EXT chunk' : 'NBD_REPLY_TYPE_BLOCK_STATUS chunk';
  const r = new WireReader(payload, what);
  const contextId = r.u32('context id');
  const extents: StatusDescriptor[] = [];
  if (type === NBD_REPLY_TYPE_BLOCK_STATUS_EXT) {
    const count = r.u32('descriptor count');
    if (count * 16 !== r.remaining) throw new NbdProtocolError(`decode ${what}`, `${count} descriptors do not fill ${r.remaining} bytes`);
    for (let i = 0; i < count; i++) {
      const length = r.u64('extent length');
      const flags = Number(r.u64Big('status flags') & 0xffffffffn);
      extents.push({ length, flags });
    }
  } else {
    if (r.remaining % 8 !== 0) throw new NbdProtocolError(`decode ${what}`, `${r.remaining} bytes are not a whole number of descriptors`);
    while (r.remaining > 0) extents.push({ length: r.u32('extent length'), flags: r.u32('status flags') });
  }
  if (extents.length === 0) throw new NbdProtocolError(`decode ${what}`, 'it has no descriptors');
  if (extents.some((e) => e.length === 0)) throw new NbdProtocolError(`decode ${what}`, 'a descriptor has length 0');
  return { contextId, extents };
}

/** The payload of NBD_REPLY_TYPE_ERROR, or of NBD_REPLY_TYPE_ERROR_OFFSET when `offset` is given. */
export function encodeErrorPayload(error: number, message: string, offset?: number): Uint8Array {
  let text = message;
  while (utf8Length(text) > NBD_MAX_STRING) text = text.slice(0, Math.floor(text.length / 2));
  const w = new WireWriter().u32(error).u16(utf8Length(text)).string(text);
  if (offset !== undefined) w.u64(offset);
  return w.finish();
}

/** Decodes an error chunk payload. */
export function decodeErrorPayload(payload: Uint8Array, type: number): { error: number; message: string; offset?: number } {
  const r = new WireReader(payload, 'error chunk');
  const error = r.u32('error');
  const message = r.string(r.u16('message length'), 'message', 0xffff);
  if (type === NBD_REPLY_TYPE_ERROR_OFFSET) {
    const offset = r.u64('offset');
    r.end();
    return { error, message, offset };
  }
  return { error, message };
}
