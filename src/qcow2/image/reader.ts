/**
 * The read path (spec "Cluster mapping", "Extended L2 Entries"): guest bytes come from host
 * clusters, from inflated compressed clusters, from the backing file (unallocated clusters and
 * subclusters; zeroes past its end), or are zero (zero clusters and subclusters, unallocated
 * ones without a backing file). Runs that are contiguous on the host are read in one call, and
 * the pieces of one request are read concurrently.
 *
 * The caller holds the image's lock (any mode), so that no cluster it reads is freed and reused
 * meanwhile; a read planned under the lock ({@link planRead}) may run after the lock is released
 * ({@link runRead}) only while something else keeps its clusters, as the claim of an allocating
 * write does for the copy-on-write source of its clusters.
 */
import { subclusterKind, type CompressedCluster, type L2Entry } from '../format/index.js';
import { inflateCluster } from './compression.js';
import type { BlockDevice } from '../../block/block-device.js';
import type { ImageCore } from './core.js';

type Piece =
  | { kind: 'host'; guest: number; host: number; length: number }
  | { kind: 'backing'; guest: number; length: number }
  | { kind: 'compressed'; guest: number; length: number; clusterStart: number; entry: CompressedCluster; l1Index: number; l2Index: number };

/**
 * Reads `target.length` guest bytes at `offset` into `target`, whatever it held before (the
 * bytes that no cluster supplies are zeroed). The range must lie within the virtual size.
 */
export async function readGuestInto(core: ImageCore, offset: number, target: Uint8Array): Promise<void> {
  const pieces = await planPieces(core, offset, offset + target.length);
  let at = 0;
  for (const piece of pieces) {
    const from = piece.guest - offset;
    if (from > at) target.fill(0, at, from);
    at = from + piece.length;
  }
  if (at < target.length) target.fill(0, at);
  await readPieces(core, offset, pieces, target);
}

/**
 * A read looked up but not yet done: where each piece of a guest range comes from. Only valid
 * while nothing the pieces read from can be freed (the lock held, or the clusters claimed).
 */
export interface ReadPlan {
  /** Guest byte offset of the range. */
  readonly offset: number;
  readonly pieces: readonly Piece[];
}

/** Looks up where the `length` guest bytes at `offset` come from (the L2 lookups only). */
export async function planRead(core: ImageCore, offset: number, length: number): Promise<ReadPlan> {
  return { offset, pieces: await planPieces(core, offset, offset + length) };
}

/**
 * Reads what `plan` says into `target` (as long as the planned range, zero-filled). Does no
 * lookups, so it may run while the mapping changes elsewhere.
 */
export function runRead(core: ImageCore, plan: ReadPlan, target: Uint8Array): Promise<void> {
  return readPieces(core, plan.offset, plan.pieces, target);
}

/** Reads `pieces` of the range at guest `offset` into `target`, concurrently. */
function readPieces(core: ImageCore, offset: number, pieces: readonly Piece[], target: Uint8Array): Promise<void> {
  // One piece (a read within a contiguous run, the usual case) needs no Promise.all.
  if (pieces.length === 1) return readPiece(core, offset, target, pieces[0]!);
  if (pieces.length === 0) return Promise.resolve();
  return Promise.all(pieces.map((piece) => readPiece(core, offset, target, piece))).then(() => undefined);
}

/** The pieces of guest range `[offset, end)`, merged where contiguous. */
async function planPieces(core: ImageCore, offset: number, end: number): Promise<Piece[]> {
  const { g, map } = core;
  const cs = g.clusterSize;
  const pieces: Piece[] = [];
  for (let position = offset; position < end; ) {
    const cluster = Math.floor(position / cs);
    const l1Index = Math.floor(cluster / g.l2Entries);
    const l2Index = cluster % g.l2Entries;
    const count = Math.min(Math.floor((end - 1) / cs) - cluster + 1, g.l2Entries - l2Index);
    const entries = await map.entries(cluster, count);
    for (let i = 0; i < count; i++) {
      const clusterStart = (cluster + i) * cs;
      planCluster(core, entries[i]!, clusterStart, Math.max(position, clusterStart), Math.min(end, clusterStart + cs), l1Index, l2Index + i, pieces);
    }
    position = (cluster + count) * cs;
  }
  return pieces;
}

