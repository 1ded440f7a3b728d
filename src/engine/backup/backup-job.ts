/**
 * The backup job of QEMU 7.2 (block/backup.c) on the engine.
 *
 * At creation (inside the drained section of `blockdev-backup` or `transaction`) the sync
 * bitmap, if any, is frozen with a successor, and a copy-before-write filter goes above the
 * source, under every parent of the source: from then on a write to a cluster not copied yet
 * first copies the cluster's old data to the target. The filter and the job share one
 * block-copy state, so each cluster is copied once, by whichever comes first.
 *
 * The job copies the clusters still to copy in ascending order (`x-perf` `max-workers` tasks
 * of up to `max-chunk` bytes at a time; QEMU's defaults 64 and 1 MiB), according to `sync`:
 * `full` every cluster, `top` those the source's top layer allocates, `bitmap` those the
 * bitmap marks, `none` nothing (the job runs until cancelled; only guest writes copy).
 *
 * At the end the sync bitmap is settled as QEMU does (`backup_cleanup_sync_bitmap`): on
 * success, or always with `bitmap-mode: always`, unless `never`, the successor takes its place
 * (the copied bits are gone, writes made during the job are kept); otherwise it is merged back.
 * A failed `always` job also gets back the clusters it did not copy, so no change is lost and
 * the next backup copies them.
 */
import type { DirtyBitmap } from '../../bitmap/index.js';
import { ALL_PERMISSIONS } from '../../block/image-permissions.js';
import type { Engine } from '../engine.js';
import { appendCopyBeforeWrite, dropCopyBeforeWrite, type AppendedFilter } from '../fleecing/append.js';
import { copyFailureSide } from '../fleecing/block-copy.js';
import type { BlockBackend } from '../graph/backend.js';
import { Job, type JobContext } from '../jobs/index.js';
import type { JobTxn } from '../jobs/job-txn.js';
import { InvalidArgumentError } from '../../errors.js';
import { Qcow2Image } from '../../qcow2/image/index.js';
import type { BlockNode } from '../graph/block-node.js';
import type { BackupPlan } from './backup-plan.js';

/** A running backup; see the module comment. Made with {@link createBackupJob}. */
export class BackupJob extends Job {
  readonly #engine: Engine;
  readonly #plan: BackupPlan;
  readonly #filter: AppendedFilter;
  readonly #backend: BlockBackend;
  readonly #abort = new AbortController();
  #settled = false;

  constructor(engine: Engine, plan: BackupPlan, filter: AppendedFilter, backend: BlockBackend) {
    super({ id: plan.jobId, type: 'backup', autoFinalize: plan.autoFinalize, autoDismiss: plan.autoDismiss });
    this.#engine = engine;
    this.#plan = plan;
    this.#filter = filter;
    this.#backend = backend;
  }

