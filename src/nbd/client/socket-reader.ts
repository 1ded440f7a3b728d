/**
 * A small pull reader over a stream for the negotiation phase, where the client always knows how
 * many bytes it waits for: `readExactly(n)` resolves with the next `n` bytes. The stream is read
 * only while a read waits (it is paused otherwise), so memory stays bounded by one received chunk
 * plus the bytes asked for. Once the handshake is over, `detach()` hands the stream and the bytes
 * received past the last read over to the transmission phase. A socket opened with a user buffer
 * delivers its bytes through its {@link SocketInput} instead of 'data' events.
 */
import { type Duplex } from 'node:stream';
import { BitbackError, IoError } from '../../errors.js';
import { ByteQueue } from '../protocol/byte-queue.js';
import { type InputConsumer, type SocketInput } from './socket-input.js';

/** Size of the buffer socket reads land in during negotiation (with a {@link SocketInput}). */
const READ_BUFFER_SIZE = 16 * 1024;

interface PendingRead {
  length: number;
  resolve: (bytes: Uint8Array) => void;
  reject: (error: BitbackError) => void;
}

/** Reads exact byte counts from a stream; see the module comment. */
export class SocketReader {
  readonly #stream: Duplex;
  readonly #action: string;
  readonly #queue = new ByteQueue();
  #pending: PendingRead | undefined;
  #error: BitbackError | undefined;
  #detached = false;
  readonly #input: SocketInput | undefined;
  readonly #onData = (chunk: Uint8Array): void => this.#data(chunk);
  readonly #onEnd = (): void => this.fail(new IoError(this.#action, 'the server closed the connection', 'ECONNRESET', { retryable: true }));
  readonly #onError = (e: Error): void => {
    const errno = typeof (e as NodeJS.ErrnoException).code === 'string' ? (e as NodeJS.ErrnoException).code! : 'ECONNRESET';
    this.fail(e instanceof BitbackError ? e : new IoError(this.#action, `the connection failed: ${e.message}`, errno, { cause: e, retryable: true }));
  };

  /**
   * Starts reading `stream` (which must not have other `data` listeners), or `input` when the
   * stream is a socket opened with it. `action` names what the reads are for, in errors
   * ("negotiate with the NBD server at ...").
   */
  constructor(stream: Duplex, action: string, input?: SocketInput) {
    this.#stream = stream;
    this.#action = action;
    this.#input = input;
    stream.pause();
    if (input !== undefined) {
      const buffer = new Uint8Array(READ_BUFFER_SIZE);
      const consumer: InputConsumer = {
        nextBuffer: () => buffer,
        received: (n) => this.#data(buffer.slice(0, n)),
        feed: (chunk) => this.#data(chunk.slice()),
      };
      input.attach(consumer);
    } else {
      stream.on('data', this.#onData);
    }
    stream.on('end', this.#onEnd);
    stream.on('close', this.#onEnd);
    stream.on('error', this.#onError);
  }

  /**
   * Resolves with the next `length` bytes (a buffer the caller owns). Only one read may wait at
   * a time. Rejects with the reader's error once it failed (connection closed, timeout).
   */
  readExactly(length: number): Promise<Uint8Array> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#detached) return Promise.reject(new IoError(this.#action, 'the reader was detached from the connection', 'EINVAL'));
    if (this.#pending !== undefined) return Promise.reject(new IoError(this.#action, 'two reads are waiting at once (a bug)', 'EINVAL'));
    if (this.#queue.length >= length) return Promise.resolve(this.#queue.take(length, new Uint8Array(length)));
    return new Promise((resolve, reject) => {
      this.#pending = { length, resolve, reject };
      this.#stream.resume();
    });
  }

  /** Fails the waiting read and every later one with `error` (the first error sticks). */
  fail(error: BitbackError): void {
    if (this.#error !== undefined || this.#detached) return;
    this.#error = error;
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.reject(error);
  }

  /**
   * Stops reading: removes the listeners (the stream stays paused) and returns the bytes received
   * past the last read. The reader is unusable afterwards.
   */
  detach(): Uint8Array {
    this.#detached = true;
    this.#input?.detach();
    this.#stream.off('data', this.#onData);
    this.#stream.off('end', this.#onEnd);
    this.#stream.off('close', this.#onEnd);
    this.#stream.off('error', this.#onError);
    this.#stream.pause();
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.reject(new IoError(this.#action, 'the reader was detached from the connection', 'EINVAL'));
    return this.#queue.takeAll();
  }

  #data(chunk: Uint8Array): void {
    this.#queue.push(chunk);
    const pending = this.#pending;
    if (pending === undefined) {
      this.#stream.pause();
      return;
    }
    if (this.#queue.length < pending.length) return;
    this.#pending = undefined;
    this.#stream.pause();
    pending.resolve(this.#queue.take(pending.length, new Uint8Array(pending.length)));
  }
}
