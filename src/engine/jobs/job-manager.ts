/**
 * The engine's jobs: ids, lookup, transaction groups, the user's commands on jobs, and the
 * events QEMU 7.2 sends about them (`JOB_STATUS_CHANGE`, `BLOCK_JOB_*`), through an injected
 * `emit`. Steps that end jobs (completion, finalization, cancellation, dismissal) run one at
 * a time, in the order they were asked for.
 */
import type { JsonObject } from '../../qmp/protocol/messages.js';
import { JobCompletion, type CompletionHost } from './job-completion.js';
import type { BlockErrorAction } from './job-context.js';
import { JOB_CORE, type JobCore, type JobHost } from './job-core.js';
import { JobTxn } from './job-txn.js';
import { JobError, JobText } from './job-errors.js';
import { blockJobInfo, completedEvent, errorEvent, jobInfo, pendingEvent, progressEvent, statusChangeEvent, type BlockJobInfo, type JobInfo } from './job-info.js';
import { realTimers, type JobTimers } from './job-timers.js';
import type { Job } from './job.js';

/** Options of {@link JobManager}. */
export interface JobManagerOptions {
  /** Sends a QMP event (the engine's `emit`). */
  emit(event: string, data: JsonObject): void;
  /** Clock and sleep timers of the jobs; the real ones by default. */
  timers?: JobTimers;
  /** Told when a job's commit/abort/clean hook threw (the job ends anyway). */
  onHookError?(job: Job, hook: string, error: unknown): void;
}

/** Options of {@link JobManager.add}. */
export interface AddJobOptions {
  /** The transaction group (`completion-mode: grouped`); a group of its own by default. */
  txn?: JobTxn;
  /** Initial speed limit in bytes per second (block jobs; default 0, none). */
  speed?: number;
}

/** QEMU's id rule (util/id.c `id_wellformed`). */
const WELL_FORMED_ID = /^[A-Za-z][A-Za-z0-9._-]*$/;

/** The jobs of one engine; see the module comment. */
export class JobManager {
  readonly #options: JobManagerOptions;
  readonly #timers: JobTimers;
  /** Newest first, as QEMU lists them. */
  readonly #entries: Array<{ job: Job; core: JobCore }> = [];
  readonly #jobOf = new WeakMap<JobCore, Job>();
  readonly #completion: JobCompletion;
  readonly #host: JobHost;
  #queue: Promise<void> = Promise.resolve();

