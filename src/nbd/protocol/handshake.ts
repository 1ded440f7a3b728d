/**
 * Codecs of the fixed newstyle negotiation (proto.md "Handshake"): the server greeting, client
 * flags, option requests and replies, and the payloads of the options bitback speaks. Pure: bytes
 * in, values out. The streaming of these messages is `handshake-decoder.ts` (server side) and the
 * client's reader.
 */
import {
  EXPORT_NAME_PADDING,
  MAX_OPTION_LENGTH,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_MAX_STRING,
  NBD_OLDSTYLE_MAGIC,
  NBD_OPTS_MAGIC,
  NBD_REP_MAGIC,
  OPTION_HEADER_SIZE,
  OPTION_REPLY_HEADER_SIZE,
} from './constants.js';
import { NbdProtocolError } from './errors.js';
import { WireReader, WireWriter } from './wire.js';

/** Bytes of the server greeting: NBDMAGIC, IHAVEOPT, 16-bit handshake flags. */
export const SERVER_GREETING_SIZE = 18;
/** Bytes of the client flags that answer the greeting. */
export const CLIENT_FLAGS_SIZE = 4;

/** The server's first message. */
export function encodeServerGreeting(handshakeFlags: number): Uint8Array {
  return new WireWriter(SERVER_GREETING_SIZE).u64Big(NBD_MAGIC).u64Big(NBD_OPTS_MAGIC).u16(handshakeFlags).finish();
}

/**
 * Decodes the server greeting (exactly {@link SERVER_GREETING_SIZE} bytes) and returns the
 * handshake flags. Oldstyle servers are refused with a clear error.
 */
export function decodeServerGreeting(bytes: Uint8Array): number {
  const r = new WireReader(bytes, 'server greeting');
  const magic = r.u64Big('NBDMAGIC');
  if (magic !== NBD_MAGIC) throw new NbdProtocolError('decode server greeting', `the server did not send NBDMAGIC (got 0x${magic.toString(16)}): not an NBD server`);
  const second = r.u64Big('IHAVEOPT');
  if (second === NBD_OLDSTYLE_MAGIC) throw new NbdProtocolError('decode server greeting', 'the server speaks oldstyle negotiation, which bitback does not support');
  if (second !== NBD_OPTS_MAGIC) throw new NbdProtocolError('decode server greeting', `bad IHAVEOPT magic 0x${second.toString(16)}`);
  return r.u16('handshake flags');
}

/** The client's 32-bit flags. */
export function encodeClientFlags(flags: number): Uint8Array {
  return new WireWriter(CLIENT_FLAGS_SIZE).u32(flags).finish();
}

/** One option request: header and data. */
export interface OptionRequest {
  option: number;
  data: Uint8Array;
}

/** Encodes an option request (IHAVEOPT, option, length, data). */
export function encodeOptionRequest(option: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  return new WireWriter(OPTION_HEADER_SIZE + data.length).u64Big(NBD_OPTS_MAGIC).u32(option).u32(data.length).bytes(data).finish();
}

/** Decodes an option request header: returns the option and the data length that follows. */
export function decodeOptionHeader(bytes: Uint8Array): { option: number; length: number } {
  const r = new WireReader(bytes, 'option request');
  const magic = r.u64Big('IHAVEOPT');
  if (magic !== NBD_OPTS_MAGIC) throw new NbdProtocolError('decode option request', `bad magic 0x${magic.toString(16)} (expected IHAVEOPT)`);
  return { option: r.u32('option'), length: r.u32('length') };
}

/** One option reply. */
export interface OptionReply {
  option: number;
  type: number;
  data: Uint8Array;
}

/** Encodes an option reply (magic, option, reply type, length, data). */
export function encodeOptionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  return new WireWriter(OPTION_REPLY_HEADER_SIZE + data.length).u64Big(NBD_REP_MAGIC).u32(option).u32(type).u32(data.length).bytes(data).finish();
}

/**
 * Decodes an option reply header (exactly {@link OPTION_REPLY_HEADER_SIZE} bytes). A length past
 * `limit` is a protocol error (nothing is allocated for it).
 */
export function decodeOptionReplyHeader(bytes: Uint8Array, limit = MAX_OPTION_LENGTH): { option: number; type: number; length: number } {
  const r = new WireReader(bytes, 'option reply');
  const magic = r.u64Big('magic');
  if (magic !== NBD_REP_MAGIC) throw new NbdProtocolError('decode option reply', `bad magic 0x${magic.toString(16)}`);
  const option = r.u32('option');
  const type = r.u32('reply type');
  const length = r.u32('length');
  if (length > limit) throw new NbdProtocolError('decode option reply', `its length ${length} is past the limit of ${limit} bytes`);
  return { option, type, length };
}

// ---- NBD_OPT_EXPORT_NAME -------------------------------------------------------------------

/** The reply to NBD_OPT_EXPORT_NAME: size, transmission flags, and 124 zeroes unless NO_ZEROES. */
export function encodeExportNameReply(size: number, transmissionFlags: number, noZeroes: boolean): Uint8Array {
  const w = new WireWriter(10 + EXPORT_NAME_PADDING).u64(size).u16(transmissionFlags);
  if (!noZeroes) w.zeroes(EXPORT_NAME_PADDING);
  return w.finish();
}

/** Decodes the first 10 bytes of the NBD_OPT_EXPORT_NAME reply. */
export function decodeExportNameReply(bytes: Uint8Array): { size: number; transmissionFlags: number } {
  const r = new WireReader(bytes, 'NBD_OPT_EXPORT_NAME reply');
  return { size: r.u64('export size'), transmissionFlags: r.u16('transmission flags') };
}

