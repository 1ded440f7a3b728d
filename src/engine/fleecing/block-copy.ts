/**
 * Copying clusters from a source to a target with a bitmap of the clusters still to copy, shared
 * by every copier of the same pair: QEMU 7.2's block/block-copy.c, which both the
 * copy-before-write filter (copying old data before a guest write) and a backup job (copying
 * everything in the background) use on the same state, so that no cluster is copied twice and
 * a write waits for a copy of its clusters already in flight.
 *
 * - The copy bitmap has one bit per cluster; a set bit means "still to copy". A task claims a
 *   run of dirty clusters (clears their bits and registers the run as in flight), copies it, and
 *   sets the bits again if the copy failed.
 * - {@link BlockCopyState.copy} copies every dirty cluster of a range and returns once none is
 *   dirty and none is in flight there: when another caller's task covers part of the range, it
 *   waits for that task, and retries if the task failed (its bits are dirty again).
 * - Per task, the source's block status decides: a run that reads as zero is written to the
 *   target as zeroes (without unmapping), anything else is read and written, in chunks of up to
 *   1 MiB (`BLOCK_COPY_MAX_BUFFER`), up to 64 tasks of one call at a time.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { ExtentFlags } from '../../block/block-device.js';
import { DirtyBitmap } from '../../bitmap/index.js';
import { InvalidArgumentError } from '../../errors.js';
import { RequestList, type RangeRequest } from './request-list.js';

/** QEMU's default block-copy cluster size (`BLOCK_COPY_CLUSTER_SIZE_DEFAULT`): 64 KiB. */
export const DEFAULT_COPY_CLUSTER_SIZE = 64 * 1024;
/** Largest chunk of one read-and-write task (`BLOCK_COPY_MAX_BUFFER`): 1 MiB. */
const MAX_BUFFER = 1024 * 1024;
/** Tasks of one call in flight at most (`BLOCK_COPY_MAX_WORKERS`). */
const MAX_WORKERS = 64;

/**
 * The cluster size QEMU's block-copy chooses (`block_copy_calculate_cluster_size`): the
 * target's cluster size if larger than 64 KiB, else 64 KiB — also when the target does not
 * tell one (a raw file, null-co; QEMU then warns when the target has no backing file).
 *
 * @param targetClusterSize - bytes, or undefined when the target's driver has no cluster size
 */
export function copyClusterSize(targetClusterSize: number | undefined): number {
  return Math.max(DEFAULT_COPY_CLUSTER_SIZE, targetClusterSize ?? 0);
}

/** How a {@link BlockCopyState} is made. */
export interface BlockCopyInit {
  /** Read from (an edge to the source node). */
  source: BlockDevice;
  /** Written to; at least as large as `source` where clusters are copied. */
  target: BlockDevice;
  /** Bytes, a power of two >= 512 (see {@link copyClusterSize}). */
  clusterSize: number;
  /**
   * The clusters to copy: those overlapping a dirty granule of this bitmap (same size as the
   * source, any granularity; QEMU's `bitmap` option). Default: every cluster.
   */
  bitmap?: DirtyBitmap;
}

/** Options of one {@link BlockCopyState.copy} call. */
export interface CopyCallOptions {
  /** Aborting stops the call from starting new tasks; it returns once its tasks have ended. */
  signal?: AbortSignal;
  /** Tasks of this call in flight at most; default 64. */
  maxWorkers?: number;
  /** Largest task in bytes (rounded down to clusters, at least one); default 1 MiB. */
  maxChunk?: number;
  /**
   * Awaited before each task is claimed, with its expected length in bytes: where a job sleeps
   * for its rate limit or pauses. Nothing is claimed meanwhile, so writes are not held up.
   */
  beforeTask?: (bytes: number) => Promise<void> | void;
}

/** What a copier learns as the copy goes (a job's progress). */
export interface BlockCopyProgress {
  /** `bytes` were copied (or found to need no copy, for `skipUnallocated`). */
  copied(bytes: number): void;
}

