/**
 * The persistent dirty bitmaps of an open qcow2 image (spec "Bitmaps extension"): loaded at
 * attach, recording the image's writes, stored back on close, and the operations of QMP's
 * `block-dirty-bitmap-*` commands and `qemu-img bitmap`.
 */
import { stat } from 'node:fs/promises';
import { BitmapStateError, DirtyBitmap, type DirtyExtent } from '../../bitmap/index.js';
import { type ImageLockOptions } from '../../block/image-lock.js';
import { ClosedError, InvalidArgumentError, NotFoundError, NotSupportedError, ReadOnlyError } from '../../errors.js';
import { AutoclearFeature, bitmapEntrySize } from '../format/index.js';
import { Qcow2Image } from '../image/index.js';
import { probeImageFormat, type ImageFormat } from '../info.js';
import { commitBitmaps } from './commit.js';
import { BitmapExistsError } from './errors.js';
import { checkNewBitmap, defaultGranularity } from './limits.js';
import { loadBitmaps } from './load.js';
import type { BitmapSlot, StoredDirectory, StoredTable } from './stored.js';

/**
 * How the bitmaps of a writable image are kept:
 * - `track`: the engine's way (and QEMU's). At attach every stored bitmap is marked `in_use`
 *   on disk, so that a process killed later leaves them inconsistent, never wrong; every guest
 *   write, zero-write and trim is recorded in every bitmap; `close` stores them all and clears
 *   `in_use`. Changes other than `remove` are stored on close.
 * - `edit`: the `qemu-img bitmap` way. Every change is stored at once (atomically) and the
 *   bitmaps are never left in use; guest writes are refused (`ReadOnlyError`), since nothing
 *   would record them.
 * A read-only image gets `read-only`: bitmaps are loaded and nothing can change.
 */
export type Qcow2BitmapsMode = 'track' | 'edit' | 'read-only';

/** Options of {@link Qcow2Bitmaps.attach}. */
export interface AttachBitmapsOptions {
  /** For a writable image: `track` (default) or `edit`. Read-only images are always `read-only`. */
  mode?: 'track' | 'edit';
}

/** Options of {@link Qcow2Bitmaps.open}. */
export interface OpenBitmapsOptions extends AttachBitmapsOptions {
  /** Open the image read-only (mode `read-only`). Default false. */
  readOnly?: boolean;
  /** The image's format; probed when omitted. `raw` is refused: raw images hold no bitmaps. */
  format?: ImageFormat;
  /** QEMU's image locks (src/block/image-lock.ts): `forceShare` (qemu-img -U) for read-only opens. */
  lock?: ImageLockOptions;
}

/** Options of {@link Qcow2Bitmaps.add}. */
export interface AddBitmapOptions {
  /** Bytes per bit, a power of two from 512 B to 2 GiB. Default {@link Qcow2Bitmaps.defaultGranularity}. */
  granularity?: number;
  /** Create it disabled (not recording). Default false. */
  disabled?: boolean;
  /** Store it in the image. Default true; a non-persistent bitmap lives until the image closes. */
  persistent?: boolean;
}

/** One bitmap as `list` reports it (the fields of `qemu-img info` and QMP's `dirty-bitmaps`). */
export interface Qcow2BitmapInfo {
  name: string;
  /** Bytes per bit. */
  granularity: number;
  /** The directory flags it is stored with on a clean close: `in-use` (inconsistent), `auto` (enabled). */
  flags: Array<'in-use' | 'auto'>;
  /** Dirty bytes as QEMU counts them (dirty granules × granularity); 0 when inconsistent. */
  count: number;
  /** Records writes. */
  recording: boolean;
  /** Frozen by a job or marked busy. */
  busy: boolean;
  persistent: boolean;
  /** Left in use by a process that did not close the image: must not be trusted. */
  inconsistent: boolean;
}

type State = 'attaching' | 'tracking' | 'editing' | 'read-only' | 'failed' | 'closed';

/**
 * The bitmaps of one open qcow2 image. Obtain with {@link Qcow2Bitmaps.attach} (on an image
 * you opened; attach before its first write) or {@link Qcow2Bitmaps.open} (opens the file too).
 *
 * The `DirtyBitmap` objects in {@link bitmaps} are live: the engine may freeze them, export
 * them, read them. Operations refuse busy and inconsistent bitmaps as QEMU does
 * (`BitmapStateError`), unknown names with `NotFoundError`, changes on a read-only image with
 * `ReadOnlyError`, and everything after the image closed with `ClosedError`.
 */
