/**
 * A QMP client: what the orchestrator uses against QEMU (and qemu-storage-daemon) and against
 * bitback's own engine. It reads the greeting, negotiates capabilities, tags each command with
 * an `id` and matches replies by it (so commands may overlap), and delivers events three ways:
 * listeners (`onEvent`), an async iterator (`events()`), and `waitForEvent`, which also finds an
 * event that arrived shortly before the call.
 *
 * Failures: an error reply rejects with `QmpError` (class, desc, command). A connection that
 * drops rejects every pending command with a retryable `IoError` (ECONNRESET); a peer that
 * breaks the protocol with a `QmpProtocolError`; `close()` with a `ClosedError`.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { type Duplex } from 'node:stream';
import { BitbackError, ClosedError, IoError, fromSystemError } from '../../errors.js';
import { QEMU_MAX_DEPTH, QEMU_MAX_MESSAGE_BYTES, QMP_CAPABILITIES_COMMAND } from '../protocol/constants.js';
import { decodeServerMessage } from '../protocol/decode.js';
import { encodeCommand } from '../protocol/encode.js';
import { QmpError, QmpProtocolError } from '../protocol/errors.js';
import { parseQmpJson } from '../protocol/json-parse.js';
import { type JsonObject, type QmpEvent, type QmpGreeting, type QmpServerMessage } from '../protocol/messages.js';
import { QmpSplitter } from '../protocol/splitter.js';
import { EventHistory, type QmpEventPredicate } from './event-history.js';
import { createEventStream, type EventSink } from './event-stream.js';

/** Options of {@link QmpClient.connect} and {@link QmpClient.open}. */
export interface QmpClientOptions {
  /**
   * Bound on connecting, the greeting and capabilities negotiation together, and the default
   * bound of `waitForEvent`, in ms. Default 30 000.
   */
  timeoutMs?: number;
  /** Default bound on each command's reply, in ms; 0 waits as long as it takes. Default 0. */
  commandTimeoutMs?: number;
  /** Capabilities to enable with `qmp_capabilities` (e.g. `["oob"]`). Default none. */
  enable?: string[];
  /** Largest message accepted from the server. Default 64 MiB (QEMU's own parser limit). */
  maxMessageBytes?: number;
  /** Deepest nesting accepted from the server. Default 1024 (QEMU's own parser limit). */
  maxDepth?: number;
  /** How many unconsumed events `waitForEvent` can still find. Default 256. */
  eventHistory?: number;
  /** Names the peer in error messages (the socket path for `connect`). */
  label?: string;
}

/** Options of {@link QmpClient.execute}. */
export interface QmpExecuteOptions {
  /** Bound on the reply, in ms; 0 = none. Default: the client's `commandTimeoutMs`. */
  timeoutMs?: number;
}

/** Options of {@link QmpClient.waitForEvent}. */
export interface QmpWaitOptions {
  /** Bound on the wait, in ms; 0 = none. Default: the client's `timeoutMs`. */
  timeoutMs?: number;
  /** Also look at kept events that arrived before the call. Default true. */
  includeHistory?: boolean;
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

type Failure = { kind: 'closed' } | { kind: 'dropped'; cause: unknown } | { kind: 'protocol'; error: QmpProtocolError };

const DEFAULT_TIMEOUT_MS = 30_000;

/** A negotiated QMP session. Create with {@link QmpClient.connect} or {@link QmpClient.open}. */
export class QmpClient {
  /** Resolves when the connection is closed, for whatever reason. Never rejects. */
  readonly closed: Promise<void>;

  readonly #stream: Duplex;
  readonly #label: string;
  readonly #timeoutMs: number;
  readonly #commandTimeoutMs: number;
  readonly #splitter: QmpSplitter;
  readonly #pending = new Map<number, Pending>();
  readonly #history: EventHistory;
  readonly #listeners = new Set<(event: QmpEvent) => void>();
  readonly #streams = new Set<EventSink>();
  #nextId = 1;
  #greeting: QmpGreeting | undefined;
  #greeted = false;
  #failure: Failure | undefined;
  #onGreeting: ((greeting: QmpGreeting) => void) | undefined;
  #greetingFailed: ((error: Error) => void) | undefined;

