/**
 * Test-only: a client that speaks raw NBD bytes built with the protocol codecs, so that the
 * server's tests can send exactly what they mean (valid or not) and see exactly what comes back.
 * It is not a client library: no retries, no checks beyond framing.
 */
import { connect, type Socket } from 'node:net';
import { type Duplex } from 'node:stream';
import {
  ByteQueue,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_FLAG_ERROR,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REPLY_FLAG_DONE,
  OPTION_REPLY_HEADER_SIZE,
  ReplyDecoder,
  SERVER_GREETING_SIZE,
  decodeInfoReply,
  decodeMetaContextReply,
  decodeOptionReplyHeader,
  decodeServerGreeting,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
  encodeRequest,
  replyTypeName,
  type NbdRequest,
  type ReplyFrame,
} from '../../protocol/index.js';
import { startClientTls, type TlsCredentials } from '../../tls.js';

/** One option reply as received. */
export interface RawOptionReply {
  option: number;
  type: number;
  data: Uint8Array;
}

/** What {@link RawClient.negotiate} does. */
export interface NegotiateOptions {
  exportName?: string;
  structured?: boolean;
  extended?: boolean;
  /** Contexts to SET (needs `structured` or `extended`). */
  contexts?: string[];
}

/** What transmission started with. */
export interface Negotiated {
  size: number;
  transmissionFlags: number;
  /** Context id → name, as SET_META_CONTEXT answered. */
  contexts: Map<number, string>;
}

/** The chunks (or the simple reply) of one request. */
export type RawReply = ReplyFrame[];

