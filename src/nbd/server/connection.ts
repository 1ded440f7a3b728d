/**
 * One client connection: the greeting, the option phase (with the STARTTLS upgrade), then the
 * transmission phase with many requests in flight and replies written whole as they complete.
 *
 * Memory stays bounded whatever the client sends: reading stops while `maxInFlight` requests or
 * more than the byte budget are in flight, while decoded requests wait to start, and while the
 * socket's write buffer is full; the decoders hold at most one option or one request payload.
 * Replies are written by a {@link ReplyWriter}, in batches.
 */
import { Socket } from 'node:net';
import { type Duplex } from 'node:stream';
import {
  NBD_CMD_DISC,
  NBD_ESHUTDOWN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NegotiationDecoder,
  RequestDecoder,
  encodeServerGreeting,
  type RequestFrame,
} from '../protocol/index.js';
import { startServerTls } from '../tls.js';
import { type BufferPool } from './buffer-pool.js';
import { Negotiator, feedNegotiation, type NegotiationHost, type SessionSetup } from './negotiation.js';
import { ReplyWriter } from './reply-writer.js';
import { errorReply, type Reply } from './replies.js';
import { RequestSlots, type StartedRequest } from './request-slots.js';
import { handleRequest, makeSession, requestCost, type Session } from './transmission.js';
import { type ServedExport } from './served-export.js';
import { type ConnectionStats } from './types.js';

/** What a connection needs from its server. */
export interface ConnectionHost extends NegotiationHost {
  /** The connection enters transmission on `exp`; false refuses it (the connection closes). */
  attach(connection: Connection, exp: ServedExport): boolean;
  /** The connection is closed and every request it started has settled. */
  detach(connection: Connection): void;
  /** A connection-level problem, for the log. */
  report(e: unknown, context: string): void;
  /** Where READ data is read into (shared by the server's connections). */
  readonly buffers: BufferPool;
}

/** Where a connection is. */
export type ConnectionPhase = 'negotiation' | 'tls' | 'transmission' | 'closing' | 'closed';

/** How long a closing connection waits for the client to close its side before dropping it. */
const LINGER_MS = 5000;
/** How long a connection being shut down may take to answer what it received (a client that reads nothing would take forever). */
const DRAIN_LIMIT_MS = 30_000;
/** Socket errors that only mean the client went away. */
const ORDINARY_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_STREAM_DESTROYED']);

/** A client connection. Create with {@link Connection.start}. */
export class Connection {
  readonly #host: ConnectionHost;
  readonly #raw: Duplex;
  #stream: Duplex;
  #phase: ConnectionPhase = 'negotiation';
  readonly #decoder = new NegotiationDecoder();
  readonly #negotiator: Negotiator;
  #requests: RequestDecoder | undefined;
  #replies: ReplyWriter | undefined;
  #session: Session | undefined;
  /** Requests decoded and not answered yet (made at NBD_OPT_GO). */
  #slots: RequestSlots | undefined;
  /** The server is shutting this connection down: new requests get NBD_ESHUTDOWN. */
  #draining = false;
  /** NBD_CMD_DISC arrived, or the client stopped sending: take no more requests. */
  #disconnecting = false;
  #peerEnded = false;
  #paused = false;
  #awaitingDrain = false;
  #lingerTimer: NodeJS.Timeout | undefined;
  #drainTimer: NodeJS.Timeout | undefined;
  #resolveDone!: () => void;
  /** Settles when the connection is closed and every request it started has settled. */
  readonly done: Promise<void>;
  readonly #listeners = {
    data: (chunk: Buffer | string) => this.#onData(typeof chunk === 'string' ? Buffer.from(chunk) : chunk),
    end: () => this.#onEnd(),
    close: () => this.#onClose(),
    drain: () => {
      this.#awaitingDrain = false;
      if (this.#phase === 'transmission') this.#pump();
      else this.#updateFlow();
    },
    error: (e: Error) => this.#onError(e),
  };

