/**
 * The write path.
 *
 * A write whose clusters are all allocated and ours alone (normal, COPIED) goes straight to the
 * host clusters, under the shared lock ({@link writeInPlace}). Anything else runs under the
 * exclusive lock ({@link writeGuest}), one L2 table at a time:
 *
 * 1. the L2 table is made writable (allocated, or copied when shared);
 * 2. clusters that need a new host cluster get one (refcount written first), filled with the
 *    new bytes and, for partial writes, the old content (copy-on-write from the old host
 *    cluster, a compressed cluster, the backing file, or zeroes), and written;
 * 3. the L2 entries are written (data before the entries that point to it);
 * 4. the host clusters the old entries held are released (references removed before the
 *    refcounts drop).
 */
import { compressedCluster, type L2Entry } from '../format/index.js';
import { deflateCluster } from './compression.js';
import {
  allocateCompressedBytes,
  checkDataTarget,
  holdsHostClusters,
  refcountsOf,
  releaseEntry,
  writableL2,
  type ImageCore,
} from './core.js';
import { readGuest } from './reader.js';

/** Most bytes of new clusters that one file write fills (bounds the copy-on-write buffer). */
const MAX_RUN_BYTES = 8 * 1024 * 1024;
/** Clusters deflated in parallel ahead of the one being stored. */
const DEFLATE_WINDOW = 16;

/**
 * Writes `data` at guest `offset` if every cluster it touches is allocated and owned (COPIED).
 * Returns false, having written nothing, otherwise. Caller holds the lock (shared is enough).
 */
export async function writeInPlace(core: ImageCore, offset: number, data: Uint8Array): Promise<boolean> {
  const { g, map } = core;
  if (g.extendedL2) return false;
  const cs = g.clusterSize;
  const end = offset + data.length;
  const writes: Array<{ host: number; from: number; length: number }> = [];
  for (let position = offset; position < end; ) {
    const cluster = Math.floor(position / cs);
    const { l1Index, l2Index } = map.slot(cluster);
    const count = Math.min(Math.floor((end - 1) / cs) - cluster + 1, g.l2Entries - l2Index);
    const entries = await map.entries(cluster, count);
    for (const [i, entry] of entries.entries()) {
      if (entry.kind !== 'normal' || !entry.copied) return false;
      const clusterStart = (cluster + i) * cs;
      const from = Math.max(position, clusterStart);
      const length = Math.min(end, clusterStart + cs) - from;
      const host = entry.hostOffset + from - clusterStart;
      checkDataTarget(core, host, length, `l1[${l1Index}].l2[${l2Index + i}]`);
      const last = writes[writes.length - 1];
      if (last !== undefined && last.host + last.length === host) last.length += length;
      else writes.push({ host, from, length });
    }
    position = (cluster + count) * cs;
  }
  await Promise.all(writes.map((w) => core.file.write(w.host, data.subarray(w.from - offset, w.from - offset + w.length))));
  return true;
}

/**
 * Writes `data` at guest `offset`, allocating as needed. With `compress`, whole clusters that
 * were unallocated are stored deflated when that is smaller. Caller holds the exclusive lock.
 */
export async function writeGuest(core: ImageCore, offset: number, data: Uint8Array, compress = core.compress): Promise<void> {
  const { g, map } = core;
  const cs = g.clusterSize;
  const end = offset + data.length;
  for (let position = offset; position < end; ) {
    const cluster = Math.floor(position / cs);
    const { l2Index } = map.slot(cluster);
    const count = Math.min(Math.floor((end - 1) / cs) - cluster + 1, g.l2Entries - l2Index);
    await writeSlice(core, cluster, count, offset, data, compress);
    position = (cluster + count) * cs;
  }
}

