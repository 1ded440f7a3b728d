/**
 * The write path.
 *
 * A write whose clusters are all allocated and ours alone (normal, COPIED) goes straight to the
 * host clusters, under the shared lock ({@link writeInPlace}). Any other write
 * ({@link writeAllocating}) runs in three steps:
 *
 * 1. plan, holding the lock in metadata mode: look up the whole request, claim the guest
 *    clusters whose mapping changes (a write that finds one claimed waits for its owner and
 *    looks again, so no cluster is allocated twice), make the L2 tables writable (allocated,
 *    or copied when shared), and allocate the host clusters of the whole request at once
 *    (first fit, contiguous where the free space is; one refcount write per refcount block,
 *    issued here but awaited in step 2, so that the lock is not held for it);
 * 2. without the lock (detached work: other requests, allocations included, go on meanwhile),
 *    wait for the refcount writes and write the data: whole clusters straight from the caller's buffer, merged where the host
 *    clusters are contiguous; partial ones with the rest of their old content (copy-on-write
 *    from the old host cluster, a compressed cluster, the backing file, or zeroes), read from
 *    what the plan looked up — the claim keeps those clusters from changing;
 * 3. commit, holding the lock again (ahead of waiting requests), together with the other
 *    writes whose data is written by then (group commit): the new L2 entries, one write per L2
 *    table, then the host clusters the old entries held are released (references removed
 *    before the refcounts drop). The write resolves once its entries are written.
 *
 * So the refcounts are written before the data, the data before the L2 entries, a new L2 table
 * before the L1 entry: a crash at any point leaves at worst leaked clusters. Readers see the
 * old mapping until the commit, which waits for them. Compressed writes keep the simpler
 * order of doing everything under the exclusive lock.
 */
import { BitbackError } from '../../errors.js';
import { compressedByteRange, compressedCluster, type L2Entry } from '../format/index.js';
import { deflateCluster } from './compression.js';
import { allocateCompressedBytes, checkDataTarget, holdsHostClusters, refcountsOf, writableL2, type ImageCore } from './core.js';
import { planRead, runRead, type ReadPlan } from './reader.js';
import type { ClusterRun } from './refcounts.js';
import type { DetachedWork, RwLock } from './rw-lock.js';

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
 * Writes `data` (borrowed until the promise settles) at guest `offset`, allocating as needed,
 * with the data written while other requests go on (see the top of this file). Takes `lock`
 * itself; the caller must not hold it. With the image's `compress` option, whole unallocated
 * clusters are stored deflated under the exclusive lock instead.
 */
export async function writeAllocating(core: ImageCore, lock: RwLock, offset: number, data: Uint8Array): Promise<void> {
  if (core.compress) return lock.exclusive(() => writeGuest(core, offset, data));
  for (;;) {
    const step = await lock.metadata(async () => {
      const plan = await planWrite(core, offset, data);
      return plan.kind === 'busy' ? plan : { ...plan, work: lock.detach() };
    });
    if (step.kind === 'busy') {
      await step.until;
      continue;
    }
    try {
      await writeData(core, step, offset, data);
    } catch (error) {
      await step.work.finish(() => abandonWrite(core, step));
      throw error;
    }
    return commitQueued(core, step, step.work);
  }
}

/** Plans whose data is written, waiting to be committed, per image. */
const commitQueues = new WeakMap<ImageCore, QueuedCommit[]>();

interface QueuedCommit {
  plan: WritePlan;
  work: DetachedWork;
  settle: (outcome: { error: unknown } | undefined) => void;
}

/**
 * Commits `plan` (step 3) together with the other plans whose data is written by the time the
 * lock is free: the first to arrive takes the lock (ahead of waiting requests) for all that
 * queued meanwhile, and each L2 table is written once for all of them. Group commit: with many
 * writes in flight, the lock is held for one L2 write per batch instead of one per request.
 */
function commitQueued(core: ImageCore, plan: WritePlan, work: DetachedWork): Promise<void> {
  let queue = commitQueues.get(core);
  const leader = queue === undefined;
  if (queue === undefined) {
    queue = [];
    commitQueues.set(core, queue);
  }
  const done = new Promise<void>((resolve, reject) => {
    queue.push({ plan, work, settle: (outcome) => (outcome === undefined ? resolve() : reject(outcome.error)) });
  });
  if (leader) void runCommits(core, queue);
  return done;
}

async function runCommits(core: ImageCore, queue: QueuedCommit[]): Promise<void> {
  while (queue.length > 0) {
    const batch = queue.splice(0);
    let outcome: { error: unknown } | undefined;
    try {
      await batch[0]!.work.finish(() => commitWrites(core, batch.map((c) => c.plan)));
    } catch (error) {
      outcome = { error };
    }
    for (const commit of batch.slice(1)) commit.work.end();
    for (const commit of batch) commit.settle(outcome);
  }
  commitQueues.delete(core);
}

