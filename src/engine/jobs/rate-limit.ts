/**
 * Rate limiting as QEMU 7.2 does it for block jobs (`include/qemu/ratelimit.h`): time is cut
 * into slices (100 ms for jobs); each slice has a byte quota (`speed × slice`). A job reports
 * the bytes of each chunk it copied and gets back how long to sleep before the next one: zero
 * while the slice's quota lasts, else until the end of the slice, stretched by how far the
 * chunk overshot the quota. One delay per chunk, never a sleep per byte; a chunk bigger than
 * the quota is allowed and paid for afterwards.
 */

/** A clock in nanoseconds (QEMU_CLOCK_REALTIME), injectable so that tests need no waiting. */
export type NanoClock = () => number;

/** The real clock: monotonic nanoseconds. */
export const realClock: NanoClock = () => Number(process.hrtime.bigint());

/** The slice length of block jobs (blockjob.c `BLOCK_JOB_SLICE_TIME`): 100 ms, in ns. */
export const BLOCK_JOB_SLICE_NS = 100_000_000;

const NS_PER_SECOND = 1_000_000_000;

/** QEMU's `RateLimit`. A speed of 0 means no limit. */
export class RateLimit {
  readonly #clock: NanoClock;
  #sliceStart = 0;
  #sliceEnd = 0;
  #sliceQuota = 0;
  #sliceNs = 0;
  #dispatched = 0;

  constructor(clock: NanoClock = realClock) {
    this.#clock = clock;
  }

  /** The bytes allowed per slice; 0 when unlimited. */
  get sliceQuota(): number {
    return this.#sliceQuota;
  }

  /**
   * Sets the speed in bytes per second (0: unlimited) and the slice length in ns
   * (`ratelimit_set_speed`): the quota is `speed × slice` bytes, at least 1, truncated to an
   * integer as QEMU's conversion to uint64 does. The current slice's accounting is kept.
   */
  setSpeed(bytesPerSecond: number, sliceNs: number = BLOCK_JOB_SLICE_NS): void {
    this.#sliceNs = sliceNs;
    this.#sliceQuota = bytesPerSecond === 0 ? 0 : Math.trunc(Math.max((bytesPerSecond * sliceNs) / NS_PER_SECOND, 1));
  }

  /**
   * Records that `bytes` were sent and returns how long to wait before the next request, in ns
   * (`ratelimit_calculate_delay`). A finished slice (possibly stretched) starts a new one.
   */
  calculateDelay(bytes: number): number {
    if (this.#sliceQuota === 0) return 0;
    const now = this.#clock();
    if (this.#sliceEnd < now) {
      this.#sliceStart = now;
      this.#sliceEnd = now + this.#sliceNs;
      this.#dispatched = 0;
    }
    this.#dispatched += bytes;
    if (this.#dispatched < this.#sliceQuota) return 0;
    // Quota exceeded: the slice ends as many slice lengths after its start as it carried quotas.
    const delaySlices = this.#dispatched / this.#sliceQuota;
    this.#sliceEnd = this.#sliceStart + Math.trunc(delaySlices * this.#sliceNs);
    return Math.max(this.#sliceEnd - now, 0);
  }
}
