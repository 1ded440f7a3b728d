/**
 * Push decoders of the transmission phase: the server's {@link RequestDecoder} and the client's
 * {@link ReplyDecoder}. `feed(chunk)` returns the complete frames and keeps the rest. Lengths
 * from the wire are checked against limits before anything is allocated for them.
 */
import {
  EXTENDED_REPLY_HEADER_SIZE,
  EXTENDED_REQUEST_HEADER_SIZE,
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_CMD_WRITE,
  NBD_EXTENDED_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  REQUEST_HEADER_SIZE,
  SIMPLE_REPLY_SIZE,
  STRUCTURED_REPLY_HEADER_SIZE,
} from './constants.js';
import { ByteQueue, collectFrames, type StepResult } from './byte-queue.js';
import { NbdProtocolError } from './errors.js';
import { decodeRequest, type NbdRequest } from './transmission.js';

/** One request as the server sees it. */
export type RequestFrame =
  /** A request; `payload` is present for WRITE (and any request sent with PAYLOAD_LEN). */
  | { kind: 'request'; request: NbdRequest; payload?: Uint8Array }
  /** A request whose payload was longer than the limit: the payload was read and dropped. */
  | { kind: 'payload-too-big'; request: NbdRequest };

type RequestState =
  | { name: 'header' }
  | { name: 'payload'; request: NbdRequest; buffer: Uint8Array; filled: number }
  | { name: 'skip'; request: NbdRequest; left: number };

/** Options of {@link RequestDecoder}. */
export interface RequestDecoderOptions {
  /** Extended headers were negotiated. */
  extended: boolean;
  /** Largest payload accepted, in bytes; longer ones are skipped and reported. */
  maxPayload: number;
}

/**
 * Splits the client's byte stream into requests. Memory held is one header plus at most one
 * payload of `maxPayload` bytes. A bad magic throws `NbdProtocolError` (the server must then drop
 * the connection: proto.md allows a hard disconnect when the client breaks the protocol).
 */
export class RequestDecoder {
  readonly #queue = new ByteQueue();
  readonly #headerSize: number;
  readonly #extended: boolean;
  readonly #maxPayload: number;
  #state: RequestState = { name: 'header' };

  constructor(options: RequestDecoderOptions) {
    this.#extended = options.extended;
    this.#headerSize = options.extended ? EXTENDED_REQUEST_HEADER_SIZE : REQUEST_HEADER_SIZE;
    this.#maxPayload = options.maxPayload;
  }