/**
 * Writes `data` at guest `offset`, allocating as needed, all under the lock the caller holds
 * exclusively. With `compress`, whole clusters that were unallocated are stored deflated when
 * that is smaller.
 */
export async function writeGuest(core: ImageCore, offset: number, data: Uint8Array, compress = core.compress): Promise<void> {
  if (compress) return writeCompressing(core, offset, data);
  const plan = await planWrite(core, offset, data);
  if (plan.kind === 'busy') throw new BitbackError('INTERNAL', `write to ${core.path}`, 'a cluster is claimed while the exclusive lock is held');
  try {
    await writeData(core, plan, offset, data);
  } catch (e) {
    await abandonWrite(core, plan);
    throw e;
  }
  await commitWrites(core, [plan]);
}

/** One file write of the data: guest bytes `[from, to)` of the request, or a whole cluster rebuilt. */
type DataPiece =
  | { kind: 'direct'; host: number; from: number; to: number }
  | { kind: 'rebuilt'; host: number; clusterStart: number; from: number; to: number; old: ReadPlan };

/** The L2 table of one slice of the request and its new entries (undefined: unchanged). */
interface SliceUpdate {
  l1Index: number;
  l2Index: number;
  l2Offset: number;
  old: L2Entry[];
  updated: Array<L2Entry | undefined>;
}

interface WritePlan {
  kind: 'plan';
  pieces: DataPiece[];
  slices: SliceUpdate[];
  /** Host clusters allocated for the request. */
  runs: ClusterRun[];
  /** Their refcount writes, in flight (awaited before the commit). */
  counted: Array<Promise<void>>;
  /** Lets go of the claimed guest clusters. */
  letGo: () => void;
}

type Planned = WritePlan | { kind: 'busy'; until: Promise<void> };

/**
 * Looks up the request, claims the clusters whose mapping changes, makes their L2 tables
 * writable and allocates their host clusters (step 1). Returns `busy` with the claim to wait
 * for when another write holds one of them. Caller holds the lock in metadata or exclusive mode.
 */
async function planWrite(core: ImageCore, offset: number, data: Uint8Array): Promise<Planned> {
  const { g, map } = core;
  const cs = g.clusterSize;
  const end = offset + data.length;
  const lastCluster = Math.floor((end - 1) / cs);
  const slices: SliceUpdate[] = [];
  const changing: number[] = [];
  for (let cluster = Math.floor(offset / cs); cluster <= lastCluster; ) {
    const { l1Index, l2Index } = map.slot(cluster);
    const count = Math.min(lastCluster - cluster + 1, g.l2Entries - l2Index);
    const old = await map.entries(cluster, count);
    old.forEach((entry, i) => {
      if (entry.kind !== 'normal' || !entry.copied) changing.push(cluster + i);
    });
    slices.push({ l1Index, l2Index, l2Offset: 0, old, updated: new Array(count).fill(undefined) });
    cluster += count;
  }
  const busy = map.claimed(changing);
  if (busy !== undefined) return { kind: 'busy', until: busy };
  const letGo = map.claim(changing);
  const refcounts = changing.length > 0 ? refcountsOf(core) : undefined;
  const runs: ClusterRun[] = [];
  const counted: Array<Promise<void>> = [];
  try {
    const needed = slices.reduce((n, s) => n + s.old.filter((entry) => needsNewCluster(entry)).length, 0);
    for (let got = 0; got < needed; ) {
      const allocated = await refcounts!.allocateRunsDeferred(needed - got);
      counted.push(allocated.written);
      for (const run of allocated.runs) {
        runs.push(run);
        got += run.count;
      }
    }
    const pieces: DataPiece[] = [];
    let next = 0; // the next allocated cluster, counted over the runs
    const newHost = (): number => {
      let k = next++;
      for (const run of runs) {
        if (k < run.count) return (run.start + k) * cs;
        k -= run.count;
      }
      throw new BitbackError('INTERNAL', `write to ${core.path}`, 'fewer clusters allocated than planned');
    };
    let cluster = Math.floor(offset / cs);
    for (const slice of slices) {
      if (slice.old.some((entry) => entry.kind !== 'normal' || !entry.copied)) slice.l2Offset = await writableL2(core, slice.l1Index);
      for (const [i, entry] of slice.old.entries()) {
        const start = cluster * cs;
        const from = Math.max(offset, start);
        const to = Math.min(end, start + cs);
        const field = `l1[${slice.l1Index}].l2[${slice.l2Index + i}]`;
        let host: number;
        if (entry.kind === 'normal' && entry.copied) {
          host = entry.hostOffset;
        } else {
          host = needsNewCluster(entry) ? newHost() : (entry as { hostOffset: number }).hostOffset;
          slice.updated[i] = { kind: 'normal', hostOffset: host, copied: true };
        }
        checkDataTarget(core, host, cs, field);
        const whole = from === start && (to === start + cs || to === core.size);
        if (whole || slice.updated[i] === undefined) {
          addDirect(pieces, { kind: 'direct', host: host + from - start, from, to });
        } else {
          pieces.push({ kind: 'rebuilt', host, clusterStart: start, from, to, old: await planRead(core, start, Math.min(cs, core.size - start)) });
        }
        cluster++;
      }
    }
    return { kind: 'plan', pieces, slices, runs, counted, letGo };
  } catch (e) {
    await Promise.allSettled(counted);
    if (runs.length > 0) await refcounts!.decrementRuns(runs).catch(() => {}); // nothing points to them yet
    letGo();
    throw e;
  }
}

