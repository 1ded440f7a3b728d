/**
 * The device of a copy-before-write node (QEMU 7.2 block/copy-before-write.c): a filter over
 * the source (`file`) that, before a write, zero-write or discard changes clusters not copied
 * yet, copies their old data to the target through a shared {@link BlockCopyState}, then lets
 * the request through. Reads, flushes and block status pass through.
 *
 * It also offers the snapshot API ({@link SnapshotProvider}) to a `snapshot-access` node: the
 * frozen view reads copied clusters from the target and the others from the source, while a
 * write to those clusters waits for such reads to end (QEMU's `frozen_read_reqs`).
 *
 * Two anonymous bitmaps of cluster granularity keep the view's state, as in QEMU: `done` (the
 * clusters a copy-before-write operation has copied: read them from the target) and `access`
 * (the clusters the view contains: those of the copy bitmap at the start, less the discarded).
 *
 * A failed copy (or one that ran out of `cbw-timeout`) fails the guest's request with its error
 * under `on-cbw-error: break-guest-write`; under `break-snapshot` the request goes on, and
 * the view is broken for good: no more copies, every snapshot read fails with EACCES.
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { checkRange } from '../../block/range.js';
import { RequestGate } from '../../block/request-gate.js';
import { DirtyBitmap } from '../../bitmap/index.js';
import { IoError } from '../../errors.js';
import type { BlockCopyState } from './block-copy.js';
import { RequestList } from './request-list.js';
import type { SnapshotProvider } from './snapshot-provider.js';

/** QEMU's `OnCbwError`. */
export type OnCbwError = 'break-guest-write' | 'break-snapshot';

/** Starts a timer; returns what cancels it. Tests pass their own clock. */
export type SetTimer = (ms: number, fire: () => void) => () => void;

/** Node's longest timer; longer ones (cbw-timeout goes up to 2^32-1 s) are re-armed. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const realTimer: SetTimer = (ms, fire) => {
  let handle: NodeJS.Timeout | undefined;
  const arm = (left: number): void => {
    handle = setTimeout(() => (left > MAX_TIMER_MS ? arm(left - MAX_TIMER_MS) : fire()), Math.min(left, MAX_TIMER_MS));
  };
  arm(ms);
  return () => clearTimeout(handle);
};

/** How a {@link CopyBeforeWriteFilter} is made. */
export interface CopyBeforeWriteInit {
  /** The node's name, for messages. */
  name: string;
  /** The source (an edge): what the filter passes requests to. */
  file: BlockDevice;
  /** The target (an edge), where old data goes. */
  target: BlockDevice;
  /** The copy state over `file` and `target` (shared with a backup job, if any). */
  state: BlockCopyState;
  /** Default `break-guest-write`. */
  onCbwError?: OnCbwError;
  /** Milliseconds a copy before a write may take; 0 (default) means no limit (`cbw-timeout` is in seconds). */
  timeoutMs?: number;
  setTimer?: SetTimer;
  /** Called once when the filter has closed (to stop listing its bitmaps). */
  onClose?: () => void;
}

/** A copy-before-write filter; see the module comment. */
export class CopyBeforeWriteFilter implements BlockDevice, SnapshotProvider {
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly state: BlockCopyState;
  /** Clusters copied to the target by copy-before-write operations (anonymous, disabled). */
  readonly doneBitmap: DirtyBitmap;
  /** Clusters the frozen view contains (anonymous, disabled). */
  readonly accessBitmap: DirtyBitmap;
  readonly #name: string;
  readonly #file: BlockDevice;
  readonly #target: BlockDevice;
  readonly #onCbwError: OnCbwError;
  readonly #timeoutMs: number;
  readonly #setTimer: SetTimer;
  readonly #onClose: (() => void) | undefined;
  readonly #frozenReads = new RequestList();
  readonly #gate = new RequestGate();
  /** Copies left running by a timeout; closing waits for them. */
  readonly #background = new Set<Promise<unknown>>();
  #snapshotError: IoError | undefined;

  constructor(init: CopyBeforeWriteInit) {
    this.#name = init.name;
    this.#file = init.file;
    this.#target = init.target;
    this.state = init.state;
    this.#onCbwError = init.onCbwError ?? 'break-guest-write';
    this.#timeoutMs = init.timeoutMs ?? 0;
    this.#setTimer = init.setTimer ?? realTimer;
    this.#onClose = init.onClose;
    this.size = init.file.size;
    this.capabilities = { ...init.file.capabilities, readOnly: false };
    this.blockSize = init.file.blockSize;
    const cluster = this.state.clusterSize;
    this.doneBitmap = new DirtyBitmap({ size: this.size, granularity: cluster, enabled: false });
    this.accessBitmap = this.state.copyBitmap.copy(undefined, { enabled: false });
  }

