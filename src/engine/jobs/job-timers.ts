/**
 * The clock and timers a job sleeps with (QEMU's `job->sleep_timer` on QEMU_CLOCK_REALTIME),
 * injectable so that tests can compute rate-limit delays and fire sleeps without waiting.
 */
import { realClock, type NanoClock } from './rate-limit.js';

/** A pending timer, to cancel with {@link JobTimers.clear}. */
export type JobTimerHandle = { readonly __jobTimer: true };

/** Where jobs get the time and their sleep timers. */
export interface JobTimers {
  /** The time in nanoseconds (monotonic). */
  readonly now: NanoClock;
  /** Calls `callback` once, `delayNs` from now (0: as soon as possible, but not synchronously). */
  set(delayNs: number, callback: () => void): JobTimerHandle;
  /** Cancels a timer that has not fired; no effect otherwise. */
  clear(handle: JobTimerHandle): void;
}

/** The real clock with `setTimeout` timers. */
export const realTimers: JobTimers = {
  now: realClock,
  set(delayNs, callback) {
    return setTimeout(callback, Math.ceil(delayNs / 1e6)) as unknown as JobTimerHandle;
  },
  clear(handle) {
    clearTimeout(handle as unknown as NodeJS.Timeout);
  },
};