// ---- NBD_OPT_INFO / NBD_OPT_GO -------------------------------------------------------------

/** The data of NBD_OPT_INFO and NBD_OPT_GO: an export name and the NBD_INFO types asked for. */
export interface InfoRequest {
  name: string;
  infos: number[];
}

export function encodeInfoRequest(request: InfoRequest): Uint8Array {
  const w = new WireWriter().string32(request.name).u16(request.infos.length);
  for (const i of request.infos) w.u16(i);
  return w.finish();
}

export function decodeInfoRequest(data: Uint8Array): InfoRequest {
  const r = new WireReader(data, 'NBD_OPT_INFO/GO request');
  const name = r.string(r.u32('name length'), 'export name', NBD_MAX_STRING);
  const count = r.u16('number of information requests');
  const infos: number[] = [];
  for (let i = 0; i < count; i++) infos.push(r.u16('information request'));
  r.end();
  return { name, infos };
}

/** One NBD_REP_INFO payload. */
export type InfoReply =
  | { type: 'export'; size: number; transmissionFlags: number }
  | { type: 'name'; name: string }
  | { type: 'description'; description: string }
  | { type: 'block-size'; minimum: number; preferred: number; maximum: number }
  | { type: 'unknown'; infoType: number; data: Uint8Array };

export function encodeInfoReply(info: InfoReply): Uint8Array {
  const w = new WireWriter();
  switch (info.type) {
    case 'export':
      return w.u16(NBD_INFO_EXPORT).u64(info.size).u16(info.transmissionFlags).finish();
    case 'name':
      return w.u16(NBD_INFO_NAME).string(info.name).finish();
    case 'description':
      return w.u16(NBD_INFO_DESCRIPTION).string(info.description).finish();
    case 'block-size':
      return w.u16(NBD_INFO_BLOCK_SIZE).u32(info.minimum).u32(info.preferred).u32(info.maximum).finish();
    case 'unknown':
      return w.u16(info.infoType).bytes(info.data).finish();
    default: {
      const never: never = info;
      throw new Error(`unreachable: ${String(never)}`);
    }
  }
}

export function decodeInfoReply(data: Uint8Array): InfoReply {
  const r = new WireReader(data, 'NBD_REP_INFO');
  const infoType = r.u16('information type');
  switch (infoType) {
    case NBD_INFO_EXPORT: {
      const size = r.u64('export size');
      const transmissionFlags = r.u16('transmission flags');
      r.end();
      return { type: 'export', size, transmissionFlags };
    }
    case NBD_INFO_NAME:
      return { type: 'name', name: r.string(r.remaining, 'export name', NBD_MAX_STRING) };
    case NBD_INFO_DESCRIPTION:
      return { type: 'description', description: r.string(r.remaining, 'description', NBD_MAX_STRING) };
    case NBD_INFO_BLOCK_SIZE: {
      const minimum = r.u32('minimum block size');
      const preferred = r.u32('preferred block size');
      const maximum = r.u32('maximum payload');
      r.end();
      return { type: 'block-size', minimum, preferred, maximum };
    }
    default:
      return { type: 'unknown', infoType, data: r.rest() };
  }
}

// ---- NBD_OPT_LIST --------------------------------------------------------------------------

/** The payload of NBD_REP_SERVER: an export name and its description. */
export function encodeServerReply(name: string, description = ''): Uint8Array {
  return new WireWriter().string32(name).string(description).finish();
}

export function decodeServerReply(data: Uint8Array): { name: string; description: string } {
  const r = new WireReader(data, 'NBD_REP_SERVER');
  const name = r.string(r.u32('name length'), 'export name', NBD_MAX_STRING);
  return { name, description: r.string(r.remaining, 'description', NBD_MAX_STRING) };
}

// ---- NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT ----------------------------------

/** The data of LIST_META_CONTEXT and SET_META_CONTEXT. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

export function encodeMetaContextRequest(request: MetaContextRequest): Uint8Array {
  const w = new WireWriter().string32(request.exportName).u32(request.queries.length);
  for (const q of request.queries) w.string32(q);
  return w.finish();
}

export function decodeMetaContextRequest(data: Uint8Array): MetaContextRequest {
  const r = new WireReader(data, 'meta context request');
  const exportName = r.string(r.u32('export name length'), 'export name', NBD_MAX_STRING);
  const count = r.u32('number of queries');
  // Each query takes at least 4 bytes: a count past that is a lie, caught before any allocation.
  if (count * 4 > r.remaining) throw new NbdProtocolError('decode meta context request', `${count} queries cannot fit in ${r.remaining} bytes`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(r.string(r.u32('query length'), 'query', NBD_MAX_STRING));
  r.end();
  return { exportName, queries };
}

/** The payload of NBD_REP_META_CONTEXT: a context id and its name. */
export function encodeMetaContextReply(id: number, name: string): Uint8Array {
  return new WireWriter().u32(id).string(name).finish();
}

export function decodeMetaContextReply(data: Uint8Array): { id: number; name: string } {
  const r = new WireReader(data, 'NBD_REP_META_CONTEXT');
  const id = r.u32('context id');
  return { id, name: r.string(r.remaining, 'context name', NBD_MAX_STRING) };
}

/** An error reply's data: a message for humans, possibly empty. */
export function decodeErrorMessage(data: Uint8Array): string {
  try {
    return new WireReader(data, 'option error reply').string(data.length, 'message', NBD_MAX_STRING);
  } catch {
    return `(${data.length} bytes of unreadable message)`;
  }
}
