/**
 * Test-only: job timers on a clock that moves only when the test says so. A sleep of 0 ns fires
 * on the next turn of the event loop (as a real zero timer would); longer sleeps wait for
 * `advance()`, so rate-limit delays are computed, never waited for.
 */
import type { JobTimerHandle, JobTimers } from '../job-timers.js';

interface Pending {
  at: number;
  callback: () => void;
  handle: JobTimerHandle;
}

/** See the module comment. */
export class FakeTimers implements JobTimers {
  /** The current time in ns. */
  time = 1_000_000_000;
  /** Every delay asked for, in order (ns). */
  readonly requested: number[] = [];
  #pending: Pending[] = [];

  readonly now = (): number => this.time;

  set(delayNs: number, callback: () => void): JobTimerHandle {
    const handle = { __jobTimer: true } as const;
    this.requested.push(delayNs);
    if (delayNs <= 0) {
      const entry = { at: this.time, callback, handle };
      this.#pending.push(entry);
      setImmediate(() => this.#fire(entry));
    } else this.#pending.push({ at: this.time + delayNs, callback, handle });
    return handle;
  }

  clear(handle: JobTimerHandle): void {
    this.#pending = this.#pending.filter((p) => p.handle !== handle);
  }

  /** Timers waiting for the clock (delay > 0). */
  get waiting(): number {
    return this.#pending.filter((p) => p.at > this.time).length;
  }

  /** Moves the clock by `ns` and fires the timers that are due, earliest first. */
  advance(ns: number): void {
    this.time += ns;
    const due = this.#pending.filter((p) => p.at <= this.time).sort((a, b) => a.at - b.at);
    for (const entry of due) this.#fire(entry);
  }

  /** Moves the clock to the earliest waiting timer and fires it; false when none waits. */
  fireNext(): boolean {
    const next = this.#pending.filter((p) => p.at > this.time).sort((a, b) => a.at - b.at)[0];
    if (next === undefined) return false;
    this.advance(next.at - this.time);
    return true;
  }

  #fire(entry: Pending): void {
    const i = this.#pending.indexOf(entry);
    if (i < 0) return; // cleared
    this.#pending.splice(i, 1);
    entry.callback();
  }
}