/** Appends `piece`, merged into the last one when both guest and host bytes continue it. */
function addDirect(pieces: DataPiece[], piece: DataPiece & { kind: 'direct' }): void {
  const last = pieces[pieces.length - 1];
  if (last !== undefined && last.kind === 'direct' && last.to === piece.from && last.host + (last.to - last.from) === piece.host) {
    last.to = piece.to;
  } else {
    pieces.push(piece);
  }
}

/**
 * Writes the data of a plan and waits for its refcount writes (step 2); waits for every write
 * to settle before it rejects.
 */
async function writeData(core: ImageCore, plan: WritePlan, offset: number, data: Uint8Array): Promise<void> {
  const cs = core.g.clusterSize;
  const write = async (piece: DataPiece): Promise<void> => {
    if (piece.kind === 'direct') return core.file.write(piece.host, data.subarray(piece.from - offset, piece.to - offset));
    const cluster = new Uint8Array(cs);
    await runRead(core, piece.old, cluster.subarray(0, Math.min(cs, core.size - piece.clusterStart)));
    cluster.set(data.subarray(piece.from - offset, piece.to - offset), piece.from - piece.clusterStart);
    return core.file.write(piece.host, cluster);
  };
  const results = await Promise.allSettled([...plan.counted, ...plan.pieces.map(write)]);
  for (const result of results) if (result.status === 'rejected') throw result.reason;
}

/**
 * Writes the new L2 entries of `plans` (one write per L2 table), then releases what the
 * replaced entries held, and lets go of the claims (step 3). Caller holds the lock in metadata
 * or exclusive mode.
 */
async function commitWrites(core: ImageCore, plans: readonly WritePlan[]): Promise<void> {
  try {
    const tables = new Map<number, Map<number, L2Entry>>();
    for (const slice of plans.flatMap((plan) => plan.slices)) {
      if (slice.l2Offset === 0) continue;
      if (core.map.l1(slice.l1Index).l2Offset !== slice.l2Offset) {
        throw new BitbackError('INTERNAL', `write to ${core.path}`, `the L2 table of l1[${slice.l1Index}] moved during a write`);
      }
      let entries = tables.get(slice.l2Offset);
      if (entries === undefined) tables.set(slice.l2Offset, (entries = new Map()));
      slice.updated.forEach((entry, i) => {
        if (entry !== undefined) entries.set(slice.l2Index + i, entry);
      });
    }
    for (const [l2Offset, entries] of tables) {
      let first = Infinity;
      let last = -1;
      for (const index of entries.keys()) {
        first = Math.min(first, index);
        last = Math.max(last, index);
      }
      const updated: Array<L2Entry | undefined> = new Array(last - first + 1).fill(undefined);
      for (const [index, entry] of entries) updated[index - first] = entry;
      await core.map.setEntriesSparse(l2Offset, first, updated);
    }
    await releaseReplaced(core, plans.flatMap((plan) => plan.slices));
  } finally {
    for (const plan of plans) plan.letGo();
  }
}

/** After a failed data write: frees the clusters allocated for it (nothing points to them) and lets go of the claim. */
async function abandonWrite(core: ImageCore, plan: WritePlan): Promise<void> {
  try {
    if (plan.runs.length > 0) await refcountsOf(core).decrementRuns(plan.runs);
  } catch {
    // They stay allocated: a leak, never a corruption.
  } finally {
    plan.letGo();
  }
}

/**
 * Drops the references that replaced entries held (their new entries are written): normal and
 * zero host clusters with one refcount write per block, compressed ones each.
 */