  private constructor(stream: Duplex, options: QmpClientOptions) {
    this.#stream = stream;
    this.#label = options.label ?? 'QMP server';
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#commandTimeoutMs = options.commandTimeoutMs ?? 0;
    this.#splitter = new QmpSplitter({ maxMessageBytes: options.maxMessageBytes ?? QEMU_MAX_MESSAGE_BYTES, maxDepth: options.maxDepth ?? QEMU_MAX_DEPTH });
    this.#history = new EventHistory(options.eventHistory ?? 256);
    this.closed = new Promise((resolve) => {
      if (stream.closed) resolve();
      else stream.once('close', () => resolve());
    });
    stream.on('data', (chunk: Buffer | string) => this.#onData(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
    stream.on('end', () => this.#fail({ kind: 'dropped', cause: undefined }));
    stream.on('close', () => this.#fail({ kind: 'dropped', cause: undefined }));
    stream.on('error', (e) => this.#fail({ kind: 'dropped', cause: e }));
  }

  /**
   * Connects to the QMP Unix socket at `path`, reads the greeting and negotiates.
   *
   * @throws IoError when the socket cannot be reached (retryable for ECONNREFUSED/EAGAIN) or
   *   nothing answers within `timeoutMs` (QEMU serves one client at a time per QMP socket: a
   *   second client waits); QmpError if negotiation is refused; QmpProtocolError for a non-QMP peer
   */
  static async connect(path: string, options: QmpClientOptions = {}): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const started = Date.now();
    const socket = await connectUnix(path, timeoutMs);
    const remaining = timeoutMs > 0 ? Math.max(1, timeoutMs - (Date.now() - started)) : 0;
    return QmpClient.open(socket, { ...options, timeoutMs: remaining, label: options.label ?? path });
  }

  /**
   * Starts a session on a connected stream (a socket, or one end of an in-process pair): reads
   * the greeting and negotiates within `timeoutMs`. The client owns the stream from now on.
   */
  static async open(stream: Duplex, options: QmpClientOptions = {}): Promise<QmpClient> {
    const client = new QmpClient(stream, options);
    const timeoutMs = client.#timeoutMs;
    const started = Date.now();
    try {
      client.#greeting = await withTimeout(
        new Promise<QmpGreeting>((resolve, reject) => {
          client.#onGreeting = resolve;
          client.#greetingFailed = reject;
          if (client.#failure !== undefined) reject(client.#errorFor('read the QMP greeting'));
        }),
        timeoutMs,
        () =>
          new IoError(`read the QMP greeting of ${client.#label}`, `none came within ${timeoutMs} ms (QEMU serves one client at a time per QMP socket)`, 'ETIMEDOUT', {
            retryable: true,
          }),
      );
      const remaining = timeoutMs > 0 ? Math.max(1, timeoutMs - (Date.now() - started)) : 0;
      const enable = options.enable ?? [];
      await client.execute(QMP_CAPABILITIES_COMMAND, enable.length > 0 ? { enable } : undefined, { timeoutMs: remaining });
    } catch (e) {
      client.#fail({ kind: 'closed' });
      throw e;
    }
    return client;
  }

  /** The server's greeting (version, offered capabilities). */
  get greeting(): QmpGreeting {
    return this.#greeting!;
  }

  /** True until the connection is closed or lost. */
  get isOpen(): boolean {
    return this.#failure === undefined;
  }

  /**
   * Runs `command` with `args` and resolves with its `return` value (typed `T` by the caller;
   * nothing checks it). Several commands may be in flight; replies are matched by `id`.
   *
   * @throws QmpError for an error reply; IoError ETIMEDOUT (retryable) when no reply came within
   *   the timeout (a late reply is then ignored); IoError ECONNRESET (retryable) when the
   *   connection dropped; ClosedError after `close()`; QmpProtocolError when the peer broke QMP
   */
  execute<T = unknown>(command: string, args?: JsonObject, options: QmpExecuteOptions = {}): Promise<T> {
    if (this.#failure !== undefined) return Promise.reject(this.#errorFor(`run QMP command ${command}`));
    const id = this.#nextId++;
    const timeoutMs = options.timeoutMs ?? this.#commandTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      let bytes: Uint8Array;
      try {
        bytes = encodeCommand(args === undefined ? { execute: command, id } : { execute: command, arguments: args, id });
      } catch (e) {
        reject(e as Error);
        return;
      }
      const pending: Pending = { command, resolve: resolve as (v: unknown) => void, reject, timer: undefined };
      if (timeoutMs > 0) {
        pending.timer = setTimeout(() => {
          this.#pending.delete(id);
          reject(new IoError(`run QMP command ${command}`, `${this.#label} sent no reply within ${timeoutMs} ms`, 'ETIMEDOUT', { retryable: true }));
        }, timeoutMs);
      }
      this.#pending.set(id, pending);
      this.#stream.write(bytes);
    });
  }

  /** Calls `listener` for every event from now on; returns the function that stops it. */
  onEvent(listener: (event: QmpEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Iterates over the events arriving from now on; ends when the connection closes. A reader
   * more than `maxBuffered` (default 10 000) events behind gets a BUSY error.
   */
  events(options: { maxBuffered?: number } = {}): AsyncIterableIterator<QmpEvent> {
    const { iterator, sink } = createEventStream(options.maxBuffered ?? 10_000, (s) => this.#streams.delete(s));
    if (this.#failure !== undefined) sink.end();
    else this.#streams.add(sink);
    return iterator;
  }

  /**
   * Resolves with an event named `name` that `predicate` accepts: the oldest such event among
   * those kept (unless `includeHistory` is false), else the next to arrive. The event is
   * consumed: a later wait does not get it again.
   *
   * @throws IoError ETIMEDOUT when none came in time; the connection's error when it closes
   */
  waitForEvent(name: string, predicate?: QmpEventPredicate, options: QmpWaitOptions = {}): Promise<QmpEvent> {
    return this.#history.wait(name, predicate, options.timeoutMs ?? this.#timeoutMs, options.includeHistory ?? true);
  }

  /** The kept events nobody waited for yet, oldest first. */
  get recentEvents(): QmpEvent[] {
    return this.#history.events;
  }

  /** Forgets the kept events (so that `waitForEvent` only sees new ones). */
  clearEvents(): void {
    this.#history.clear();
  }

  /** Closes the connection; pending commands and waits reject with `ClosedError`. Idempotent. */
  async close(): Promise<void> {
    this.#fail({ kind: 'closed' });
    await this.closed;
  }

  #onData(chunk: Uint8Array): void {
    if (this.#failure !== undefined) return;
    for (const frame of this.#splitter.feed(chunk)) {
      if (frame.type === 'error') {
        this.#fail({ kind: 'protocol', error: frame.error });
        return;
      }
      let message: QmpServerMessage;
      try {
        message = decodeServerMessage(parseQmpJson(frame.bytes));
      } catch (e) {
        this.#fail({ kind: 'protocol', error: e as QmpProtocolError });
        return;
      }
      this.#onMessage(message);
      if (this.#failure !== undefined) return;
    }
  }

  #onMessage(message: QmpServerMessage): void {
    switch (message.type) {
      case 'greeting':
        if (this.#onGreeting === undefined || this.#greeted) {
          this.#fail({ kind: 'protocol', error: new QmpProtocolError('read from the QMP server', 'it sent a second greeting') });
          return;
        }
        this.#greeted = true;
        this.#onGreeting(message.greeting);
        return;
      case 'return':
      case 'error': {
        if (!this.#greeted) {
          this.#fail({ kind: 'protocol', error: new QmpProtocolError('read from the QMP server', `it sent a ${message.type} reply before its greeting`) });
          return;
        }
        // A reply nobody waits for any more (its command timed out) is dropped.
        const pending = typeof message.id === 'number' ? this.#pending.get(message.id) : undefined;
        if (pending === undefined) return;
        this.#pending.delete(message.id as number);
        clearTimeout(pending.timer);
        if (message.type === 'return') pending.resolve(message.value);
        else pending.reject(new QmpError(message.error.class, message.error.desc, { command: pending.command }));
        return;
      }
      case 'event':
        this.#history.push(message.event);
        for (const listener of [...this.#listeners]) {
          try {
            listener(message.event);
          } catch {
            // A listener's failure is its own; the session goes on.
          }
        }
        for (const sink of [...this.#streams]) sink.push(message.event);
        return;
      default: {
        const never: never = message;
        throw new Error(`unknown QMP message ${JSON.stringify(never)}`);
      }
    }
  }

  #errorFor(action: string): BitbackError {
    const failure = this.#failure;
    if (failure === undefined || failure.kind === 'closed') return new ClosedError(action, 'the QMP client was closed');
    if (failure.kind === 'protocol') return failure.error;
    return new IoError(action, `the connection to ${this.#label} was lost`, 'ECONNRESET', { retryable: true, cause: failure.cause });
  }

  #fail(failure: Failure): void {
    if (this.#failure !== undefined) return;
    this.#failure = failure;
    this.#greetingFailed?.(this.#errorFor(`read the QMP greeting of ${this.#label}`));
    for (const [id, pending] of this.#pending) {
      this.#pending.delete(id);
      clearTimeout(pending.timer);
      pending.reject(this.#errorFor(`run QMP command ${pending.command}`));
    }
    this.#history.fail(this.#errorFor('wait for a QMP event'));
    for (const sink of [...this.#streams]) sink.end();
    this.#stream.destroy();
  }
}

/** Connects a Unix socket within `timeoutMs` (0 = no bound). */
function connectUnix(path: string, timeoutMs: number): Promise<Socket> {
  const action = `connect to the QMP socket ${path}`;
  return new Promise((resolve, reject) => {
    const socket = netConnect({ path });
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            socket.destroy();
            reject(new IoError(action, `no connection within ${timeoutMs} ms`, 'ETIMEDOUT', { retryable: true }));
          }, timeoutMs)
        : undefined;
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      const error = fromSystemError(action, e);
      reject(e.code === 'ECONNREFUSED' || e.code === 'EAGAIN' ? new IoError(action, error.reason, e.code, { cause: e, retryable: true }) : error);
    });
  });
}

/** `promise`, or `onTimeout()` as a rejection after `timeoutMs` (0 = no bound). */
function withTimeout<T>(promise: Promise<T>, timeoutMs: number, onTimeout: () => Error): Promise<T> {
  if (timeoutMs <= 0) return promise;
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), timeoutMs);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e as Error);
      },
    );
  });
}
