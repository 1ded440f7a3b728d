/**
 * The client's side of the reply stream: splits the server's bytes into replies as the protocol's
 * `ReplyDecoder` does (same frames, same limits, same errors), with one difference that matters
 * for speed: the data of an NBD_REPLY_TYPE_OFFSET_DATA chunk goes straight to where its READ
 * wants it (`place` says where), instead of into a buffer of its own that is copied afterwards.
 *
 * Bytes come in two ways:
 * - `feed(chunk)`, for streams that hand out chunks ('data' events: TLS);
 * - `nextBuffer()` / `received(n)`, for a socket that reads into buffers we choose (`net.Socket`
 *   `onread`): mid-payload, the socket reads into the destination itself; elsewhere into one
 *   reused scratch buffer. Nothing is allocated per read, and most data is copied only once, by
 *   the kernel.
 *
 * Memory: one header, one scratch buffer, and at most one buffered payload of `maxPayload` bytes
 * (placed data lands in buffers the requests already own).
 */
import {
  EXTENDED_REPLY_HEADER_SIZE,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
} from '../protocol/constants.js';
import { NbdProtocolError } from '../protocol/errors.js';
import { type ReplyFrame } from '../protocol/transmission-decoder.js';

/** A reply as the connection sees it: a protocol frame, or the end of a chunk whose data was placed. */
export type ClientFrame = ReplyFrame | PlacedFrame;

/** An NBD_REPLY_TYPE_OFFSET_DATA chunk whose data is already where `place` said. */
export interface PlacedFrame {
  kind: 'placed';
  cookie: bigint;
  /** NBD_REPLY_FLAG_* bits of the chunk. */
  flags: number;
}

/** What the reader asks of the connection. */
export interface ReplyReaderHooks {
  /** Largest chunk payload accepted (bytes); more is a protocol error. */
  maxPayload: number;
  /** As in `ReplyDecoderOptions`: data bytes after a successful simple reply, undefined for an unknown cookie. */
  simpleReplyDataLength(cookie: bigint): number | undefined;
  /**
   * For an OFFSET_DATA chunk answering `cookie` whose data (`length` bytes, at least 1) belongs at
   * `offset`: a view of exactly `length` bytes to put it in, or undefined to get the chunk as an
   * ordinary frame (for anything unexpected, which the frame path then reports). `extended`: the
   * chunk came with an extended header.
   */
  place(cookie: bigint, extended: boolean, offset: number, length: number): Uint8Array | undefined;
  /** Called for each complete reply, in stream order. */
  frame(frame: ClientFrame): void;
}

type ChunkHeader = Omit<Extract<ReplyFrame, { kind: 'chunk' }>, 'payload'>;

type ReaderState =
  | { name: 'header' }
  /** An OFFSET_DATA chunk: its 8-byte offset is being read into the header buffer. */
  | { name: 'prefix'; header: ChunkHeader; length: number; extended: boolean }
  | { name: 'payload'; header: ChunkHeader; buffer: Uint8Array; filled: number }
  | { name: 'placed'; header: ChunkHeader; target: Uint8Array; filled: number }
  | { name: 'simple-data'; cookie: bigint; buffer: Uint8Array; filled: number };

/** Size of the scratch buffer that socket reads land in between payloads. */
const SCRATCH_SIZE = 64 * 1024;
/** Below this many payload bytes left, a read goes to the scratch buffer (with what follows) rather than to the payload. */
const DIRECT_MIN = 16 * 1024;
/** The 8-byte offset that starts an OFFSET_DATA payload (proto.md NBD_REPLY_TYPE_OFFSET_DATA). */
const OFFSET_PREFIX = 8;
const EMPTY = new Uint8Array(0);

/** Splits replies and places READ data; see the module comment. */
export class ReplyReader {
  readonly #hooks: ReplyReaderHooks;
  /** Header bytes (and the OFFSET_DATA prefix) being collected; the longest header is 32 bytes. */
  readonly #head = new Uint8Array(EXTENDED_REPLY_HEADER_SIZE);
  readonly #headView = new DataView(this.#head.buffer);
  #headFilled = 0;
  #state: ReaderState = { name: 'header' };
  #scratch: Uint8Array | undefined;
  /** The state whose payload the last `nextBuffer()` returned a view of; undefined: the scratch buffer. */
  #direct: ReaderState | undefined;
  #stopped = false;

