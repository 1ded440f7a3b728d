/**
 * Block status from the L2 entries: data (normal and compressed clusters, allocated
 * subclusters), HOLE | ZERO (zero clusters and subclusters: they hold no data, as QEMU's qcow2
 * driver reports them and `qemu-nbd` serves them; `depth` 1 still says this layer has the range),
 * and for unallocated ranges whatever the
 * backing file reports there (HOLE | ZERO without a backing file or past its end). `depth` is
 * QEMU's allocation depth: 1 for this image, the backing file's depth plus one below, 0 where no
 * layer has the range.
 *
 * One call looks at no more than {@link MAX_STATUS_CLUSTERS} clusters and stops early where the
 * backing file answered for less than it was asked; the caller asks again from where the
 * reply ends. The caller holds the shared lock.
 */
import { ExtentFlags, type BlockExtent } from '../../block/block-device.js';
import { subclusterKind, type L2Entry } from '../format/index.js';
import type { ImageCore } from './core.js';

/** Most guest clusters one `blockStatus` call looks at. */
export const MAX_STATUS_CLUSTERS = 65536;

type Kind = 'data' | 'zero' | 'unallocated';

interface Segment {
  from: number;
  to: number;
  kind: Kind;
}

/** The extents of `[offset, offset + length)` (length > 0, within the disk). */
export async function guestBlockStatus(core: ImageCore, offset: number, length: number): Promise<BlockExtent[]> {
  const cs = core.g.clusterSize;
  const limit = (Math.floor(offset / cs) + MAX_STATUS_CLUSTERS) * cs;
  const segments = await scan(core, offset, Math.min(offset + length, limit));
  const extents: BlockExtent[] = [];
  const push = (extent: BlockExtent): void => pushExtent(extents, extent);
  for (const segment of segments) {
    const length = segment.to - segment.from;
    if (segment.kind === 'data') pushExtent(extents, { offset: segment.from, length, flags: 0, depth: 1 });
    else if (segment.kind === 'zero') pushExtent(extents, { offset: segment.from, length, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 1 });
    else if (!(await fromBacking(core, segment, push))) break;
  }
  return extents;
}

/** Appends `extent`, merged into the last one when they have the same flags and depth. */
function pushExtent(extents: BlockExtent[], extent: BlockExtent): void {
  const last = extents[extents.length - 1];
  if (last !== undefined && last.flags === extent.flags && last.depth === extent.depth) last.length += extent.length;
  else extents.push(extent);
}

/**
 * Reports an unallocated segment from the backing file. Returns false when the backing file
 * described less than the segment (the reply must end there).
 */
async function fromBacking(core: ImageCore, segment: Segment, push: (extent: BlockExtent) => void): Promise<boolean> {
  const backing = core.backing;
  const backed = backing === undefined ? segment.from : Math.min(segment.to, Math.max(segment.from, backing.size));
  if (backing !== undefined && backed > segment.from) {
    const extents = await backing.blockStatus(segment.from, backed - segment.from);
    let end = segment.from;
    for (const extent of extents) {
      push({ offset: extent.offset, length: extent.length, flags: extent.flags, depth: backingDepth(extent) });
      end = extent.offset + extent.length;
    }
    if (end < backed) return false;
  }
  if (backed < segment.to) push({ offset: backed, length: segment.to - backed, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 0 });
  return true;
}

/** Depth seen from this image of an extent of the backing file. */
function backingDepth(extent: BlockExtent): number {
  if (extent.depth === undefined) return (extent.flags & ExtentFlags.HOLE) !== 0 ? 0 : 2; // a device without layers
  return extent.depth === 0 ? 0 : extent.depth + 1;
}

/** The guest range `[offset, end)` as merged segments of one kind each. */
async function scan(core: ImageCore, offset: number, end: number): Promise<Segment[]> {
  const { g, map } = core;
  const cs = g.clusterSize;
  const segments: Segment[] = [];
  for (let position = offset; position < end; ) {
    const cluster = Math.floor(position / cs);
    const count = Math.min(Math.floor((end - 1) / cs) - cluster + 1, g.l2Entries - (cluster % g.l2Entries));
    const entries = await map.entries(cluster, count);
    for (let i = 0; i < count; i++) {
      const start = (cluster + i) * cs;
      addCluster(core, entries[i]!, start, Math.max(position, start), Math.min(end, start + cs), segments);
    }
    position = (cluster + count) * cs;
  }
  return segments;
}

/** Appends a segment, merged into the last one when it continues it with the same kind. */
function addSegment(segments: Segment[], from: number, to: number, kind: Kind): void {
  const last = segments[segments.length - 1];
  if (last !== undefined && last.kind === kind && last.to === from) last.to = to;
  else segments.push({ from, to, kind });
}

function addCluster(core: ImageCore, entry: L2Entry, start: number, from: number, to: number, segments: Segment[]): void {
  if (entry.kind === 'compressed') return addSegment(segments, from, to, 'data');
  if (entry.kind === 'zero') return addSegment(segments, from, to, 'zero');
  if (entry.subclusters === undefined) return addSegment(segments, from, to, entry.kind === 'normal' ? 'data' : 'unallocated');
  const ss = core.g.subclusterSize;
  for (let s = Math.floor((from - start) / ss); start + s * ss < to; s++) {
    const kind = subclusterKind(entry, s);
    addSegment(segments, Math.max(from, start + s * ss), Math.min(to, start + (s + 1) * ss), kind === 'zero' || kind === 'unallocated' ? kind : 'data');
  }
}