/** One L2 table's worth of a write: `count` clusters from guest cluster `first`. */
async function writeSlice(core: ImageCore, first: number, count: number, offset: number, data: Uint8Array, compress: boolean): Promise<void> {
  const { g, map, file } = core;
  const cs = g.clusterSize;
  const { l1Index, l2Index } = map.slot(first);
  const old = await map.entries(first, count);
  const l2Offset = await writableL2(core, l1Index);
  const updated: Array<L2Entry | undefined> = new Array(count).fill(undefined);
  const end = offset + data.length;
  /** The part of the write inside cluster `i` of the slice, as guest offsets. */
  const part = (i: number): { start: number; from: number; to: number } => {
    const start = (first + i) * cs;
    return { start, from: Math.max(offset, start), to: Math.min(end, start + cs) };
  };
  const whole = (i: number): boolean => {
    const { start, from, to } = part(i);
    return from === start && (to === start + cs || to === core.size);
  };
  /** The new content of cluster `i`: its old content (when partly written) with the write on top. */
  const content = async (i: number): Promise<Uint8Array> => {
    const { start, from, to } = part(i);
    const cluster = new Uint8Array(cs);
    if (!whole(i)) await readGuest(core, start, cluster.subarray(0, Math.min(cs, core.size - start)));
    cluster.set(data.subarray(from - offset, to - offset), from - start);
    return cluster;
  };

  const compressible = (i: number): boolean => compress && whole(i) && isUnallocated(old[i]!);
  /** Deflates the compressible clusters of a window ahead in parallel (zlib runs in the thread pool). */
  const pending = new Map<number, Promise<Uint8Array>>();
  const deflated = (i: number): Promise<Uint8Array> => {
    if (!pending.has(i)) {
      for (let k = i; k < Math.min(count, i + DEFLATE_WINDOW); k++) {
        if (!compressible(k) || pending.has(k)) continue;
        const job = content(k).then(deflateCluster);
        job.catch(() => {}); // awaited below; a failure left behind by an earlier error is not unhandled
        pending.set(k, job);
      }
    }
    const job = pending.get(i)!;
    pending.delete(i);
    return job;
  };

  for (let i = 0; i < count; ) {
    const entry = old[i]!;
    const field = `l1[${l1Index}].l2[${l2Index + i}]`;
    if (entry.kind === 'normal' && entry.copied) {
      const { start, from, to } = part(i);
      checkDataTarget(core, entry.hostOffset, cs, field);
      await file.write(entry.hostOffset + from - start, data.subarray(from - offset, to - offset));
      i++;
      continue;
    }
    if (entry.kind === 'zero' && entry.hostOffset !== 0 && entry.copied) {
      // A preallocated zero cluster of ours: fill it, then flip the entry to normal.
      checkDataTarget(core, entry.hostOffset, cs, field);
      await file.write(entry.hostOffset, await content(i));
      updated[i] = { kind: 'normal', hostOffset: entry.hostOffset, copied: true };
      i++;
      continue;
    }
    if (compressible(i)) {
      const compressed = await deflated(i);
      if (compressed.length < cs) {
        const host = await allocateCompressedBytes(core, compressed.length);
        await file.write(host, compressed);
        updated[i] = compressedCluster(host, compressed.length, g);
        i++;
        continue;
      }
    }
    // A run of clusters that need new host clusters, filled in one write.
    const maxRun = Math.max(1, Math.floor(MAX_RUN_BYTES / cs));
    let runLength = 1;
    while (runLength < maxRun && i + runLength < count && needsNewCluster(old[i + runLength]!, whole(i + runLength), compress)) runLength++;
    const run = await refcountsOf(core).allocate(runLength);
    checkDataTarget(core, run.start * cs, run.count * cs, field);
    let allWhole = true;
    for (let k = 0; k < run.count; k++) allWhole &&= whole(i + k);
    if (allWhole) {
      // Contiguous guest bytes go to contiguous host clusters: straight from the caller's buffer.
      await file.write(run.start * cs, data.subarray(part(i).from - offset, part(i + run.count - 1).to - offset));
    } else {
      const buffer = new Uint8Array(run.count * cs);
      for (let k = 0; k < run.count; k++) buffer.set(await content(i + k), k * cs);
      await file.write(run.start * cs, buffer);
    }
    for (let k = 0; k < run.count; k++) updated[i + k] = { kind: 'normal', hostOffset: (run.start + k) * cs, copied: true };
    i += run.count;
  }

  await writeUpdatedEntries(core, l2Offset, l2Index, updated);
  for (let i = 0; i < count; i++) {
    if (updated[i] !== undefined && holdsHostClusters(old[i]!) && !sameHost(old[i]!, updated[i]!)) await releaseEntry(core, old[i]!);
  }
}

/** True when a cluster with `entry` cannot be written in place and goes into a fresh host cluster. */
function needsNewCluster(entry: L2Entry, whole: boolean, compress: boolean): boolean {
  if (entry.kind === 'normal' && entry.copied) return false;
  if (entry.kind === 'zero' && entry.hostOffset !== 0 && entry.copied) return false;
  return !(compress && whole && isUnallocated(entry));
}

/** No host cluster behind it: the clusters QEMU would compress into (`qcow2_co_pwritev_compressed`). */
function isUnallocated(entry: L2Entry): boolean {
  return entry.kind === 'unallocated' || (entry.kind === 'zero' && entry.hostOffset === 0);
}

function sameHost(a: L2Entry, b: L2Entry): boolean {
  return (a.kind === 'normal' || a.kind === 'zero') && (b.kind === 'normal' || b.kind === 'zero') && a.hostOffset === b.hostOffset;
}

/**
 * Writes the changed entries of an L2 table (undefined: unchanged), one write per run of
 * consecutive changes. `firstIndex` is the table index of `updated[0]`.
 */
export async function writeUpdatedEntries(core: ImageCore, l2Offset: number, firstIndex: number, updated: ReadonlyArray<L2Entry | undefined>): Promise<void> {
  for (let i = 0; i < updated.length; ) {
    if (updated[i] === undefined) {
      i++;
      continue;
    }
    let j = i;
    while (j < updated.length && updated[j] !== undefined) j++;
    await core.map.setEntries(l2Offset, firstIndex + i, updated.slice(i, j) as L2Entry[]);
    i = j;
  }
}
