/**
 * What a job subclass sees of the job layer: the context its `run` cooperates through, and the
 * driver interface the layer calls (QEMU's `JobDriver`), with the vocabulary of I/O errors.
 */

/** `BlockdevOnError`: what a job does when an I/O request fails. */
export type BlockdevOnError = 'report' | 'ignore' | 'enospc' | 'stop' | 'auto';

/** `BlockErrorAction`: what a job did about one failed request. */
export type BlockErrorAction = 'ignore' | 'report' | 'stop';

/** `BlockDeviceIoStatus` of a block job. */
export type JobIoStatus = 'ok' | 'failed' | 'nospace';

/**
 * What a job's `run` gets to cooperate with the job layer. Every method that returns a promise
 * may suspend the job (pause, sleep); `run` must await it.
 */
export interface JobContext {
  /** The job id. */
  readonly id: string;
  /** The job was cancelled for good (forced, or it has no soft cancel): stop and return. */
  readonly cancelled: boolean;
  /** A cancel was asked for, soft or forced (a mirror in ready state completes without switching). */
  readonly cancelRequested: boolean;
  /** The speed limit in bytes per second, 0 for none. */
  readonly speed: number;
  /** Pauses here if a pause was requested (job_pause_point). */
  pausePoint(): Promise<void>;
  /** Waits until entered again (a cancel, a pause request, a kick), then pauses if asked (job_yield). */
  yield(): Promise<void>;
  /** Sleeps `ns` nanoseconds unless entered earlier, then pauses if asked (job_sleep_ns). */
  sleep(ns: number): Promise<void>;
  /** Accounts `bytes` just copied to the rate limit and sleeps the delay it asks for (0 included). */
  sleepForRate(bytes: number): Promise<void>;
  /** Adds `bytes` to the progress done. */
  progressUpdate(bytes: number): void;
  /** Sets the total to the done bytes plus `remaining`. */
  progressSetRemaining(remaining: number): void;
  /** Adds `bytes` to the total. */
  progressIncreaseRemaining(bytes: number): void;
  /**
   * Decides what to do about a failed request under policy `onError` (blockjob.c
   * `block_job_error_action`), sends BLOCK_JOB_ERROR, and for `stop` pauses the job (it stops
   * at its next pause point; `io-status` becomes `failed` or `nospace`). `errno` is the
   * failure's errno name (`EIO`, `ENOSPC`). The job retries after `stop` and `ignore` or fails
   * with the error after `report`.
   */
  errorAction(onError: BlockdevOnError, isRead: boolean, errno: string): BlockErrorAction;
  /** Moves to `ready` and sends BLOCK_JOB_READY (mirror, commit of the active layer). */
  transitionToReady(): void;
}

/** What a job subclass implements; the core calls these as job.c calls a JobDriver's. */
export interface JobDriver {
  run(context: JobContext): Promise<void>;
  prepare(): Promise<void> | void;
  commit(): Promise<void> | void;
  abort(): Promise<void> | void;
  clean(): Promise<void> | void;
  /** Undefined when the job cannot be completed by the user. */
  complete: (() => Promise<void> | void) | undefined;
  onPause(): void;
  onResume(): void;
  /** Returns the effective force: false makes a soft cancel (the job finishes on its own terms). */
  onCancel(force: boolean): boolean;
  onSetSpeed(speed: number): void;
}
