/**
 * Test-only: a job manager with an event log and fake timers, and the ways QEMU starts jobs.
 */
import { JobManager } from '../job-manager.js';
import type { Job } from '../job.js';
import { EventLog } from './event-log.js';
import { FakeTimers } from './fake-timers.js';

/** A manager wired to a log and fake timers; hook failures are collected. */
export function jobHarness(): { manager: JobManager; log: EventLog; timers: FakeTimers; hookErrors: string[] } {
  const log = new EventLog();
  const timers = new FakeTimers();
  const hookErrors: string[] = [];
  const manager = new JobManager({ emit: log.emit, timers, onHookError: (job, hook) => hookErrors.push(`${hook}:${job.id}`) });
  return { manager, log, timers, hookErrors };
}

/**
 * Starts `job` the way QEMU's `blockdev-backup` and `transaction` do: inside a drained
 * section, so that it goes created → running → paused → running.
 */
export function startDrained(manager: JobManager, ...jobs: Job[]): void {
  for (const job of jobs) job.pause();
  for (const job of jobs) manager.start(job);
  for (const job of jobs) job.resume();
}

/**
 * Lets the event loop turn until `condition` holds; fails after `turns` turns (a bound
 * against hanging, not a timing assertion).
 */
export async function until(condition: () => boolean, what = 'condition', turns = 10_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (condition()) return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`gave up waiting for ${what}`);
}
