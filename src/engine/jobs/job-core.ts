/**
 * The state of one job and the parts of QEMU 7.2's job.c and blockjob.c that act on one job
 * alone: status transitions, the pause counter, the job's "coroutine" (its `run`, entered and
 * left at pause points, sleeps and yields), cancellation requests, user pause/resume, speed,
 * error actions and progress. What involves a job's transaction (completion, finalization,
 * dismissal) is in job-completion.ts; the manager owns both.
 *
 * Internal to `jobs/`: a `Job` reaches its core through the {@link JOB_CORE} symbol, which
 * `index.ts` does not export.
 */
import type { BlockdevOnError, BlockErrorAction, JobContext, JobDriver, JobIoStatus } from './job-context.js';
import { JobError, JobText, jobErrorText, verbRefused } from './job-errors.js';
import { canTransition, isBlockJobType, isCompletedStatus, isReadyStatus, verbAllowed, type JobStatus, type JobType, type JobVerb } from './job-status.js';
import { realTimers, type JobTimerHandle, type JobTimers } from './job-timers.js';
import type { JobTxn } from './job-txn.js';
import { RateLimit } from './rate-limit.js';

/** What the manager provides to a core: events and lifecycle notifications. */
export interface JobHost {
  readonly timers: JobTimers;
  statusChanged(core: JobCore): void;
  ready(core: JobCore): void;
  ioError(core: JobCore, operation: 'read' | 'write', action: BlockErrorAction): void;
  /** `run` returned: the job's exit must be scheduled (job.c's `job_exit` bottom half). */
  runFinished(core: JobCore): void;
}

/** The key under which a `Job` keeps its core. */
export const JOB_CORE: unique symbol = Symbol('bitback job core');

/** The state of one job; see the module comment. */
export class JobCore {
  readonly id: string;
  readonly type: JobType;
  readonly autoFinalize: boolean;
  readonly autoDismiss: boolean;
  readonly driver: JobDriver;
  status: JobStatus = 'undefined';
  /** Pause requests in force (drains, user, error stops). A job starts with one, dropped by start. */
  pauseCount = 1;
  /** Stopped at a pause point. */
  paused = true;
  /** Running code (between two yields), as opposed to waiting to be entered. */
  busy = false;
  userPaused = false;
  cancelled = false;
  forceCancel = false;
  started = false;
  /** `run` has returned: entering the job is no longer possible (job.c `deferred_to_main_loop`). */
  deferred = false;
  /** The exit step after `run` was done (inline by a synchronous finish, or scheduled). */
  exitDone = false;
  /** QEMU's `job->ret != 0`, with the error text (`job->err`). */
  failure: string | undefined;
  progressCurrent = 0;
  progressTotal = 0;
  speed = 0;
  ioStatus: JobIoStatus = 'ok';
  txn: JobTxn | undefined;
  host: JobHost | undefined;
  /** Settles when `run` has returned (or threw); set by start. */
  runDone: Promise<void> = Promise.resolve();
  readonly limit: RateLimit;
  readonly context: JobContext;
  #wake: (() => void) | undefined;
  #timer: JobTimerHandle | undefined;
  #idleWaiters: Array<() => void> = [];

  constructor(options: { id: string; type: JobType; autoFinalize: boolean; autoDismiss: boolean; driver: JobDriver }) {
    this.id = options.id;
    this.type = options.type;
    this.autoFinalize = options.autoFinalize;
    this.autoDismiss = options.autoDismiss;
    this.driver = options.driver;
    // The manager's clock, once the job is added to one.
    this.limit = new RateLimit(() => (this.host?.timers ?? realTimers).now());
    this.context = this.#makeContext();
  }

  get isBlockJob(): boolean {
    return isBlockJobType(this.type);
  }

  /** Cancelled for good (job.c `job_is_cancelled`: force_cancel). */
  get isCancelled(): boolean {
    return this.forceCancel;
  }

  get isCompleted(): boolean {
    return isCompletedStatus(this.status);
  }

  get isReady(): boolean {
    return isReadyStatus(this.status);
  }

  get timerPending(): boolean {
    return this.#timer !== undefined;
  }

