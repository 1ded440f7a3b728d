/**
 * The requests of one connection between decoding and reply: those waiting for a slot and
 * those running, bounded in number (`maxInFlight`) and in bytes (`maxBytes`). The connection
 * stops reading once {@link RequestSlots.full} is true, so what waits is at most what one
 * socket read delivered, and reads again once {@link RequestSlots.roomy}: pausing and resuming
 * a stream costs several steps each, too many to take for every request of a client that keeps
 * the limit in flight (nbdcopy keeps 64).
 */
import { type RequestFrame } from '../protocol/index.js';

/** A request allowed to start, and the bytes it counts for until {@link RequestSlots.done}. */
export interface StartedRequest {
  frame: RequestFrame;
  cost: number;
}

/** The waiting and running requests of one connection, and the limits on them. */
export class RequestSlots {
  readonly #maxInFlight: number;
  readonly #maxBytes: number;
  readonly #costOf: (frame: RequestFrame) => number;
  #waiting: RequestFrame[] = [];
  #inFlight = 0;
  #bytes = 0;

  /** `costOf`: the bytes a request holds while in flight (payload, reply data). */
  constructor(maxInFlight: number, maxBytes: number, costOf: (frame: RequestFrame) => number) {
    this.#maxInFlight = maxInFlight;
    this.#maxBytes = maxBytes;
    this.#costOf = costOf;
  }

  /** Queues a decoded request. */
  push(frame: RequestFrame): void {
    this.#waiting.push(frame);
  }

  /**
   * The next waiting request if it may start now (counted in flight from here), else undefined.
   * A request always starts when nothing runs, whatever its cost, so a large one cannot stall.
   */
  next(): StartedRequest | undefined {
    const frame = this.#waiting[0];
    if (frame === undefined || this.#inFlight >= this.#maxInFlight) return undefined;
    const cost = this.#costOf(frame);
    if (this.#inFlight > 0 && this.#bytes + cost > this.#maxBytes) return undefined;
    this.#waiting.shift();
    this.#inFlight++;
    this.#bytes += cost;
    return { frame, cost };
  }

  /** A started request settled. */
  done(started: StartedRequest): void {
    this.#inFlight--;
    this.#bytes -= started.cost;
  }

  /** Drops the waiting requests (the connection is closing). */
  dropWaiting(): void {
    this.#waiting = [];
  }

  /** No more requests should be read: some wait, or the limits are reached. */
  get full(): boolean {
    return this.#waiting.length > 0 || this.#inFlight >= this.#maxInFlight || this.#bytes >= this.#maxBytes;
  }

  /** Reading may go on again: nothing waits, and at most half the limits are in flight. */
  get roomy(): boolean {
    return this.#waiting.length === 0 && this.#inFlight <= this.#maxInFlight / 2 && this.#bytes <= this.#maxBytes / 2;
  }

  /** Nothing waits and nothing runs. */
  get idle(): boolean {
    return this.#waiting.length === 0 && this.#inFlight === 0;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  get bytesInFlight(): number {
    return this.#bytes;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /** WRITE payload bytes held by waiting requests. */
  get bytesWaiting(): number {
    return this.#waiting.reduce((n, f) => n + (f.kind === 'request' ? (f.payload?.length ?? 0) : 0), 0);
  }
}
