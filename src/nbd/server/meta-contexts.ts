/**
 * Metadata contexts (proto.md "Metadata querying"; QEMU docs/interop/nbd.rst): the names an
 * export offers, how NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT queries select them,
 * and the extents of each context for NBD_CMD_BLOCK_STATUS.
 */
import { type DirtyBitmap } from '../../bitmap/index.js';
import { ExtentFlags, type BlockDevice, type BlockExtent } from '../../block/block-device.js';
import { IoError } from '../../errors.js';
import {
  BASE_ALLOCATION,
  NBD_STATE_DIRTY,
  QEMU_ALLOCATION_DEPTH,
  QEMU_DIRTY_BITMAP_PREFIX,
  type StatusDescriptor,
} from '../protocol/index.js';

/** Where a context's flags come from. */
export type ContextSource =
  | { kind: 'allocation' }
  | { kind: 'depth' }
  | { kind: 'bitmap'; bitmap: DirtyBitmap };

/** A context an export offers. */
export interface MetaContext {
  name: string;
  source: ContextSource;
}

/** A context selected by NBD_OPT_SET_META_CONTEXT, with the id this connection gave it. */
export interface SelectedContext extends MetaContext {
  id: number;
}

/**
 * The contexts of an export, in the order QEMU lists them: `base:allocation`,
 * `qemu:allocation-depth` (when offered), then one `qemu:dirty-bitmap:NAME` per bitmap.
 */
export function exportContexts(bitmaps: readonly DirtyBitmap[], allocationDepth: boolean): MetaContext[] {
  const contexts: MetaContext[] = [{ name: BASE_ALLOCATION, source: { kind: 'allocation' } }];
  if (allocationDepth) contexts.push({ name: QEMU_ALLOCATION_DEPTH, source: { kind: 'depth' } });
  for (const bitmap of bitmaps) contexts.push({ name: `${QEMU_DIRTY_BITMAP_PREFIX}${bitmap.name ?? ''}`, source: { kind: 'bitmap', bitmap } });
  return contexts;
}

/**
 * Queries that LIST_META_CONTEXT treats as wildcards: an empty leaf name lists a namespace
 * (proto.md "Metadata querying": `base:` MUST be supported as a wildcard), and QEMU also lists
 * every bitmap for `qemu:dirty-bitmap:` (nbd.rst). SET_META_CONTEXT has no wildcards.
 */
const LIST_WILDCARDS: readonly string[] = ['base:', 'qemu:', QEMU_DIRTY_BITMAP_PREFIX];

/**
 * The contexts NBD_OPT_LIST_META_CONTEXT answers: all of them without queries, else those that
 * some query names exactly or through a wildcard. Unknown namespaces and names match nothing
 * (the spec says to ignore them). Export order, no duplicates.
 */
export function listContexts(contexts: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  if (queries.length === 0) return [...contexts];
  return contexts.filter((c) => queries.some((q) => q === c.name || (LIST_WILDCARDS.includes(q) && c.name.startsWith(q))));
}

/** The contexts NBD_OPT_SET_META_CONTEXT selects: exact names only. Export order, no duplicates. */
export function setContexts(contexts: readonly MetaContext[], queries: readonly string[]): MetaContext[] {
  return contexts.filter((c) => queries.includes(c.name));
}

/** Limits on the work behind one block status reply. */
export interface ExtentLimits {
  /** Most descriptors in the reply (at least 1). */
  maxExtents: number;
  /** Most `blockStatus` calls to the device. */
  maxDeviceCalls: number;
}

/**
 * The descriptors of `[offset, offset + length)` (length > 0, within the device) for one
 * context: consecutive, non-empty, within the range, adjacent equal values merged (as QEMU
 * does, so maps read the same as qemu-nbd's). They may cover less than the range when a limit
 * is reached. Device errors propagate.
 */
export async function contextExtents(
  source: ContextSource,
  device: BlockDevice,
  offset: number,
  length: number,
  limits: ExtentLimits,
): Promise<StatusDescriptor[]> {
  switch (source.kind) {
    case 'allocation':
      return deviceExtents(device, offset, length, limits, (e) => e.flags & (ExtentFlags.HOLE | ExtentFlags.ZERO));
    case 'depth':
      return deviceExtents(device, offset, length, limits, (e) => e.depth ?? ((e.flags & ExtentFlags.HOLE) !== 0 ? 0 : 1));
    case 'bitmap':
      return bitmapExtents(source.bitmap, offset, length, limits.maxExtents);
    default: {
      const never: never = source;
      throw new Error(`unreachable context source ${String(never)}`);
    }
  }
}

/** Appends a run, merging it into the last one when the values are equal. False when full. */
function addRun(runs: StatusDescriptor[], length: number, flags: number, maxExtents: number): boolean {
  const last = runs[runs.length - 1];
  if (last !== undefined && last.flags === flags) {
    last.length += length;
    return true;
  }
  if (runs.length >= maxExtents) return false;
  runs.push({ length, flags });
  return true;
}

async function deviceExtents(
  device: BlockDevice,
  offset: number,
  length: number,
  limits: ExtentLimits,
  valueOf: (extent: BlockExtent) => number,
): Promise<StatusDescriptor[]> {
  const action = `get block status of ${length} bytes at ${offset}`;
  const end = offset + length;
  const runs: StatusDescriptor[] = [];
  let position = offset;
  for (let calls = 0; position < end && calls < limits.maxDeviceCalls; calls++) {
    const extents = await device.blockStatus(position, end - position);
    if (extents.length === 0) throw new IoError(action, 'the device described no extent', 'EIO');
    for (const extent of extents) {
      // The BlockDevice contract: contiguous, non-empty, within the range asked for.
      if (extent.offset !== position || !(extent.length > 0) || !Number.isSafeInteger(extent.length)) {
        throw new IoError(action, `the device described an extent ${extent.offset}+${extent.length} where ${position} was expected`, 'EIO');
      }
      const size = Math.min(extent.length, end - position);
      if (!addRun(runs, size, valueOf(extent) >>> 0, limits.maxExtents)) return runs;
      position += size;
      if (position >= end) break;
    }
  }
  return runs;
}

function bitmapExtents(bitmap: DirtyBitmap, offset: number, length: number, maxExtents: number): StatusDescriptor[] {
  const runs: StatusDescriptor[] = [];
  for (const run of bitmap.extents(offset, length)) {
    if (!addRun(runs, run.length, run.dirty ? NBD_STATE_DIRTY : 0, maxExtents)) break;
  }
  return runs;
}