  /** Moves to `to` (job.c `job_state_transition`); a change of status is announced. */
  transition(to: JobStatus): void {
    const from = this.status;
    if (!canTransition(from, to)) throw new Error(`unreachable: job '${this.id}' cannot move from ${from} to ${to}`);
    this.status = to;
    if (to !== from) this.host?.statusChanged(this);
  }

  /** @throws JobError when the current status refuses `verb` (job.c `job_apply_verb`). */
  applyVerb(verb: JobVerb): void {
    if (!verbAllowed(verb, this.status)) throw verbRefused(this.id, this.status, verb);
  }

  /** Starts `run` (job.c `job_start`): running, then the first pause point. */
  start(): void {
    if (this.started || this.status !== 'created') throw new Error(`unreachable: job '${this.id}' started twice`);
    this.started = true;
    this.pauseCount--;
    this.busy = true;
    this.paused = false;
    this.transition('running');
    this.runDone = this.#entry();
  }

  /** Wakes the job if it waits to be entered and `condition` holds (job.c `job_enter_cond`). */
  enter(condition?: (core: JobCore) => boolean): void {
    if (!this.started || this.deferred || this.busy) return;
    if (condition !== undefined && !condition(this)) return;
    this.#clearTimer();
    this.busy = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Adds a pause request and wakes the job so that it reaches a pause point (job_pause). */
  pause(): void {
    this.pauseCount++;
    if (!this.paused) this.enter();
  }

  /** Drops a pause request; the last one wakes the job unless it sleeps on a timer (job_resume). */
  resume(): void {
    if (this.pauseCount <= 0) throw new Error(`unreachable: job '${this.id}' resumed more often than paused`);
    this.pauseCount--;
    if (this.pauseCount > 0) return;
    this.enter((core) => !core.timerPending);
  }

  /** `job-pause` (job.c `job_user_pause`). @throws JobError */
  userPause(): void {
    this.applyVerb('pause');
    if (this.userPaused) throw new JobError('INVALID_ARGUMENT', `pause job '${this.id}'`, JobText.alreadyPaused);
    this.userPaused = true;
    this.pause();
  }

  /** `job-resume` (job.c `job_user_resume`): also clears a stopped job's io-status. @throws JobError */
  userResume(): void {
    if (!this.userPaused || this.pauseCount <= 0) throw new JobError('INVALID_ARGUMENT', `resume job '${this.id}'`, JobText.notPaused);
    this.applyVerb('resume');
    this.ioStatus = 'ok';
    this.userPaused = false;
    this.resume();
  }

  /**
   * Marks the job cancelled (job.c `job_cancel_async`): the driver may make it a soft cancel; a
   * user pause is lifted without waking the job (the caller does).
   */
  cancelAsync(force: boolean): void {
    const effective = this.driver.onCancel(force);
    if (this.userPaused) {
      this.ioStatus = 'ok';
      this.userPaused = false;
      this.pauseCount--;
    }
    // A soft cancel of a job whose run has returned is ignored.
    if (effective || !this.deferred) {
      this.cancelled = true;
      this.forceCancel ||= effective;
    }
  }

  /** `block-job-set-speed` (blockjob.c `block_job_set_speed`). @throws JobError */
  setSpeed(speed: number): void {
    this.applyVerb('set-speed');
    if (speed < 0) throw new JobError('INVALID_ARGUMENT', `set the speed of job '${this.id}'`, JobText.negativeSpeed);
    this.limit.setSpeed(speed);
    const old = this.speed;
    this.speed = speed;
    this.driver.onSetSpeed(speed);
    if (speed !== 0 && speed <= old) return;
    // Faster or unlimited: cut a rate-limit sleep short.
    this.enter((core) => core.timerPending);
  }

  /** Resolves once the job waits to be entered, or its run is over (a drain's poll). */
  whenIdle(): Promise<void> {
    if (!this.busy || this.deferred || this.isCompleted) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** The job stopped being busy (its run ended and its exit began). */
  markIdle(): void {
    this.busy = false;
    this.#notifyIdle();
  }

  /** Forgets a pending sleep timer (the job is being dismissed). */
  dropTimer(): void {
    this.#clearTimer();
  }

  async #entry(): Promise<void> {
    await this.#pausePoint();
    let failure: string | undefined;
    try {
      await this.driver.run(this.context);
    } catch (e) {
      failure = jobErrorText(e);
    }
    this.failure = failure;
    this.deferred = true;
    this.busy = true;
    this.#notifyIdle();
    this.host?.runFinished(this);
  }

  /** job.c `job_pause_point`: the status becomes paused (standby when ready) until resumed. */
  async #pausePoint(): Promise<void> {
    if (this.pauseCount <= 0 || this.isCancelled) return;
    this.driver.onPause();
    if (this.pauseCount > 0 && !this.isCancelled) {
      const status = this.status;
      this.transition(status === 'ready' ? 'standby' : 'paused');
      this.paused = true;
      await this.#doYield(undefined);
      this.paused = false;
      this.transition(status);
    }
    this.driver.onResume();
  }