export class Qcow2Bitmaps {
  /** The image the bitmaps belong to. */
  readonly image: Qcow2Image;
  /** How changes and guest writes are handled (see {@link Qcow2BitmapsMode}). */
  readonly mode: Qcow2BitmapsMode;
  #state: State;
  #slots: BitmapSlot[];
  #directory: StoredDirectory | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(image: Qcow2Image, mode: Qcow2BitmapsMode, slots: BitmapSlot[], directory: StoredDirectory | undefined) {
    this.image = image;
    this.mode = mode;
    this.#state = 'attaching';
    this.#slots = slots;
    this.#directory = directory;
  }

  /**
   * Loads the bitmaps of `image` and, in mode `track`, marks the stored ones in use on disk and
   * starts recording writes; `close` of the image then stores them. Writes to the image are
   * refused while attaching, in mode `edit`, and for good when attaching failed (the bitmaps on
   * disk would no longer match).
   *
   * @throws Qcow2FormatError / Qcow2UnsupportedError for a bitmap directory or table that is
   *   corrupt or beyond QEMU's limits; IoError
   */
  static async attach(image: Qcow2Image, options: AttachBitmapsOptions = {}): Promise<Qcow2Bitmaps> {
    const readOnly = image.capabilities.readOnly;
    const mode: Qcow2BitmapsMode = readOnly ? 'read-only' : (options.mode ?? 'track');
    if (mode !== 'read-only' && mode !== 'track' && mode !== 'edit') {
      throw new InvalidArgumentError(`attach bitmaps of ${image.path}`, `mode '${String(mode)}' is not 'track' or 'edit'`);
    }
    const internals = image.internals;
    const header = internals.imageHeader();
    const fileSize = (await stat(image.path)).size;
    const loaded = await internals.exclusive(() => loadBitmaps(internals, header, image.size, fileSize));
    const bitmaps = new Qcow2Bitmaps(image, mode, loaded.slots, loaded.directory);
    if (mode === 'read-only') {
      bitmaps.#state = 'read-only';
    } else {
      image.onWrite((offset, length) => bitmaps.#onWrite(offset, length));
      if (header.header.version >= 3) internals.maintainAutoclear(AutoclearFeature.BITMAPS);
      try {
        // Marked in use before the first guest write can land (writes are refused until then).
        if (mode === 'track' && loaded.directory !== undefined) await bitmaps.#commit(true, new Set(), []);
      } catch (e) {
        bitmaps.#state = 'failed';
        throw e;
      }
      bitmaps.#state = mode === 'track' ? 'tracking' : 'editing';
    }
    image.onClose(() => bitmaps.#onClose());
    return bitmaps;
  }

  /**
   * Opens the qcow2 image at `path` and attaches its bitmaps; {@link close} closes both.
   *
   * @throws NotSupportedError for a raw image ("raw images cannot hold persistent dirty
   *   bitmaps"); whatever `Qcow2Image.open` and {@link attach} throw
   */
  static async open(path: string, options: OpenBitmapsOptions = {}): Promise<Qcow2Bitmaps> {
    const format = options.format ?? (await probeImageFormat(path));
    if (format === 'raw') {
      throw new NotSupportedError(`use the bitmaps of ${path}`, 'raw images cannot hold persistent dirty bitmaps (convert the image to qcow2)');
    }
    const image = await Qcow2Image.open(path, { readOnly: options.readOnly === true, ...(options.lock ? { lock: options.lock } : {}) });
    try {
      return await Qcow2Bitmaps.attach(image, options.mode === undefined ? {} : { mode: options.mode });
    } catch (e) {
      await image.close().catch(() => {});
      throw e;
    }
  }

  /** QEMU's default granularity for this image: its cluster size clamped to 4 KiB .. 64 KiB. */
  get defaultGranularity(): number {
    return defaultGranularity(this.image.geometry.clusterSize);
  }

  /** The live bitmaps, in directory order (new ones last). The array is a copy. */
  get bitmaps(): DirtyBitmap[] {
    return this.#slots.map((s) => s.bitmap);
  }

  /** The bitmap called `name`, or undefined. */
  get(name: string): DirtyBitmap | undefined {
    return this.#slots.find((s) => s.bitmap.name === name)?.bitmap;
  }

  /** What `qemu-img info` and QMP would say about each bitmap, in directory order. */
  list(): Qcow2BitmapInfo[] {
    return this.#slots.map(({ bitmap: b }) => {
      const recording = b.enabled || (b.successor?.enabled ?? false);
      const flags: Qcow2BitmapInfo['flags'] = [];
      if (b.inconsistent) flags.push('in-use');
      if (recording) flags.push('auto');
      return {
        name: b.name!,
        granularity: b.granularity,
        flags,
        count: b.count(),
        recording,
        busy: b.busy,
        persistent: b.persistent,
        inconsistent: b.inconsistent,
      };
    });
  }

  /**
   * Adds an empty bitmap `name` (persistent unless `persistent: false`), enabled unless
   * `disabled`. In mode `edit` it is stored at once.
   *
   * @throws BitmapExistsError when the name is taken; InvalidArgumentError for a bad name or
   *   granularity; NotSupportedError on a version 2 image (persistent only); OutOfRangeError
   *   past QEMU's limits (65535 bitmaps, 64 MiB directory, table size)
   */
  add(name: string, options: AddBitmapOptions = {}): Promise<DirtyBitmap> {
    const action = `add bitmap '${name}' to ${this.image.path}`;
    return this.#change(action, async () => {
      if (this.get(name) !== undefined) throw new BitmapExistsError(action, name);
      const granularity = options.granularity ?? this.defaultGranularity;
      const persistent = options.persistent ?? true;
      const bitmap = new DirtyBitmap({ size: this.image.size, granularity, name, persistent, enabled: options.disabled !== true });
      if (persistent) {
        const stored = this.#slots.filter((s) => s.bitmap.persistent);
        checkNewBitmap(action, name, granularity, {
          version: this.image.imageHeader.header.version,
          geometry: this.image.geometry,
          virtualSize: this.image.size,
          count: stored.length,
          directoryBytes: stored.reduce((sum, s) => sum + bitmapEntrySize({ name: s.bitmap.name!, extraData: s.extraData }), 0),
        });
      }
      const slot: BitmapSlot = { bitmap, table: undefined, extraData: new Uint8Array(0), extraDataCompatible: false };
      this.#slots.push(slot);
      await this.#storeEdit([slot], () => this.#slots.splice(this.#slots.indexOf(slot), 1));
      return bitmap;
    });
  }

  /**
   * Removes bitmap `name` — also an inconsistent one — from memory and from the image at once
   * (in every mode, as QEMU does), then frees its clusters.
   *
   * @throws NotFoundError; BitmapStateError when it is busy
   */
  remove(name: string): Promise<void> {
    const action = `remove bitmap '${name}' of ${this.image.path}`;
    return this.#change(action, async () => {
      const slot = this.#find(action, name);
      if (slot.bitmap.busy) throw new BitmapStateError(action, `Bitmap '${name}' is currently in use by another operation and cannot be used`);
      const index = this.#slots.indexOf(slot);
      this.#slots.splice(index, 1);
      if (slot.table === undefined) return;
      try {
        await this.#commit(this.mode === 'track', new Set(), [slot.table]);
      } catch (e) {
        this.#slots.splice(index, 0, slot);
        throw e;
      }
    });
  }

  /** Clears every bit of bitmap `name`. @throws NotFoundError; BitmapStateError when busy or inconsistent */
  clear(name: string): Promise<void> {
    return this.#modify(`clear bitmap '${name}' of ${this.image.path}`, name, 'clear', (b) => b.clear());
  }

  /** Makes bitmap `name` record writes. @throws NotFoundError; BitmapStateError when busy or inconsistent */
  enable(name: string): Promise<void> {
    return this.#modify(`enable bitmap '${name}' of ${this.image.path}`, name, 'enable', (b) => b.enable());
  }

  /** Makes bitmap `name` stop recording. @throws NotFoundError; BitmapStateError when busy or inconsistent */
  disable(name: string): Promise<void> {
    return this.#modify(`disable bitmap '${name}' of ${this.image.path}`, name, 'disable', (b) => b.disable());
  }

  /**
   * ORs `source` into bitmap `target` (QMP `block-dirty-bitmap-merge`): `source` is a bitmap
   * of this image by name, or any `DirtyBitmap` of the same disk size (e.g. from another
   * image's {@link Qcow2Bitmaps}); granularities may differ. On failure the target is unchanged.
   *
   * @throws NotFoundError; BitmapStateError when either is busy or inconsistent;
   *   InvalidArgumentError when the sizes differ
   */
  merge(target: string, source: string | DirtyBitmap): Promise<void> {
    const action = `merge into bitmap '${target}' of ${this.image.path}`;
    return this.#change(action, async () => {
      const slot = this.#find(action, target);
      const from = typeof source === 'string' ? this.#find(action, source).bitmap : source;
      slot.bitmap.assertUsable('merge into', 'modify');
      from.assertUsable('merge from', 'read');
      if (from.size !== slot.bitmap.size) throw new InvalidArgumentError(action, "Bitmaps are incompatible and can't be merged");
      const before = slot.bitmap.copy();
      slot.bitmap.merge(from);
      await this.#storeEdit([slot], () => restore(slot.bitmap, before));
    });
  }

  /**
   * The dirty extents of bitmap `name` in bytes, in order, clamped to the disk size: what
   * `qemu-nbd -B NAME` reports as dirty in the `qemu:dirty-bitmap:NAME` context.
   *
   * @throws NotFoundError; BitmapStateError when busy or inconsistent
   */
  dirtyExtents(name: string): DirtyExtent[] {
    const action = `read bitmap '${name}' of ${this.image.path}`;
    this.#checkOpen(action);
    const bitmap = this.#find(action, name).bitmap;
    bitmap.assertUsable('read', 'read');
    return [...bitmap.dirtyExtents()];
  }

  /** Closes the image, which stores the bitmaps in mode `track` (the close hook). */
  close(): Promise<void> {
    return this.image.close();
  }

  // ------------------------------------------------------------------------------------------

  #onWrite(offset: number, length: number): void {
    if (this.#state !== 'tracking') {
      const why = this.#state === 'editing'
        ? "its bitmaps are attached for editing only (mode 'edit'): attach them in mode 'track' to write guest data"
        : this.#state === 'failed'
          ? 'attaching its bitmaps failed, so writes would not be recorded in them'
          : 'its bitmaps are being attached';
      throw new ReadOnlyError(`write to ${this.image.path}`, why);
    }
    for (const slot of this.#slots) slot.bitmap.recordWrite(offset, length);
  }

  async #onClose(): Promise<void> {
    const tracking = this.#state === 'tracking';
    this.#state = 'closed';
    await this.#queue.catch(() => {});
    if (tracking && (this.#slots.length > 0 || this.#directory !== undefined)) await this.#commit(false, 'all', []);
  }

  #checkOpen(action: string): void {
    if (this.#state === 'closed') throw new ClosedError(action, `${this.image.path} is closed`);
  }

  #find(action: string, name: string): BitmapSlot {
    const slot = this.#slots.find((s) => s.bitmap.name === name);
    if (slot === undefined) throw new NotFoundError(action, `Dirty bitmap '${name}' not found`);
    return slot;
  }

  /** Runs a change after the ones before it, on an open, writable image. */
  #change<T>(action: string, body: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      this.#checkOpen(action);
      if (this.mode === 'read-only') throw new ReadOnlyError(action, `${this.image.path} is opened read-only`);
      if (this.#state === 'failed') throw new BitmapStateError(action, 'attaching the bitmaps failed');
      return body();
    };
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => {});
    return result;
  }

  /** clear / enable / disable: checked like QEMU, applied, stored in mode `edit`. */
  #modify(action: string, name: string, verb: string, apply: (bitmap: DirtyBitmap) => void): Promise<void> {
    return this.#change(action, async () => {
      const slot = this.#find(action, name);
      const bitmap = slot.bitmap;
      bitmap.assertUsable(verb, 'modify');
      const before = bitmap.copy();
      const wasEnabled = bitmap.enabled;
      apply(bitmap);
      await this.#storeEdit([slot], () => {
        restore(bitmap, before);
        if (wasEnabled) bitmap.enable();
        else bitmap.disable();
      });
    });
  }

  /** In mode `edit`: stores the change of `slots` now, undoing it in memory when that fails. */
  async #storeEdit(slots: BitmapSlot[], undo: () => void): Promise<void> {
    if (this.mode !== 'edit') return;
    try {
      await this.#commit(false, new Set(slots), []);
    } catch (e) {
      undo();
      throw e;
    }
  }

  /** Writes the directory (see commit.ts) under the image's exclusive lock and adopts it. */
  async #commit(inUse: boolean, rewrite: ReadonlySet<BitmapSlot> | 'all', released: StoredTable[]): Promise<void> {
    const internals = this.image.internals;
    await internals.exclusive(async () => {
      this.#directory = await commitBitmaps(internals, this.image.size, this.#slots, this.#directory, { inUse, rewrite, released });
    });
  }
}

/** Puts the bits of `saved` back into `bitmap` (same size and granularity). */
function restore(bitmap: DirtyBitmap, saved: DirtyBitmap): void {
  bitmap.clear();
  bitmap.merge(saved);
}
