/**
 * One QMP connection of the server (QEMU calls it a monitor): reads the byte stream, splits and
 * parses it, runs the commands one at a time in the order they arrived, writes the replies in
 * that order, and writes events in between.
 *
 * Bad JSON inside a complete object is answered (GenericError "JSON parse error, ...") and the
 * monitor goes on, as QEMU does. A stream that cannot be split any more (a stray byte between
 * messages, a message over the size or nesting limit) gets one error reply after the commands
 * before it, and the monitor closes.
 */
import { type Duplex } from 'node:stream';
import { QMP_REQUEST_QUEUE_MAX } from '../protocol/constants.js';
import { type QmpJsonError } from '../protocol/errors.js';
import { parseQmpJson } from '../protocol/json-parse.js';
import { QmpSplitter, type QmpSplitterOptions } from '../protocol/splitter.js';

/** What the monitor queues: a parsed message, a message that is not JSON, or the end of input. */
export type MonitorInput =
  | { type: 'message'; value: unknown }
  | { type: 'malformed'; error: QmpJsonError }
  | { type: 'fatal'; desc: string };

/** What the monitor needs from its server. */
export interface MonitorHooks {
  /** Returns the reply bytes for one input (never rejects). */
  process(monitor: QmpMonitor, input: Exclude<MonitorInput, { type: 'fatal' }>): Promise<Uint8Array>;
  /** Encodes the error reply that precedes closing on a fatal input. */
  fatalReply(desc: string): Uint8Array;
  /** Called once when the connection is gone. */
  closed(monitor: QmpMonitor): void;
}

/** Options of a monitor (from the server's options). */
export interface MonitorOptions extends QmpSplitterOptions {
  /** Bytes written but not yet taken by the peer above which the monitor is closed. */
  maxUnsentBytes: number;
}

/** A QMP connection. Created by `QmpServer.handleConnection`. */
export class QmpMonitor {
  readonly id: number;
  /** True once `qmp_capabilities` succeeded: commands run and events are sent. */
  negotiated = false;
  /** Capabilities the client enabled with `qmp_capabilities`. */
  enabled: readonly string[] = [];
  /** Resolves when the connection is closed. */
  readonly closed: Promise<void>;

  readonly #stream: Duplex;
  readonly #hooks: MonitorHooks;
  readonly #options: MonitorOptions;
  readonly #splitter: QmpSplitter;
  readonly #queue: MonitorInput[] = [];
  #pumping = false;
  #inputEnded = false;
  #gone = false;
  #resolveClosed!: () => void;

  constructor(id: number, stream: Duplex, greeting: Uint8Array, hooks: MonitorHooks, options: MonitorOptions) {
    this.id = id;
    this.#stream = stream;
    this.#hooks = hooks;
    this.#options = options;
    this.#splitter = new QmpSplitter(options);
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    stream.on('data', (chunk: Buffer | string) => this.#onData(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
    stream.on('end', () => {
      this.#inputEnded = true;
      this.#maybeFinish();
    });
    stream.on('error', () => this.#onGone());
    stream.on('close', () => this.#onGone());
    this.#write(greeting);
  }

  /** Whether the connection is still usable. */
  get open(): boolean {
    return !this.#gone && !this.#stream.destroyed;
  }

  /** Writes an event, if negotiation is complete. Closes a monitor whose peer stopped reading. */
  sendEvent(bytes: Uint8Array): void {
    if (this.negotiated && this.open && !this.#stream.writableEnded) this.#write(bytes);
  }

  /** Drops the connection at once (queued commands are not run). */
  close(): void {
    this.#stream.destroy();
    this.#onGone();
  }

  #onData(chunk: Uint8Array): void {
    if (this.#gone) return;
    for (const frame of this.#splitter.feed(chunk)) {
      if (frame.type === 'error') {
        this.#queue.push({ type: 'fatal', desc: frame.error.desc });
        // Nothing after this can be trusted: stop reading for good.
        this.#stream.pause();
        this.#stream.removeAllListeners('data');
        break;
      }
      try {
        this.#queue.push({ type: 'message', value: parseQmpJson(frame.bytes, { preserveNumberKinds: true, maxDepth: this.#splitter.maxDepth }) });
      } catch (e) {
        this.#queue.push({ type: 'malformed', error: e as QmpJsonError });
      }
    }
    // QEMU stops reading a monitor with this many requests queued (monitor/qmp.c).
    if (this.#queue.length >= QMP_REQUEST_QUEUE_MAX) this.#stream.pause();
    void this.#pump();
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      while (this.#queue.length > 0 && !this.#gone) {
        const input = this.#queue.shift()!;
        if (input.type === 'fatal') {
          this.#queue.length = 0;
          this.#stream.end(this.#hooks.fatalReply(input.desc), () => this.close());
          return;
        }
        const reply = await this.#hooks.process(this, input);
        if (this.#gone) return;
        if (!this.#write(reply)) await this.#drained();
        if (this.#queue.length < QMP_REQUEST_QUEUE_MAX && !this.#splitter.failed && this.#stream.isPaused()) this.#stream.resume();
      }
    } finally {
      this.#pumping = false;
    }
    this.#maybeFinish();
  }

  /** Once the peer ended its side and every queued command is answered, end ours. */
  #maybeFinish(): void {
    if (this.#inputEnded && !this.#pumping && this.#queue.length === 0 && this.open) {
      this.#stream.end(() => this.close());
    }
  }

  /** Writes `bytes`; returns false when the peer is behind. A peer far behind is dropped. */
  #write(bytes: Uint8Array): boolean {
    if (!this.open || this.#stream.writableEnded) return true;
    const ok = this.#stream.write(bytes);
    if (this.#stream.writableLength > this.#options.maxUnsentBytes) {
      this.close();
      return true;
    }
    return ok;
  }

  #drained(): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.#stream.off('drain', done);
        this.#stream.off('close', done);
        resolve();
      };
      this.#stream.on('drain', done);
      this.#stream.on('close', done);
    });
  }

  #onGone(): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#queue.length = 0;
    if (!this.#stream.destroyed) this.#stream.destroy();
    this.#hooks.closed(this);
    this.#resolveClosed();
  }
}
