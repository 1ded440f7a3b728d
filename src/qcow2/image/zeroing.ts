/**
 * Zero-writes and trims.
 *
 * Whole clusters change only metadata where the format allows it: on version 3 the ZERO flag
 * (keeping an owned host cluster allocated unless the caller allows trimming), on version 2
 * deallocation when there is no backing file. Partial clusters, and whole ones that metadata
 * cannot zero (version 2 over a backing file), get zero bytes through the write path, unless
 * they already read as zero. The last cluster of the disk counts as whole when the range runs to
 * the end of the disk.
 *
 * Trim deallocates whole clusters (marks them ZERO over a backing file on version 3). On
 * version 3 the image promises that a trimmed range reads as zero (`trimZeroes`), so the
 * partial clusters at its ends get zero bytes unless they read as zero already; on version 2
 * they are left alone, and so are whole clusters over a backing file (v2 cannot hide it).
 *
 * New entries are written before the host clusters of the old ones are released. The caller
 * holds the exclusive lock.
 */
import { NotSupportedError } from '../../errors.js';
import type { L2Entry } from '../format/index.js';
import { holdsHostClusters, releaseEntry, writableL2, type ImageCore } from './core.js';
import { writeGuest, writeUpdatedEntries } from './writer.js';

/** Options of {@link zeroGuest}. */
export interface ZeroOptions {
  mayTrim: boolean;
  fast: boolean;
}

/** What to do with one whole cluster: a new L2 entry, zero bytes, or nothing. */
type Plan = { action: 'entry'; entry: L2Entry } | { action: 'write' } | { action: 'none' };

/** A guest range split into the clusters metadata handles and the partial pieces. */
interface Split {
  /** Whole clusters `[first, first + count)`, by guest cluster index. */
  first: number;
  count: number;
  /** Guest byte ranges of partial clusters. */
  partial: Array<[number, number]>;
}

function split(core: ImageCore, offset: number, length: number): Split {
  const cs = core.g.clusterSize;
  const end = offset + length;
  const wholeStart = Math.ceil(offset / cs) * cs;
  const wholeEnd = end === core.size ? Math.ceil(end / cs) * cs : Math.floor(end / cs) * cs;
  if (wholeStart >= wholeEnd) {
    // No whole cluster: one partial piece, or two when the range crosses a cluster boundary
    // (each is checked for zeroes on its own cluster).
    if (length === 0) return { first: 0, count: 0, partial: [] };
    const boundary = Math.floor((end - 1) / cs) * cs;
    return { first: 0, count: 0, partial: boundary > offset ? [[offset, boundary], [boundary, end]] : [[offset, end]] };
  }
  const partial: Array<[number, number]> = [];
  if (offset < wholeStart) partial.push([offset, wholeStart]);
  if (wholeEnd < end) partial.push([wholeEnd, end]);
  return { first: wholeStart / cs, count: (wholeEnd - wholeStart) / cs, partial };
}

/** True when guest cluster `cluster` with `entry` reads as zero without looking at data. */
function readsAsZero(core: ImageCore, entry: L2Entry, cluster: number): boolean {
  if (entry.kind === 'zero') return true;
  if (entry.kind !== 'unallocated') return false;
  return core.backing === undefined || cluster * core.g.clusterSize >= core.backing.size;
}

/** Makes `[offset, offset + length)` read as zero. */
export async function zeroGuest(core: ImageCore, offset: number, length: number, options: ZeroOptions): Promise<void> {
  const cs = core.g.clusterSize;
  if (options.fast && !core.g.zeroFlag) {
    throw new NotSupportedError(`write zeroes fast to ${length} bytes at ${offset} of ${core.path}`, 'version 2 images have no zero clusters');
  }
  const parts = split(core, offset, length);
  const partialWrites = await nonZeroPartials(core, parts);
  const plans = await planSlices(core, parts, (entry, cluster) => planZero(core, entry, cluster, options.mayTrim));
  const wholeWrites = plans.flatMap((slice) => slice.plans.flatMap((plan, i) => (plan.action === 'write' ? [slice.first + i] : [])));
  if (options.fast && partialWrites.length + wholeWrites.length > 0) {
    throw new NotSupportedError(`write zeroes fast to ${length} bytes at ${offset} of ${core.path}`, 'the range cannot be zeroed without writing zero bytes');
  }
  for (const slice of plans) await applyEntries(core, slice.first, slice.old, slice.plans);
  for (const cluster of wholeWrites) partialWrites.push([cluster * cs, Math.min(core.size, (cluster + 1) * cs)]);
  for (const [from, to] of mergeRanges(partialWrites)) await writeZeroBytes(core, from, to);
}

/** Trims `[offset, offset + length)` as described at the top of this file. */
export async function trimGuest(core: ImageCore, offset: number, length: number): Promise<void> {
  const parts = split(core, offset, length);
  const partialWrites = core.g.zeroFlag ? await nonZeroPartials(core, parts) : [];
  const plans = await planSlices(core, parts, (entry, cluster) => planTrim(core, entry, cluster));
  for (const slice of plans) await applyEntries(core, slice.first, slice.old, slice.plans);
  for (const [from, to] of partialWrites) await writeZeroBytes(core, from, to);
}

