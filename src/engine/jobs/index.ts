/**
 * The engine's jobs with QEMU 7.2's job model: statuses and verbs, transactions, the job
 * commands and events, rate limiting. Jobs (backup, mirror, commit) subclass `Job`.
 */
export { Job, type JobOptions } from './job.js';
export type { BlockdevOnError, BlockErrorAction, JobContext, JobIoStatus } from './job-context.js';
export { JobTxn } from './job-txn.js';
export { JobManager, type AddJobOptions, type JobManagerOptions } from './job-manager.js';
export { registerJobCommands, type QmpCommandRegistry } from './job-commands.js';
export { JobError, JobText, jobErrorText, jobStrerror, type JobErrorClass } from './job-errors.js';
export type { BlockJobInfo, JobInfo } from './job-info.js';
export {
  BLOCK_JOB_TYPES,
  JOB_STATUSES,
  JOB_TYPES,
  JOB_VERBS,
  canTransition,
  isBlockJobType,
  isCompletedStatus,
  isReadyStatus,
  verbAllowed,
  type JobStatus,
  type JobType,
  type JobVerb,
} from './job-status.js';
export { realTimers, type JobTimerHandle, type JobTimers } from './job-timers.js';
export { BLOCK_JOB_SLICE_NS, RateLimit, realClock, type NanoClock } from './rate-limit.js';
