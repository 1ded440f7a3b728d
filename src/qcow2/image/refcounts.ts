/**
 * Host cluster management of an open image (spec "Host cluster management"): reading and
 * changing refcounts, finding free clusters, creating refcount blocks and growing the refcount
 * table. Every change is written through to the file before the promise resolves (but for
 * `allocateRunsDeferred`, whose caller awaits the write itself before anything points to the
 * clusters), in an order that leaves at worst leaked clusters when the process dies half-way
 * (docs/qcow2-image.md).
 *
 * Callers hold the image's lock in metadata or exclusive mode around every method that changes
 * anything.
 */
import { BitbackError } from '../../errors.js';
import {
  HeaderOffset,
  getRefcount,
  maxRefcount,
  setRefcount,
  writeRefcountTableEntry,
  type Qcow2Geometry,
} from '../format/index.js';
import { corruptImage } from './errors.js';
import type { ImageFile } from './image-file.js';
import { LruCache } from './lru-cache.js';

/** A named range of host clusters that must never be handed out (header, active L1 table). */
export interface FixedRange {
  /** First cluster index. */
  start: number;
  /** Number of clusters. */
  count: number;
  /** What lives there, for messages. */
  what: string;
}

/** A run of host clusters, by cluster index. */
export interface ClusterRun {
  start: number;
  count: number;
}

/** The deferred writes of one refcount block (see `Refcounts.#pinnedWrite`). */
interface BlockWriter {
  block: Uint8Array;
  /** A write is in flight. */
  running: boolean;
  /** Byte range changed since the last write started. */
  from: number;
  to: number;
  /** Whose changes the next write carries. */
  waiters: Array<{ resolve: () => void; reject: (e: unknown) => void }>;
}

/** Refcount structures as found at open. */
export interface RefcountTableState {
  /** Byte offset of the refcount table. */
  offset: number;
  /** Its size in clusters. */
  clusters: number;
  /** Decoded entries: block offsets, 0 for none; `clusters * entriesPerCluster` of them. */
  entries: number[];
}

/** The refcounts of one image. */
export class Refcounts {
  readonly #file: ImageFile;
  readonly #g: Qcow2Geometry;
  readonly #fixed: () => FixedRange[];
  readonly #blocks: LruCache<number, Uint8Array>;
  readonly #max: number;
  readonly #freedListeners: Array<(cluster: number) => void> = [];
  #table: number[];
  #tableOffset: number;
  #tableClusters: number;
  /** No cluster below this one is free. */
  #cursor = 0;
  /**
   * Blocks with writes in flight that nobody awaits yet (see allocateRunsDeferred), by byte
   * offset: kept here whatever the cache evicts, so that no one reads them back from the file
   * before the writes land.
   */
  readonly #writing = new Map<number, BlockWriter>();

  /**
   * @param cacheBlocks - refcount blocks kept in memory (at least 1)
   * @param fixed - clusters that a consistent image never has free (checked before reuse)
   */
  constructor(file: ImageFile, geometry: Qcow2Geometry, table: RefcountTableState, cacheBlocks: number, fixed: () => FixedRange[]) {
    this.#file = file;
    this.#g = geometry;
    this.#table = table.entries.slice();
    this.#tableOffset = table.offset;
    this.#tableClusters = table.clusters;
    this.#blocks = new LruCache(cacheBlocks);
    this.#max = maxRefcount(geometry.refcountOrder);
    this.#fixed = fixed;
  }