async function releaseReplaced(core: ImageCore, slices: readonly SliceUpdate[]): Promise<void> {
  const cs = core.g.clusterSize;
  const clusters: number[] = [];
  const compressed: Array<{ offset: number; length: number }> = [];
  for (const slice of slices) {
    slice.updated.forEach((entry, i) => {
      const before = slice.old[i]!;
      if (entry === undefined || !holdsHostClusters(before)) return;
      if (before.kind === 'compressed') compressed.push(compressedByteRange(before));
      else if ((before.kind === 'normal' || before.kind === 'zero') && before.hostOffset !== (entry as { hostOffset: number }).hostOffset) {
        clusters.push(before.hostOffset / cs);
      }
    });
  }
  if (clusters.length === 0 && compressed.length === 0) return;
  const refcounts = refcountsOf(core);
  clusters.sort((a, b) => a - b);
  const runs: ClusterRun[] = [];
  const again: number[] = []; // a cluster named twice (two entries sharing it) drops twice
  for (const c of clusters) {
    const last = runs[runs.length - 1];
    if (last !== undefined && c < last.start + last.count) again.push(c);
    else if (last !== undefined && c === last.start + last.count) last.count++;
    else runs.push({ start: c, count: 1 });
  }
  if (runs.length > 0) await refcounts.decrementRuns(runs);
  for (const c of again) await refcounts.decrement(c);
  for (const range of compressed) await refcounts.decrementBytes(range.offset, range.length);
}

/** True when a cluster with `entry` gets a new host cluster (a preallocated zero cluster of ours is filled in place). */
function needsNewCluster(entry: L2Entry): boolean {
  if (entry.kind === 'normal' && entry.copied) return false;
  return !(entry.kind === 'zero' && entry.hostOffset !== 0 && entry.copied);
}

/** No host cluster behind it: the clusters QEMU would compress into (`qcow2_co_pwritev_compressed`). */
function isUnallocated(entry: L2Entry): boolean {
  return entry.kind === 'unallocated' || (entry.kind === 'zero' && entry.hostOffset === 0);
}

/**
 * The write path of images opened with `compress` and of `writeCompressed` (exclusive lock
 * held): whole clusters that are unallocated are deflated (a window of them in parallel; zlib
 * runs in the thread pool) and stored compressed when that is smaller, the rest goes through
 * the normal path; the compressed entries of each L2 table are written in one write after
 * their data.
 */
async function writeCompressing(core: ImageCore, offset: number, data: Uint8Array): Promise<void> {
  const { g, map } = core;
  const cs = g.clusterSize;
  const end = offset + data.length;
  for (let position = offset; position < end; ) {
    const first = Math.floor(position / cs);
    const { l1Index, l2Index } = map.slot(first);
    const count = Math.min(Math.floor((end - 1) / cs) - first + 1, g.l2Entries - l2Index);
    const old = await map.entries(first, count);
    const whole = (i: number): boolean => {
      const start = (first + i) * cs;
      return start >= offset && (start + cs <= end || end === core.size);
    };
    const compressible = (i: number): boolean => whole(i) && isUnallocated(old[i]!);
    const clusterData = (i: number): Uint8Array => data.subarray((first + i) * cs - offset, Math.min(end, (first + i + 1) * cs) - offset);
    const pending = new Map<number, Promise<Uint8Array>>();
    const deflated = (i: number): Promise<Uint8Array> => {
      for (let k = i; k < Math.min(count, i + DEFLATE_WINDOW); k++) {
        if (!compressible(k) || pending.has(k)) continue;
        const cluster = new Uint8Array(cs);
        cluster.set(clusterData(k));
        const job = deflateCluster(cluster);
        job.catch(() => {}); // awaited below; a failure left behind by an earlier error is not unhandled
        pending.set(k, job);
      }
      const job = pending.get(i)!;
      pending.delete(i);
      return job;
    };
    const updated: Array<L2Entry | undefined> = new Array(count).fill(undefined);
    let l2Offset = 0;
    /** Guest byte range written through the normal path, not yet flushed. */
    let plain: [number, number] | undefined;
    const flushPlain = async (): Promise<void> => {
      if (plain !== undefined) await writeGuest(core, plain[0], data.subarray(plain[0] - offset, plain[1] - offset), false);
      plain = undefined;
    };
    for (let i = 0; i < count; i++) {
      const start = (first + i) * cs;
      const compressed = compressible(i) ? await deflated(i) : undefined;
      if (compressed !== undefined && compressed.length < cs) {
        await flushPlain();
        l2Offset = await writableL2(core, l1Index);
        const host = await allocateCompressedBytes(core, compressed.length);
        await core.file.write(host, compressed);
        updated[i] = compressedCluster(host, compressed.length, g);
        continue;
      }
      const from = Math.max(offset, start);
      const to = Math.min(end, start + cs);
      if (plain !== undefined && plain[1] === from) plain[1] = to;
      else {
        await flushPlain();
        plain = [from, to];
      }
    }
    await flushPlain();
    if (l2Offset !== 0) await map.setEntriesSparse(l2Offset, l2Index, updated);
    position = (first + count) * cs;
  }
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
