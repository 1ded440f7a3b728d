/**
 * Test-only: QEMU 7.2's job tables (job.c `JobSTT` and `JobVerbTable`) written out as QEMU
 * writes them, 0/1 rows and columns in the order U C R P Y S W D X E N (undefined created
 * running paused ready standby waiting pending aborting concluded null), so that tests check
 * the engine's tables against QEMU's rather than against themselves.
 */
import { JOB_STATUSES, type JobStatus, type JobVerb } from '../job-status.js';

/** `JobSTT[from][to]`. */
export const QEMU_JOB_STT: readonly (readonly number[])[] = [
  /* U */ [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  /* C */ [0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 1],
  /* R */ [0, 0, 0, 1, 1, 0, 1, 0, 1, 0, 0],
  /* P */ [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
  /* Y */ [0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0],
  /* S */ [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0],
  /* W */ [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0],
  /* D */ [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
  /* X */ [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0],
  /* E */ [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
  /* N */ [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
];

/**
 * `JobVerbTable[verb][status]`. In QEMU 7.2 `complete` is also accepted in standby (checked on
 * qemu-system-x86_64 7.2.22: `job-complete` on a paused ready mirror succeeds).
 */
export const QEMU_JOB_VERB_TABLE: Readonly<Record<JobVerb, readonly number[]>> = {
  cancel: [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
  pause: [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  resume: [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  'set-speed': [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
  complete: [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0],
  dismiss: [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0],
  finalize: [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0],
};

/** Whether QEMU's table accepts `verb` in `status`. */
export function qemuAccepts(verb: JobVerb, status: JobStatus): boolean {
  return QEMU_JOB_VERB_TABLE[verb][JOB_STATUSES.indexOf(status)] === 1;
}