  /** The error that broke the view under `break-snapshot`, if one did. */
  get snapshotError(): IoError | undefined {
    return this.#snapshotError;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#run('read', offset, length, () => this.#file.read(offset, length));
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.#run('write', offset, data.length, async () => {
      await this.#copyBeforeWrite(offset, data.length);
      await this.#file.write(offset, data, options);
    });
  }

  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    return this.#run('write zeroes', offset, length, async () => {
      await this.#copyBeforeWrite(offset, length);
      await this.#file.writeZeroes(offset, length, options);
    });
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.#run('discard', offset, length, async () => {
      await this.#copyBeforeWrite(offset, length);
      await this.#file.trim(offset, length, options);
    });
  }

  flush(): Promise<void> {
    return this.#gate.run(`flush node '${this.#name}'`, () => this.#file.flush());
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#run('block status', offset, length, () => this.#file.blockStatus(offset, length));
  }

  snapshotRead(offset: number, length: number): Promise<Uint8Array> {
    return this.#run('read the snapshot', offset, length, async () => {
      const out = new Uint8Array(length);
      let done = 0;
      while (done < length) {
        const lock = this.#lockSnapshotRead(offset + done, length - done);
        try {
          out.set(await lock.device.read(offset + done, lock.length), done);
        } finally {
          lock.release();
        }
        done += lock.length;
      }
      return out;
    });
  }

  snapshotBlockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#run('get block status of the snapshot', offset, length, async () => {
      const lock = this.#lockSnapshotRead(offset, length);
      try {
        return await lock.device.blockStatus(offset, lock.length);
      } finally {
        lock.release();
      }
    });
  }

  snapshotDiscard(offset: number, length: number): Promise<void> {
    return this.#run('discard from the snapshot', offset, length, async () => {
      // Whole clusters only. (QEMU 7.2 asserts on an unaligned range; later versions round inwards.)
      const cluster = this.state.clusterSize;
      const start = Math.ceil(offset / cluster) * cluster;
      const end = Math.floor((offset + length) / cluster) * cluster;
      if (end <= start) return;
      this.accessBitmap.reset(start, end - start);
      this.state.reset(start, end - start);
      const targetEnd = Math.min(end, this.#target.size);
      if (targetEnd > start) await this.#target.trim(start, targetEnd - start);
    });
  }

  /** Waits for copies still running after a timeout, then stops listing the bitmaps. */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      await Promise.allSettled([...this.#background]);
      this.#onClose?.();
    });
  }

  /**
   * QEMU's `cbw_do_copy_before_write`: copies the clusters the request touches (unless the view
   * is broken), marks them done, and waits until no snapshot read reads them from the source.
   */
  async #copyBeforeWrite(offset: number, length: number): Promise<void> {
    if (length === 0 || this.#snapshotError !== undefined) return;
    const cluster = this.state.clusterSize;
    const start = Math.floor(offset / cluster) * cluster;
    const end = Math.min(Math.ceil((offset + length) / cluster) * cluster, this.size);
    let failure: IoError | undefined;
    try {
      await this.#copy(start, end - start);
    } catch (e) {
      if (this.#onCbwError === 'break-guest-write') throw e;
      failure = e instanceof IoError ? e : new IoError(`copy before write to node '${this.#name}'`, e instanceof Error ? e.message : String(e), 'EIO', { cause: e });
    }
    if (failure !== undefined) this.#snapshotError ??= failure;
    else this.doneBitmap.set(start, end - start);
    await this.#frozenReads.waitAll(start, end - start);
  }

  /** Runs the copy, bounded by `cbw-timeout`: on timeout it fails with ETIMEDOUT and goes on in the background. */
  async #copy(offset: number, length: number): Promise<void> {
    if (this.#timeoutMs === 0) return this.state.copy(offset, length);
    const abort = new AbortController();
    const call = this.state.copy(offset, length, { signal: abort.signal });
    const tracked = call.catch(() => undefined).finally(() => this.#background.delete(tracked));
    this.#background.add(tracked);
    let cancel: () => void = () => undefined;
    const timeout = new Promise<never>((_, reject) => {
      cancel = this.#setTimer(this.#timeoutMs, () => {
        abort.abort();
        reject(new IoError(`copy before write to node '${this.#name}'`, 'Connection timed out', 'ETIMEDOUT'));
      });
    });
    try {
      await Promise.race([call, timeout]);
    } finally {
      cancel();
    }
  }

  /**
   * QEMU's `cbw_snapshot_read_lock`: where the view's bytes from `offset` come from and for how
   * long (`length` at most). A range read from the source stays registered until `release`, so
   * that writes there wait. @throws IoError EACCES when the range is not in the view
   */
  #lockSnapshotRead(offset: number, length: number): { device: BlockDevice; length: number; release: () => void } {
    const clean = this.accessBitmap.nextClean(offset);
    if (this.#snapshotError !== undefined || (clean !== -1 && clean < offset + length)) {
      throw new IoError(`read the snapshot of node '${this.#name}'`, 'Permission denied', 'EACCES');
    }
    const done = this.doneBitmap.get(offset);
    const change = done ? this.doneBitmap.nextClean(offset) : this.doneBitmap.nextDirty(offset);
    const run = Math.min(change === -1 ? this.size : change, offset + length) - offset;
    if (done) return { device: this.#target, length: run, release: () => undefined };
    const request = this.#frozenReads.add(offset, length);
    return { device: this.#file, length: run, release: () => this.#frozenReads.remove(request) };
  }

  #run<T>(verb: string, offset: number, length: number, body: () => Promise<T>): Promise<T> {
    const action = `${verb} ${length} bytes at ${offset} of node '${this.#name}'`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      return body();
    });
  }
}
