/**
 * The guest-to-host mapping of an open image (spec "Cluster mapping"): the active L1 table in
 * memory, L2 tables through a bounded LRU cache, and write-through updates of both.
 *
 * Lookups may run concurrently (a table being loaded is loaded once); updates run under the
 * image's lock in metadata or exclusive mode. An allocating write claims the guest clusters
 * whose mapping it is changing ({@link ClusterMap.claim}) from the moment it looks them up
 * until their new L2 entries are written, so that no other write allocates them meanwhile.
 */
import {
  Qcow2FormatError,
  decodeL2Entry,
  writeL1Entry,
  writeL2Entry,
  type L1Entry,
  type L2Entry,
  type Qcow2Geometry,
} from '../format/index.js';
import { corruptImage } from './errors.js';
import type { ImageFile } from './image-file.js';
import { LruCache } from './lru-cache.js';

/** Where a guest cluster's L2 entry lives. */
export interface L2Slot {
  l1Index: number;
  l2Index: number;
}

/** The L1 table and cached L2 tables of one image. */
export class ClusterMap {
  readonly #file: ImageFile;
  readonly #g: Qcow2Geometry;
  readonly #l1Offset: number;
  readonly #l1: L1Entry[];
  readonly #cache: LruCache<number, Uint8Array>;
  readonly #loading = new Map<number, Promise<Uint8Array>>();
  /** Guest clusters claimed by an allocating write, with a promise that settles when it lets go. */
  readonly #claims = new Map<number, Promise<void>>();
  /** Host byte ranges an L2 table must not overlap (header, L1 table, refcount table). */
  readonly #forbidden: () => Array<{ offset: number; length: number; what: string }>;

  /**
   * @param l1 - the decoded active L1 table (validated: aligned, within the file)
   * @param cacheTables - L2 tables kept in memory (at least 1)
   */
  constructor(
    file: ImageFile,
    geometry: Qcow2Geometry,
    l1Offset: number,
    l1: L1Entry[],
    cacheTables: number,
    forbidden: () => Array<{ offset: number; length: number; what: string }>,
  ) {
    this.#file = file;
    this.#g = geometry;
    this.#l1Offset = l1Offset;
    this.#l1 = l1;
    this.#cache = new LruCache(cacheTables);
    this.#forbidden = forbidden;
    l1.forEach((entry, i) => {
      if (entry.l2Offset !== 0) this.#checkPlacement(`l1[${i}]`, entry.l2Offset);
    });
  }

  /** The L1 entry of `l1Index` (unallocated when past the table). */
  l1(l1Index: number): L1Entry {
    return this.#l1[l1Index] ?? { l2Offset: 0, copied: false };
  }

  /** Number of active L1 entries. */
  get l1Size(): number {
    return this.#l1.length;
  }

