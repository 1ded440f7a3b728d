/**
 * Test-only: a QMP peer that sends raw text and reads every message back as parsed JSON, for
 * checking exactly what a server (bitback's or QEMU) answers to any input, valid or not.
 */
import { connect as netConnect } from 'node:net';
import { type Duplex } from 'node:stream';
import { parseQmpJson } from '../../protocol/json-parse.js';
import { QEMU_MAX_DEPTH, QEMU_MAX_MESSAGE_BYTES } from '../../protocol/constants.js';
import { QmpSplitter } from '../../protocol/splitter.js';

/** A raw connection to a QMP server. */
export class RawMonitor {
  readonly #stream: Duplex;
  readonly #splitter = new QmpSplitter({ maxMessageBytes: QEMU_MAX_MESSAGE_BYTES, maxDepth: QEMU_MAX_DEPTH });
  readonly #messages: unknown[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  /** Resolves when the server closed or ended the connection. */
  readonly ended: Promise<void>;

  constructor(stream: Duplex) {
    this.#stream = stream;
    let resolveEnded!: () => void;
    this.ended = new Promise((resolve) => (resolveEnded = resolve));
    const end = (): void => {
      this.#ended = true;
      resolveEnded();
      this.#waiter?.();
    };
    stream.on('data', (chunk: Buffer) => {
      for (const frame of this.#splitter.feed(chunk)) {
        if (frame.type === 'message') this.#messages.push(parseQmpJson(frame.bytes));
        else this.#messages.push({ splitterError: frame.error.message });
      }
      this.#waiter?.();
    });
    stream.on('end', end);
    stream.on('close', end);
    stream.on('error', end);
  }

  /** Connects to a Unix socket, retrying while it does not exist yet (up to `timeoutMs`). */
  static async connect(path: string, timeoutMs = 30_000): Promise<RawMonitor> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await new Promise<RawMonitor>((resolve, reject) => {
          const socket = netConnect({ path });
          socket.once('connect', () => {
            socket.off('error', reject);
            resolve(new RawMonitor(socket));
          });
          socket.once('error', reject);
        });
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }

  /** Sends `text` (or bytes) as is. */
  send(data: string | Uint8Array): void {
    this.#stream.write(data);
  }

  /** Ends our side (the server may still answer). */
  end(): void {
    this.#stream.end();
  }

  /** Closes the connection. */
  close(): void {
    this.#stream.destroy();
  }

  /** True once the server ended the connection. */
  get isEnded(): boolean {
    return this.#ended;
  }

  /** The next message (any kind), or undefined if the connection ended first. */
  async next(): Promise<unknown> {
    for (;;) {
      if (this.#messages.length > 0) return this.#messages.shift();
      if (this.#ended) return undefined;
      await new Promise<void>((resolve) => (this.#waiter = resolve));
      this.#waiter = undefined;
    }
  }

  /** The next message that is not an event. */
  async nextReply(): Promise<unknown> {
    for (;;) {
      const m = await this.next();
      if (m === undefined || typeof m !== 'object' || m === null || !('event' in m)) return m;
    }
  }

  /** Sends `text` and returns the next message that is not an event. */
  async ask(text: string): Promise<unknown> {
    this.send(text);
    return this.nextReply();
  }

  /** Reads the greeting and negotiates; returns the greeting. */
  async negotiate(): Promise<unknown> {
    const greeting = await this.next();
    const reply = await this.ask('{"execute":"qmp_capabilities"}');
    if (JSON.stringify(reply) !== '{"return":{}}') throw new Error(`negotiation failed: ${JSON.stringify(reply)}`);
    return greeting;
  }
}
