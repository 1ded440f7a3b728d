/**
 * The node descriptions of QEMU's query replies: `BlockDeviceInfo` (query-named-block-nodes,
 * the `inserted` member of query-block) and `BlockDirtyInfo` (each bitmap).
 */
import type { DirtyBitmap } from '../../bitmap/index.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import type { BlockNode } from '../graph/block-node.js';

/** A bitmap as QEMU's `BlockDirtyInfo` describes it. */
export function bitmapInfo(bitmap: DirtyBitmap): JsonObject {
  return {
    // QEMU omits the name of an anonymous bitmap (block-copy's, copy-before-write's).
    ...(bitmap.name !== undefined ? { name: bitmap.name } : {}),
    // While a job holds the bitmap, its successor records (block/dirty-bitmap.c).
    recording: bitmap.enabled || (bitmap.successor?.enabled ?? false),
    persistent: bitmap.persistent,
    busy: bitmap.busy,
    granularity: bitmap.granularity,
    count: bitmap.inconsistent ? 0 : bitmap.count(),
    ...(bitmap.inconsistent ? { inconsistent: true } : {}),
  };
}

/** Backing files below `node`, as QEMU's `backing_file_depth`. */
function backingDepth(node: BlockNode): number {
  const backing = node.child('backing');
  return backing === undefined ? 0 : 1 + backingDepth(backing.node);
}

/** `BlockDeviceInfo` of a node. */
export function nodeInfo(node: BlockNode): JsonObject {
  const bitmaps = node.listedBitmaps();
  const extra = node.describe();
  const image: JsonObject = {
    'virtual-size': node.size,
    filename: node.filename,
    format: node.driver,
    'dirty-flag': false,
  };
  if (typeof extra['cluster-size'] === 'number') image['cluster-size'] = extra['cluster-size'];
  if (typeof extra['backing-file'] === 'string') image['backing-filename'] = extra['backing-file'];
  return {
    file: node.filename,
    'node-name': node.name,
    ro: node.readOnly,
    drv: node.driver,
    ...(typeof extra['backing-file'] === 'string' ? { backing_file: extra['backing-file'] } : {}),
    backing_file_depth: backingDepth(node),
    encrypted: false,
    detect_zeroes: 'off',
    bps: 0,
    bps_rd: 0,
    bps_wr: 0,
    iops: 0,
    iops_rd: 0,
    iops_wr: 0,
    image,
    // Newest first: QEMU puts each new bitmap at the head of the node's list.
    ...(bitmaps.length > 0 ? { 'dirty-bitmaps': bitmaps.map(bitmapInfo) } : {}),
    cache: { writeback: true, direct: false, 'no-flush': false },
    write_threshold: 0,
  };
}
