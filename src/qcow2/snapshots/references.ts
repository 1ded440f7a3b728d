/**
 * Walks over an L1 table that add or drop the references it makes, and keep COPIED flags
 * right (spec "Cluster mapping": COPIED is set exactly when the refcount is 1, and is only
 * meaningful in the active tables).
 *
 * A reference is one path from an L1 table to a cluster: an L2 table is counted once per L1
 * entry pointing to it, and a data cluster once per L1 table that reaches it, even through an
 * L2 table shared by several L1 tables (that is how QEMU counts, and what `qemu-img check`
 * expects). A compressed cluster's host clusters count once per L2 entry, as QEMU counts them.
 *
 * Memory: the L1 table plus one L2 table at a time.
 * @internal
 */
import { OutOfRangeError } from '../../errors.js';
import { compressedByteRange, decodeL1Table, decodeL2Entry, type L1Entry, type L2Entry } from '../format/index.js';
import type { SnapshotSession } from './session.js';

/** A run of consecutive host clusters, by byte offset of the first. */
interface Run {
  offset: number;
  count: number;
}

/** Reads `count` L1 entries at `offset` (a snapshot's L1 table). */
export async function readL1(s: SnapshotSession, offset: number, count: number): Promise<L1Entry[]> {
  if (count === 0) return [];
  return decodeL1Table(await s.internals.readHost(offset, count * 8), 0, count, s.g);
}

/** True when the entry's COPIED flag means something (a normal or preallocated zero cluster). */
function hasCopiedFlag(entry: L2Entry): entry is Extract<L2Entry, { copied: boolean }> {
  return (entry.kind === 'normal' || entry.kind === 'zero') && entry.hostOffset !== 0;
}

/** The host clusters an L2 entry references, as runs (one per entry; two for compressed data across a boundary). */
function referencedRuns(entry: L2Entry, cs: number): Run[] {
  if (entry.kind === 'compressed') {
    const range = compressedByteRange(entry);
    const first = Math.floor(range.offset / cs);
    const last = Math.floor((range.offset + range.length - 1) / cs);
    return [{ offset: first * cs, count: last - first + 1 }];
  }
  return hasCopiedFlag(entry) ? [{ offset: entry.hostOffset, count: 1 }] : [];
}

/** Adds `run` to `runs`, merging it into the last one when it follows it directly. */
function pushRun(runs: Run[], run: Run, cs: number): void {
  const last = runs[runs.length - 1];
  if (last !== undefined && last.offset + last.count * cs === run.offset) last.count += run.count;
  else runs.push({ ...run });
}

/** One L2 table of an L1 walk: its bytes (a copy, changeable) and decoded entries. */
interface L2Visit {
  l1Index: number;
  l2Offset: number;
  table: Uint8Array;
  entries: L2Entry[];
}

/** Calls `visit` for each L2 table `l1` points to, one table in memory at a time. */
async function forEachL2(s: SnapshotSession, l1: readonly L1Entry[], visit: (v: L2Visit) => Promise<void>): Promise<void> {
  const cs = s.g.clusterSize;
  for (const [l1Index, l1Entry] of l1.entries()) {
    if (l1Entry.l2Offset === 0) continue;
    const table = await s.internals.readHost(l1Entry.l2Offset, cs);
    const entries: L2Entry[] = [];
    for (let i = 0; i < s.g.l2Entries; i++) entries.push(decodeL2Entry(table, i, s.g));
    await visit({ l1Index, l2Offset: l1Entry.l2Offset, table, entries });
  }
}

/**
 * Checks, before anything changes, that every cluster `l1` references can take one more
 * reference within the image's refcount width: 1-bit refcounts can count no sharing at all.
 * Counts several references from one L2 table (compressed clusters packed together); the
 * rare cluster shared across L2 tables is caught by the refcount code when it is counted.
 */