  /** Splits a guest cluster index into its L1 and L2 indexes. */
  slot(guestCluster: number): L2Slot {
    return { l1Index: Math.floor(guestCluster / this.#g.l2Entries), l2Index: guestCluster % this.#g.l2Entries };
  }

  /**
   * The L2 entries of `count` guest clusters from `firstCluster`, which must all lie in one L2
   * table. Throws `Qcow2FormatError` (field `l1[i].l2[j]`) for an entry that breaks the spec.
   */
  async entries(firstCluster: number, count: number): Promise<L2Entry[]> {
    const { l1Index, l2Index } = this.slot(firstCluster);
    const { l2Offset } = this.l1(l1Index);
    if (l2Offset === 0) return Array.from({ length: count }, () => unallocated(this.#g));
    const table = await this.table(l2Offset);
    const result: L2Entry[] = [];
    for (let i = 0; i < count; i++) result.push(this.decode(table, l1Index, l2Index + i));
    return result;
  }

  /** Decodes entry `l2Index` of a loaded L2 table, with the image's own checks. */
  decode(table: Uint8Array, l1Index: number, l2Index: number): L2Entry {
    let entry: L2Entry;
    try {
      entry = decodeL2Entry(table, l2Index, this.#g, this.#file.size);
    } catch (e) {
      if (e instanceof Qcow2FormatError) throw corruptImage(this.#file.path, `l1[${l1Index}].${e.field}`, e.reason);
      throw e;
    }
    if (entry.kind === 'compressed' && entry.hostOffset < this.#g.clusterSize) {
      throw corruptImage(this.#file.path, `l1[${l1Index}].l2[${l2Index}]`, `compressed data at ${entry.hostOffset} lies in the header cluster`);
    }
    return entry;
  }

  /** The L2 table at `l2Offset` (cached; the caller must not change it). */
  async table(l2Offset: number): Promise<Uint8Array> {
    const cached = this.#cache.get(l2Offset);
    if (cached !== undefined) return cached;
    let pending = this.#loading.get(l2Offset);
    if (pending === undefined) {
      pending = this.#file.read(l2Offset, this.#g.clusterSize).finally(() => this.#loading.delete(l2Offset));
      this.#loading.set(l2Offset, pending);
    }
    const table = await pending;
    this.#cache.set(l2Offset, table);
    return table;
  }

  /** Writes `entry` as L1 entry `l1Index`, to memory and the file. */
  async setL1(l1Index: number, entry: L1Entry): Promise<void> {
    const bytes = new Uint8Array(8);
    writeL1Entry(bytes, 0, entry, this.#g);
    await this.#file.write(this.#l1Offset + l1Index * 8, bytes);
    this.#l1[l1Index] = { ...entry };
  }

  /** Writes a whole new L2 table (one cluster, borrowed) at `l2Offset` and caches a copy. */
  async writeTable(l2Offset: number, table: Uint8Array): Promise<void> {
    this.#checkPlacement(`new L2 table`, l2Offset);
    await this.#file.write(l2Offset, table);
    this.#cache.set(l2Offset, table.slice());
  }

  /**
   * Writes `entries` as consecutive entries of the L2 table at `l2Offset` from `firstIndex`: into
   * the cached table, then the changed bytes to the file in one write.
   */
  async setEntries(l2Offset: number, firstIndex: number, entries: readonly L2Entry[]): Promise<void> {
    if (entries.length === 0) return;
    const table = await this.table(l2Offset);
    const size = this.#g.l2EntrySize;
    const before = table.slice(firstIndex * size, (firstIndex + entries.length) * size);
    try {
      entries.forEach((entry, i) => writeL2Entry(table, firstIndex + i, entry, this.#g));
      await this.#file.write(l2Offset + firstIndex * size, table.subarray(firstIndex * size, (firstIndex + entries.length) * size));
    } catch (e) {
      table.set(before, firstIndex * size);
      this.#cache.delete(l2Offset);
      throw e;
    }
  }

  /**
   * Writes the defined entries of `updated` (undefined: unchanged) into the L2 table at
   * `l2Offset` from `firstIndex`: into the cached table, then to the file in one write that
   * spans the first to the last changed entry (the unchanged ones between are written back as
   * they are).
   */
  async setEntriesSparse(l2Offset: number, firstIndex: number, updated: ReadonlyArray<L2Entry | undefined>): Promise<void> {
    let first = 0;
    while (first < updated.length && updated[first] === undefined) first++;
    let last = updated.length - 1;
    while (last >= first && updated[last] === undefined) last--;
    if (first > last) return;
    const table = await this.table(l2Offset);
    const size = this.#g.l2EntrySize;
    const from = (firstIndex + first) * size;
    const to = (firstIndex + last + 1) * size;
    const before = table.slice(from, to);
    try {
      for (let i = first; i <= last; i++) {
        const entry = updated[i];
        if (entry !== undefined) writeL2Entry(table, firstIndex + i, entry, this.#g);
      }
      await this.#file.write(l2Offset + from, table.subarray(from, to));
    } catch (e) {
      table.set(before, from);
      this.#cache.delete(l2Offset);
      throw e;
    }
  }

  /**
   * The promise of a write that has claimed one of `clusters` (guest cluster indexes), which
   * settles when it lets go; undefined when none is claimed.
   */
  claimed(clusters: Iterable<number>): Promise<void> | undefined {
    for (const cluster of clusters) {
      const claim = this.#claims.get(cluster);
      if (claim !== undefined) return claim;
    }
    return undefined;
  }

  /**
   * Claims guest clusters `clusters` (none of them claimed: check with {@link claimed} under
   * the same lock hold). Returns the function that lets go of them, once.
   */
  claim(clusters: readonly number[]): () => void {
    let letGo!: () => void;
    const claim = new Promise<void>((resolve) => (letGo = resolve));
    for (const cluster of clusters) this.#claims.set(cluster, claim);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const cluster of clusters) this.#claims.delete(cluster);
      letGo();
    };
  }

  #checkPlacement(field: string, l2Offset: number): void {
    for (const range of this.#forbidden()) {
      if (l2Offset < range.offset + range.length && range.offset < l2Offset + this.#g.clusterSize) {
        throw corruptImage(this.#file.path, field, `the L2 table at ${l2Offset} overlaps ${range.what}`);
      }
    }
  }
}

/** An unallocated entry of the image's kind (with empty subcluster masks for extended L2). */
export function unallocated(g: Qcow2Geometry): L2Entry {
  return g.extendedL2 ? { kind: 'unallocated', subclusters: { allocated: 0, zero: 0 } } : { kind: 'unallocated' };
}
