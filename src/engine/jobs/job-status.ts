/**
 * The vocabulary of QEMU 7.2's job layer (`qapi/job.json`) and the two tables of `job.c` that
 * rule it: which status may follow which (`JobSTT`), and which command verb a job accepts in
 * which status (`JobVerbTable`). Pure data, no I/O.
 */

/** `JobStatus`, in QEMU's order. */
export const JOB_STATUSES = ['undefined', 'created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending', 'aborting', 'concluded', 'null'] as const;

/** One of {@link JOB_STATUSES}. */
export type JobStatus = (typeof JOB_STATUSES)[number];

/** `JobVerb`, in QEMU's order: the verbs a user command applies to a job. */
export const JOB_VERBS = ['cancel', 'pause', 'resume', 'set-speed', 'complete', 'dismiss', 'finalize'] as const;

/** One of {@link JOB_VERBS}. */
export type JobVerb = (typeof JOB_VERBS)[number];

/** `JobType`, in QEMU's order. */
export const JOB_TYPES = ['commit', 'stream', 'mirror', 'backup', 'create', 'amend', 'snapshot-load', 'snapshot-save', 'snapshot-delete'] as const;

/** One of {@link JOB_TYPES}. */
export type JobType = (typeof JOB_TYPES)[number];

/**
 * The job types that are block jobs (blockjob.c `is_block_job`): only they appear in
 * `query-block-jobs`, answer the `block-job-*` commands and send the `BLOCK_JOB_*` events.
 */
export const BLOCK_JOB_TYPES: readonly JobType[] = ['backup', 'commit', 'mirror', 'stream'];

/**
 * `JobSTT`: the statuses each status may move to. A move to the same status is allowed where
 * QEMU's table allows it (aborting → aborting), and sends no event.
 */
const TRANSITIONS: Readonly<Record<JobStatus, readonly JobStatus[]>> = {
  undefined: ['created'],
  created: ['running', 'aborting', 'null'],
  running: ['paused', 'ready', 'waiting', 'aborting'],
  paused: ['running'],
  ready: ['standby', 'waiting', 'aborting'],
  standby: ['ready'],
  waiting: ['pending', 'aborting'],
  pending: ['aborting', 'concluded'],
  aborting: ['aborting', 'concluded'],
  concluded: ['null'],
  null: [],
};

/** `JobVerbTable`: the statuses in which each verb is accepted. */
const VERBS: Readonly<Record<JobVerb, readonly JobStatus[]>> = {
  cancel: ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending'],
  pause: ['created', 'running', 'paused', 'ready', 'standby'],
  resume: ['created', 'running', 'paused', 'ready', 'standby'],
  'set-speed': ['created', 'running', 'paused', 'ready', 'standby'],
  complete: ['ready', 'standby'],
  dismiss: ['concluded'],
  finalize: ['pending'],
};

/** Whether a job in status `from` may move to `to` (job.c `JobSTT`). */
export function canTransition(from: JobStatus, to: JobStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Whether a job in status `status` accepts `verb` (job.c `JobVerbTable`). */
export function verbAllowed(verb: JobVerb, status: JobStatus): boolean {
  return VERBS[verb].includes(status);
}

/** Whether `type` is a block job type (see {@link BLOCK_JOB_TYPES}). */
export function isBlockJobType(type: JobType): boolean {
  return BLOCK_JOB_TYPES.includes(type);
}

/**
 * Whether a job in `status` has finished its work (job.c `job_is_completed`): waiting,
 * pending, aborting, concluded, null.
 */
export function isCompletedStatus(status: JobStatus): boolean {
  switch (status) {
    case 'undefined':
    case 'created':
    case 'running':
    case 'paused':
    case 'ready':
    case 'standby':
      return false;
    case 'waiting':
    case 'pending':
    case 'aborting':
    case 'concluded':
    case 'null':
      return true;
    default: {
      const never: never = status;
      throw new Error(`unreachable: job status ${String(never)}`);
    }
  }
}

/** Whether a job in `status` is ready to complete (job.c `job_is_ready`): ready or standby. */
export function isReadyStatus(status: JobStatus): boolean {
  return status === 'ready' || status === 'standby';
}