  /** Where the refcount table lives now (it moves when it grows). */
  get table(): { offset: number; clusters: number } {
    return { offset: this.#tableOffset, clusters: this.#tableClusters };
  }

  /** The largest refcount the image's width holds. */
  get max(): number {
    return this.#max;
  }

  /** Calls `listener(cluster)` whenever a cluster's refcount drops to 0. */
  onFreed(listener: (cluster: number) => void): void {
    this.#freedListeners.push(listener);
  }

  /** The refcount of host cluster `cluster` (an index, not a byte offset). */
  async get(cluster: number): Promise<number> {
    const ti = Math.floor(cluster / this.#g.refcountBlockEntries);
    if (ti >= this.#table.length || this.#table[ti] === 0) return 0;
    const block = await this.#block(ti);
    return getRefcount(block, cluster - ti * this.#g.refcountBlockEntries, this.#g.refcountOrder);
  }

  /**
   * Allocates up to `max` clusters, first-fit from the cursor, in as many runs as it takes:
   * their refcounts are 1 (written, one write per refcount block) when this resolves. Stops
   * early where a refcount block must be created first. Returns the runs in ascending order,
   * at least one cluster in all.
   */
  async allocateRuns(max: number): Promise<ClusterRun[]> {
    const { runs, written } = await this.allocateRunsDeferred(max);
    await written;
    return runs;
  }

  /**
   * Like {@link allocateRuns}, but resolves once the refcounts are set in memory and their
   * writes are issued; `written` settles when they are in the file. Nothing may point to the
   * clusters before that (the counts must land first); their data may be written meanwhile.
   * Whatever a write puts in the file is a state where the clusters are counted, so a failed
   * or lost write leaves at worst a leak.
   */
  async allocateRunsDeferred(max: number): Promise<{ runs: ClusterRun[]; written: Promise<void> }> {
    const E = this.#g.refcountBlockEntries;
    const runs: ClusterRun[] = [];
    let total = 0;
    for (let from = this.#cursor; total < max; ) {
      const start = await this.#firstFree(from);
      const ti = Math.floor(start / E);
      if (!this.#hasBlock(ti)) {
        if (runs.length > 0) break; // count what was found first; the block comes next time
        await this.#createBlock(ti);
        continue;
      }
      let count = 1;
      while (total + count < max && this.#hasBlock(Math.floor((start + count) / E)) && (await this.get(start + count)) === 0) count++;
      this.#checkNotFixed(start, count);
      runs.push({ start, count });
      total += count;
      from = start + count;
    }
    const writes: Array<Promise<void>> = [];
    await this.#updateRuns(runs, +1, writes);
    const last = runs[runs.length - 1]!;
    this.#cursor = last.start + last.count;
    const written = Promise.all(writes).then(() => undefined);
    written.catch(() => {}); // the caller awaits it; not unhandled meanwhile
    return { runs, written };
  }

  /** Adds one to the refcount of each cluster of the run (they must have refcount blocks). */
  increment(start: number, count = 1): Promise<void> {
    return this.#update(start, count, +1);
  }

  /** Subtracts one from the refcount of each cluster of the run. */
  decrement(start: number, count = 1): Promise<void> {
    return this.#update(start, count, -1);
  }

  /** Subtracts one from the refcount of every cluster that the byte range touches (compressed data). */
  decrementBytes(offset: number, length: number): Promise<void> {
    const first = Math.floor(offset / this.#g.clusterSize);
    const last = Math.floor((offset + length - 1) / this.#g.clusterSize);
    return this.#update(first, last - first + 1, -1);
  }

  // ------------------------------------------------------------------------------------------

  #hasBlock(ti: number): boolean {
    return ti < this.#table.length && this.#table[ti] !== 0;
  }

  /**
   * Writes bytes `[from, to)` of `block` (at byte `offset`), keeping the block pinned until the
   * write lands. Writes of one block are coalesced: while one is in flight, later changes wait
   * and go together in the next, which spans them all (each write copies the block as it is
   * when it starts, so it carries every change made before).
   */
  #pinnedWrite(offset: number, block: Uint8Array, from: number, to: number): Promise<void> {
    let writer = this.#writing.get(offset);
    if (writer === undefined) {
      writer = { block, running: false, from, to, waiters: [] };
      this.#writing.set(offset, writer);
    }
    writer.from = Math.min(writer.from, from);
    writer.to = Math.max(writer.to, to);
    const landed = new Promise<void>((resolve, reject) => writer.waiters.push({ resolve, reject }));
    if (!writer.running) void this.#drainWrites(offset, writer);
    return landed;
  }

  async #drainWrites(offset: number, writer: BlockWriter): Promise<void> {
    writer.running = true;
    while (writer.waiters.length > 0) {
      const waiters = writer.waiters.splice(0);
      const { from, to } = writer;
      writer.from = Infinity;
      writer.to = -1;
      try {
        await this.#file.write(offset + from, writer.block.subarray(from, to));
        for (const waiter of waiters) waiter.resolve();
      } catch (e) {
        for (const waiter of waiters) waiter.reject(e);
      }
    }
    writer.running = false;
    this.#writing.delete(offset);
    this.#blocks.set(offset, writer.block);
  }

  async #block(ti: number): Promise<Uint8Array> {
    const offset = this.#table[ti]!;
    const pinned = this.#writing.get(offset);
    if (pinned !== undefined) return pinned.block;
    const cached = this.#blocks.get(offset);
    if (cached !== undefined) return cached;
    const block = await this.#file.read(offset, this.#g.clusterSize);
    this.#blocks.set(offset, block);
    return block;
  }

  /** The first cluster at or after `from` whose refcount is 0. */
  async #firstFree(from: number): Promise<number> {
    const E = this.#g.refcountBlockEntries;
    for (let c = from; ; ) {
      const ti = Math.floor(c / E);
      if (!this.#hasBlock(ti)) return c;
      const block = await this.#block(ti);
      for (let i = c - ti * E; i < E; i++) {
        if (getRefcount(block, i, this.#g.refcountOrder) === 0) return ti * E + i;
      }
      c = (ti + 1) * E;
    }
  }

  /** Changes the refcounts of a run by `delta` (see {@link Refcounts.#updateRuns}). */
  #update(start: number, count: number, delta: 1 | -1): Promise<void> {
    return this.#updateRuns([{ start, count }], delta);
  }

  /**
   * Subtracts one from the refcount of every cluster of `runs` (ascending, not overlapping),
   * with one write per refcount block.
   */
  decrementRuns(runs: readonly ClusterRun[]): Promise<void> {
    return this.#updateRuns(runs, -1);
  }

  /**
   * Changes the refcounts of `runs` (ascending, not overlapping) by `delta`, block by block:
   * in each block all new values are checked first, then set, then written in one write that
   * spans the changed entries. The blocks must exist.
   */
  async #updateRuns(runs: readonly ClusterRun[], delta: 1 | -1, deferred?: Array<Promise<void>>): Promise<void> {
    const E = this.#g.refcountBlockEntries;
    let pending: ClusterRun[] = [];
    let blockIndex = -1;
    for (const run of runs) {
      for (let c = run.start; c < run.start + run.count; ) {
        const ti = Math.floor(c / E);
        const end = Math.min(run.start + run.count, (ti + 1) * E);
        if (ti !== blockIndex && pending.length > 0) {
          await this.#updateBlock(blockIndex, pending, delta, deferred);
          pending = [];
        }
        blockIndex = ti;
        pending.push({ start: c, count: end - c });
        c = end;
      }
    }
    if (pending.length > 0) await this.#updateBlock(blockIndex, pending, delta, deferred);
  }

  /**
   * Changes the refcounts of `runs`, all in the block of table index `ti`, with one write:
   * awaited, or, with `deferred`, issued and pushed there (the block stays pinned until it lands).
   */
  async #updateBlock(ti: number, runs: readonly ClusterRun[], delta: 1 | -1, deferred?: Array<Promise<void>>): Promise<void> {
    const E = this.#g.refcountBlockEntries;
    const order = this.#g.refcountOrder;
    const bits = this.#g.refcountBits;
    const path = this.#file.path;
    if (!this.#hasBlock(ti)) {
      const c = runs[0]!.start;
      if (delta < 0) throw corruptImage(path, `refcount_table[${ti}]`, `cluster ${c} is in use but has no refcount block`);
      throw new BitbackError('INTERNAL', `update refcounts of ${path}`, `cluster ${c} has no refcount block`);
    }
    const block = await this.#block(ti);
    for (const run of runs) {
      for (let i = run.start - ti * E; i < run.start + run.count - ti * E; i++) {
        const value = getRefcount(block, i, order) + delta;
        if (value < 0) throw corruptImage(path, `refcount_block[${ti}][${i}]`, `the refcount of cluster ${ti * E + i} is 0 but the cluster is in use`);
        if (value > this.#max) {
          throw corruptImage(path, `refcount_block[${ti}][${i}]`, `the refcount of cluster ${ti * E + i} would exceed ${this.#max}, the largest ${bits}-bit refcount`);
        }
      }
    }
    const freed: number[] = [];
    for (const run of runs) {
      for (let i = run.start - ti * E; i < run.start + run.count - ti * E; i++) {
        const value = getRefcount(block, i, order) + delta;
        setRefcount(block, i, order, value);
        if (value === 0) freed.push(ti * E + i);
      }
    }
    const last = runs[runs.length - 1]!;
    const fromByte = Math.floor(((runs[0]!.start - ti * E) * bits) / 8);
    const toByte = Math.ceil(((last.start + last.count - ti * E) * bits) / 8);
    const offset = this.#table[ti]!;
    if (deferred !== undefined) {
      deferred.push(this.#pinnedWrite(offset, block, fromByte, toByte));
    } else {
      try {
        await this.#file.write(offset + fromByte, block.subarray(fromByte, toByte));
      } catch (e) {
        if (!this.#writing.has(offset)) this.#blocks.delete(offset); // the cached copy no longer matches the file
        throw e;
      }
    }
    for (const cluster of freed) {
      this.#cursor = Math.min(this.#cursor, cluster);
      for (const listener of this.#freedListeners) listener(cluster);
    }
  }

  /**
   * Creates the refcount block of table index `ti`, whose clusters are all free. It goes into
   * the first cluster of its own range and counts itself, so it needs no other block: written
   * first, then pointed to from the table (a crash in between leaves an unreferenced cluster).
   */
  async #createBlock(ti: number): Promise<void> {
    if (ti >= this.#table.length) {
      await this.#grow(ti + 1);
      if (this.#hasBlock(ti)) return;
    }
    const E = this.#g.refcountBlockEntries;
    const cluster = ti * E;
    this.#checkNotFixed(cluster, 1);
    const block = new Uint8Array(this.#g.clusterSize);
    setRefcount(block, 0, this.#g.refcountOrder, 1);
    const offset = cluster * this.#g.clusterSize;
    await this.#file.write(offset, block);
    const entry = new Uint8Array(8);
    writeRefcountTableEntry(entry, 0, offset, this.#g);
    await this.#file.write(this.#tableOffset + ti * 8, entry);
    this.#table[ti] = offset;
    this.#blocks.set(offset, block);
  }

  /**
   * Moves the refcount table to a larger one at the end of the file, with at least
   * `neededEntries` entries. The new table and the refcount blocks it needs for itself form one
   * self-describing area ({@link Refcounts.#countArea}), written and synced, then made current
   * by one header write (synced), and only then is the old table freed.
   */
  async #grow(neededEntries: number): Promise<void> {
    const cs = this.#g.clusterSize;
    const E = this.#g.refcountBlockEntries;
    const P = this.#g.tableEntriesPerCluster;
    const roundUp = (n: number): number => Math.ceil(n / P) * P;
    let areaStart = Math.ceil(this.#file.size / cs);
    let capacity = roundUp(Math.max(neededEntries, Math.ceil(this.#table.length * 1.5)));
    let tableClusters: number;
    let newBlocks: number[];
    for (;;) {
      tableClusters = capacity / P;
      newBlocks = this.#missingBlocks(areaStart, tableClusters);
      const lastIndex = Math.floor((areaStart + tableClusters + newBlocks.length - 1) / E);
      if (lastIndex >= capacity) {
        capacity = roundUp(lastIndex + 1);
        continue;
      }
      const busy = await this.#firstBusy(areaStart, areaStart + tableClusters + newBlocks.length);
      if (busy === undefined) break;
      areaStart = busy + 1;
    }
    const table = new Array<number>(capacity).fill(0);
    this.#table.forEach((offset, i) => (table[i] = offset));
    const written = await this.#countArea(areaStart, tableClusters, newBlocks);
    for (const [ti, offset] of written) table[ti] = offset;
    // The new table, durable before the header points to it.
    const bytes = new Uint8Array(tableClusters * cs);
    table.forEach((offset, i) => writeRefcountTableEntry(bytes, i, offset, this.#g));
    await this.#file.write(areaStart * cs, bytes);
    await this.#file.datasync();
    const header = new Uint8Array(12);
    const view = new DataView(header.buffer);
    view.setBigUint64(0, BigInt(areaStart * cs));
    view.setUint32(8, tableClusters);
    await this.#file.write(HeaderOffset.REFCOUNT_TABLE_OFFSET, header);
    await this.#file.datasync();

    const old = { start: this.#tableOffset / cs, count: this.#tableClusters };
    this.#table = table;
    this.#tableOffset = areaStart * cs;
    this.#tableClusters = tableClusters;
    for (const [, offset, block] of written) this.#blocks.set(offset, block);
    // Nothing refers to the old table any more.
    await this.#update(old.start, old.count, -1);
  }

  /**
   * Allocates `count` contiguous clusters (refcounts 1) and returns the first cluster index:
   * the first free run among the clusters that existing refcount blocks cover, or else an
   * area at the end of the file, followed by the refcount blocks it needs.
   */
  async allocateContiguous(count: number): Promise<number> {
    const E = this.#g.refcountBlockEntries;
    let length = 0;
    for (let c = this.#cursor; this.#hasBlock(Math.floor(c / E)); c++) {
      length = (await this.get(c)) === 0 ? length + 1 : 0;
      if (length === count) {
        this.#checkNotFixed(c - count + 1, count);
        await this.#update(c - count + 1, count, +1);
        return c - count + 1;
      }
    }
    for (let areaStart = Math.ceil(this.#file.size / this.#g.clusterSize); ; ) {
      const newBlocks = this.#missingBlocks(areaStart, count);
      const lastIndex = Math.floor((areaStart + count + newBlocks.length - 1) / E);
      if (lastIndex >= this.#table.length) {
        await this.#grow(lastIndex + 1); // puts the grown table at the end: plan again after it
        areaStart = Math.ceil(this.#file.size / this.#g.clusterSize);
        continue;
      }
      const busy = await this.#firstBusy(areaStart, areaStart + count + newBlocks.length);
      if (busy !== undefined) {
        areaStart = busy + 1;
        continue;
      }
      const written = await this.#countArea(areaStart, count, newBlocks);
      // The blocks are written; pointing to them from the table makes the counts current.
      for (const [ti, offset, block] of written) {
        const entry = new Uint8Array(8);
        writeRefcountTableEntry(entry, 0, offset, this.#g);
        await this.#file.write(this.#tableOffset + ti * 8, entry);
        this.#table[ti] = offset;
        this.#blocks.set(offset, block);
      }
      return areaStart;
    }
  }

  /**
   * The table indexes without a refcount block that an area needs: `size` clusters at `start`
   * followed by one new block per such index (which the area then contains too).
   */
  #missingBlocks(start: number, size: number): number[] {
    const E = this.#g.refcountBlockEntries;
    let missing: number[] = [];
    for (;;) {
      const end = start + size + missing.length;
      const next: number[] = [];
      for (let ti = Math.floor(start / E); ti <= Math.floor((end - 1) / E); ti++) if (!this.#hasBlock(ti)) next.push(ti);
      if (next.length === missing.length) return missing;
      missing = next;
    }
  }

  /**
   * Counts the area of `size` clusters at `start` plus `newBlocks.length` new refcount blocks
   * right after them: the clusters that existing blocks cover are incremented there (written),
   * then the new blocks are written counting the rest, themselves included. Returns the new
   * blocks (table index, byte offset, content); the caller makes the table point to them.
   */
  async #countArea(start: number, size: number, newBlocks: readonly number[]): Promise<Array<[number, number, Uint8Array]>> {
    const cs = this.#g.clusterSize;
    const E = this.#g.refcountBlockEntries;
    const end = start + size + newBlocks.length;
    this.#checkNotFixed(start, end - start);
    for (let c = start; c < end; ) {
      const ti = Math.floor(c / E);
      const segmentEnd = Math.min(end, (ti + 1) * E);
      if (this.#hasBlock(ti)) await this.#update(c, segmentEnd - c, +1);
      c = segmentEnd;
    }
    const written: Array<[number, number, Uint8Array]> = [];
    for (const [j, ti] of newBlocks.entries()) {
      const block = new Uint8Array(cs);
      for (let c = Math.max(start, ti * E); c < Math.min(end, (ti + 1) * E); c++) setRefcount(block, c - ti * E, this.#g.refcountOrder, 1);
      const offset = (start + size + j) * cs;
      await this.#file.write(offset, block);
      written.push([ti, offset, block]);
    }
    return written;
  }

  /** The first cluster of `[start, end)` with a non-zero refcount, if any. */
  async #firstBusy(start: number, end: number): Promise<number | undefined> {
    for (let c = start; c < end; c++) {
      if (this.#hasBlock(Math.floor(c / this.#g.refcountBlockEntries)) && (await this.get(c)) !== 0) return c;
    }
    return undefined;
  }

  /** Refuses to hand out clusters that hold the header or the active L1 table (a corrupt refcount). */
  #checkNotFixed(start: number, count: number): void {
    const ranges: FixedRange[] = [
      ...this.#fixed(),
      { start: this.#tableOffset / this.#g.clusterSize, count: this.#tableClusters, what: 'the refcount table' },
    ];
    for (const range of ranges) {
      if (start < range.start + range.count && range.start < start + count) {
        const cluster = Math.max(start, range.start);
        throw corruptImage(this.#file.path, 'refcount_block', `cluster ${cluster} holds ${range.what} but its refcount is 0`);
      }
    }
  }
}
