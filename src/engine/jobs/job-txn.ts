/** The transaction group of jobs that complete or fail together. */
import type { JobCore } from './job-core.js';

/**
 * The transaction group of a job (job.c `JobTxn`). Opaque outside the job layer: make one
 * with `JobManager.createTxn()` and pass it to `JobManager.add()` for each job of a
 * `completion-mode: grouped` transaction.
 */
export class JobTxn {
  /** A member failed or was cancelled and the group is being torn down. */
  aborting = false;
  /** Members, newest first (QEMU inserts at the head and walks from it). */
  readonly members: JobCore[] = [];

  /** @internal */
  add(core: JobCore): void {
    core.txn = this;
    this.members.unshift(core);
  }

  /** @internal */
  remove(core: JobCore): void {
    const i = this.members.indexOf(core);
    if (i >= 0) this.members.splice(i, 1);
    core.txn = undefined;
  }
}
