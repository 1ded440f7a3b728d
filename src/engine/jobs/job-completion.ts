/**
 * How jobs end, as QEMU 7.2's job.c does it: once `run` returns, a job waits for the other
 * jobs of its transaction; when all succeeded they become pending and, once finalized
 * (automatically or by `job-finalize`), each is prepared, then committed and cleaned, and
 * concludes; when one fails or is cancelled, every other one is cancelled (forced) and all are
 * aborted, in the transaction's order (newest job first). Also cancellation, finalization and
 * dismissal, which may set that in motion.
 *
 * These steps await the jobs' hooks; the manager runs them one at a time (as QEMU runs them
 * under its big lock), so a command never sees a transaction half-way through a step.
 */
import { jobErrorText, JobText } from './job-errors.js';
import type { JobCore } from './job-core.js';

/** What completion tells the manager: events and removals. */
export interface CompletionHost {
  /** The job became pending and waits for `job-finalize` (BLOCK_JOB_PENDING). */
  pending(core: JobCore): void;
  /** The job was committed or aborted (BLOCK_JOB_CANCELLED when `cancelled`, else BLOCK_JOB_COMPLETED). */
  finished(core: JobCore, cancelled: boolean): void;
  /** The job reached `null` and must be forgotten. */
  removed(core: JobCore): void;
  /** A commit/abort/clean hook threw (they must not): reported, then ignored. */
  hookFailed(core: JobCore, hook: string, error: unknown): void;
}

/** The completion steps; see the module comment. */
export class JobCompletion {
  readonly #host: CompletionHost;

  constructor(host: CompletionHost) {
    this.#host = host;
  }

  /** After `run` returned (job.c `job_exit`); does nothing the second time. */
  async exit(core: JobCore): Promise<void> {
    if (core.exitDone) return;
    core.exitDone = true;
    core.markIdle();
    await this.#completed(core);
  }

  /**
   * Cancels `core` (job.c `job_cancel`): a concluded job is dismissed; one not started
   * completes at once (cancelled); one whose run returned is torn down with its transaction if
   * the cancel is forced; a running one is woken to notice.
   */
  async cancel(core: JobCore, force: boolean): Promise<void> {
    if (core.status === 'concluded') {
      this.dismiss(core);
      return;
    }
    core.cancelAsync(force);
    if (!core.started) await this.#completed(core);
    else if (core.deferred) {
      if (core.isCancelled) await this.#txnAbort(core);
    } else core.enter();
  }

  /** Waits until `core` has finished its work (job.c `job_finish_sync` after the finish step). */
  async finishSync(core: JobCore): Promise<void> {
    if (core.isCompleted) return;
    if (!core.started) {
      // QEMU 7.2 waits here forever (a cancelled job that never started); it has nothing to wait for.
      await this.#completed(core);
      return;
    }
    core.enter();
    await core.runDone;
    await this.exit(core);
  }

  /**
   * `job-finalize` once the verb was accepted (job.c `job_do_finalize`): prepares every
   * member, then commits all, or aborts all if a prepare failed. (QEMU starts the abort from
   * the job that was finalized, which then commits if its own prepare succeeded; in QEMU 7.2
   * only backup jobs can share a group and they have no prepare, so this cannot be seen there.
   * The engine starts it from the member that failed: all abort.)
   */
  async finalize(core: JobCore): Promise<void> {
    const members = this.#members(core);
    for (const member of members) {
      if (await this.#prepare(member)) {
        await this.#txnAbort(member);
        return;
      }
    }
    for (const member of members) await this.#finalizeSingle(member);
  }

  /** Removes a concluded (or never started) job (job.c `job_do_dismiss`). */
  dismiss(core: JobCore): void {
    core.busy = false;
    core.paused = false;
    core.deferred = true;
    core.dropTimer();
    core.txn?.remove(core);
    core.transition('null');
    this.#host.removed(core);
  }

  /** job.c `job_completed`. */
  async #completed(core: JobCore): Promise<void> {
    this.#updateRc(core);
    if (core.failure !== undefined) await this.#txnAbort(core);
    else await this.#txnSuccess(core);
  }

  /** job.c `job_update_rc`: a cancelled job fails with ECANCELED; a failed one is aborting. */
  #updateRc(core: JobCore): void {
    if (core.failure === undefined && core.isCancelled) core.failure = JobText.cancelled;
    if (core.failure !== undefined) core.transition('aborting');
  }

  /** job.c `job_completed_txn_success`. */
  async #txnSuccess(core: JobCore): Promise<void> {
    core.transition('waiting');
    const members = this.#members(core);
    if (members.some((member) => !member.isCompleted)) return;
    for (const member of members) {
      member.transition('pending');
      if (!member.autoFinalize) this.#host.pending(member);
    }
    if (members.every((member) => member.autoFinalize)) await this.finalize(core);
  }

  /**
   * job.c `job_completed_txn_abort`: the first failure cancels every other member (forced),
   * waits for each to finish, and finalizes all in the transaction's order.
   */
  async #txnAbort(core: JobCore): Promise<void> {
    const txn = core.txn;
    if (txn === undefined) return;
    if (txn.aborting) return; // the member that failed first does the rest
    txn.aborting = true;
    for (const other of [...txn.members]) if (other !== core) other.cancelAsync(true);
    while (txn.members.length > 0) {
      const other = txn.members[0]!;
      if (!other.isCompleted) await this.finishSync(other);
      await this.#finalizeSingle(other);
    }
  }

  /** job.c `job_prepare`; returns whether the job has failed. */
  async #prepare(core: JobCore): Promise<boolean> {
    if (core.failure === undefined) {
      try {
        await core.driver.prepare();
      } catch (e) {
        core.failure = jobErrorText(e);
      }
      this.#updateRc(core);
    }
    return core.failure !== undefined;
  }

  /** job.c `job_finalize_single`: commit or abort, clean, the final event, conclude. */
  async #finalizeSingle(core: JobCore): Promise<void> {
    this.#updateRc(core);
    if (core.failure === undefined) await this.#hook(core, 'commit', () => core.driver.commit());
    else await this.#hook(core, 'abort', () => core.driver.abort());
    await this.#hook(core, 'clean', () => core.driver.clean());
    // Only a job that ran reports how it ended.
    if (core.started) this.#host.finished(core, core.isCancelled);
    core.txn?.remove(core);
    core.transition('concluded');
    if (core.autoDismiss || !core.started) this.dismiss(core);
  }

  async #hook(core: JobCore, name: string, hook: () => Promise<void> | void): Promise<void> {
    try {
      await hook();
    } catch (e) {
      this.#host.hookFailed(core, name, e);
    }
  }

  #members(core: JobCore): JobCore[] {
    return core.txn === undefined ? [core] : [...core.txn.members];
  }
}