  feed(chunk: Uint8Array): RequestFrame[] {
    this.#queue.push(chunk);
    return collectFrames(() => this.#step());
  }

  /** True between a request header and the end of its payload. */
  get midRequest(): boolean {
    return this.#state.name !== 'header' || this.#queue.length > 0;
  }

  #payloadLength(request: NbdRequest): number {
    if (request.type === NBD_CMD_WRITE) return request.length;
    if (this.#extended && (request.flags & NBD_CMD_FLAG_PAYLOAD_LEN) !== 0) return request.length;
    return 0;
  }

  #step(): StepResult<RequestFrame> {
    const q = this.#queue;
    const s = this.#state;
    switch (s.name) {
      case 'header': {
        if (q.length < this.#headerSize) return 'more';
        const request = decodeRequest(q.take(this.#headerSize), this.#extended);
        const length = this.#payloadLength(request);
        if (length === 0) return { kind: 'request', request };
        if (length > this.#maxPayload) {
          this.#state = { name: 'skip', request, left: length };
          return 'progress';
        }
        this.#state = { name: 'payload', request, buffer: new Uint8Array(length), filled: 0 };
        return 'progress';
      }
      case 'payload': {
        s.filled += q.takeInto(s.buffer, s.filled, s.buffer.length - s.filled);
        if (s.filled < s.buffer.length) return 'more';
        this.#state = { name: 'header' };
        return { kind: 'request', request: s.request, payload: s.buffer };
      }
      case 'skip': {
        s.left -= q.skip(s.left);
        if (s.left > 0) return 'more';
        this.#state = { name: 'header' };
        return { kind: 'payload-too-big', request: s.request };
      }
      default: {
        const never: never = s;
        throw new Error(`unreachable state ${String(never)}`);
      }
    }
  }
}

/** One reply message as the client sees it. */
export type ReplyFrame =
  /** A simple reply; `data` is present for a successful READ without structured replies. */
  | { kind: 'simple'; cookie: bigint; error: number; data?: Uint8Array }
  /** A structured or extended reply chunk; `offset` is the extended header's offset field (else 0). */
  | { kind: 'chunk'; cookie: bigint; flags: number; type: number; offset: number; payload: Uint8Array };

/** Options of {@link ReplyDecoder}. */
export interface ReplyDecoderOptions {
  /** Largest chunk payload accepted (bytes); more is a protocol error. */
  maxPayload: number;
  /**
   * For a successful simple reply: how many data bytes follow it (the length of the READ with
   * that cookie; 0 for other commands), or undefined when no request has that cookie (a
   * protocol error).
   */
  simpleReplyDataLength: (cookie: bigint) => number | undefined;
}

type ReplyState =
  | { name: 'header' }
  | { name: 'payload'; header: Omit<Extract<ReplyFrame, { kind: 'chunk' }>, 'payload'>; buffer: Uint8Array; filled: number }
  | { name: 'simple-data'; cookie: bigint; buffer: Uint8Array; filled: number };

/**
 * Splits the server's byte stream into replies. Accepts simple, structured and extended headers;
 * the client checks that what arrives matches what was negotiated.
 */
export class ReplyDecoder {
  readonly #queue = new ByteQueue();
  readonly #options: ReplyDecoderOptions;
  #state: ReplyState = { name: 'header' };

  constructor(options: ReplyDecoderOptions) {
    this.#options = options;
  }

  feed(chunk: Uint8Array): ReplyFrame[] {
    this.#queue.push(chunk);
    return collectFrames(() => this.#step());
  }

  #step(): StepResult<ReplyFrame> {
    const q = this.#queue;
    const s = this.#state;
    switch (s.name) {
      case 'header': {
        if (q.length < 4) return 'more';
        const magic = q.peekU32();
        const size = magic === NBD_SIMPLE_REPLY_MAGIC ? SIMPLE_REPLY_SIZE
          : magic === NBD_STRUCTURED_REPLY_MAGIC ? STRUCTURED_REPLY_HEADER_SIZE
            : magic === NBD_EXTENDED_REPLY_MAGIC ? EXTENDED_REPLY_HEADER_SIZE : 0;
        if (size === 0) throw new NbdProtocolError('decode reply', `bad magic 0x${magic.toString(16)}`);
        if (q.length < size) return 'more';
        q.skip(4);
        const rest = q.take(size - 4);
        const view = new DataView(rest.buffer, rest.byteOffset, rest.length);
        if (magic === NBD_SIMPLE_REPLY_MAGIC) {
          const error = view.getUint32(0);
          const cookie = view.getBigUint64(4);
          if (error !== 0) return { kind: 'simple', cookie, error };
          const dataLength = this.#options.simpleReplyDataLength(cookie);
          if (dataLength === undefined) throw new NbdProtocolError('decode reply', `a simple reply names cookie ${cookie}, which no request in flight has`);
          if (dataLength === 0) return { kind: 'simple', cookie, error };
          this.#state = { name: 'simple-data', cookie, buffer: new Uint8Array(dataLength), filled: 0 };
          return 'progress';
        }
        const flags = view.getUint16(0);
        const type = view.getUint16(2);
        const cookie = view.getBigUint64(4);
        let offset = 0;
        let length: number;
        if (magic === NBD_EXTENDED_REPLY_MAGIC) {
          offset = view.getUint32(12) * 0x100000000 + view.getUint32(16);
          const hi = view.getUint32(20);
          length = hi * 0x100000000 + view.getUint32(24);
        } else {
          length = view.getUint32(12);
        }
        if (length > this.#options.maxPayload) {
          throw new NbdProtocolError('decode reply', `a chunk of ${length} bytes is past the limit of ${this.#options.maxPayload}`);
        }
        const header = { kind: 'chunk' as const, cookie, flags, type, offset };
        if (length === 0) return { ...header, payload: new Uint8Array(0) };
        this.#state = { name: 'payload', header, buffer: new Uint8Array(length), filled: 0 };
        return 'progress';
      }
      case 'payload': {
        s.filled += q.takeInto(s.buffer, s.filled, s.buffer.length - s.filled);
        if (s.filled < s.buffer.length) return 'more';
        this.#state = { name: 'header' };
        return { ...s.header, payload: s.buffer };
      }
      case 'simple-data': {
        s.filled += q.takeInto(s.buffer, s.filled, s.buffer.length - s.filled);
        if (s.filled < s.buffer.length) return 'more';
        this.#state = { name: 'header' };
        return { kind: 'simple', cookie: s.cookie, error: 0, data: s.buffer };
      }
      default: {
        const never: never = s;
        throw new Error(`unreachable state ${String(never)}`);
      }
    }
  }
}