  constructor(options: JobManagerOptions) {
    this.#options = options;
    this.#timers = options.timers ?? realTimers;
    const emit = options.emit;
    const completionHost: CompletionHost = {
      pending: (core) => {
        if (core.isBlockJob) emit('BLOCK_JOB_PENDING', pendingEvent(core));
      },
      finished: (core, cancelled) => {
        if (core.isBlockJob) emit(cancelled ? 'BLOCK_JOB_CANCELLED' : 'BLOCK_JOB_COMPLETED', cancelled ? progressEvent(core) : completedEvent(core));
      },
      removed: (core) => {
        const i = this.#entries.findIndex((entry) => entry.core === core);
        if (i >= 0) this.#entries.splice(i, 1);
      },
      hookFailed: (core, hook, error) => this.#hookFailed(core, hook, error),
    };
    this.#completion = new JobCompletion(completionHost);
    this.#host = {
      timers: this.#timers,
      statusChanged: (core) => emit('JOB_STATUS_CHANGE', statusChangeEvent(core)),
      ready: (core) => {
        if (core.isBlockJob) emit('BLOCK_JOB_READY', progressEvent(core));
      },
      ioError: (core, operation: 'read' | 'write', action: BlockErrorAction) => emit('BLOCK_JOB_ERROR', errorEvent(core, operation, action)),
      runFinished: (core) => void this.#serialize(() => this.#completion.exit(core)).catch((e: unknown) => this.#hookFailed(core, 'exit', e)),
    };
  }

  /** A new transaction group: jobs added with it finalize together, and fail together. */
  createTxn(): JobTxn {
    return new JobTxn();
  }

  /**
   * Registers `job` (job.c `job_create` + blockjob.c `block_job_create`): checks its id, puts it
   * in its group, moves it to `created`, and sets its speed. Start it with {@link start}, or
   * drop it with {@link earlyFail} if what created it fails.
   *
   * @throws JobError with QEMU's texts ("Invalid job ID 'x'", "Job ID 'x' already in use",
   *   "Parameter 'speed' expects a non-negative value" — the job then went `created` → `null`)
   */
  add(job: Job, options: AddJobOptions = {}): void {
    const core = job[JOB_CORE];
    if (core.status !== 'undefined') throw new Error(`unreachable: job '${core.id}' added twice`);
    if (!WELL_FORMED_ID.test(core.id)) throw new JobError('INVALID_ARGUMENT', 'create a job', JobText.invalidId(core.id));
    if (this.get(core.id) !== undefined) throw new JobError('ALREADY_EXISTS', 'create a job', JobText.idInUse(core.id));
    core.host = this.#host;
    this.#jobOf.set(core, job);
    core.transition('created');
    this.#entries.unshift({ job, core });
    (options.txn ?? new JobTxn()).add(core);
    if (!core.isBlockJob) return;
    try {
      core.setSpeed(options.speed ?? 0);
    } catch (e) {
      this.earlyFail(job);
      throw e;
    }
  }

  /** Starts a created job (job.c `job_start`). */
  start(job: Job): void {
    job[JOB_CORE].start();
  }

  /** Drops a created job that never started (job.c `job_early_fail`): `created` → `null`. */
  earlyFail(job: Job): void {
    const core = job[JOB_CORE];
    if (core.status !== 'created') throw new Error(`unreachable: early fail of job '${core.id}' in state ${core.status}`);
    this.#completion.dismiss(core);
  }

  /** The job named `id`, if any. */
  get(id: string): Job | undefined {
    return this.#entries.find((entry) => entry.core.id === id)?.job;
  }

  /** Every job, newest first. */
  get jobs(): Job[] {
    return this.#entries.map((entry) => entry.job);
  }

  /** The job named `id` (job-qmp.c `find_job`). @throws JobError "Job not found" */
  findJob(id: string): Job {
    const job = this.get(id);
    if (job === undefined) throw new JobError('NOT_FOUND', `find job '${id}'`, JobText.jobNotFound);
    return job;
  }

  /** The block job named `id` (blockdev.c `find_block_job`). @throws JobError class DeviceNotActive */
  findBlockJob(id: string): Job {
    const job = this.get(id);
    if (job === undefined || !job[JOB_CORE].isBlockJob) throw new JobError('NOT_FOUND', `find block job '${id}'`, JobText.blockJobNotFound(id), 'DeviceNotActive');
    return job;
  }

  /** `job-pause`. @throws JobError */
  userPause(job: Job): Promise<void> {
    return this.#serialize(() => job[JOB_CORE].userPause());
  }

  /** `job-resume`. @throws JobError */
  userResume(job: Job): Promise<void> {
    return this.#serialize(() => job[JOB_CORE].userResume());
  }

  /**
   * `job-cancel` (force) or `block-job-cancel` (a soft cancel unless `force`; only a job that
   * supports it, a ready mirror, finishes normally). Resolves once the request is made, not
   * when the job is over. @throws JobError
   */
  userCancel(job: Job, force: boolean): Promise<void> {
    return this.#serialize(async () => {
      const core = job[JOB_CORE];
      core.applyVerb('cancel');
      await this.#completion.cancel(core, force);
    });
  }

  /** `job-complete` on a ready job. @throws JobError */
  userComplete(job: Job): Promise<void> {
    return this.#serialize(async () => {
      const core = job[JOB_CORE];
      core.applyVerb('complete');
      const complete = core.driver.complete;
      if (core.cancelled || complete === undefined) throw new JobError('INVALID_ARGUMENT', `complete job '${core.id}'`, JobText.cannotComplete(core.id));
      await complete();
    });
  }

  /** `job-finalize` on a pending job: finalizes its whole transaction. @throws JobError */
  finalize(job: Job): Promise<void> {
    return this.#serialize(async () => {
      const core = job[JOB_CORE];
      core.applyVerb('finalize');
      await this.#completion.finalize(core);
    });
  }

  /** `job-dismiss` on a concluded job. @throws JobError */
  dismiss(job: Job): Promise<void> {
    return this.#serialize(() => {
      const core = job[JOB_CORE];
      core.applyVerb('dismiss');
      this.#completion.dismiss(core);
    });
  }

  /** `block-job-set-speed`, in bytes per second (0: no limit). @throws JobError */
  setSpeed(job: Job, speed: number): Promise<void> {
    return this.#serialize(() => job[JOB_CORE].setSpeed(speed));
  }

  /**
   * Cancels `job` without asking its status (job.c `job_cancel_sync`): what the engine does
   * when a transaction that created it fails, or on shutdown. Resolves when the job has
   * finished its work (it may still wait for `job-dismiss`); at once for a job already gone.
   */
  cancelSync(job: Job, force = true): Promise<void> {
    return this.#serialize(async () => {
      const core = job[JOB_CORE];
      if (core.status === 'null') return; // already gone (its group was torn down)
      await this.#completion.cancel(core, force);
      await this.#completion.finishSync(core);
    });
  }

  /** Cancels every job and waits until all are gone (job.c `job_cancel_sync_all`). */
  async cancelAll(): Promise<void> {
    for (let first = this.#entries[0]; first !== undefined; first = this.#entries[0]) await this.cancelSync(first.job, true);
  }

  /** `query-jobs`: every job, newest first. */
  queryJobs(): JobInfo[] {
    return this.#entries.map((entry) => jobInfo(entry.core));
  }

  /** `query-block-jobs`: every block job, newest first. */
  queryBlockJobs(): BlockJobInfo[] {
    return this.#entries.filter((entry) => entry.core.isBlockJob).map((entry) => blockJobInfo(entry.core));
  }

  /** Resolves when the steps asked for so far (commands, job exits) are done. */
  settled(): Promise<void> {
    return this.#serialize(() => undefined);
  }

  #serialize<T>(step: () => Promise<T> | T): Promise<T> {
    const result = this.#queue.then(step);
    this.#queue = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  #hookFailed(core: JobCore, hook: string, error: unknown): void {
    const job = this.#jobOf.get(core);
    try {
      if (job !== undefined) this.#options.onHookError?.(job, hook, error);
    } catch {
      // A failing reporter must not break the job layer.
    }
  }
}
