/**
 * The `copy-before-write` driver (QEMU 7.2 block/copy-before-write.c, qapi `BlockdevOptionsCbw`):
 * a filter over `file` (the source) that copies the old data of clusters to `target` before a
 * write through it changes them. Options: `file`, `target`, `bitmap` ({node, name}: only the
 * clusters dirty in that bitmap are copied and make up the snapshot view), `on-cbw-error`
 * (`break-guest-write`, the default, or `break-snapshot`), `cbw-timeout` (seconds, 0 = none).
 *
 * As in QEMU, the copy cluster size is the target's cluster size, at least 64 KiB; the copy
 * bitmap is an anonymous bitmap on the source node and the filter's `done` and `access`
 * bitmaps are anonymous bitmaps on the filter node (all listed by query-named-block-nodes).
 *
 * Permissions (QEMU's `cbw_child_perm`): the filter takes writes on the target and shares all
 * but resize; on the source it passes its users' permissions through, and as soon as the filter
 * has any user (a snapshot-access node, a job, a qemu-io command) it also reads consistently and
 * no longer shares writes: nobody else may then write the source ("Permission conflict on node
 * 'disk0': permissions 'write' are both required by ... and unshared by node 'cbw' ...").
 *
 * The filter's device is a {@link CopyBeforeWriteFilter}; `copyBeforeWriteOf(node)`
 * (fleecing/) returns it, e.g. for a backup job that shares its copy state.
 */
import { InvalidArgumentError } from '../../errors.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import { BlockCopyState, copyClusterSize } from '../fleecing/block-copy.js';
import { CopyBeforeWriteFilter, type OnCbwError } from '../fleecing/copy-before-write-filter.js';
import type { BlockNode } from '../graph/block-node.js';
import { ALL_PERMISSIONS, BlockPermission, type PermissionRule } from '../graph/permissions.js';
import { requiredChild, type BlockDriver } from './driver.js';

const { CONSISTENT_READ, WRITE, RESIZE } = BlockPermission;

/** The source child: pass-through, plus consistent read and no shared write once the filter is used. */
const sourceRule: PermissionRule = (node, perm, shared) =>
  node.parents.size === 0 ? { perm, shared } : { perm: perm | CONSISTENT_READ, shared: shared & ~(WRITE | RESIZE) };

/** The target child: writes, sharing all but resize. */
const targetRule: PermissionRule = () => ({ perm: WRITE, shared: ALL_PERMISSIONS & ~RESIZE });

/** Drivers whose cluster size is their child's (QEMU's `bdrv_get_info` goes through filters and raw). */
const FORWARDING_DRIVERS = new Set(['raw', 'blkdebug', 'copy-before-write', 'throttle', 'preallocate']);

/** The cluster size of `node` as `bdrv_get_info` finds it, or undefined. */
export function clusterSizeOf(node: BlockNode): number | undefined {
  for (let n: BlockNode | undefined = node; n !== undefined; ) {
    const size = n.describe()['cluster-size'];
    if (typeof size === 'number') return size;
    if (!FORWARDING_DRIVERS.has(n.driver)) return undefined;
    n = (n.child('file') ?? n.child('image'))?.node;
  }
  return undefined;
}

function fail(reason: string): never {
  throw new InvalidArgumentError('open copy-before-write node', reason);
}

export const copyBeforeWriteDriver: BlockDriver = {
  name: 'copy-before-write',
  async open(options, context) {
    const file = await context.child('file', requiredChild(options, 'file'));
    file.setRule(sourceRule);
    const target = await context.child('target', requiredChild(options, 'target'));
    target.setRule(targetRule);

    const ref = options.bitmap as JsonObject | undefined;
    let bitmap;
    if (ref !== undefined) {
      const owner = context.graph.get(String(ref.node));
      if (owner === undefined) fail(`Node '${String(ref.node)}' not found`);
      bitmap = owner.bitmaps.get(String(ref.name));
      if (bitmap === undefined) fail(`Dirty bitmap '${String(ref.name)}' not found`);
    }
    const onCbwError = (options['on-cbw-error'] ?? 'break-guest-write') as OnCbwError;
    const timeoutSeconds = typeof options['cbw-timeout'] === 'number' ? options['cbw-timeout'] : 0;

    let state: BlockCopyState;
    try {
      state = new BlockCopyState({ source: file, target, clusterSize: copyClusterSize(clusterSizeOf(target.node)), ...(bitmap !== undefined ? { bitmap } : {}) });
    } catch (e) {
      const reason = e instanceof InvalidArgumentError ? e.reason : String(e);
      fail(`Cannot create block-copy-state: Failed to merge bitmap '${bitmap?.name ?? ''}' to internal copy-bitmap: ${reason}`);
    }
    // QEMU 7.2 makes the copy bitmap on the source node, the done and access bitmaps on the filter.
    const sourceNode = file.node;
    const node = context.node;
    const filter = new CopyBeforeWriteFilter({
      name: node.name,
      file,
      target,
      state,
      onCbwError,
      timeoutMs: timeoutSeconds * 1000,
      onClose: () => {
        sourceNode.removeAnonymousBitmap(state.copyBitmap);
        node.removeAnonymousBitmap(filter.doneBitmap);
        node.removeAnonymousBitmap(filter.accessBitmap);
      },
    });
    sourceNode.addAnonymousBitmap(state.copyBitmap);
    node.addAnonymousBitmap(filter.doneBitmap);
    node.addAnonymousBitmap(filter.accessBitmap);
    return {
      device: filter,
      filename: sourceNode.filename,
      describe: () => {
        const cluster = clusterSizeOf(file.node);
        return cluster === undefined ? {} : { 'cluster-size': cluster };
      },
    };
  },
};