  protected override async run(ctx: JobContext): Promise<void> {
    const state = this.#filter.filter.state;
    state.progress = { copied: (bytes) => ctx.progressUpdate(bytes) };
    if (this.#plan.sync === 'none') {
      // Only the filter copies, before guest writes; the job lives until cancelled.
      while (!ctx.cancelled) await ctx.yield();
      return;
    }
    const end = Math.ceil(state.length / state.clusterSize) * state.clusterSize;
    if (this.#plan.sync === 'top') {
      // Drop the clusters the top layer does not allocate before copying (backup_run).
      for (let offset = 0; offset < end && !ctx.cancelled; ) {
        await ctx.pausePoint();
        const { bytes } = await state.resetUnallocated(offset);
        offset += Math.max(bytes, state.clusterSize);
        ctx.progressSetRemaining(state.dirtyBytes + state.inFlightBytes);
      }
    }
    ctx.progressSetRemaining(state.dirtyBytes + state.inFlightBytes);
    for (;;) {
      if (ctx.cancelled) return;
      try {
        await state.copy(0, end, {
          signal: this.#abort.signal,
          maxWorkers: this.#plan.maxWorkers,
          ...(this.#plan.maxChunk > 0 ? { maxChunk: this.#plan.maxChunk } : {}),
          beforeTask: async (bytes) => {
            await ctx.pausePoint();
            if (!ctx.cancelled) await ctx.sleepForRate(bytes);
          },
        });
        if (ctx.cancelled || state.dirtyBytes + state.inFlightBytes === 0) return;
      } catch (e) {
        const side = copyFailureSide(e) ?? 'read';
        const errno = (e as { errno?: unknown }).errno;
        const action = ctx.errorAction(side === 'read' ? this.#plan.onSourceError : this.#plan.onTargetError, side === 'read', typeof errno === 'string' ? errno : 'EIO');
        if (action === 'report') throw e;
        // `stop` paused the job (it resumes here and retries); `ignore` retries at once.
        await ctx.pausePoint();
      }
    }
  }

  /** A backup's cancel is always forced: it stops copying at once. */
  protected override onCancel(): boolean {
    this.#abort.abort();
    return true;
  }

  protected override commit(): void {
    this.#settleBitmap(true);
  }

  protected override abort(): void {
    this.#settleBitmap(false);
  }

  protected override async clean(): Promise<void> {
    if (this.#plan.compress) setCompressed(this.#plan.target, false);
    this.#engine.blockers.delete(this.#plan.target);
    await this.#engine.graph.detachBackend(this.#backend).catch(() => undefined);
    await dropCopyBeforeWrite(this.#engine, this.#filter.node).catch(() => undefined);
  }

  /** QEMU's `backup_cleanup_sync_bitmap`. */
  #settleBitmap(succeeded: boolean): void {
    const bitmap = this.#plan.bitmap;
    if (bitmap === undefined || this.#settled) return;
    this.#settled = true;
    settleSyncBitmap(bitmap, this.#plan.bitmapMode ?? 'on-success', succeeded, this.#filter.filter.state.copyBitmap);
  }
}

/** Turns compressed cluster writes on or off for a qcow2 target (planBackup refused others). */
function setCompressed(target: BlockNode, on: boolean): void {
  if (target.device instanceof Qcow2Image) target.device.compressWrites = on;
}

/**
 * Ends the freeze of a backup's sync bitmap (`backup_cleanup_sync_bitmap`): the successor takes
 * its place when the job succeeded or the mode is `always` (never with `never`), else it is
 * merged back; a failed `always` job adds back `uncopied`.
 */
export function settleSyncBitmap(bitmap: DirtyBitmap, mode: 'on-success' | 'never' | 'always', succeeded: boolean, uncopied: DirtyBitmap): void {
  const sync = (succeeded || mode === 'always') && mode !== 'never';
  if (sync) bitmap.abdicate();
  else bitmap.reclaim();
  if (!succeeded && mode === 'always') bitmap.merge(uncopied);
}

/**
 * Creates the job of a checked plan (QEMU's `backup_job_create` from the successor on): freezes
 * the bitmap, puts the filter in place, prepares the copy bitmap, and adds the job to the
 * manager (created, not started). Undoes all of it when a step fails. The caller holds a
 * drained section and starts the job (`engine.jobs.start`) when the transaction commits.
 *
 * @throws InvalidArgumentError / JobError with QEMU's texts ("Could not create node: ...",
 *   "Required max-chunk ...", "Invalid job ID '...'", "Job ID '...' already in use")
 */
export async function createBackupJob(engine: Engine, plan: BackupPlan, txn?: JobTxn): Promise<BackupJob> {
  const bitmap = plan.bitmap;
  bitmap?.createSuccessor();
  let filter: AppendedFilter | undefined;
  let backend: BlockBackend | undefined;
  try {
    try {
      filter = await appendCopyBeforeWrite(engine, plan.source, plan.target, plan.filterNodeName);
    } catch (e) {
      const reason = e instanceof Error && 'reason' in e ? String((e as { reason: unknown }).reason) : String(e);
      throw new InvalidArgumentError('start a backup', `Could not create node: ${reason}`, { cause: e });
    }
    const state = filter.filter.state;
    if (plan.maxChunk > 0 && plan.maxChunk < state.clusterSize) {
      throw new InvalidArgumentError('start a backup', `Required max-chunk (${plan.maxChunk}) is less than backup cluster size (${state.clusterSize})`);
    }
    if (plan.sync === 'bitmap' && bitmap !== undefined) {
      state.copyBitmap.clear();
      state.copyBitmap.merge(bitmap);
    }
    backend = engine.graph.attachBackend(`job '${plan.jobId}'`, filter.node, { perm: 0, shared: ALL_PERMISSIONS, description: `backup job '${plan.jobId}'` });
    backend.ignoresDrain = true;
    const job = new BackupJob(engine, plan, filter, backend);
    engine.jobs.add(job, { ...(txn !== undefined ? { txn } : {}), speed: plan.speed });
    if (plan.compress) setCompressed(plan.target, true);
    engine.blockers.set(plan.target, 'block device is in use by block job: backup');
    return job;
  } catch (e) {
    if (backend !== undefined) await engine.graph.detachBackend(backend).catch(() => undefined);
    if (filter !== undefined) await dropCopyBeforeWrite(engine, filter.node).catch(() => undefined);
    bitmap?.reclaim();
    throw e;
  }
}
