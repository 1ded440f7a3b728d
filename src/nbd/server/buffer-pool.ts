/**
 * Buffers for READ data that are used again once their reply is written. A fresh buffer per
 * read costs an allocation, page faults and the kernel zeroing the pages before the file read
 * fills them, then garbage collection: reading 256 MiB of a file in 256 KiB pieces took twice
 * as long into fresh buffers as into reused ones, and a server without the pool spent a tenth
 * of its time collecting garbage under nbdcopy.
 *
 * Buffers come in power-of-two sizes from {@link MIN_POOLED} to {@link MAX_POOLED} bytes; a
 * larger request gets a buffer of its own that is never pooled. The free buffers kept are
 * bounded in bytes, and dropped once no buffer was taken for a while (an idle server does not
 * hold on to the memory of its last busy moment).
 */

/** The smallest buffer handed out: smaller requests get a view of one this size. */
export const MIN_POOLED = 4096;
/** Requests larger than this get an unpooled buffer. */
export const MAX_POOLED = 4 * 1024 * 1024;

/** A pool of read buffers shared by the connections of one server. */
export class BufferPool {
  /** Free buffers by size class: index `i` holds buffers of `MIN_POOLED << i` bytes. */
  readonly #free: ArrayBuffer[][] = [];
  readonly #maxFreeBytes: number;
  readonly #idleMs: number;
  #freeBytes = 0;
  /** Buffers taken since the idle timer last looked. */
  #taken = 0;
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #onIdleTimer = (): void => {
    this.#idleTimer = undefined;
    if (this.#taken === 0) this.clear();
    else this.#armIdleTimer();
  };

  /**
   * @param maxFreeBytes - most bytes of free buffers kept; more are left to the garbage collector
   * @param idleMs - free buffers are dropped after between one and two times this long without a {@link take}
   */
  constructor(maxFreeBytes: number, idleMs: number) {
    this.#maxFreeBytes = maxFreeBytes;
    this.#idleMs = idleMs;
    for (let size = MIN_POOLED; size <= MAX_POOLED; size *= 2) this.#free.push([]);
  }

  /**
   * A buffer of exactly `length` bytes (> 0) with unspecified content, owned by the caller until
   * it passes it to {@link give}, which it should do once nothing refers to it any more (its
   * reply is written). Never shares memory with a buffer handed out and not given back.
   */
  take(length: number): Uint8Array {
    const index = classOf(length);
    // A Buffer, not a plain Uint8Array: a stream would wrap each one it is given in a Buffer.
    if (index < 0) return Buffer.from(allocate(length), 0, length);
    const free = this.#free[index]!;
    this.#taken++;
    let buffer = free.pop();
    if (buffer === undefined) buffer = allocate(MIN_POOLED << index);
    else this.#freeBytes -= buffer.byteLength;
    return Buffer.from(buffer, 0, length);
  }

  /**
   * Takes back a buffer that {@link take} returned (and only such a buffer: the pool would hand
   * out any other memory given to it). The caller must not use it afterwards.
   */
  give(buffer: Uint8Array): void {
    const whole = buffer.buffer;
    const index = classOf(whole.byteLength);
    if (index < 0 || MIN_POOLED << index !== whole.byteLength) return; // unpooled
    if (this.#freeBytes + whole.byteLength > this.#maxFreeBytes) return;
    this.#free[index]!.push(whole as ArrayBuffer);
    this.#freeBytes += whole.byteLength;
    if (this.#idleTimer === undefined) this.#armIdleTimer();
  }

  /** Drops every free buffer. */
  clear(): void {
    for (const free of this.#free) free.length = 0;
    this.#freeBytes = 0;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
  }

  #armIdleTimer(): void {
    this.#taken = 0;
    this.#idleTimer = setTimeout(this.#onIdleTimer, this.#idleMs);
    this.#idleTimer.unref();
  }

  /** Bytes of free buffers held. */
  get freeBytes(): number {
    return this.#freeBytes;
  }
}

/** The size class index of a request of `length` bytes; -1 when it is not pooled. */
function classOf(length: number): number {
  if (length > MAX_POOLED) return -1;
  let index = 0;
  while (MIN_POOLED << index < length) index++;
  return index;
}

/** Memory that is not zeroed (every reader overwrites what it returns) and is not a slice of a shared slab. */
function allocate(size: number): ArrayBuffer {
  return Buffer.allocUnsafeSlow(size).buffer as ArrayBuffer;
}
