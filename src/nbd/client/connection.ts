/**
 * One connection in the transmission phase (proto.md "Transmission"): requests go out with
 * their cookies, replies come back in any order through a `ReplyReader` (which puts READ data
 * straight into the request's buffer), and each reply settles the request with its cookie. Many
 * requests are in flight at once; past `maxInFlight` they wait in a local queue. The socket is
 * read continuously; a request never waits for the previous one.
 *
 * Failures:
 * - an error reply rejects its request with `NbdCommandError`; ESHUTDOWN also stops the connection
 *   from sending more (proto.md: the client must then disconnect softly once its requests are done);
 * - a dropped connection, or bytes that break the stream (bad magic, unknown cookie), reject every
 *   request in flight or queued with a retryable `IoError` (ECONNRESET or EPIPE), and every later
 *   request too.
 */
import { type Duplex } from 'node:stream';
import { BitbackError, IoError } from '../../errors.js';
import { NBD_CMD_DISC, NBD_CMD_READ, NBD_CMD_WRITE, NBD_ESHUTDOWN } from '../protocol/constants.js';
import { NbdCommandError } from '../protocol/errors.js';
import { encodeRequest } from '../protocol/transmission.js';
import {
  applyChunk,
  completeSimple,
  endPlacedChunk,
  placeData,
  requestAction,
  type PendingRequest,
  type ReplyContext,
  type StatusReply,
} from './reply-assembly.js';
import { ReplyReader, type ClientFrame } from './reply-reader.js';
import { type SocketInput } from './socket-input.js';

/** Options of {@link NbdConnection}. */
export interface ConnectionOptions extends ReplyContext {
  /** Requests sent and not yet answered, at most. */
  maxInFlight: number;
  /** Largest reply chunk payload accepted, in bytes (bounds what one reply may allocate). */
  maxReplyPayload: number;
  /** Names the export in messages: "NBD export 'x' at unix:/s". */
  target: string;
}

/** How long `close` waits for the server to close its side after NBD_CMD_DISC. */
const CLOSE_GRACE_MS = 2000;

/** A connection in the transmission phase; see the module comment. */
export class NbdConnection {
  readonly #stream: Duplex;
  readonly #options: ConnectionOptions;
  readonly #reader: ReplyReader;
  readonly #inFlight = new Map<bigint, PendingRequest>();
  /** Requests waiting for a place in flight; entries before `#queueHead` were sent (and cleared). */
  readonly #queue: Array<PendingRequest | undefined> = [];
  #queueHead = 0;
  #nextCookie = 1n;
  #corked = false;
  /** Set once the connection is unusable: every request rejects with a copy of it. */
  #failure: { reason: string; errno: string; cause?: unknown } | undefined;
  /** The server answered ESHUTDOWN: nothing more is sent. */
  #shutdown = false;
  #closed = false;
  #closing: Promise<void> | undefined;
  #idle: (() => void) | undefined;