  private constructor(host: ConnectionHost, socket: Duplex) {
    this.#host = host;
    this.#raw = socket;
    this.#stream = socket;
    this.#negotiator = new Negotiator(host);
    this.done = new Promise((resolve) => (this.#resolveDone = resolve));
  }

  /** Starts serving `socket`: sends the greeting and reads the client's flags. */
  static start(host: ConnectionHost, socket: Duplex): Connection {
    const connection = new Connection(host, socket);
    // Errors of the plain socket must never go unhandled, and its end is the connection's end,
    // also after a TLS upgrade.
    socket.on('error', (e: Error) => connection.#onError(e));
    socket.on('close', () => connection.#onClose());
    connection.#attach(socket);
    connection.#send([encodeServerGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)]);
    if (socket.destroyed) connection.#onClose();
    return connection;
  }

  /** What the connection holds now (for diagnostics and tests of its bounds). */
  get stats(): ConnectionStats {
    const slots = this.#slots;
    return {
      requestsInFlight: slots?.inFlight ?? 0,
      bytesInFlight: slots?.bytesInFlight ?? 0,
      requestsWaiting: slots?.waiting ?? 0,
      bytesWaiting: slots?.bytesWaiting ?? 0,
      bytesUnsent: this.#phase === 'closed' ? 0 : this.#stream.writableLength,
      paused: this.#paused,
    };
  }

  get phase(): ConnectionPhase {
    return this.#phase;
  }

  /**
   * Stops taking requests: those already received run and are answered, later ones get
   * NBD_ESHUTDOWN (proto.md "Terminating the transmission phase"), then the connection closes
   * (at the latest after 30 s, for a client that does not read its replies). Connections still
   * negotiating are left to {@link terminate}. Resolves with {@link done}.
   */
  shutdown(): Promise<void> {
    this.#draining = true;
    if (this.#phase === 'transmission' && this.#drainTimer === undefined) {
      this.#drainTimer = setTimeout(() => this.#destroy(), DRAIN_LIMIT_MS);
      this.#drainTimer.unref?.();
      this.#pump();
    }
    return this.done;
  }

  /** Closes the connection now, after what was already written (requests in flight still settle). */
  terminate(): void {
    if (this.#phase === 'tls') this.#destroy();
    else this.#finish();
  }

  // ---- Socket plumbing ------------------------------------------------------------------------

  #attach(stream: Duplex): void {
    stream.on('data', this.#listeners.data);
    stream.on('end', this.#listeners.end);
    stream.on('drain', this.#listeners.drain);
    if (stream !== this.#raw) {
      stream.on('error', this.#listeners.error);
      stream.on('close', this.#listeners.close);
    }
  }

  #detach(stream: Duplex): void {
    stream.off('data', this.#listeners.data);
    stream.off('end', this.#listeners.end);
    stream.off('drain', this.#listeners.drain);
  }

  /** Writes one whole message (its buffers back to back, nothing else between them). */
  #send(parts: readonly Uint8Array[]): void {
    const stream = this.#stream;
    if (parts.length === 0 || stream.destroyed || stream.writableEnded) return;
    stream.cork();
    for (const part of parts) if (part.length > 0) stream.write(part);
    stream.uncork();
    // "Full": more than one maximum payload queued; `drain` comes when it is all written.
    if (stream.writableLength > this.#host.options.maxPayload && stream.writableNeedDrain) {
      this.#awaitingDrain = true;
      this.#updateFlow();
    }
  }

  /** Writes a reply of the transmission phase; stops taking requests while the stream is full. */
  #sendReply(reply: Reply): void {
    if (this.#replies!.write(reply)) {
      this.#awaitingDrain = true;
      this.#updateFlow();
    }
  }

  /** Reads while there is room for what the client may send. */
  #updateFlow(): void {
    let read: boolean;
    switch (this.#phase) {
      case 'negotiation':
        read = !this.#awaitingDrain;
        break;
      case 'transmission':
        read = this.#disconnecting || (!this.#awaitingDrain && (this.#paused ? this.#slots!.roomy : !this.#slots!.full));
        break;
      case 'closing':
        read = true; // discard until the client closes, so that the kernel does not reset the connection
        break;
      case 'tls':
      case 'closed':
        return;
      default: {
        const never: never = this.#phase;
        throw new Error(`unreachable phase ${String(never)}`);
      }
    }
    if (read && this.#paused) {
      this.#paused = false;
      this.#stream.resume();
    } else if (!read && !this.#paused) {
      this.#paused = true;
      this.#stream.pause();
    }
  }

  #onData(chunk: Uint8Array): void {
    switch (this.#phase) {
      case 'negotiation':
        this.#negotiate(chunk);
        return;
      case 'transmission':
        this.#receive(chunk);
        return;
      case 'tls':
      case 'closing':
      case 'closed':
        return;
      default: {
        const never: never = this.#phase;
        throw new Error(`unreachable phase ${String(never)}`);
      }
    }
  }

  #onEnd(): void {
    this.#peerEnded = true;
    switch (this.#phase) {
      case 'transmission':
        // The client sends nothing more; what it sent still runs (its replies may not arrive).
        this.#disconnecting = true;
        this.#maybeFinish();
        return;
      case 'closing':
        this.#destroy();
        return;
      default:
        this.#finish();
    }
  }

  #onError(e: Error): void {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === undefined || !ORDINARY_ERRORS.has(code)) this.#host.report(e, `NBD connection (${this.#phase})`);
    this.#destroy();
  }

  /** A protocol violation: the connection is dropped at once (proto.md allows a hard disconnect). */
  #violation(e: unknown): void {
    this.#host.report(e, `NBD connection (${this.#phase})`);
    this.#destroy();
  }

  /** Ends the connection after what is written: FIN now, then wait for the client's. */
  #finish(): void {
    if (this.#phase === 'closing' || this.#phase === 'closed') return;
    this.#phase = 'closing';
    this.#slots?.dropWaiting();
    this.#updateFlow();
    const stream = this.#stream;
    stream.end(() => {
      if (this.#peerEnded) this.#destroy();
    });
    this.#lingerTimer = setTimeout(() => this.#destroy(), LINGER_MS);
    this.#lingerTimer.unref?.();
  }

  #destroy(): void {
    this.#stream.destroy();
    if (this.#raw !== this.#stream) this.#raw.destroy();
    this.#onClose();
  }

  #onClose(): void {
    if (this.#phase === 'closed') return;
    this.#phase = 'closed';
    this.#slots?.dropWaiting();
    clearTimeout(this.#lingerTimer);
    clearTimeout(this.#drainTimer);
    if (!this.#stream.destroyed) this.#stream.destroy();
    if (!this.#raw.destroyed) this.#raw.destroy();
    this.#settleIfDone();
  }

  #settleIfDone(): void {
    if (this.#phase !== 'closed' || (this.#slots !== undefined && !this.#slots.idle)) return;
    this.#host.detach(this);
    this.#resolveDone();
  }

  // ---- Negotiation ---------------------------------------------------------------------------

  #negotiate(chunk: Uint8Array): void {
    feedNegotiation(this.#decoder, this.#negotiator, chunk, {
      send: (replies) => this.#send(replies),
      close: (violation) => {
        if (violation !== undefined) this.#host.report(violation, 'NBD connection (negotiation)');
        this.#finish();
      },
      violation: (e) => this.#violation(e),
      startTls: () => this.#startTls(),
      transmission: (session, rest) => this.#enterTransmission(session, rest),
    });
  }

  #startTls(): void {
    const credentials = this.#host.options.tls;
    if (credentials === undefined) return this.#finish(); // unreachable: STARTTLS is refused without credentials
    const plain = this.#stream;
    this.#phase = 'tls';
    this.#detach(plain);
    // startServerTls wraps the socket synchronously, before any further byte can be read.
    startServerTls(plain as Socket, credentials).then(
      (secure) => {
        if (this.#phase !== 'tls') {
          secure.destroy();
          return;
        }
        this.#stream = secure;
        this.#paused = false;
        this.#awaitingDrain = false;
        this.#attach(secure);
        this.#negotiator.tlsStarted();
        this.#phase = 'negotiation';
        this.#updateFlow();
      },
      (e: unknown) => {
        if (this.#phase === 'tls') this.#host.report(e, 'NBD connection (TLS handshake)');
        this.#destroy();
      },
    );
  }

  #enterTransmission(setup: SessionSetup, rest: Uint8Array): void {
    if (!this.#host.attach(this, setup.export)) {
      this.#finish();
      return;
    }
    // Pooled read buffers are reused once the stream calls back on their write: only a socket
    // has copied the bytes by then (an in-process stream may still hold them, unread).
    const buffers = this.#raw instanceof Socket ? this.#host.buffers : undefined;
    const session = makeSession(setup, this.#host.options.maxPayload, buffers);
    // "Full": more than one maximum payload queued, as for negotiation replies.
    this.#replies = new ReplyWriter(this.#stream, buffers, this.#host.options.maxPayload);
    this.#session = session;
    this.#slots = new RequestSlots(this.#host.options.maxInFlight, this.#host.options.maxInFlightBytes, (frame) => requestCost(session, frame));
    this.#requests = new RequestDecoder({ extended: setup.extended, maxPayload: this.#host.options.maxPayload });
    this.#phase = 'transmission';
    if (rest.length > 0) this.#receive(rest);
    else this.#updateFlow();
  }

  // ---- Transmission --------------------------------------------------------------------------

  #receive(chunk: Uint8Array): void {
    if (this.#disconnecting) return; // proto.md: nothing may follow NBD_CMD_DISC
    let frames: RequestFrame[];
    try {
      frames = this.#requests!.feed(chunk);
    } catch (e) {
      this.#violation(e);
      return;
    }
    for (const frame of frames) {
      if (frame.kind === 'request' && frame.request.type === NBD_CMD_DISC) {
        this.#disconnecting = true;
        break;
      }
      if (this.#draining) this.#sendReply({ parts: errorReply(this.#session!, frame.request, NBD_ESHUTDOWN, 'the server is shutting down') });
      else this.#slots!.push(frame);
    }
    this.#pump();
  }

  /** Starts waiting requests while there is room, then adjusts reading. */
  #pump(): void {
    const session = this.#session;
    const slots = this.#slots;
    if (session === undefined || slots === undefined || this.#phase !== 'transmission') return;
    // Nothing new starts while the client does not take its replies: they would pile up here.
    while (!this.#awaitingDrain) {
      const next = slots.next();
      if (next === undefined) break;
      void this.#start(session, slots, next);
    }
    this.#updateFlow();
    this.#maybeFinish();
  }

  async #start(session: Session, slots: RequestSlots, started: StartedRequest): Promise<void> {
    try {
      this.#sendReply(await handleRequest(session, started.frame));
    } catch (e) {
      this.#host.report(e, 'NBD request');
    }
    slots.done(started);
    if (this.#phase === 'closed') this.#settleIfDone();
    else this.#pump();
  }

  #maybeFinish(): void {
    if (this.#phase !== 'transmission' || !(this.#disconnecting || this.#draining)) return;
    if (this.#slots!.idle) this.#finish();
  }
}
