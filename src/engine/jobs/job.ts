/**
 * `Job`: the base class of the engine's long-running operations (backup, mirror, commit), with
 * QEMU 7.2's job model. A subclass implements `run(ctx)`, which copies in steps and calls
 * `await ctx.pausePoint()`, `ctx.progressUpdate(...)` and `await ctx.sleepForRate(bytes)`
 * between them, and the hooks job.c calls once the work is over:
 *
 * - `prepare()` when the whole transaction succeeded (throwing fails the job and aborts the
 *   transaction);
 * - then `commit()` on success or `abort()` on failure or cancellation, then `clean()`;
 * - `complete()` for jobs that reach `ready` (the user's `job-complete`).
 *
 * A job is added to a `JobManager` (which names it, sends its events and runs the commands on
 * it), then started. The engine's drains call `pause()` / `resume()` and wait for `whenIdle()`.
 */
import type { JobContext, JobDriver, JobIoStatus } from './job-context.js';
import { JOB_CORE, JobCore } from './job-core.js';
import type { JobStatus, JobType } from './job-status.js';

/** How a job is made. */
export interface JobOptions {
  /** The job id (`job-id`): a letter, then letters, digits, `-`, `.`, `_`. */
  id: string;
  type: JobType;
  /** Finalize as soon as the transaction's jobs have all finished (default true). */
  autoFinalize?: boolean;
  /** Disappear once concluded (default true); otherwise wait for `job-dismiss`. */
  autoDismiss?: boolean;
}

/** A job; see the module comment. */
export abstract class Job {
  readonly #core: JobCore;

  constructor(options: JobOptions) {
    this.#core = new JobCore({
      id: options.id,
      type: options.type,
      autoFinalize: options.autoFinalize ?? true,
      autoDismiss: options.autoDismiss ?? true,
      driver: this.#driver(),
    });
  }

  /** The copy itself. Return when done or when `ctx.cancelled`; throw to fail the job. */
  protected abstract run(ctx: JobContext): Promise<void>;

  /** Called first when the transaction's jobs all succeeded; throwing fails the job. */
  protected prepare(): Promise<void> | void {}

  /** Called when the job succeeded (after every job of its transaction prepared). Must not throw. */
  protected commit(): Promise<void> | void {}

  /** Called when the job failed or was cancelled. Must not throw. */
  protected abort(): Promise<void> | void {}

  /** Called last, after commit or abort. Must not throw. */
  protected clean(): Promise<void> | void {}

  /**
   * The user's `job-complete` on a ready job: make `run` finish (a mirror switches over).
   * Jobs that never reach `ready` leave it undefined. Throwing refuses the command.
   */
  protected complete?(): Promise<void> | void;

  /** Called at a pause point before the job pauses (QEMU's `.pause`). */
  protected onPause(): void {}

  /** Called at a pause point after the job resumed (QEMU's `.resume`). */
  protected onResume(): void {}

  /**
   * Called on a cancel request; returns the cancel's effective force. Forced is the default;
   * a mirror in ready state returns `force` to make `block-job-cancel` a soft cancel.
   */
  protected onCancel(force: boolean): boolean {
    return true;
  }

  /** Called when the speed changed (QEMU's `.set_speed`). */
  protected onSetSpeed(speed: number): void {}

  get id(): string {
    return this.#core.id;
  }

  get type(): JobType {
    return this.#core.type;
  }

  get status(): JobStatus {
    return this.#core.status;
  }

  get autoFinalize(): boolean {
    return this.#core.autoFinalize;
  }

  get autoDismiss(): boolean {
    return this.#core.autoDismiss;
  }

  /** A pause is requested (`query-block-jobs` `paused`): the pause count is not zero. */
  get paused(): boolean {
    return this.#core.pauseCount > 0;
  }

  /** Running code rather than waiting (`busy`). */
  get busy(): boolean {
    return this.#core.busy;
  }

  /** The speed limit in bytes per second, 0 for none. */
  get speed(): number {
    return this.#core.speed;
  }

  get ioStatus(): JobIoStatus {
    return this.#core.ioStatus;
  }

  /** Bytes done and the current estimate of the total. */
  get progress(): { current: number; total: number } {
    return { current: this.#core.progressCurrent, total: this.#core.progressTotal };
  }

  /** The error text of a failed or cancelled job (QEMU's wording), undefined otherwise. */
  get error(): string | undefined {
    return this.#core.failure;
  }

  /**
   * Adds a pause request, as a drained section does (QEMU's `job_pause`): the job stops at its
   * next pause point. Requests nest with each other and with the user's pause.
   */
  pause(): void {
    this.#core.pause();
  }

  /** Drops a pause request made with {@link pause}. */
  resume(): void {
    this.#core.resume();
  }

  /**
   * Resolves when the job sends no more requests until entered again: it waits at a pause
   * point, sleeps or yields, or its run is over (what a drain waits for after `pause()`).
   */
  whenIdle(): Promise<void> {
    return this.#core.whenIdle();
  }

  /**
   * Wakes `run` if it waits in `ctx.yield()` or `ctx.sleep()` (QEMU's `job_enter`), e.g. from a
   * `complete()` that `run` waits for. A paused job is left alone: resuming it wakes it.
   */
  protected enter(): void {
    if (!this.#core.paused) this.#core.enter();
  }

  /** @internal The job's state, for the job layer only (the symbol is not exported). */
  get [JOB_CORE](): JobCore {
    return this.#core;
  }

  #driver(): JobDriver {
    const job = this; // the getter below runs with `this` = the driver object
    return {
      run: (ctx) => this.run(ctx),
      prepare: () => this.prepare(),
      commit: () => this.commit(),
      abort: () => this.abort(),
      clean: () => this.clean(),
      get complete() {
        const complete = job.complete;
        return complete === undefined ? undefined : () => complete.call(job);
      },
      onPause: () => this.onPause(),
      onResume: () => this.onResume(),
      onCancel: (force) => this.onCancel(force),
      onSetSpeed: (speed) => this.onSetSpeed(speed),
    };
  }
}
