/**
 * A qcow2 image (versions 2 and 3) as a `BlockDevice`.
 *
 * Metadata is written through to the file as it changes, in dependency order (refcounts before
 * the entries that use them, data before the L2 entry that points to it, L2 before L1,
 * references removed before refcounts drop): a killed process leaves at worst leaked clusters.
 * `flush` is `fdatasync`. See docs/qcow2-image.md for allocation, refcount growth, the locking
 * and the caches.
 */
import {
  type BlockCapabilities,
  type BlockDevice,
  type BlockExtent,
  type BlockSizeConstraints,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../block/block-device.js';
import { DEFAULT_MAXIMUM_REQUEST } from '../../block/block-size.js';
import { type ImageLockOptions } from '../../block/image-lock.js';
import { checkRange } from '../../block/range.js';
import { RequestGate } from '../../block/request-gate.js';
import { InvalidArgumentError, ReadOnlyError } from '../../errors.js';
import { HeaderOffset, type Qcow2Geometry, type Qcow2ImageHeader } from '../format/index.js';
import { fileIdentity, inheritedLock, openBackingChain, type BackingFileInfo, type ChainVisit } from './backing.js';
import { guestBlockStatus } from './block-status.js';
import { type ImageCore } from './core.js';
import { withImagePath } from './errors.js';
import { ImageFile } from './image-file.js';
import { Qcow2Internals, type InternalsHost } from './internals.js';
import { buildCore, loadMetadata } from './load.js';
import { readGuestInto } from './reader.js';
import { RwLock } from './rw-lock.js';
import { writeAllocating, writeGuest, writeInPlace } from './writer.js';
import { trimGuest, zeroGuest } from './zeroing.js';

/** Default L2 cache: 1 MiB, which maps 8 GiB of a disk with 64 KiB clusters. */
export const DEFAULT_L2_CACHE_BYTES = 1024 * 1024;
/** Default refcount block cache: 256 KiB. */
export const DEFAULT_REFCOUNT_CACHE_BYTES = 256 * 1024;

/** Options of {@link Qcow2Image.open}. */
export interface Qcow2OpenOptions {
  /** Open read-only: writing calls reject with `ReadOnlyError`. Default false. */
  readOnly?: boolean;
  /**
   * What unallocated clusters read from. `'follow'` (default): the backing file the header
   * names, opened read-only with its own chain (closed with the image). `'none'`: nothing,
   * they read as zeroes. A `BlockDevice`: that device, whatever the header says (the caller
   * keeps ownership and closes it after the image).
   */
  backing?: 'follow' | 'none' | BlockDevice;
  /** Bytes of L2 tables cached (default {@link DEFAULT_L2_CACHE_BYTES}, at least two tables). */
  l2CacheBytes?: number;
  /** Bytes of refcount blocks cached (default {@link DEFAULT_REFCOUNT_CACHE_BYTES}, at least two blocks). */
  refcountCacheBytes?: number;
  /**
   * Store every write of a whole cluster into an unallocated cluster deflated, when that is
   * smaller (as `qemu-img convert -c` does; for backup targets). Default false.
   */
  compress?: boolean;
  /**
   * QEMU's image locks on the file (src/block/image-lock.ts; default: as qemu-img locks a qcow2
   * file). Backing files opened with the image inherit all but explicit `permissions`.
   */
  lock?: ImageLockOptions;
}

/** What `info` shows about an image. */
export interface Qcow2ImageInfo {
  /** The path the image was opened by. */
  path: string;
  /** 2 or 3. */
  version: number;
  /** Virtual size in bytes. */
  virtualSize: number;
  /** Cluster size in bytes. */
  clusterSize: number;
  /** Refcount width in bits. */
  refcountBits: number;
  /** The algorithm of compressed clusters. */
  compressionType: 'deflate' | 'zstd';
  /** Extended L2 entries (subclusters). */
  extendedL2: boolean;
  /** The backing file name as stored in the header. */
  backingFile?: string;
  /** The backing format as stored in the header extension. */
  backingFormat?: string;
  /** Every file below this one, nearest first (empty unless the chain was followed). */
  backingChain: readonly BackingFileInfo[];
}

/** Called with the guest range of every write, zero-write and trim, before it is done. */
export type WriteListener = (offset: number, length: number) => void;

/**
 * A qcow2 image file as a `BlockDevice` (contract in `src/block/block-device.ts`).
 *
 * - Reads: any range; unallocated clusters read from the backing chain (zeroes past its end).
 * - Writes: clusters are allocated through the refcounts; partial writes copy the rest of the
 *   cluster (copy-on-write); clusters without the COPIED flag (shared with an internal
 *   snapshot) get a new cluster; `fua` is an `fdatasync` after the write.
 * - `writeZeroes`: whole clusters get the ZERO flag on version 3 (the host cluster stays
 *   allocated unless `mayTrim`), are deallocated on version 2 without a backing file when
 *   `mayTrim`, and are written with zeroes otherwise; partial clusters get zero bytes.
 * - `trim`: whole clusters are deallocated, or marked ZERO over a backing file on version 3.
 *   On version 3 the whole range then reads as zero (`trimZeroes`): partial clusters at its
 *   ends get zero bytes. Version 2 leaves partial clusters, and whole clusters over a backing
 *   file, as they are (`trimZeroes` false).
 * - `writeZeroes` with `fast` succeeds on version 3 when only whole clusters need changing
 *   or the partial ones already read as zero; version 2 always refuses it (`canFastZero` false).
 * - Images with extended L2 entries open read-only only.
 */
export class Qcow2Image implements BlockDevice {
  /** The path the image was opened by. */
  readonly path: string;
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  /** Every file below this one, nearest first (empty unless the chain was followed). */
  readonly backingChain: readonly BackingFileInfo[];
  readonly #core: ImageCore;
  readonly #ownedBacking: BlockDevice | undefined;
  readonly #gate = new RequestGate();
  readonly #lock = new RwLock();
  /** What the image shares with its {@link Qcow2Internals}: the first cluster, the lock, the maintained bits. */
  readonly #host: InternalsHost;
  #internals: Qcow2Internals | undefined;
  readonly #writeListeners = new Set<WriteListener>();
  readonly #closeHooks = new Set<() => Promise<void>>();
  #prepared: Promise<void> | undefined;

  private constructor(core: ImageCore, image: Qcow2ImageHeader, chain: readonly BackingFileInfo[], ownedBacking: BlockDevice | undefined) {
    this.#core = core;
    this.#host = { core, lock: this.#lock, image, maintainedAutoclear: 0n };
    this.#ownedBacking = ownedBacking;
    this.path = core.path;
    this.size = core.size;
    this.backingChain = chain;
    const readOnly = core.refcounts === undefined;
    const zeroClusters = !readOnly && core.g.zeroFlag; // version 3 without extended L2
    this.capabilities = {
      readOnly,
      canFlush: true,
      canFua: false,
      canTrim: !readOnly,
      trimZeroes: zeroClusters,
      canFastZero: zeroClusters,
      canBlockStatus: true,
      multiConn: true,
    };
    this.blockSize = { minimum: 1, preferred: Math.min(core.g.clusterSize, DEFAULT_MAXIMUM_REQUEST), maximum: DEFAULT_MAXIMUM_REQUEST };
    core.refcounts?.onFreed((cluster) => {
      if (core.compressedTail?.cluster === cluster) core.compressedTail = undefined;
      core.inflated.clear();
    });
  }

  /**
   * Opens the qcow2 image at `path`.
   *
   * Rejects with `NotFoundError` when it or a backing file does not exist (naming it),
   * `Qcow2FormatError` (code `CORRUPT`, naming the image and the field) for metadata that breaks
   * the spec or a backing chain that loops, `NotSupportedError` for encryption, external data
   * files, unknown incompatible features, and writing extended-L2, dirty or corrupt images.
   */
  static open(path: string, options: Qcow2OpenOptions = {}): Promise<Qcow2Image> {
    return Qcow2Image.#open(path, options, []);
  }

  static async #open(path: string, options: Qcow2OpenOptions, visited: ChainVisit): Promise<Qcow2Image> {
    const readOnly = options.readOnly === true;
    const l2Cache = cacheBytes('l2CacheBytes', options.l2CacheBytes, DEFAULT_L2_CACHE_BYTES);
    const refcountCache = cacheBytes('refcountCacheBytes', options.refcountCacheBytes, DEFAULT_REFCOUNT_CACHE_BYTES);
    const file = await ImageFile.open(path, readOnly, undefined, options.lock);
    let owned: BlockDevice | undefined;
    try {
      const meta = await loadMetadata(file, readOnly);
      let backing = typeof options.backing === 'object' ? options.backing : undefined;
      let chain: BackingFileInfo[] = [];
      if (backing === undefined && options.backing !== 'none' && meta.image.backingFile !== undefined) {
        const here = [...visited, { identity: await fileIdentity(path, `open qcow2 image ${path}`), path }];
        const opened = await openBackingChain(path, meta.image.backingFile, meta.image.extensions.backingFormat, here, async (p, v) => {
          const image = await Qcow2Image.#open(p, { readOnly: true, backing: 'follow', l2CacheBytes: l2Cache, lock: inheritedLock(options.lock ?? {}) }, v);
          return { device: image, chain: image.backingChain };
        }, options.lock);
        owned = backing = opened.device;
        chain = opened.chain;
      }
      const core = buildCore(path, file, meta, { backing, l2CacheBytes: l2Cache, refcountCacheBytes: refcountCache, compress: options.compress === true });
      return new Qcow2Image(core, meta.image, chain, owned);
    } catch (e) {
      await owned?.close().catch(() => {});
      await file.close().catch(() => {});
      throw withImagePath(path, e);
    }
  }

  /** Facts about the image for `info`. */
  get info(): Qcow2ImageInfo {
    const { header, extensions, backingFile } = this.#host.image;
    const info: Qcow2ImageInfo = {
      path: this.path,
      version: header.version,
      virtualSize: this.size,
      clusterSize: this.#core.g.clusterSize,
      refcountBits: this.#core.g.refcountBits,
      compressionType: header.compressionType === 0 ? 'deflate' : 'zstd',
      extendedL2: this.#core.g.extendedL2,
      backingChain: this.backingChain,
    };
    if (backingFile !== undefined) info.backingFile = backingFile;
    if (extensions.backingFormat !== undefined) info.backingFormat = extensions.backingFormat;
    return info;
  }

  /** The image's geometry (cluster size, L2 entries, refcount width). */
  get geometry(): Qcow2Geometry {
    return this.#core.g;
  }

  /**
   * Whether whole-cluster writes into unallocated clusters are stored deflated (the `compress`
   * open option); a backup job with `compress: true` turns it on for its target while it runs.
   */
  get compressWrites(): boolean {
    return this.#core.compress;
  }

  set compressWrites(on: boolean) {
    this.#core.compress = on;
  }

  /** A copy of the first cluster as it is now (header, extensions, backing file name). */
  get imageHeader(): Qcow2ImageHeader {
    return this.internals.imageHeader();
  }

  /**
   * Host-level access for the code that stores more than guest data in the image (bitmaps).
   * Bypasses the guest mapping: see {@link Qcow2Internals} for the rules.
   */
  get internals(): Qcow2Internals {
    this.#internals ??= new Qcow2Internals(this.#host);
    return this.#internals;
  }

  /**
   * Adds a listener called synchronously with `(offset, length)` of every write, zero-write and
   * trim once its arguments are checked and before it changes anything (for dirty bitmaps).
   * Returns a function that removes it.
   */
  onWrite(listener: WriteListener): () => void {
    this.#writeListeners.add(listener);
    return () => this.#writeListeners.delete(listener);
  }

  /**
   * Adds a hook that `close` awaits once the requests in flight have settled and before the
   * final flush (for storing bitmaps). Returns a function that removes it.
   */
  onClose(hook: () => Promise<void>): () => void {
    this.#closeHooks.add(hook);
    return () => this.#closeHooks.delete(hook);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    const action = `read ${length} bytes at ${offset} of ${this.path}`;
    return this.#run(action, async () => {
      checkRange(action, this.size, offset, length);
      // Not zero-filled (readGuestInto writes every byte): zeroing megabytes per read showed up
      // as a tenth of the time an NBD server spends serving a qcow2 image.
      const target = new Uint8Array(Buffer.allocUnsafeSlow(length).buffer, 0, length);
      if (length > 0) await this.#lock.shared(() => readGuestInto(this.#core, offset, target));
      return target;
    });
  }

  /**
   * Reads `target.length` guest bytes at `offset` into `target` (borrowed until the promise
   * settles; what it held before does not matter), like `read` without allocating: for
   * callers that reuse their buffers.
   */
  readInto(offset: number, target: Uint8Array): Promise<void> {
    const action = `read ${target?.length} bytes at ${offset} of ${this.path}`;
    // Not an async body: reads are the most frequent call, and every asynchronous step counts.
    return this.#run(action, () => {
      if (!(target instanceof Uint8Array)) throw new InvalidArgumentError(action, 'target is not a Uint8Array');
      checkRange(action, this.size, offset, target.length);
      if (target.length === 0) return Promise.resolve();
      return this.#lock.shared(() => readGuestInto(this.#core, offset, target));
    });
  }

  write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const action = `write ${data?.length} bytes at ${offset} of ${this.path}`;
    return this.#run(action, async () => {
      if (!(data instanceof Uint8Array)) throw new InvalidArgumentError(action, 'data is not a Uint8Array');
      if (!(await this.#beginChange(action, offset, data.length))) return;
      const done = await this.#lock.shared(() => writeInPlace(this.#core, offset, data));
      if (!done) await writeAllocating(this.#core, this.#lock, offset, data);
      if (options.fua === true) await this.#core.file.datasync();
    });
  }

  /**
   * Writes one whole cluster (`offset` cluster-aligned; `data` one cluster long, or up to the
   * end of the disk for the last cluster) stored deflated when the cluster is unallocated and
   * deflating makes it smaller; otherwise as a normal write. `data` is borrowed until the
   * promise settles.
   */
  writeCompressed(offset: number, data: Uint8Array): Promise<void> {
    const action = `write compressed cluster at ${offset} of ${this.path}`;
    return this.#run(action, async () => {
      if (!(data instanceof Uint8Array)) throw new InvalidArgumentError(action, 'data is not a Uint8Array');
      const cs = this.#core.g.clusterSize;
      checkRange(action, this.size, offset, data.length);
      if (offset % cs !== 0 || data.length !== Math.min(cs, this.size - offset)) {
        throw new InvalidArgumentError(action, `a compressed write must be one whole cluster of ${cs} bytes at a cluster-aligned offset`);
      }
      if (!(await this.#beginChange(action, offset, data.length))) return;
      await this.#lock.exclusive(() => writeGuest(this.#core, offset, data, true));
    });
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    const action = `write zeroes to ${length} bytes at ${offset} of ${this.path}`;
    return this.#run(action, async () => {
      if (!(await this.#beginChange(action, offset, length))) return;
      const zero = { mayTrim: options.mayTrim === true, fast: options.fast === true };
      await this.#lock.exclusive(() => zeroGuest(this.#core, offset, length, zero));
      if (options.fua === true) await this.#core.file.datasync();
    });
  }

  trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    const action = `trim ${length} bytes at ${offset} of ${this.path}`;
    return this.#run(action, async () => {
      if (!(await this.#beginChange(action, offset, length))) return;
      await this.#lock.exclusive(() => trimGuest(this.#core, offset, length));
      if (options.fua === true) await this.#core.file.datasync();
    });
  }

  flush(): Promise<void> {
    return this.#run(`flush ${this.path}`, async () => {
      if (!this.capabilities.readOnly) await this.#core.file.datasync();
    });
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const action = `get block status of ${length} bytes at ${offset} of ${this.path}`;
    return this.#run(action, () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) throw new InvalidArgumentError(action, 'length is 0');
      return this.#lock.shared(() => guestBlockStatus(this.#core, offset, length));
    });
  }

  /** Waits for requests in flight, runs the close hooks, flushes, and closes the file and the owned backing chain. */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      try {
        for (const hook of this.#closeHooks) await hook();
        if (!this.capabilities.readOnly) await this.#core.file.datasync();
      } finally {
        await this.#core.file.close().finally(() => this.#ownedBacking?.close());
      }
    });
  }

  // ------------------------------------------------------------------------------------------

  #run<T>(action: string, body: () => Promise<T>): Promise<T> {
    return this.#gate.run(action, body).catch((e: unknown) => {
      throw withImagePath(this.path, e);
    });
  }

  /**
   * Checks a change of `[offset, offset + length)`, prepares the header for writing once, and
   * tells the write listeners. Returns false for an empty range (nothing to do).
   */
  async #beginChange(action: string, offset: number, length: number): Promise<boolean> {
    checkRange(action, this.size, offset, length);
    if (this.capabilities.readOnly) throw new ReadOnlyError(action, 'the image is opened read-only');
    if (length === 0) return false;
    this.#prepared ??= this.#prepareHeader().catch((e: unknown) => {
      this.#prepared = undefined; // let a later change try again
      throw e;
    });
    await this.#prepared;
    for (const listener of this.#writeListeners) listener(offset, length);
    return true;
  }

  /**
   * Before the first change: clears the auto-clear feature bits that nobody maintains (spec
   * "Header", autoclear_features: a writer must clear the bits it does not keep consistent
   * before writing). Unless bitmap code declared bit 0 through `internals.maintainAutoclear`,
   * that includes the bitmaps bit: bitmaps our writes do not update become inconsistent, as
   * the spec intends.
   */
  async #prepareHeader(): Promise<void> {
    const header = this.#host.image.header;
    const kept = header.autoclearFeatures & this.#host.maintainedAutoclear;
    if (header.version < 3 || kept === header.autoclearFeatures) return;
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigUint64(0, kept);
    await this.#core.file.write(HeaderOffset.AUTOCLEAR_FEATURES, bytes);
    await this.#core.file.datasync();
    header.autoclearFeatures = kept;
  }
}

function cacheBytes(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgumentError('open qcow2 image', `${name} ${value} is not a non-negative integer`);
  }
  return value;
}