interface Task {
  request: RangeRequest;
  offset: number;
  length: number;
}

/** See the module comment. */
export class BlockCopyState {
  readonly source: BlockDevice;
  readonly target: BlockDevice;
  /** Bytes per copy-bitmap bit; tasks are whole clusters (the last may pass the source's end). */
  readonly clusterSize: number;
  /** The source's size in bytes when the state was made. */
  readonly length: number;
  /**
   * One bit per cluster, set while the cluster is still to be copied. Anonymous and disabled
   * (it records no writes). A backup job may change it before it starts copying (QEMU's
   * `block_copy_dirty_bitmap`), e.g. clear it and merge its sync bitmap.
   */
  readonly copyBitmap: DirtyBitmap;
  /** Skip clusters that the source's top layer does not allocate (a `sync: top` backup). */
  skipUnallocated = false;
  /** Told about copied bytes; set by a job. */
  progress: BlockCopyProgress | undefined;
  readonly #tasks = new RequestList();
  readonly #chunk: number;
  #inFlightBytes = 0;

  /**
   * @throws InvalidArgumentError when `bitmap` cannot be used, with QEMU's texts ("Bitmap 'b'
   *   is currently in use by another operation and cannot be used", "Bitmap 'b' is
   *   inconsistent and cannot be used", "Bitmaps are of different sizes (destination size is N,
   *   source size is M) and can't be merged")
   */
  constructor(init: BlockCopyInit) {
    this.source = init.source;
    this.target = init.target;
    this.clusterSize = init.clusterSize;
    this.length = init.source.size;
    this.copyBitmap = new DirtyBitmap({ size: this.length, granularity: this.clusterSize, enabled: false });
    const bitmap = init.bitmap;
    if (bitmap === undefined) this.copyBitmap.set(0, this.length);
    else {
      const action = 'create the copy bitmap';
      const name = bitmap.name ?? '';
      if (bitmap.busy) throw new InvalidArgumentError(action, `Bitmap '${name}' is currently in use by another operation and cannot be used`);
      if (bitmap.inconsistent) throw new InvalidArgumentError(action, `Bitmap '${name}' is inconsistent and cannot be used`);
      if (bitmap.size !== this.length) {
        throw new InvalidArgumentError(action, `Bitmaps are of different sizes (destination size is ${this.length}, source size is ${bitmap.size}) and can't be merged`);
      }
      this.copyBitmap.merge(bitmap);
    }
    // QEMU: MIN(MAX(cluster, BLOCK_COPY_MAX_BUFFER), max_transfer), max_transfer in whole clusters.
    const maxTransfer = Math.floor(Math.min(init.source.blockSize.maximum, init.target.blockSize.maximum) / this.clusterSize) * this.clusterSize;
    this.#chunk = maxTransfer < this.clusterSize ? this.clusterSize : Math.min(Math.max(this.clusterSize, MAX_BUFFER), maxTransfer);
  }

  /** Bytes still to copy (dirty clusters × cluster size, not counting those in flight). */
  get dirtyBytes(): number {
    return this.copyBitmap.count();
  }

  /** Bytes being copied now. */
  get inFlightBytes(): number {
    return this.#inFlightBytes;
  }

  /** True while a task copies a cluster overlapping `[offset, offset + length)`. */
  isCopying(offset: number, length: number): boolean {
    return this.#tasks.findConflict(offset, length) !== undefined;
  }