  /** job.c `job_do_yield`: not busy until entered, or until `delayNs` passed. */
  #doYield(delayNs: number | undefined): Promise<void> {
    const host = this.#requireHost();
    if (delayNs !== undefined) {
      this.#timer = host.timers.set(Math.max(delayNs, 0), () => {
        this.#timer = undefined;
        this.enter();
      });
    }
    this.busy = false;
    const woken = new Promise<void>((resolve) => (this.#wake = resolve));
    this.#notifyIdle();
    return woken;
  }

  async #sleep(ns: number): Promise<void> {
    if (this.isCancelled) return;
    if (this.pauseCount <= 0) await this.#doYield(ns);
    await this.#pausePoint();
  }

  async #yield(): Promise<void> {
    if (this.isCancelled) return;
    if (this.pauseCount <= 0) await this.#doYield(undefined);
    await this.#pausePoint();
  }

  #errorAction(onError: BlockdevOnError, isRead: boolean, errno: string): BlockErrorAction {
    let action: BlockErrorAction;
    switch (onError) {
      case 'enospc':
      case 'auto':
        action = errno === 'ENOSPC' ? 'stop' : 'report';
        break;
      case 'stop':
        action = 'stop';
        break;
      case 'report':
        action = 'report';
        break;
      case 'ignore':
        action = 'ignore';
        break;
      default: {
        const never: never = onError;
        throw new Error(`unreachable: on-error ${String(never)}`);
      }
    }
    this.host?.ioError(this, isRead ? 'read' : 'write', action);
    if (action === 'stop') {
      if (!this.userPaused) {
        this.pause();
        // Visible as a user pause, so that job-resume continues the job.
        this.userPaused = true;
      }
      if (this.ioStatus === 'ok') this.ioStatus = errno === 'ENOSPC' ? 'nospace' : 'failed';
    }
    return action;
  }

  #makeContext(): JobContext {
    const core = this; // the getters below run with `this` = the context object
    return {
      get id() {
        return core.id;
      },
      get cancelled() {
        return core.isCancelled;
      },
      get cancelRequested() {
        return core.cancelled;
      },
      get speed() {
        return core.speed;
      },
      pausePoint: () => this.#pausePoint(),
      yield: () => this.#yield(),
      sleep: (ns) => this.#sleep(ns),
      sleepForRate: (bytes) => this.#sleep(this.limit.calculateDelay(bytes)),
      progressUpdate: (bytes) => {
        this.progressCurrent += bytes;
      },
      progressSetRemaining: (remaining) => {
        this.progressTotal = this.progressCurrent + remaining;
      },
      progressIncreaseRemaining: (bytes) => {
        this.progressTotal += bytes;
      },
      errorAction: (onError, isRead, errno) => this.#errorAction(onError, isRead, errno),
      transitionToReady: () => {
        this.transition('ready');
        this.host?.ready(this);
      },
    };
  }

  #clearTimer(): void {
    if (this.#timer === undefined) return;
    this.host?.timers.clear(this.#timer);
    this.#timer = undefined;
  }

  #notifyIdle(): void {
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  #requireHost(): JobHost {
    if (this.host === undefined) throw new Error(`unreachable: job '${this.id}' runs without a manager`);
    return this.host;
  }
}
