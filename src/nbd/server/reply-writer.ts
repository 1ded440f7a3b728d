/**
 * How a connection in transmission writes its replies: each one whole (its buffers back to back),
 * those completed in one turn of the event loop together, and the read buffers they carry back
 * to the pool once written.
 *
 * Batching: the first reply of a turn corks the stream and `setImmediate` uncorks it, after the
 * event loop has run every completion that was ready, so that many replies cost one `writev`
 * rather than one each (fio's 32 small reads in flight, nbdcopy's 64 per connection).
 */
import { type Duplex } from 'node:stream';
import { type BufferPool } from './buffer-pool.js';
import { type Reply } from './replies.js';

/** Writes the replies of one connection to its stream. */
export class ReplyWriter {
  readonly #stream: Duplex;
  readonly #pool: BufferPool | undefined;
  readonly #unsentLimit: number;
  #batching = false;
  readonly #flush = (): void => {
    this.#batching = false;
    this.#stream.uncork();
  };

  /**
   * @param pool - where borrowed buffers go back once written; only for a stream that has
   *   copied what it was given when it calls back (a socket), since a buffer given back is
   *   soon read into again
   * @param unsentLimit - bytes queued in the stream past which {@link write} reports it full
   */
  constructor(stream: Duplex, pool: BufferPool | undefined, unsentLimit: number) {
    this.#stream = stream;
    this.#pool = pool;
    this.#unsentLimit = unsentLimit;
  }

  /**
   * Queues `reply` in the current batch. Returns true when the stream holds more than the
   * unsent limit and wants a `drain` (the connection then starts nothing new until it comes).
   * A reply to a closed stream is dropped (its borrowed buffer is left to the garbage collector).
   */
  write(reply: Reply): boolean {
    const stream = this.#stream;
    if (stream.destroyed || stream.writableEnded) return false;
    if (!this.#batching) {
      this.#batching = true;
      stream.cork();
      setImmediate(this.#flush);
    }
    const { parts, borrowed } = reply;
    const last = parts.length - 1;
    for (let i = 0; i < last; i++) stream.write(parts[i]!);
    const pool = this.#pool;
    if (borrowed === undefined || pool === undefined) stream.write(parts[last]!);
    // The stream calls back once it is done with every buffer of the reply (they are written in order).
    else stream.write(parts[last]!, () => pool.give(borrowed));
    return stream.writableLength > this.#unsentLimit && stream.writableNeedDrain;
  }
}
