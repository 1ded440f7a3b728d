/**
 * Low-level access to an open image for the code that keeps more than guest data in it (dirty
 * bitmaps: their directory, tables and data clusters; later snapshots): host reads and writes,
 * contiguous cluster allocation through the refcounts, rewriting the first cluster, and the
 * image's exclusive lock to do all that without racing guest requests.
 *
 * Not for general use: everything here bypasses the guest mapping. The methods that change
 * something must run inside {@link Qcow2Internals.exclusive}, and their ordering rules are the
 * image's (docs/qcow2-image.md): count clusters before pointing to them, write data before the
 * metadata that points to it, remove references before freeing.
 */
import { InvalidArgumentError, ReadOnlyError } from '../../errors.js';
import { encodeImageHeader, type Qcow2Geometry, type Qcow2ImageHeader } from '../format/index.js';
import { forbiddenRanges, type ImageCore } from './core.js';
import type { RwLock } from './rw-lock.js';

/** What the image shares with its internals. */
export interface InternalsHost {
  core: ImageCore;
  lock: RwLock;
  /** The first cluster as the image knows it (updated in place by `writeImageHeader`). */
  image: Qcow2ImageHeader;
  /** Auto-clear bits that a hook owner maintains: not cleared before the first change. */
  maintainedAutoclear: bigint;
}

/** Host-level access to one open image. Obtain it from `Qcow2Image.internals`. */
export class Qcow2Internals {
  readonly #host: InternalsHost;

  /** @internal */
  constructor(host: InternalsHost) {
    this.#host = host;
  }

  /** The image's geometry. */
  get geometry(): Qcow2Geometry {
    return this.#host.core.g;
  }

  /** Runs `body` holding the image's exclusive lock: no guest request runs meanwhile. */
  exclusive<T>(body: () => Promise<T>): Promise<T> {
    return this.#host.lock.exclusive(body);
  }

  /** Reads `length` bytes of the file at `offset` (zeroes past its end) into a new buffer. */
  readHost(offset: number, length: number): Promise<Uint8Array> {
    return this.#host.core.file.read(offset, length);
  }

  /**
   * Writes `data` (borrowed until the promise settles) at file offset `offset`. Refuses the
   * header cluster, the active L1 table and the refcount table (`InvalidArgumentError`).
   */
  async writeHost(offset: number, data: Uint8Array): Promise<void> {
    this.#writable('write to the file');
    for (const range of forbiddenRanges(this.#host.core)) {
      if (offset < range.offset + range.length && range.offset < offset + data.length) {
        throw new InvalidArgumentError(`write ${data.length} bytes at ${offset} of ${this.#host.core.path}`, `the range overlaps ${range.what}`);
      }
    }
    await this.#host.core.file.write(offset, data);
  }

  /**
   * Allocates `count` contiguous host clusters, their refcounts 1 and written, and returns the
   * byte offset of the first. Until something points to them they are leaks, not corruption.
   */
  async allocateClusters(count: number): Promise<number> {
    const refcounts = this.#writable('allocate clusters');
    if (!Number.isSafeInteger(count) || count < 1) throw new InvalidArgumentError('allocate clusters', `count ${count} is not a positive integer`);
    return (await refcounts.allocateContiguous(count)) * this.#host.core.g.clusterSize;
  }

  /** Drops one reference from each of `count` clusters from byte offset `offset` (cluster-aligned). */
  async freeClusters(offset: number, count: number): Promise<void> {
    const refcounts = this.#writable('free clusters');
    const cs = this.#host.core.g.clusterSize;
    if (offset % cs !== 0 || !Number.isSafeInteger(count) || count < 0) {
      throw new InvalidArgumentError('free clusters', `offset ${offset} is not cluster-aligned or count ${count} is not a count`);
    }
    await refcounts.decrement(offset / cs, count);
  }

  /** A copy of the first cluster as it is now (header, extensions, backing file name). */
  imageHeader(): Qcow2ImageHeader {
    const copy = structuredClone(this.#host.image);
    const table = this.#host.core.refcounts?.table;
    if (table !== undefined) {
      copy.header.refcountTableOffset = table.offset;
      copy.header.refcountTableClusters = table.clusters;
    }
    return copy;
  }

  /**
   * Rewrites the first cluster with `next` (extensions, feature bits), then syncs. The fields
   * that locate the image's structures (version, cluster bits, size, L1 table, refcount table,
   * refcount order, snapshots, backing file) must be as {@link imageHeader} returned them, and
   * auto-clear bits may only be set when declared with {@link maintainAutoclear}.
   */
  async writeImageHeader(next: Qcow2ImageHeader): Promise<void> {
    this.#writable('rewrite the header');
    const current = this.imageHeader();
    const fixedFields = [
      'version', 'clusterBits', 'size', 'l1Size', 'l1TableOffset', 'refcountTableOffset', 'refcountTableClusters',
      'refcountOrder', 'nbSnapshots', 'snapshotsOffset', 'cryptMethod', 'headerLength', 'compressionType',
    ] as const;
    for (const field of fixedFields) {
      if (next.header[field] !== current.header[field]) {
        throw new InvalidArgumentError('rewrite the qcow2 header', `${field} cannot change here (${current.header[field]} -> ${next.header[field]})`);
      }
    }
    if (next.backingFile !== current.backingFile) throw new InvalidArgumentError('rewrite the qcow2 header', 'the backing file cannot change here');
    const unmaintained = next.header.autoclearFeatures & ~current.header.autoclearFeatures & ~this.#host.maintainedAutoclear;
    if (unmaintained !== 0n) {
      throw new InvalidArgumentError('rewrite the qcow2 header', `auto-clear bits 0x${unmaintained.toString(16)} are set but not maintained (declare them with maintainAutoclear)`);
    }
    const bytes = encodeImageHeader(next);
    await this.#host.core.file.write(0, bytes);
    await this.#host.core.file.datasync();
    this.#host.image = structuredClone(next);
  }

  /**
   * Declares auto-clear feature bits that the caller maintains (bit 0 for bitmaps): the image
   * then keeps them set when it clears the others before its first change.
   */
  maintainAutoclear(bits: bigint): void {
    this.#host.maintainedAutoclear |= bits;
  }

  #writable(action: string) {
    const refcounts = this.#host.core.refcounts;
    if (refcounts === undefined) throw new ReadOnlyError(action, `${this.#host.core.path} is opened read-only`);
    return refcounts;
  }
}