/** Appends `piece` to `pieces`, merged into the last one when both read one contiguous run. */
function addPiece(pieces: Piece[], piece: Piece): void {
  const last = pieces[pieces.length - 1];
  if (last !== undefined && last.kind === piece.kind && last.guest + last.length === piece.guest) {
    if (last.kind === 'backing') {
      last.length += piece.length;
      return;
    }
    if (last.kind === 'host' && piece.kind === 'host' && last.host + last.length === piece.host) {
      last.length += piece.length;
      return;
    }
  }
  pieces.push(piece);
}

function planCluster(core: ImageCore, entry: L2Entry, clusterStart: number, from: number, to: number, l1Index: number, l2Index: number, pieces: Piece[]): void {
  if (entry.kind === 'compressed') {
    addPiece(pieces, { kind: 'compressed', guest: from, length: to - from, clusterStart, entry, l1Index, l2Index });
    return;
  }
  if (entry.kind === 'zero') return;
  if (entry.subclusters === undefined) {
    if (entry.kind === 'normal') addPiece(pieces, { kind: 'host', guest: from, host: entry.hostOffset + from - clusterStart, length: to - from });
    else addPiece(pieces, { kind: 'backing', guest: from, length: to - from });
    return;
  }
  const ss = core.g.subclusterSize;
  for (let s = Math.floor((from - clusterStart) / ss); clusterStart + s * ss < to; s++) {
    const sFrom = Math.max(from, clusterStart + s * ss);
    const sTo = Math.min(to, clusterStart + (s + 1) * ss);
    const kind = subclusterKind(entry, s);
    if (kind === 'normal' && entry.kind === 'normal') {
      addPiece(pieces, { kind: 'host', guest: sFrom, host: entry.hostOffset + sFrom - clusterStart, length: sTo - sFrom });
    } else if (kind === 'unallocated') {
      addPiece(pieces, { kind: 'backing', guest: sFrom, length: sTo - sFrom });
    }
  }
}

function readPiece(core: ImageCore, offset: number, target: Uint8Array, piece: Piece): Promise<void> {
  const at = piece.guest - offset;
  switch (piece.kind) {
    case 'host':
      return core.file.readInto(target.subarray(at, at + piece.length), piece.host);
    case 'backing':
      return readBacking(core, target.subarray(at, at + piece.length), piece.guest);
    case 'compressed':
      return readCompressed(core, target.subarray(at, at + piece.length), piece);
    default: {
      const never: never = piece;
      throw new Error(`unknown piece ${String(never)}`);
    }
  }
}

/** Fills `into` from the backing file at guest `guest`, with zeroes past its end. */
async function readBacking(core: ImageCore, into: Uint8Array, guest: number): Promise<void> {
  const backing = core.backing;
  const length = backing === undefined ? 0 : Math.max(0, Math.min(into.length, backing.size - guest));
  if (length < into.length) into.fill(0, length); // past the end of the backing file
  if (length === 0) return;
  const part = into.subarray(0, length);
  if (hasReadInto(backing!)) await backing.readInto(guest, part);
  else part.set(await backing!.read(guest, length));
}

async function readCompressed(core: ImageCore, into: Uint8Array, piece: Extract<Piece, { kind: 'compressed' }>): Promise<void> {
  const cluster = await inflated(core, piece.entry, `l1[${piece.l1Index}].l2[${piece.l2Index}]`);
  const from = piece.guest - piece.clusterStart;
  into.set(cluster.subarray(from, from + piece.length));
}

/** A device that can read into a buffer of the caller's (raw files, qcow2 images). */
function hasReadInto(device: BlockDevice): device is BlockDevice & { readInto(offset: number, target: Uint8Array): Promise<void> } {
  return typeof (device as { readInto?: unknown }).readInto === 'function';
}

/** The inflated content of a compressed cluster, through the image's one-cluster cache. */
async function inflated(core: ImageCore, entry: CompressedCluster, field: string): Promise<Uint8Array> {
  const cached = core.inflated.get(entry.hostOffset);
  if (cached !== undefined) return cached;
  const data = await inflateCluster(core.file, entry, core.g.clusterSize, core.compressionType, field);
  core.inflated.set(entry.hostOffset, data);
  return data;
}