  constructor(hooks: ReplyReaderHooks) {
    this.#hooks = hooks;
  }

  /** Stops for good: later bytes are ignored (the connection failed). */
  stop(): void {
    this.#stopped = true;
  }

  /**
   * Takes a chunk from the stream (not kept: what must outlive the call is copied).
   *
   * @throws NbdProtocolError when the bytes break the protocol (the stream is lost then)
   */
  feed(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && !this.#stopped) at += this.#step(chunk, at);
  }

  /** The buffer the next socket read should fill: a view of the current payload, or the scratch buffer. */
  nextBuffer(): Uint8Array {
    const s = this.#state;
    if (s.name === 'placed' || s.name === 'payload' || s.name === 'simple-data') {
      const target = s.name === 'placed' ? s.target : s.buffer;
      if (target.length - s.filled >= DIRECT_MIN) {
        this.#direct = s;
        return target.subarray(s.filled);
      }
    }
    this.#direct = undefined;
    return (this.#scratch ??= new Uint8Array(SCRATCH_SIZE));
  }

  /**
   * `n` bytes were read into the buffer the last `nextBuffer()` returned.
   *
   * @throws NbdProtocolError as `feed` does
   */
  received(n: number): void {
    if (this.#stopped || n <= 0) return;
    const s = this.#direct;
    if (s === undefined) {
      this.feed(this.#scratch!.subarray(0, n));
      return;
    }
    // Bytes fed in between would have moved the state on: then these bytes landed in the wrong place.
    if (s !== this.#state || (s.name !== 'placed' && s.name !== 'payload' && s.name !== 'simple-data')) throw new Error('ReplyReader: bytes were fed between nextBuffer() and received()');
    s.filled += n;
    this.#payloadProgress();
  }

  /** Consumes bytes of `chunk` from `at`; returns how many (at least one). */
  #step(chunk: Uint8Array, at: number): number {
    const s = this.#state;
    switch (s.name) {
      case 'header':
        return this.#headerStep(chunk, at);
      case 'prefix': {
        const n = Math.min(OFFSET_PREFIX - this.#headFilled, chunk.length - at);
        this.#head.set(chunk.subarray(at, at + n), this.#headFilled);
        this.#headFilled += n;
        if (this.#headFilled === OFFSET_PREFIX) this.#prefixDone(s);
        return n;
      }
      case 'payload':
      case 'simple-data': {
        const n = Math.min(s.buffer.length - s.filled, chunk.length - at);
        s.buffer.set(chunk.subarray(at, at + n), s.filled);
        s.filled += n;
        this.#payloadProgress();
        return n;
      }
      case 'placed': {
        const n = Math.min(s.target.length - s.filled, chunk.length - at);
        s.target.set(chunk.subarray(at, at + n), s.filled);
        s.filled += n;
        this.#payloadProgress();
        return n;
      }
      default: {
        const never: never = s;
        throw new Error(`unreachable state ${String(never)}`);
      }
    }
  }

  #headerStep(chunk: Uint8Array, at: number): number {
    // The magic decides the header size: collect its 4 bytes first, then the rest.
    const magicKnown = this.#headFilled >= 4;
    const size = magicKnown ? headerSize(this.#headView.getUint32(0)) : 4;
    const n = Math.min(size - this.#headFilled, chunk.length - at);
    this.#head.set(chunk.subarray(at, at + n), this.#headFilled);
    this.#headFilled += n;
    if (this.#headFilled < size) return n;
    if (!magicKnown) {
      if (headerSize(this.#headView.getUint32(0)) === 0) {
        throw new NbdProtocolError('decode reply', `bad magic 0x${this.#headView.getUint32(0).toString(16)}`);
      }
      return n;
    }
    this.#headFilled = 0;
    this.#header();
    return n;
  }

  /** A whole header is in `#head`. */
  #header(): void {
    const view = this.#headView;
    const magic = view.getUint32(0);
    if (magic === NBD_SIMPLE_REPLY_MAGIC) {
      const error = view.getUint32(4);
      const cookie = view.getBigUint64(8);
      if (error !== 0) return this.#emit({ kind: 'simple', cookie, error });
      const dataLength = this.#hooks.simpleReplyDataLength(cookie);
      if (dataLength === undefined) throw new NbdProtocolError('decode reply', `a simple reply names cookie ${cookie}, which no request in flight has`);
      if (dataLength === 0) return this.#emit({ kind: 'simple', cookie, error });
      this.#state = { name: 'simple-data', cookie, buffer: new Uint8Array(dataLength), filled: 0 };
      return;
    }
    const extended = magic === NBD_EXTENDED_REPLY_MAGIC;
    const flags = view.getUint16(4);
    const type = view.getUint16(6);
    const cookie = view.getBigUint64(8);
    const offset = extended ? view.getUint32(16) * 0x100000000 + view.getUint32(20) : 0;
    const length = extended ? view.getUint32(24) * 0x100000000 + view.getUint32(28) : view.getUint32(16);
    if (length > this.#hooks.maxPayload) {
      throw new NbdProtocolError('decode reply', `a chunk of ${length} bytes is past the limit of ${this.#hooks.maxPayload}`);
    }
    const header: ChunkHeader = { kind: 'chunk', cookie, flags, type, offset };
    if (length === 0) return this.#emit({ ...header, payload: EMPTY });
    if (type === NBD_REPLY_TYPE_OFFSET_DATA && length > OFFSET_PREFIX) {
      this.#state = { name: 'prefix', header, length, extended };
      return;
    }
    this.#state = { name: 'payload', header, buffer: new Uint8Array(length), filled: 0 };
  }

  /** The offset of an OFFSET_DATA chunk is in `#head`: place its data, or buffer the chunk. */
  #prefixDone(s: Extract<ReaderState, { name: 'prefix' }>): void {
    this.#headFilled = 0;
    const offset = this.#headView.getUint32(0) * 0x100000000 + this.#headView.getUint32(4);
    const target = this.#hooks.place(s.header.cookie, s.extended, offset, s.length - OFFSET_PREFIX);
    if (target !== undefined) {
      this.#state = { name: 'placed', header: s.header, target, filled: 0 };
      return;
    }
    const buffer = new Uint8Array(s.length);
    buffer.set(this.#head.subarray(0, OFFSET_PREFIX));
    this.#state = { name: 'payload', header: s.header, buffer, filled: OFFSET_PREFIX };
  }

  /** Emits the reply whose payload is complete, if it is. */
  #payloadProgress(): void {
    const s = this.#state;
    switch (s.name) {
      case 'payload':
        if (s.filled === s.buffer.length) this.#emit({ ...s.header, payload: s.buffer });
        return;
      case 'simple-data':
        if (s.filled === s.buffer.length) this.#emit({ kind: 'simple', cookie: s.cookie, error: 0, data: s.buffer });
        return;
      case 'placed':
        if (s.filled === s.target.length) this.#emit({ kind: 'placed', cookie: s.header.cookie, flags: s.header.flags });
        return;
      default:
        return;
    }
  }

  #emit(frame: ClientFrame): void {
    this.#state = { name: 'header' };
    this.#hooks.frame(frame);
  }
}

/** Header size for a reply magic, 0 for a bad magic. */
function headerSize(magic: number): number {
  switch (magic) {
    case NBD_SIMPLE_REPLY_MAGIC:
      return SIMPLE_REPLY_SIZE;
    case NBD_STRUCTURED_REPLY_MAGIC:
      return STRUCTURED_REPLY_HEADER_SIZE;
    case NBD_EXTENDED_REPLY_MAGIC:
      return EXTENDED_REPLY_HEADER_SIZE;
    default:
      return 0;
  }
}