  /**
   * Copies the dirty clusters of `[offset, offset + length)` (cluster-aligned; the end may be the
   * source's end rounded up to a cluster) and waits for other callers' tasks there. Resolves when
   * nothing in the range is dirty or in flight, or when `signal` aborted (tasks then ended).
   * @throws the first error of this call's own tasks (their clusters are dirty again); other
   *   callers' failures make this call copy those clusters itself
   */
  async copy(offset: number, length: number, options: CopyCallOptions = {}): Promise<void> {
    const end = Math.min(offset + length, this.length);
    if (offset % this.clusterSize !== 0 || (end !== this.length && end % this.clusterSize !== 0)) {
      throw new InvalidArgumentError(`copy ${length} bytes at ${offset}`, `the range is not aligned to the cluster size ${this.clusterSize}`);
    }
    if (end <= offset) return;
    const aborted = (): boolean => options.signal?.aborted === true;
    for (;;) {
      let again = await this.#copyDirty(offset, end, options);
      if (!again && !aborted()) {
        // Nothing left to claim: wait for another caller's task here, else look once more for
        // clusters a failed task made dirty again.
        const waited = this.#tasks.waitOne(offset, end - offset);
        if (waited !== false) again = await waited;
        else {
          const next = this.copyBitmap.nextDirty(offset);
          again = next !== -1 && next < end;
        }
      }
      if (!again || aborted()) return;
    }
  }

  /** Marks `[offset, offset + length)` as not to be copied (QEMU's `block_copy_reset`). */
  reset(offset: number, length: number): void {
    const end = Math.min(offset + length, this.length);
    if (end > offset) this.copyBitmap.reset(offset, end - offset);
  }

  /**
   * For a `sync: top` job: when the cluster at `offset` (aligned) and those after it are not
   * allocated in the source's top layer, marks them as not to copy. Returns whether the run is
   * allocated and its length in bytes (whole clusters).
   */
  async resetUnallocated(offset: number): Promise<{ allocated: boolean; bytes: number }> {
    const [extent] = await this.source.blockStatus(offset, this.length - offset);
    const allocated = extent === undefined || isTopAllocated(extent);
    const bytes = Math.max(this.clusterSize, Math.ceil((extent?.length ?? this.clusterSize) / this.clusterSize) * this.clusterSize);
    if (!allocated) this.reset(offset, bytes);
    return { allocated, bytes };
  }

  /** One pass over `[offset, end)`: claims and runs tasks; true when it found dirty clusters. */
  async #copyDirty(offset: number, end: number, options: CopyCallOptions): Promise<boolean> {
    const maxWorkers = options.maxWorkers ?? MAX_WORKERS;
    const maxChunk = Math.max(this.clusterSize, Math.floor(Math.min(this.#chunk, options.maxChunk || Infinity) / this.clusterSize) * this.clusterSize);
    const running = new Set<Promise<void>>();
    let failure: { error: unknown } | undefined;
    let found = false;
    let position = offset;
    const aborted = (): boolean => options.signal?.aborted === true;
    while (position < end && failure === undefined && !aborted()) {
      if (options.beforeTask !== undefined) {
        const peek = this.#nextDirtyRun(position, end, maxChunk);
        if (peek === undefined) break;
        await options.beforeTask(peek.length);
        if (aborted()) break;
      }
      const task = this.#claim(position, end, maxChunk);
      if (task === undefined) break;
      found = true;
      const { zero, allocated, length } = await this.#status(task.offset, task.length);
      if (length < task.length) this.#shrink(task, length);
      position = task.offset + task.length;
      if (this.skipUnallocated && !allocated) {
        this.#end(task, true);
        this.progress?.copied(task.length);
        continue;
      }
      while (running.size >= maxWorkers) await Promise.race(running);
      if (aborted() || failure !== undefined) {
        this.#end(task, false);
        break;
      }
      const run: Promise<void> = this.#run(task, zero)
        .catch((error: unknown) => {
          failure ??= { error };
        })
        .finally(() => running.delete(run));
      running.add(run);
    }
    await Promise.all(running);
    if (failure !== undefined) throw failure.error;
    return found;
  }

  /** The next dirty run in `[from, end)`, at most `maxChunk` bytes, in whole clusters. */
  #nextDirtyRun(from: number, end: number, maxChunk: number): { offset: number; length: number } | undefined {
    const start = this.copyBitmap.nextDirty(from);
    if (start === -1 || start >= end) return undefined;
    const clean = this.copyBitmap.nextClean(start);
    const runEnd = Math.min(clean === -1 ? this.length : clean, end, start + maxChunk);
    const length = Math.ceil((runEnd - start) / this.clusterSize) * this.clusterSize;
    return { offset: start, length };
  }

  /** Claims the next dirty run: clears its bits and registers it as in flight. */
  #claim(from: number, end: number, maxChunk: number): Task | undefined {
    const run = this.#nextDirtyRun(from, end, maxChunk);
    if (run === undefined) return undefined;
    this.reset(run.offset, run.length);
    this.#inFlightBytes += run.length;
    return { request: this.#tasks.add(run.offset, run.length), offset: run.offset, length: run.length };
  }

  /** Gives back the tail of a task from `length` on (its bits become dirty again). */
  #shrink(task: Task, length: number): void {
    const tailEnd = Math.min(task.offset + task.length, this.length);
    this.copyBitmap.set(task.offset + length, tailEnd - task.offset - length);
    this.#inFlightBytes -= task.length - length;
    task.length = length;
    this.#tasks.shrink(task.request, length);
  }

