/**
 * A dirty bitmap with QEMU's semantics (docs/interop/bitmaps.rst): one bit per granule of a
 * disk, byte-addressed, with the recording, busy, persistent and inconsistent states and the
 * successor protocol that backup jobs use.
 */
import { InvalidArgumentError, OutOfRangeError } from '../errors.js';
import {
  checkMaxLength,
  checkName,
  isValidGranularity,
  MAX_GRANULES,
  type BitmapExtent,
  type BitmapUse,
  type CopyOptions,
  type DirtyBitmapOptions,
  type DirtyExtent,
} from './bitmap-types.js';
import { BitmapStateError } from './errors.js';
import { GranuleSet } from './granule-set.js';

let storeOf: (bitmap: DirtyBitmap) => GranuleSet;

/**
 * A dirty bitmap: one bit per `granularity` bytes of a disk of `size` bytes. The last granule
 * may be partial. Every byte-range method touches each granule that the range overlaps (as
 * QEMU's `bdrv_set_dirty` does). Offsets and lengths are bytes; a non-integer one throws
 * `InvalidArgumentError`, a range not within `[0, size]` throws `OutOfRangeError`, and nothing
 * changes. Results (`extents`, `nextDirty`, ...) are clamped to `size`.
 *
 * States (as QMP's `query-named-block-nodes` reports them):
 * - `enabled` ("recording"): `recordWrite` sets bits. A frozen bitmap reports false.
 * - `busy`: frozen by `createSuccessor` until `abdicate`/`reclaim`, or marked by `setBusy`.
 * - `persistent`: to be stored in the qcow2 image.
 * - `inconsistent`: left in use by a crashed process; good for nothing but removal.
 *
 * The low-level bit operations (`set`, `reset`, `merge`, `andNot`, `clear`) do not check these
 * states, because jobs use them on frozen bitmaps. Front ends call {@link assertUsable} first.
 *
 * Storage is hierarchical (see GranuleSet): clean and fully dirty regions cost no memory, and
 * finding the next dirty or clean byte costs O(log size), never a scan.
 */
export class DirtyBitmap {
  /** Disk size in bytes. */
  readonly size: number;
  /** Bytes per bit (a power of two, 512 .. 2^31). */
  readonly granularity: number;
  /** The bitmap's name; undefined for an anonymous bitmap (a successor, a job's copy). */
  readonly name: string | undefined;
  /** Whether the bitmap is stored in the image; freely settable. */
  persistent: boolean;

  #store: GranuleSet;
  #enabled: boolean;
  #inconsistent: boolean;
  #busyMark = false;
  #successor: DirtyBitmap | undefined;
  /** The recording state before `createSuccessor`, restored by `abdicate` and `reclaim`. */
  #enabledBeforeFreeze = false;

  static {
    storeOf = (bitmap) => bitmap.#store;
  }

