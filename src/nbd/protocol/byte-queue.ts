/**
 * A queue of received chunks from which decoders take exact byte counts without copying more
 * than they must. No I/O.
 */
export class ByteQueue {
  #chunks: Uint8Array[] = [];
  #head = 0; // bytes already consumed from #chunks[0]
  #length = 0;

  /** Bytes queued. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#length += chunk.length;
  }

  /**
   * Removes and returns the first `n` bytes (`n <= length`). When they lie in one chunk the
   * result is a view of it (the chunk is not reused by the queue); otherwise they are copied into
   * `into` (if given, at least `n` bytes) or a new buffer.
   */
  take(n: number, into?: Uint8Array): Uint8Array {
    if (n > this.#length) throw new RangeError(`ByteQueue.take(${n}) with ${this.#length} queued`);
    if (n === 0) return new Uint8Array(0);
    const first = this.#chunks[0]!;
    if (into === undefined && first.length - this.#head >= n) {
      const out = first.subarray(this.#head, this.#head + n);
      this.#advance(n);
      return out;
    }
    const out = into === undefined ? new Uint8Array(n) : into.subarray(0, n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(chunk.length - this.#head, n - filled);
      out.set(chunk.subarray(this.#head, this.#head + count), filled);
      filled += count;
      this.#advance(count);
    }
    return out;
  }

  /** The first 4 bytes as a big-endian 32-bit number, not consumed (`length >= 4`). */
  peekU32(): number {
    const first = this.#chunks[0]!;
    if (first.length - this.#head >= 4) {
      return ((first[this.#head]! << 24) | (first[this.#head + 1]! << 16) | (first[this.#head + 2]! << 8) | first[this.#head + 3]!) >>> 0;
    }
    let value = 0;
    let seen = 0;
    for (let c = 0; seen < 4; c++) {
      const chunk = this.#chunks[c]!;
      for (let i = c === 0 ? this.#head : 0; i < chunk.length && seen < 4; i++, seen++) value = value * 256 + chunk[i]!;
    }
    return value;
  }

  /** Copies up to `max` bytes into `into` at `at`; returns how many. */
  takeInto(into: Uint8Array, at: number, max: number): number {
    let filled = 0;
    while (filled < max && this.#length > 0) {
      const chunk = this.#chunks[0]!;
      const count = Math.min(chunk.length - this.#head, max - filled);
      into.set(chunk.subarray(this.#head, this.#head + count), at + filled);
      filled += count;
      this.#advance(count);
    }
    return filled;
  }

  /** Drops up to `n` bytes; returns how many were dropped. */
  skip(n: number): number {
    const count = Math.min(n, this.#length);
    let left = count;
    while (left > 0) {
      const chunk = this.#chunks[0]!;
      const step = Math.min(chunk.length - this.#head, left);
      this.#advance(step);
      left -= step;
    }
    return count;
  }

  /** Removes and returns everything queued (one buffer). */
  takeAll(): Uint8Array {
    return this.take(this.#length);
  }

  #advance(n: number): void {
    this.#head += n;
    this.#length -= n;
    while (this.#chunks.length > 0 && this.#head >= this.#chunks[0]!.length) {
      this.#head -= this.#chunks[0]!.length;
      this.#chunks.shift();
    }
  }
}

/** What one step of a push decoder produced: a frame, progress without a frame, or "need more bytes". */
export type StepResult<F> = F | 'more' | 'progress';

/**
 * Runs a push decoder's `step` until it needs more bytes, collecting the frames. When `stopAfter`
 * says so of a frame, returns right after it (what follows stays queued).
 */
export function collectFrames<F>(step: () => StepResult<F>, stopAfter?: (frame: F) => boolean): F[] {
  const frames: F[] = [];
  for (;;) {
    const result = step();
    if (result === 'more') return frames;
    if (result === 'progress') continue;
    frames.push(result);
    if (stopAfter?.(result) === true) return frames;
  }
}