  /** Ends a task; a failed one's clusters are dirty again. */
  #end(task: Task, ok: boolean): void {
    this.#inFlightBytes -= task.length;
    if (!ok) {
      const end = Math.min(task.offset + task.length, this.length);
      this.copyBitmap.set(task.offset, end - task.offset);
    }
    this.#tasks.remove(task.request);
  }

  /**
   * The source's block status at the start of a task (QEMU's `block_copy_block_status`): how
   * many bytes (whole clusters, at least one) share it, and whether they read as zero and are
   * allocated in the top layer. A failure counts as one cluster of data.
   */
  async #status(offset: number, length: number): Promise<{ zero: boolean; allocated: boolean; length: number }> {
    const fallback = { zero: false, allocated: true, length: this.clusterSize };
    let extent;
    try {
      [extent] = await this.source.blockStatus(offset, Math.min(length, this.length - offset));
    } catch {
      return fallback;
    }
    if (extent === undefined || extent.length < this.clusterSize) return fallback;
    const status = { zero: (extent.flags & ExtentFlags.ZERO) !== 0, allocated: isTopAllocated(extent) };
    if (offset + extent.length === this.length) return { ...status, length: Math.ceil(extent.length / this.clusterSize) * this.clusterSize };
    return { ...status, length: Math.floor(extent.length / this.clusterSize) * this.clusterSize };
  }

  /** Copies one task's clusters (the part within the source). */
  async #run(task: Task, zero: boolean): Promise<void> {
    const bytes = Math.min(task.offset + task.length, this.length) - task.offset;
    let ok = false;
    try {
      if (zero) await sided('write', this.target.writeZeroes(task.offset, bytes));
      else {
        const data = await sided('read', this.source.read(task.offset, bytes));
        await sided('write', this.target.write(task.offset, data));
      }
      ok = true;
    } finally {
      this.#end(task, ok);
    }
    this.progress?.copied(task.length);
  }
}

const failedSides = new WeakMap<object, 'read' | 'write'>();

/** Remembers which side of a copy `promise` is, should it fail. */
async function sided<T>(side: 'read' | 'write', promise: Promise<T>): Promise<T> {
  try {
    return await promise;
  } catch (e) {
    if (e !== null && typeof e === 'object' && !failedSides.has(e)) failedSides.set(e, side);
    throw e;
  }
}

/**
 * Whether an error thrown by {@link BlockCopyState.copy} came from reading the source or from
 * writing the target (a job's `on-source-error` / `on-target-error`); undefined for others.
 */
export function copyFailureSide(e: unknown): 'read' | 'write' | undefined {
  return e !== null && typeof e === 'object' ? failedSides.get(e) : undefined;
}

/** Whether an extent is allocated in the top layer of its device (QEMU's `bdrv_is_allocated`). */
function isTopAllocated(extent: { flags: number; depth?: number }): boolean {
  return extent.depth === undefined ? (extent.flags & ExtentFlags.HOLE) === 0 : extent.depth === 1;
}