export async function checkRoomForReferences(s: SnapshotSession, l1: readonly L1Entry[], action: string): Promise<void> {
  const max = s.internals.maxRefcount;
  const cs = s.g.clusterSize;
  const check = async (offset: number, more: number, what: string): Promise<void> => {
    const current = await s.internals.refcount(offset);
    if (current + more > max) {
      throw new OutOfRangeError(
        action,
        `${what} at ${offset} has refcount ${current} and ${s.g.refcountBits}-bit refcounts hold at most ${max}` +
          (max === 1 ? ' (an image with refcount_bits=1 cannot share clusters with a snapshot; convert it with -o refcount_bits=16)' : ''),
      );
    }
  };
  const tables = new Map<number, number>();
  for (const e of l1) if (e.l2Offset !== 0) tables.set(e.l2Offset, (tables.get(e.l2Offset) ?? 0) + 1);
  for (const [offset, more] of tables) await check(offset, more, 'the L2 table');
  await forEachL2(s, l1, async ({ entries }) => {
    const counts = new Map<number, number>();
    for (const entry of entries) {
      for (const run of referencedRuns(entry, cs)) {
        for (let c = 0; c < run.count; c++) counts.set(run.offset + c * cs, (counts.get(run.offset + c * cs) ?? 0) + 1);
      }
    }
    for (const [offset, more] of counts) await check(offset, more, 'the data cluster');
  });
}

/**
 * Adds one reference to everything `l1` references. For each L2 table: the COPIED flags of its
 * entries are cleared first (written), then its data clusters are counted, then (when `l1` is
 * the active table) the L1 entry loses COPIED, then the L2 table is counted. Clearing COPIED
 * before counting means a crash half-way leaves flags that are only too cautious (a later write
 * copies a cluster it could have written in place), never a shared cluster marked as owned.
 */
export async function addReferences(s: SnapshotSession, l1: readonly L1Entry[], active: boolean): Promise<void> {
  const cs = s.g.clusterSize;
  await forEachL2(s, l1, async ({ l1Index, l2Offset, table, entries }) => {
    const runs: Run[] = [];
    let cleared = false;
    entries.forEach((entry, i) => {
      if (hasCopiedFlag(entry) && entry.copied) {
        table[i * s.g.l2EntrySize]! &= 0x7f; // bit 63: COPIED
        cleared = true;
      }
      for (const run of referencedRuns(entry, cs)) pushRun(runs, run, cs);
    });
    if (cleared) await s.internals.writeHost(l2Offset, table);
    for (const run of runs) await s.internals.incrementClusters(run.offset, run.count);
    if (active && l1[l1Index]!.copied) await s.internals.setActiveL1Entry(l1Index, { l2Offset, copied: false });
    await s.internals.incrementClusters(l2Offset, 1);
  });
}

/**
 * Drops one reference from everything `l1` references (an L1 table nothing points to any
 * more): for each L2 table its data clusters, then the table itself.
 */
export async function dropReferences(s: SnapshotSession, l1: readonly L1Entry[]): Promise<void> {
  const cs = s.g.clusterSize;
  await forEachL2(s, l1, async ({ l2Offset, entries }) => {
    const runs: Run[] = [];
    for (const entry of entries) for (const run of referencedRuns(entry, cs)) pushRun(runs, run, cs);
    for (const run of runs) await s.internals.freeClusters(run.offset, run.count);
    await s.internals.freeClusters(l2Offset, 1);
  });
}

/**
 * Sets the COPIED flag of every active L1 and L2 entry to "refcount is 1" (QEMU's
 * `qcow2_update_snapshot_refcount` with addend 0), writing only what changes.
 */
export async function refreshCopiedFlags(s: SnapshotSession): Promise<void> {
  const l1 = s.internals.activeL1();
  await forEachL2(s, l1, async ({ l1Index, l2Offset, table, entries }) => {
    let changed = false;
    for (const [i, entry] of entries.entries()) {
      if (!hasCopiedFlag(entry)) continue;
      const owned = (await s.internals.refcount(entry.hostOffset)) === 1;
      if (owned === entry.copied) continue;
      const at = i * s.g.l2EntrySize;
      table[at] = owned ? table[at]! | 0x80 : table[at]! & 0x7f;
      changed = true;
    }
    if (changed) await s.internals.writeHost(l2Offset, table);
    const owned = (await s.internals.refcount(l2Offset)) === 1;
    if (owned !== l1[l1Index]!.copied) await s.internals.setActiveL1Entry(l1Index, { l2Offset, copied: owned });
  });
}

/** Clusters that a table of `bytes` bytes takes. */
export function clustersOf(bytes: number, cs: number): number {
  return Math.ceil(bytes / cs);
}
