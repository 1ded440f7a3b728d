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
import { HeaderOffset, encodeImageHeader, encodeL1Table, type L1Entry, type Qcow2Geometry, type Qcow2ImageHeader } from '../format/index.js';
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
   * `fdatasync` of the file: what was written before reaches the disk before anything written
   * after (an ordering point, e.g. new bitmap tables before the header that points to them).
   */
  async datasync(): Promise<void> {
    this.#writable('sync the file');
    await this.#host.core.file.datasync();
  }

  // --- for internal snapshots (src/qcow2/snapshots/) ---------------------------------------

  /** The largest refcount the image's refcount width holds (1 with `refcount_bits=1`). */
  get maxRefcount(): number {
    return this.#writable('read refcounts').max;
  }

  /** The stored refcount of the host cluster that holds file byte `offset`. */
  refcount(offset: number): Promise<number> {
    return this.#writable('read refcounts').get(Math.floor(offset / this.#host.core.g.clusterSize));
  }

  /**
   * Adds one reference to each of `count` clusters from byte offset `offset` (cluster-aligned),
   * written through before this resolves. The clusters must be in use (have refcount blocks);
   * a refcount past {@link maxRefcount} is refused before anything changes in its block.
   */
  async incrementClusters(offset: number, count: number): Promise<void> {
    const refcounts = this.#writable('add cluster references');
    const cs = this.#host.core.g.clusterSize;
    if (offset % cs !== 0 || !Number.isSafeInteger(count) || count < 0) {
      throw new InvalidArgumentError('add cluster references', `offset ${offset} is not cluster-aligned or count ${count} is not a count`);
    }
    await refcounts.increment(offset / cs, count);
  }

  /** A copy of the active L1 table as the image holds it. */
  activeL1(): L1Entry[] {
    const map = this.#host.core.map;
    return Array.from({ length: map.l1Size }, (_, i) => ({ ...map.l1(i) }));
  }

  /**
   * Replaces the whole active L1 table with `entries` (as many as the table has): one write of
   * the table, synced, then the image's in-memory copy. Only for code that has made every L2
   * table and cluster it points to counted (and drops the cached L2 tables' meaning: reopen
   * the image before guest I/O when the tables changed underneath).
   */
  async replaceActiveL1(entries: readonly L1Entry[]): Promise<void> {
    this.#writable('replace the active L1 table');
    const { core, image } = this.#host;
    if (entries.length !== core.map.l1Size) {
      throw new InvalidArgumentError('replace the active L1 table', `${entries.length} entries given, the table has ${core.map.l1Size}`);
    }
    await core.file.write(image.header.l1TableOffset, encodeL1Table(entries, core.g));
    await core.file.datasync();
    for (const [i, entry] of entries.entries()) {
      const current = core.map.l1(i);
      if (current.l2Offset !== entry.l2Offset || current.copied !== entry.copied) await core.map.setL1(i, entry);
    }
  }

  /** Writes active L1 entry `index` (COPIED flag updates), to the file and the in-memory table. */
  async setActiveL1Entry(index: number, entry: L1Entry): Promise<void> {
    this.#writable('update the active L1 table');
    if (!Number.isSafeInteger(index) || index < 0 || index >= this.#host.core.map.l1Size) {
      throw new InvalidArgumentError('update the active L1 table', `index ${index} is outside the table`);
    }
    await this.#host.core.map.setL1(index, entry);
  }

  /**
   * Points the header at a snapshot table: `nb_snapshots` and `snapshots_offset` in one 12-byte
   * write (they are adjacent, spec "Header" bytes 60-71), synced before and after. The table
   * must be written and counted first; the old one is the caller's to free afterwards.
   */
  async writeSnapshotTablePointer(count: number, offset: number): Promise<void> {
    this.#writable('update the snapshot table pointer');
    const bytes = new Uint8Array(12);
    const view = new DataView(bytes.buffer);
    view.setUint32(0, count);
    view.setBigUint64(4, BigInt(offset));
    await this.#host.core.file.datasync();
    await this.#host.core.file.write(HeaderOffset.NB_SNAPSHOTS, bytes);
    await this.#host.core.file.datasync();
    this.#host.image.header.nbSnapshots = count;
    this.#host.image.header.snapshotsOffset = offset;
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