/** The partial pieces of `parts` that do not read as zero already. */
async function nonZeroPartials(core: ImageCore, parts: Split): Promise<Array<[number, number]>> {
  const cs = core.g.clusterSize;
  const result: Array<[number, number]> = [];
  for (const [from, to] of parts.partial) {
    const cluster = Math.floor(from / cs);
    const [entry] = await core.map.entries(cluster, 1);
    if (!readsAsZero(core, entry!, cluster)) result.push([from, to]);
  }
  return result;
}

function planZero(core: ImageCore, entry: L2Entry, cluster: number, mayTrim: boolean): Plan {
  if (!core.g.zeroFlag) {
    if (readsAsZero(core, entry, cluster)) return { action: 'none' };
    if (mayTrim && core.backing === undefined) return { action: 'entry', entry: { kind: 'unallocated' } };
    return { action: 'write' };
  }
  switch (entry.kind) {
    case 'unallocated':
      return readsAsZero(core, entry, cluster) ? { action: 'none' } : { action: 'entry', entry: zeroEntry(0, false) };
    case 'zero':
      return mayTrim && entry.hostOffset !== 0 ? { action: 'entry', entry: zeroEntry(0, false) } : { action: 'none' };
    case 'normal':
      return { action: 'entry', entry: !mayTrim && entry.copied ? zeroEntry(entry.hostOffset, true) : zeroEntry(0, false) };
    case 'compressed':
      return { action: 'entry', entry: zeroEntry(0, false) };
    default: {
      const never: never = entry;
      throw new Error(`unknown L2 entry ${String(never)}`);
    }
  }
}

function planTrim(core: ImageCore, entry: L2Entry, cluster: number): Plan {
  const overBacking = core.backing !== undefined && cluster * core.g.clusterSize < core.backing.size;
  if (overBacking && !core.g.zeroFlag) return { action: 'none' }; // v2 cannot hide the backing file
  if (overBacking) {
    if (entry.kind === 'zero' && entry.hostOffset === 0) return { action: 'none' };
    return { action: 'entry', entry: zeroEntry(0, false) };
  }
  return entry.kind === 'unallocated' ? { action: 'none' } : { action: 'entry', entry: { kind: 'unallocated' } };
}

function zeroEntry(hostOffset: number, copied: boolean): L2Entry {
  return { kind: 'zero', hostOffset, copied };
}

interface SlicePlan {
  first: number;
  old: L2Entry[];
  plans: Plan[];
}

/** Plans every whole cluster of `parts`, one L2 table at a time. */
async function planSlices(core: ImageCore, parts: Split, plan: (entry: L2Entry, cluster: number) => Plan): Promise<SlicePlan[]> {
  const slices: SlicePlan[] = [];
  const end = parts.first + parts.count;
  for (let cluster = parts.first; cluster < end; ) {
    const { l2Index } = core.map.slot(cluster);
    const count = Math.min(end - cluster, core.g.l2Entries - l2Index);
    const old = await core.map.entries(cluster, count);
    slices.push({ first: cluster, old, plans: old.map((entry, i) => plan(entry, cluster + i)) });
    cluster += count;
  }
  return slices;
}

/** Writes the planned entries of one slice, then releases what the replaced entries held. */
async function applyEntries(core: ImageCore, first: number, old: L2Entry[], plans: Plan[]): Promise<void> {
  const updated = plans.map((plan) => (plan.action === 'entry' ? plan.entry : undefined));
  if (updated.every((entry) => entry === undefined)) return;
  const { l1Index, l2Index } = core.map.slot(first);
  const l2Offset = await writableL2(core, l1Index);
  await writeUpdatedEntries(core, l2Offset, l2Index, updated);
  for (const [i, entry] of updated.entries()) {
    const before = old[i]!;
    if (entry === undefined || !holdsHostClusters(before)) continue;
    if (entry.kind === 'zero' && before.kind === 'normal' && entry.hostOffset === before.hostOffset) continue;
    await releaseEntry(core, before);
  }
}

/** Bytes of zeroes written per call of the write path, so that huge ranges need no huge buffer. */
const ZERO_CHUNK = 1024 * 1024;
/** Only ever read (the write path borrows it), so one buffer serves every call. */
const ZEROES = new Uint8Array(ZERO_CHUNK);

async function writeZeroBytes(core: ImageCore, from: number, to: number): Promise<void> {
  for (let position = from; position < to; position += ZERO_CHUNK) {
    await writeGuest(core, position, ZEROES.subarray(0, Math.min(ZERO_CHUNK, to - position)));
  }
}

function mergeRanges(ranges: Array<[number, number]>): Array<[number, number]> {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const merged: Array<[number, number]> = [];
  for (const [from, to] of sorted) {
    const last = merged[merged.length - 1];
    if (last !== undefined && last[1] >= from) last[1] = Math.max(last[1], to);
    else merged.push([from, to]);
  }
  return merged;
}
