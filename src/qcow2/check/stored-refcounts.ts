/**
 * The refcounts stored in the image (spec "Host cluster management"): the refcount table and
 * the refcount blocks it points to, read the way QEMU's `qcow2_get_refcount` reads them, with a
 * small cache of blocks; and, for a repair, changed in place.
 * @internal
 */
import { Qcow2UnsupportedError, getRefcount, setRefcount, type Qcow2Geometry, type Qcow2Header } from '../format/index.js';
import type { ImageFile } from './image-file.js';
import { word64 } from './words.js';

/** Bytes of refcount blocks kept in the cache. */
const CACHE_BYTES = 8 * 1024 * 1024;

/** A refcount that could not be read: its block's offset in the refcount table is unaligned. */
export const UNREADABLE = -1;

/** The refcount table entry `index` as QEMU uses it. */
export type RefcountTableSlot =
  | { kind: 'none' }
  | { kind: 'block'; offset: number }
  | { kind: 'unaligned'; offset: number };

/** On-disk refcounts of an image. */
export class StoredRefcounts {
  private readonly cache = new Map<number, Uint8Array>();
  private readonly dirty = new Set<number>();
  private readonly cacheLimit: number;

  private constructor(
    private readonly file: ImageFile,
    private readonly geometry: Qcow2Geometry,
    /** The refcount table bytes that exist in the file (entries past it read as 0). */
    readonly table: Uint8Array,
    /** Entries the header says the table has. */
    readonly tableEntries: number,
  ) {
    this.cacheLimit = Math.max(2, Math.floor(CACHE_BYTES / geometry.clusterSize));
  }

  /** Reads the refcount table the header points to (only what lies within the file). */
  static async load(file: ImageFile, header: Qcow2Header, geometry: Qcow2Geometry): Promise<StoredRefcounts> {
    const bytes = header.refcountTableClusters * geometry.clusterSize;
    const table = await file.readClamped(header.refcountTableOffset, bytes, 8);
    return new StoredRefcounts(file, geometry, table, bytes / 8);
  }

  /** The raw 64-bit entry `index` as `[hi, lo]` (0 past what the file holds). */
  rawEntry(index: number): [number, number] {
    if ((index + 1) * 8 > this.table.length) return [0, 0];
    return word64(this.table, index * 8);
  }

  /** Entry `index` with its reserved bits masked off, as QEMU reads it (`REFT_OFFSET_MASK`). */
  slot(index: number): RefcountTableSlot {
    if (index >= this.tableEntries) return { kind: 'none' };
    const [hi, lo] = this.rawEntry(index);
    const offset = hi * 0x1_0000_0000 + ((lo & 0xfffffe00) >>> 0);
    if (offset === 0) return { kind: 'none' };
    if (offset % this.geometry.clusterSize !== 0) return { kind: 'unaligned', offset };
    return { kind: 'block', offset };
  }

  /**
   * The refcount block of table entry `index`, or undefined when it has none (all its
   * refcounts are 0) or its offset is unaligned (check `slot` to tell). Past the end of the
   * file it reads as zeroes.
   */
  async block(index: number): Promise<Uint8Array | undefined> {
    const cached = this.cache.get(index);
    if (cached !== undefined) {
      this.cache.delete(index);
      this.cache.set(index, cached); // most recently used last
      return cached;
    }
    const slot = this.slot(index);
    if (slot.kind !== 'block') return undefined;
    const block = await this.file.read(slot.offset, this.geometry.clusterSize);
    this.cache.set(index, block);
    for (const key of this.cache.keys()) {
      if (this.cache.size <= this.cacheLimit) break;
      if (!this.dirty.has(key)) this.cache.delete(key);
    }
    return block;
  }

  /**
   * The stored refcount of `cluster`: 0 when its table entry or block is absent,
   * {@link UNREADABLE} when the block offset is unaligned. A 64-bit refcount of 2^53 or more
   * reads as `Number.MAX_SAFE_INTEGER`.
   */
  async get(cluster: number): Promise<number> {
    const index = Math.floor(cluster / this.geometry.refcountBlockEntries);
    const slot = this.slot(index);
    if (slot.kind === 'none') return 0;
    if (slot.kind === 'unaligned') return UNREADABLE;
    const block = (await this.block(index))!;
    return this.readIn(block, cluster - index * this.geometry.refcountBlockEntries);
  }

  /**
   * Like {@link get}, without waiting, when the answer needs no read (the block is cached or
   * absent); undefined otherwise.
   */
  peek(cluster: number): number | undefined {
    const index = Math.floor(cluster / this.geometry.refcountBlockEntries);
    const block = this.cache.get(index);
    if (block !== undefined) return this.readIn(block, cluster - index * this.geometry.refcountBlockEntries);
    const slot = this.slot(index);
    if (slot.kind === 'none') return 0;
    return slot.kind === 'unaligned' ? UNREADABLE : undefined;
  }

  /** Refcount `indexInBlock` of a block returned by {@link block}. */
  readIn(block: Uint8Array, indexInBlock: number): number {
    try {
      return getRefcount(block, indexInBlock, this.geometry.refcountOrder);
    } catch (e) {
      if (e instanceof Qcow2UnsupportedError) return Number.MAX_SAFE_INTEGER;
      throw e;
    }
  }

  /**
   * Changes the stored refcount of `cluster` (whose block exists) in the cached block; written
   * by {@link flush}.
   */
  async set(cluster: number, value: number): Promise<void> {
    const index = Math.floor(cluster / this.geometry.refcountBlockEntries);
    const block = await this.block(index);
    if (block === undefined) throw new Error(`refcount block ${index} is not there to update`);
    setRefcount(block, cluster - index * this.geometry.refcountBlockEntries, this.geometry.refcountOrder, value);
    this.dirty.add(index);
  }

  /** Writes every changed block back to the file. */
  async flush(): Promise<void> {
    for (const index of this.dirty) {
      const slot = this.slot(index);
      if (slot.kind === 'block') await this.file.write(this.cache.get(index)!, slot.offset);
    }
    this.dirty.clear();
  }
}