  /**
   * Takes over `stream` (negotiated, paused, with no listeners of its own) and the bytes already
   * received after negotiation. With `input` (a plain socket opened with one), bytes arrive
   * through it, into buffers the connection chooses; otherwise through 'data' events.
   */
  constructor(stream: Duplex, leftover: Uint8Array, input: SocketInput | undefined, options: ConnectionOptions) {
    this.#stream = stream;
    this.#options = options;
    this.#reader = new ReplyReader({
      maxPayload: options.maxReplyPayload,
      simpleReplyDataLength: (cookie) => {
        const request = this.#inFlight.get(cookie);
        if (request === undefined) return undefined;
        return !options.structuredReplies && request.type === NBD_CMD_READ ? request.length : 0;
      },
      place: (cookie, extended, offset, length) => {
        // Only what is sure to be valid is placed; anything else takes the frame path, which says why it is not.
        if (!options.structuredReplies || extended !== options.extendedHeaders) return undefined;
        const request = this.#inFlight.get(cookie);
        return request === undefined ? undefined : placeData(request, offset, length);
      },
      frame: (frame) => this.#dispatch(frame),
    });
    // The bytes received during negotiation come first, then what the input kept since.
    if (leftover.length > 0) this.#receive(leftover);
    if (input !== undefined) {
      input.attach({
        nextBuffer: () => this.#reader.nextBuffer(),
        received: (n) => this.#guard(() => this.#reader.received(n)),
        feed: (chunk) => this.#receive(chunk),
      });
    } else {
      stream.on('data', (chunk: Uint8Array) => this.#receive(chunk));
    }
    stream.on('error', (e: NodeJS.ErrnoException) => {
      const errno = e.code === 'EPIPE' ? 'EPIPE' : 'ECONNRESET';
      this.#drop(`the connection failed: ${e.message}`, errno, e);
    });
    stream.on('end', () => this.#drop('the server closed the connection', 'ECONNRESET'));
    stream.on('close', () => this.#drop('the connection was closed', 'ECONNRESET'));
    stream.resume();
  }

  /** Requests in flight or queued: how busy the connection is. */
  get load(): number {
    return this.#inFlight.size + this.#queue.length - this.#queueHead;
  }

  /** False once the connection failed, the server shut down, or `close` was called. */
  get usable(): boolean {
    return this.#failure === undefined && !this.#shutdown && !this.#closed;
  }

  /** Why the connection is not usable, as an error for `action`; undefined while it is. */
  unusableError(action: string): BitbackError | undefined {
    if (this.#failure !== undefined) {
      const { reason, errno, cause } = this.#failure;
      return new IoError(action, reason, errno, { retryable: true, cause });
    }
    if (this.#shutdown) return new IoError(action, 'the server is shutting down', 'ESHUTDOWN', { retryable: true });
    if (this.#closed) return new IoError(action, 'the connection is closed', 'ECONNRESET', { retryable: true });
    return undefined;
  }

  /**
   * Reads `length` bytes at `offset` (at most the negotiated maximum payload). With `into`, the
   * data lands in `into` at `at` and the promise resolves with that view; without, with a buffer
   * the caller owns.
   */
  read(offset: number, length: number, into?: Uint8Array, at = 0): Promise<Uint8Array> {
    return this.#submit(NBD_CMD_READ, 0, offset, length, undefined, into, at) as Promise<Uint8Array>;
  }

  /** Writes `data` (borrowed until the promise settles) at `offset`. */
  write(offset: number, data: Uint8Array, flags: number): Promise<void> {
    return this.#submit(NBD_CMD_WRITE, flags, offset, data.length, data) as Promise<void>;
  }

  /** Sends a command without payload or reply data (FLUSH, TRIM, WRITE_ZEROES, CACHE). */
  command(type: number, flags: number, offset: number, length: number): Promise<void> {
    return this.#submit(type, flags, offset, length) as Promise<void>;
  }

  /** Sends NBD_CMD_BLOCK_STATUS; resolves with the descriptors of every negotiated context. */
  blockStatus(type: number, flags: number, offset: number, length: number): Promise<StatusReply> {
    return this.#submit(type, flags, offset, length) as Promise<StatusReply>;
  }

  /**
   * Waits for the requests in flight, then sends NBD_CMD_DISC (unless the connection already
   * failed) and closes the stream. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= this.#closeNow();
    return this.#closing;
  }

  async #closeNow(): Promise<void> {
    if (this.load > 0) await new Promise<void>((resolve) => (this.#idle = resolve));
    this.#closed = true;
    if (this.#failure === undefined) this.#write(encodeRequest({ flags: 0, type: NBD_CMD_DISC, cookie: this.#nextCookie++, offset: 0, length: 0 }, this.#options.extendedHeaders));
    await endStream(this.#stream);
  }

  #submit(type: number, flags: number, offset: number, length: number, payload?: Uint8Array, into?: Uint8Array, at = 0): Promise<unknown> {
    const target = this.#options.target;
    return new Promise((resolve, reject) => {
      const request: PendingRequest = {
        type,
        flags,
        offset,
        length,
        at,
        describe: () => `${requestAction(type, offset, length)} of ${target}`,
        resolve,
        reject,
        payload,
        into,
      };
      if (!this.usable) {
        reject(this.unusableError(request.describe())!);
        return;
      }
      if (this.#inFlight.size < this.#options.maxInFlight) this.#send(request);
      else this.#queue.push(request);
    });
  }

  #send(request: PendingRequest): void {
    const cookie = this.#nextCookie++;
    this.#inFlight.set(cookie, request);
    this.#write(encodeRequest({ flags: request.flags, type: request.type, cookie, offset: request.offset, length: request.length }, this.#options.extendedHeaders));
    if (request.payload !== undefined) this.#write(request.payload);
  }

  /** Writes, corking the stream until the end of this tick so that headers and payloads of one burst leave together. */
  #write(bytes: Uint8Array): void {
    if (!this.#corked) {
      this.#corked = true;
      this.#stream.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.#stream.uncork();
      });
    }
    this.#stream.write(bytes);
  }

  #receive(chunk: Uint8Array): void {
    this.#guard(() => this.#reader.feed(chunk));
  }

  /** Runs a step of the reader; bytes that break the protocol drop the connection. */
  #guard(step: () => void): void {
    if (this.#failure !== undefined) return;
    try {
      step();
    } catch (e) {
      this.#drop(`the server broke the protocol: ${e instanceof Error ? e.message : String(e)}`, 'ECONNRESET', e);
    }
  }

  #dispatch(frame: ClientFrame): void {
    if (this.#failure !== undefined) return;
    const request = this.#inFlight.get(frame.cookie);
    if (request === undefined) {
      this.#drop(`the server broke the protocol: a reply names cookie ${frame.cookie}, which no request in flight has`, 'ECONNRESET');
      return;
    }
    const options = this.#options;
    if (frame.kind === 'simple') {
      if (options.extendedHeaders) {
        this.#drop('the server broke the protocol: a simple reply after extended headers were negotiated', 'ECONNRESET');
        return;
      }
      if (options.structuredReplies && frame.error === 0 && request.type === NBD_CMD_READ) {
        // Its data may follow, and there is no telling how long: the stream is lost.
        this.#drop('the server broke the protocol: a simple reply to a READ after structured replies were negotiated', 'ECONNRESET');
        return;
      }
      this.#inFlight.delete(frame.cookie);
      this.#noteError(frame.error);
      completeSimple(request, frame, options);
      this.#afterReply();
      return;
    }
    if (!options.structuredReplies) {
      this.#drop('the server broke the protocol: a structured reply chunk, but structured replies were not negotiated', 'ECONNRESET');
      return;
    }
    const done = frame.kind === 'placed' ? endPlacedChunk(request, frame.flags, options) : applyChunk(request, frame, options);
    if (!done) return;
    this.#inFlight.delete(frame.cookie);
    const failure = request.state?.failure;
    if (failure instanceof NbdCommandError) this.#noteError(failure.nbdErrno);
    this.#afterReply();
  }

  /** ESHUTDOWN: the server is going away; send nothing more (proto.md "Terminating the transmission phase"). */
  #noteError(error: number): void {
    if (error !== NBD_ESHUTDOWN || this.#shutdown) return;
    this.#shutdown = true;
    const queued = this.#takeQueued();
    for (const request of queued) request.reject(this.unusableError(request.describe())!);
  }

  #afterReply(): void {
    while (this.#queueHead < this.#queue.length && this.#inFlight.size < this.#options.maxInFlight && this.usable) {
      const next = this.#queue[this.#queueHead]!;
      this.#queue[this.#queueHead++] = undefined;
      this.#send(next);
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue.splice(0, this.#queueHead);
      this.#queueHead = 0;
    }
    if (this.load === 0) {
      const idle = this.#idle;
      this.#idle = undefined;
      idle?.();
      // proto.md: after ESHUTDOWN the client disconnects softly once nothing is in flight.
      if (this.#shutdown && !this.#closed) void this.close();
    }
  }

  /** Empties the queue, returning what waited in it. */
  #takeQueued(): PendingRequest[] {
    const queued = this.#queue.slice(this.#queueHead) as PendingRequest[];
    this.#queue.length = 0;
    this.#queueHead = 0;
    return queued;
  }

  /** The connection is lost: every request in flight or queued fails, and so does every later one. */
  #drop(reason: string, errno: string, cause?: unknown): void {
    if (this.#failure !== undefined || this.#closed) return;
    this.#failure = { reason, errno, ...(cause === undefined ? {} : { cause }) };
    this.#reader.stop();
    const requests = [...this.#inFlight.values(), ...this.#takeQueued()];
    this.#inFlight.clear();
    this.#stream.destroy();
    for (const request of requests) request.reject(this.unusableError(request.describe())!);
    const idle = this.#idle;
    this.#idle = undefined;
    idle?.();
  }
}

/** Ends `stream` and resolves once it closed, destroying it if the peer does not close within the grace period. */
export function endStream(stream: Duplex, graceMs = CLOSE_GRACE_MS): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed) {
      resolve();
      return;
    }
    stream.on('error', () => {}); // closing: a late write error changes nothing
    const timer = setTimeout(() => stream.destroy(), graceMs);
    stream.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    stream.end();
    // Read on to see the server's end of the stream (a paused socket reading into user buffers never would).
    stream.resume();
  });
}
