/**
 * The errors of the job layer, each with QEMU 7.2's text as its `reason` (job.c, job-qmp.c,
 * blockdev.c, blockjob.c; checked against qemu-system-x86_64 7.2.22) and the QMP error class
 * QEMU answers with, and the texts a failed job reports (`strerror`).
 */
import { BitbackError, IoError, type ErrorCode } from '../../errors.js';
import { strerror } from '../qemu-errors.js';
import type { JobStatus, JobVerb } from './job-status.js';

/** The QMP error classes job commands answer with. */
export type JobErrorClass = 'GenericError' | 'DeviceNotActive';

/**
 * A job command was refused. `reason` is QEMU's text, `errorClass` QEMU's class: the QMP
 * layer sends `{"class": errorClass, "desc": reason}`.
 */
export class JobError extends BitbackError {
  readonly errorClass: JobErrorClass;

  constructor(code: ErrorCode, action: string, reason: string, errorClass: JobErrorClass = 'GenericError') {
    super(code, action, reason);
    this.errorClass = errorClass;
  }
}

/** QEMU's texts, one builder per refusal. */
export const JobText = {
  /** job.c `job_apply_verb`. */
  verbRefused: (id: string, status: JobStatus, verb: JobVerb): string => `Job '${id}' in state '${status}' cannot accept command verb '${verb}'`,
  /** job.c `job_user_pause`. */
  alreadyPaused: 'Job is already paused',
  /** job.c `job_user_resume`. */
  notPaused: "Can't resume a job that was not paused",
  /** job.c `job_complete`. */
  cannotComplete: (id: string): string => `The active block job '${id}' cannot be completed`,
  /** job-qmp.c `find_job` (class GenericError). */
  jobNotFound: 'Job not found',
  /** blockdev.c `find_block_job` (class DeviceNotActive). */
  blockJobNotFound: (id: string): string => `Block job '${id}' not found`,
  /** blockdev.c `qmp_block_job_cancel` without `force`. */
  cancelPaused: (device: string): string => `The block job for device '${device}' is currently paused`,
  /** blockjob.c `block_job_set_speed` (QERR_INVALID_PARAMETER_VALUE). */
  negativeSpeed: "Parameter 'speed' expects a non-negative value",
  /** job.c `job_create`. */
  invalidId: (id: string): string => `Invalid job ID '${id}'`,
  /** job.c `job_create`. */
  idInUse: (id: string): string => `Job ID '${id}' already in use`,
  /** `strerror(ECANCELED)`: the error of a cancelled job. */
  cancelled: 'Operation canceled',
} as const;

/** A refusal by the job named `id` to do `verb`, with QEMU's text. */
export function verbRefused(id: string, status: JobStatus, verb: JobVerb): JobError {
  return new JobError('INVALID_ARGUMENT', `${verb} job '${id}'`, JobText.verbRefused(id, status, verb));
}

/** `strerror()` texts the engine's own errno table lacks. */
const MORE_STRERROR: Record<string, string> = {
  ECANCELED: JobText.cancelled,
  ENOTSUP: 'Not supported',
  ENOMEM: 'Cannot allocate memory',
  EBUSY: 'Device or resource busy',
};

/**
 * The text a job that failed with `error` reports in `query-jobs`, `query-block-jobs` and
 * `BLOCK_JOB_COMPLETED`, as QEMU words it: an I/O error is `strerror(errno)` ("Input/output
 * error", "No space left on device"); another bitback error its reason (the engine writes
 * QEMU's texts as reasons); anything else its message.
 */
export function jobErrorText(error: unknown): string {
  if (error instanceof IoError) return MORE_STRERROR[error.errno] ?? strerror(error.errno);
  if (error instanceof BitbackError) return error.reason;
  if (error instanceof Error) return error.message;
  return String(error);
}

/** `strerror(errno)` for an errno name (`EIO`), with the texts jobs need. */
export function jobStrerror(errno: string): string {
  return MORE_STRERROR[errno] ?? strerror(errno);
}