/** A raw NBD client over one socket. */
export class RawClient {
  #socket: Duplex;
  readonly #raw: Duplex;
  readonly #queue = new ByteQueue();
  #waiter: (() => void) | undefined;
  #ended = false;
  #replies: ReplyDecoder | undefined;
  readonly #frames: ReplyFrame[] = [];
  /** Cookie → READ length, for simple replies that carry data. */
  readonly #readLengths = new Map<bigint, number>();
  #nextCookie = 1n;
  extended = false;
  /** Resolves when the server closed the connection. */
  readonly closed: Promise<void>;
  readonly #onData = (chunk: Buffer): void => {
    this.#queue.push(new Uint8Array(chunk));
    this.#wake();
  };

  constructor(socket: Duplex) {
    this.#socket = socket;
    this.#raw = socket;
    socket.on('data', this.#onData);
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => {
      const done = (): void => {
        this.#ended = true;
        this.#wake();
        resolve();
      };
      // Like a socket without half-open: when the server ends, so does the client.
      socket.once('end', () => {
        if (!this.#socket.writableEnded) this.#socket.end();
        done();
      });
      socket.once('close', done);
    });
  }

  /** Connects to a Unix socket path or a TCP port on 127.0.0.1. */
  static connect(where: string | number): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket: Socket = typeof where === 'number' ? connect(where, '127.0.0.1') : connect(where);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new RawClient(socket));
      });
    });
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  /** True once the server closed its side. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Waits until `n` bytes are queued, or rejects when the connection ends first. */
  async readBytes(n: number): Promise<Uint8Array> {
    while (this.#queue.length < n) {
      if (this.#ended) throw new Error(`the server closed the connection (wanted ${n} bytes, have ${this.#queue.length})`);
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
    return this.#queue.take(n, new Uint8Array(n));
  }

  send(...parts: Uint8Array[]): void {
    for (const p of parts) this.#socket.write(p);
  }

  close(): void {
    this.#socket.destroy();
    this.#raw.destroy();
  }

  // ---- Negotiation ---------------------------------------------------------------------------

  /** Reads the greeting and returns the handshake flags. */
  async greeting(): Promise<number> {
    return decodeServerGreeting(await this.readBytes(SERVER_GREETING_SIZE));
  }

  /** Reads the greeting and answers with `flags` (default fixed newstyle and no zeroes). */
  async hello(flags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<void> {
    await this.greeting();
    this.send(encodeClientFlags(flags));
  }

  async optionReply(): Promise<RawOptionReply> {
    const header = decodeOptionReplyHeader(await this.readBytes(OPTION_REPLY_HEADER_SIZE), 1 << 20);
    return { option: header.option, type: header.type, data: await this.readBytes(header.length) };
  }

  /** Sends an option and reads replies up to the final one (ACK or an error). */
  async option(option: number, data: Uint8Array = new Uint8Array(0)): Promise<RawOptionReply[]> {
    this.send(encodeOptionRequest(option, data));
    const replies: RawOptionReply[] = [];
    for (;;) {
      const reply = await this.optionReply();
      replies.push(reply);
      if (reply.type === NBD_REP_ACK || (reply.type & NBD_REP_FLAG_ERROR) !== 0) return replies;
    }
  }

  /** Upgrades to TLS after NBD_OPT_STARTTLS was acknowledged. */
  async startTls(credentials: TlsCredentials): Promise<void> {
    const replies = await this.option(NBD_OPT_STARTTLS);
    const last = replies[replies.length - 1]!;
    if (last.type !== NBD_REP_ACK) throw new Error(`STARTTLS answered ${replyTypeName(last.type)}`);
    if (this.#queue.length > 0) throw new Error('bytes after the STARTTLS ACK');
    this.#raw.off('data', this.#onData);
    const secure = await startClientTls(this.#raw as Socket, credentials);
    secure.on('data', this.#onData);
    secure.on('error', () => undefined);
    secure.once('end', () => {
      this.#ended = true;
      this.#wake();
    });
    this.#socket = secure;
  }

  /** The usual way in: flags, optional extensions, SET_META_CONTEXT, GO. Throws on any error reply. */
  async negotiate(options: NegotiateOptions = {}): Promise<Negotiated> {
    const name = options.exportName ?? '';
    const expectAck = (what: string, replies: RawOptionReply[]): void => {
      const last = replies[replies.length - 1]!;
      if (last.type !== NBD_REP_ACK) throw new Error(`${what} answered ${replyTypeName(last.type)}: ${new TextDecoder().decode(last.data)}`);
    };
    if (options.extended) {
      expectAck('EXTENDED_HEADERS', await this.option(NBD_OPT_EXTENDED_HEADERS));
      this.extended = true;
    } else if (options.structured) {
      expectAck('STRUCTURED_REPLY', await this.option(NBD_OPT_STRUCTURED_REPLY));
    }
    const contexts = new Map<number, string>();
    if (options.contexts !== undefined) {
      const replies = await this.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: name, queries: options.contexts }));
      expectAck('SET_META_CONTEXT', replies);
      for (const r of replies) {
        if (r.type === NBD_REP_META_CONTEXT) {
          const { id, name: contextName } = decodeMetaContextReply(r.data);
          contexts.set(id, contextName);
        }
      }
    }
    const replies = await this.option(NBD_OPT_GO, encodeInfoRequest({ name, infos: [NBD_INFO_BLOCK_SIZE] }));
    expectAck('GO', replies);
    let size = -1;
    let transmissionFlags = 0;
    for (const r of replies) {
      if (r.type !== NBD_REP_INFO) continue;
      const info = decodeInfoReply(r.data);
      if (info.type === 'export') {
        size = info.size;
        transmissionFlags = info.transmissionFlags;
      }
    }
    this.startTransmission();
    return { size, transmissionFlags, contexts };
  }

  /** From now on, bytes are replies. */
  startTransmission(): void {
    this.#replies = new ReplyDecoder({ maxPayload: 1 << 30, simpleReplyDataLength: (cookie) => this.#readLengths.get(cookie) ?? 0 });
  }

  // ---- Transmission --------------------------------------------------------------------------

  /** Sends a request (and its payload); returns its cookie. */
  request(request: Partial<NbdRequest> & { type: number }, payload?: Uint8Array): bigint {
    const cookie = request.cookie ?? this.#nextCookie++;
    const full: NbdRequest = { flags: 0, offset: 0, length: payload?.length ?? 0, ...request, cookie };
    if (full.type === 0) this.#readLengths.set(cookie, full.length);
    else this.#readLengths.delete(cookie);
    this.send(encodeRequest(full, this.extended), ...(payload !== undefined ? [payload] : []));
    return cookie;
  }

  /** The next reply frame (a simple reply or one chunk). */
  async frame(): Promise<ReplyFrame> {
    for (;;) {
      const next = this.#frames.shift();
      if (next !== undefined) return next;
      if (this.#queue.length > 0) {
        this.#frames.push(...this.#replies!.feed(this.#queue.takeAll()));
        continue;
      }
      if (this.#ended) throw new Error('the server closed the connection while a reply was expected');
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  /** Every frame of the next reply: a simple reply, or chunks up to the one with DONE. */
  async reply(): Promise<RawReply> {
    const first = await this.frame();
    if (first.kind === 'simple') return [first];
    // The server writes each reply whole, so chunks of different requests never interleave.
    const frames: ReplyFrame[] = [first];
    let current: ReplyFrame = first;
    while (current.kind === 'chunk' && (current.flags & NBD_REPLY_FLAG_DONE) === 0) {
      current = await this.frame();
      if (current.cookie !== first.cookie) throw new Error(`chunks of cookie ${current.cookie} interleaved with cookie ${first.cookie}`);
      frames.push(current);
    }
    return frames;
  }

  /** Sends a request and waits for its whole reply (no other request may be in flight). */
  async call(request: Partial<NbdRequest> & { type: number }, payload?: Uint8Array): Promise<RawReply> {
    const cookie = this.request(request, payload);
    const reply = await this.reply();
    if (reply[0]!.cookie !== cookie) throw new Error(`expected the reply to cookie ${cookie}, got ${reply[0]!.cookie}`);
    return reply;
  }
}