  /**
   * Creates an all-clean bitmap.
   *
   * @throws InvalidArgumentError for a size that is not a non-negative safe integer, a
   *   granularity that is not a power of two in 512 .. 2^31, a bad name, or `enabled` together
   *   with `inconsistent`
   * @throws OutOfRangeError when the bitmap would have more than 2^32 granules
   */
  constructor(options: DirtyBitmapOptions) {
    const { size, granularity, name } = options;
    const action = `create dirty bitmap${name === undefined ? '' : ` '${name}'`}`;
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new InvalidArgumentError(action, `size ${size} is not a non-negative integer`);
    }
    if (!isValidGranularity(granularity)) {
      throw new InvalidArgumentError(action, `granularity ${granularity} is not a power of two from 512 to 2147483648`);
    }
    const granules = Math.ceil(size / granularity);
    if (granules > MAX_GRANULES) {
      throw new OutOfRangeError(action, `${granules} granules of ${granularity} bytes exceed the limit of ${MAX_GRANULES}`);
    }
    if (name !== undefined) checkName(action, name);
    if (options.inconsistent === true && options.enabled === true) {
      throw new InvalidArgumentError(action, 'an inconsistent bitmap cannot be enabled');
    }
    this.size = size;
    this.granularity = granularity;
    this.name = name;
    this.persistent = options.persistent ?? false;
    this.#inconsistent = options.inconsistent ?? false;
    this.#enabled = options.enabled ?? !this.#inconsistent;
    this.#store = new GranuleSet(granules);
  }

  /** Number of granules: `ceil(size / granularity)`. */
  get granuleCount(): number {
    return this.#store.length;
  }

  /** True while `recordWrite` sets bits of this bitmap (false while frozen). */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** True while the bitmap has a successor or is marked busy by `setBusy`. */
  get busy(): boolean {
    return this.#successor !== undefined || this.#busyMark;
  }

  /** True when the bitmap cannot be trusted; only removing it makes sense. */
  get inconsistent(): boolean {
    return this.#inconsistent;
  }

  /** The successor created by `createSuccessor`, while there is one. */
  get successor(): DirtyBitmap | undefined {
    return this.#successor;
  }

  /** Marks every granule that `[offset, offset + length)` overlaps as dirty. */
  set(offset: number, length: number): void {
    this.#checkRange('set bits of', offset, length);
    if (length > 0) this.#store.setRange(...this.#granules(offset, length));
  }

  /**
   * Marks every granule that `[offset, offset + length)` overlaps as clean — also granules only
   * partly inside the range. QEMU's `bdrv_reset_dirty_bitmap` expects granule-aligned ranges
   * (except at the end of the disk), where the two readings agree.
   */
  reset(offset: number, length: number): void {
    this.#checkRange('reset bits of', offset, length);
    if (length > 0) this.#store.clearRange(...this.#granules(offset, length));
  }

  /** Clears every bit. */
  clear(): void {
    this.#store.clear();
  }

  /** True when the granule holding byte `offset` (0 <= offset < size) is dirty. */
  get(offset: number): boolean {
    this.#checkOffset('read bit of', offset, this.size - 1);
    return this.#store.get(Math.floor(offset / this.granularity));
  }

  /**
   * Dirty bytes as QEMU counts them: dirty granules × granularity, not clamped to the size (one
   * dirty byte in a partial last granule of 64 KiB counts 65536). O(1).
   */
  count(): number {
    return this.#store.count * this.granularity;
  }

  /** True when no granule is dirty. */
  isEmpty(): boolean {
    return this.#store.count === 0;
  }

  /**
   * The first byte offset `>= offset` that is dirty: `offset` itself when it is, else the start
   * of the next dirty granule; -1 when there is none before `size`. `offset` may equal `size`.
   */
  nextDirty(offset: number): number {
    this.#checkOffset('find dirty bytes in', offset, this.size);
    const g = Math.floor(offset / this.granularity);
    const next = this.#store.nextSet(g);
    if (next < 0) return -1;
    return next === g ? offset : next * this.granularity;
  }

  /** Like {@link nextDirty}, for clean bytes. */
  nextClean(offset: number): number {
    this.#checkOffset('find clean bytes in', offset, this.size);
    const g = Math.floor(offset / this.granularity);
    const next = this.#store.nextClear(g);
    if (next < 0) return -1;
    return next === g ? offset : next * this.granularity;
  }

  /**
   * Describes `[offset, offset + length)` as alternating maximal dirty and clean runs that cover
   * it exactly (the first starts at `offset`, the last ends at `offset + length`), each split
   * into pieces of at most `maxLength` bytes — what an NBD `qemu:dirty-bitmap` block status
   * reply needs. Arguments are checked at the call; runs are computed as the iteration goes,
   * so changes to the bitmap meanwhile show from the current position on.
   *
   * @param maxLength - a positive integer; default unlimited
   */
  extents(offset = 0, length = this.size - offset, maxLength?: number): Generator<BitmapExtent, void, undefined> {
    this.#checkRange('list extents of', offset, length);
    return this.#runs(offset, offset + length, checkMaxLength(maxLength), true);
  }

  /**
   * The maximal dirty runs within `[offset, offset + length)`, clamped to it, split into pieces
   * of at most `maxLength` bytes — what a backup job copies. Same contract as {@link extents}.
   */
  dirtyExtents(offset = 0, length = this.size - offset, maxLength?: number): Generator<DirtyExtent, void, undefined> {
    this.#checkRange('list dirty extents of', offset, length);
    return this.#dirtyRuns(offset, offset + length, checkMaxLength(maxLength));
  }

  /**
   * ORs `other` into this bitmap. The sizes must be equal; the granularities may differ: each
   * granule of this bitmap that overlaps a dirty byte of `other` becomes dirty (a coarser target
   * marks whole granules, a finer one every granule a dirty source granule covers).
   *
   * @throws InvalidArgumentError when the sizes differ
   */
  merge(other: DirtyBitmap): void {
    this.#checkSameSize('merge', other);
    if (other === this) return;
    if (other.granularity === this.granularity) {
      this.#store.orFrom(other.#store);
      return;
    }
    for (const run of other.#dirtyRuns(0, other.size, Infinity)) this.set(run.offset, run.length);
  }

  /**
   * Clears each granule of this bitmap whose bytes are all dirty in `other` ("dirty minus already
   * copied"). With equal granularities this is a plain AND-NOT of the bits.
   *
   * @throws InvalidArgumentError when the sizes differ
   */
  andNot(other: DirtyBitmap): void {
    this.#checkSameSize('subtract', other);
    if (other.granularity === this.granularity) {
      if (other === this) this.clear();
      else this.#store.andNotFrom(other.#store);
      return;
    }
    for (const run of other.#dirtyRuns(0, other.size, Infinity)) {
      const end = run.offset + run.length;
      const first = Math.ceil(run.offset / this.granularity);
      const last = end === this.size ? this.granuleCount : Math.floor(end / this.granularity);
      if (first < last) this.#store.clearRange(first, last);
    }
  }

  /**
   * An independent bitmap with the same size, granularity and bits; enabled, not persistent and
   * not busy unless `options` say otherwise.
   *
   * @throws BitmapStateError when this bitmap is inconsistent (its bits mean nothing)
   */
  copy(name?: string, options: CopyOptions = {}): DirtyBitmap {
    if (this.#inconsistent) throw new BitmapStateError(`copy ${this.#describe()}`, this.#inconsistentReason());
    const copy = new DirtyBitmap({ size: this.size, granularity: this.granularity, name, ...options });
    copy.#store = this.#store.clone();
    return copy;
  }

  /** Starts recording writes. @throws BitmapStateError when frozen or inconsistent */
  enable(): void {
    this.#checkNotFrozen('enable');
    if (this.#inconsistent) throw new BitmapStateError(`enable ${this.#describe()}`, this.#inconsistentReason());
    this.#enabled = true;
  }

  /** Stops recording writes. @throws BitmapStateError when frozen (the successor records) */
  disable(): void {
    this.#checkNotFrozen('disable');
    this.#enabled = false;
  }

  /**
   * Marks the bitmap as used (true) or released (false) by an export or job, independently of
   * a successor. `busy` is true while either holds.
   */
  setBusy(busy: boolean): void {
    this.#busyMark = busy;
  }

  /**
   * Marks the bitmap inconsistent and stops its recording, as QEMU does with a persistent bitmap
   * found in use on open. The bits are kept but mean nothing.
   *
   * @throws BitmapStateError when frozen
   */
  markInconsistent(): void {
    this.#checkNotFrozen('mark inconsistent');
    this.#inconsistent = true;
    this.#enabled = false;
  }

  /**
   * What the node graph calls for a guest write of `[offset, offset + length)`: a frozen bitmap
   * passes it to its successor, an enabled one sets the bits, a disabled one ignores it.
   */
  recordWrite(offset: number, length: number): void {
    this.#checkRange('record a write in', offset, length);
    if (this.#successor !== undefined) this.#successor.recordWrite(offset, length);
    else if (this.#enabled && length > 0) this.#store.setRange(...this.#granules(offset, length));
  }

  /**
   * Freezes this bitmap for a job: it becomes busy and stops recording, and the returned anonymous
   * successor (same size and granularity, enabled if this bitmap was) records writes instead.
   *
   * @throws BitmapStateError when the bitmap is busy or inconsistent
   */
  createSuccessor(): DirtyBitmap {
    this.assertUsable('create a successor for', 'modify');
    const successor = new DirtyBitmap({ size: this.size, granularity: this.granularity, enabled: this.#enabled });
    this.#enabledBeforeFreeze = this.#enabled;
    this.#enabled = false;
    this.#successor = successor;
    return successor;
  }

  /**
   * The job succeeded: the successor's bits replace this bitmap's (the frozen bits are dropped),
   * the bitmap is unfrozen with its name and recording state from before `createSuccessor`.
   * The successor object is left empty and detached; it must not be used further.
   *
   * @returns this bitmap
   * @throws BitmapStateError when there is no successor, or the successor is itself busy
   */
  abdicate(): DirtyBitmap {
    const successor = this.#detachSuccessor('abdicate');
    this.#store.take(successor.#store);
    return this;
  }

  /**
   * The job failed: the successor's bits are merged (OR) into this bitmap, so that no write is
   * lost, and the bitmap is unfrozen with its recording state from before `createSuccessor`.
   * The successor object is detached; it must not be used further.
   *
   * @returns this bitmap
   * @throws BitmapStateError when there is no successor, or the successor is itself busy
   */
  reclaim(): DirtyBitmap {
    const successor = this.#detachSuccessor('reclaim');
    this.#store.orFrom(successor.#store);
    return this;
  }

  /**
   * Throws unless the bitmap may be used by a QMP command (clear, enable, disable, merge into or
   * from it, export, backup). Both uses refuse a busy or an inconsistent bitmap, like QEMU's
   * `BDRV_BITMAP_DEFAULT` (`modify`) and `BDRV_BITMAP_ALLOW_RO` (`read`) checks; they differ in
   * QEMU only by a read-only-image check, which belongs to the node, not to the bitmap.
   *
   * @param action - what is being attempted, for the message ("clear", "export")
   * @throws BitmapStateError with QEMU's wording, e.g.
   *   `Cannot clear: Bitmap 'b0' is currently in use by another operation and cannot be used`
   */
  assertUsable(action: string, mode: BitmapUse = 'modify'): void {
    const subject = this.#describe();
    if (this.busy) {
      throw new BitmapStateError(`${action} ${subject}`, `Bitmap '${this.name ?? ''}' is currently in use by another operation and cannot be used`);
    }
    if (this.#inconsistent) throw new BitmapStateError(`${action} ${subject}`, this.#inconsistentReason());
  }

  *#runs(start: number, end: number, maxLength: number, withClean: boolean): Generator<BitmapExtent, void, undefined> {
    const granularity = this.granularity;
    let pos = start;
    while (pos < end) {
      const g = Math.floor(pos / granularity);
      const dirty = this.#store.get(g);
      const next = dirty ? this.#store.nextClear(g) : this.#store.nextSet(g);
      const runEnd = next < 0 ? end : Math.min(end, next * granularity);
      if (dirty || withClean) {
        for (let o = pos; o < runEnd; o += maxLength) yield { offset: o, length: Math.min(maxLength, runEnd - o), dirty };
      }
      pos = runEnd;
    }
  }

  *#dirtyRuns(start: number, end: number, maxLength: number): Generator<DirtyExtent, void, undefined> {
    for (const run of this.#runs(start, end, maxLength, false)) yield { offset: run.offset, length: run.length };
  }

  /** The granule range `[first, end)` that the non-empty byte range overlaps. */
  #granules(offset: number, length: number): [number, number] {
    return [Math.floor(offset / this.granularity), Math.floor((offset + length - 1) / this.granularity) + 1];
  }

  #checkRange(verb: string, offset: number, length: number): void {
    const action = `${verb} ${this.#describe()}`;
    if (!Number.isSafeInteger(offset)) throw new InvalidArgumentError(action, `offset ${offset} is not an integer`);
    if (!Number.isSafeInteger(length)) throw new InvalidArgumentError(action, `length ${length} is not an integer`);
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw new OutOfRangeError(action, `range ${offset}+${length} is not within the size ${this.size}`);
    }
  }

  #checkOffset(verb: string, offset: number, max: number): void {
    const action = `${verb} ${this.#describe()}`;
    if (!Number.isSafeInteger(offset)) throw new InvalidArgumentError(action, `offset ${offset} is not an integer`);
    if (offset < 0 || offset > max) throw new OutOfRangeError(action, `offset ${offset} is not within 0..${max}`);
  }

  #checkSameSize(verb: string, other: DirtyBitmap): void {
    if (other.size !== this.size) {
      throw new InvalidArgumentError(`${verb} ${other.#describe()} into ${this.#describe()}`, `sizes differ (${other.size} and ${this.size} bytes)`);
    }
  }

  #checkNotFrozen(verb: string): void {
    if (this.#successor !== undefined) {
      throw new BitmapStateError(`${verb} ${this.#describe()}`, 'it is frozen by a job (it has a successor)');
    }
  }

  #detachSuccessor(verb: string): DirtyBitmap {
    const successor = this.#successor;
    const action = `${verb} ${this.#describe()}`;
    if (successor === undefined) throw new BitmapStateError(action, 'there is no successor present');
    if (successor.busy) throw new BitmapStateError(action, 'its successor is in use by another operation');
    this.#successor = undefined;
    this.#enabled = this.#enabledBeforeFreeze;
    return successor;
  }

  #inconsistentReason(): string {
    return `Bitmap '${this.name ?? ''}' is inconsistent and cannot be used`;
  }

  #describe(): string {
    return this.name === undefined ? 'anonymous dirty bitmap' : `dirty bitmap '${this.name}'`;
  }
}

/**
 * The storage of `bitmap`, for the serializers of this folder (not part of the public API).
 * Granule `g` of the store is bytes `[g * granularity, (g + 1) * granularity)` of the disk.
 */
export function granulesOf(bitmap: DirtyBitmap): GranuleSet {
  return storeOf(bitmap);
}
