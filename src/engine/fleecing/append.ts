/**
 * Putting a copy-before-write filter above a node by code, as a backup job does (QEMU's
 * `bdrv_cbw_append` / `bdrv_cbw_drop`): the filter is opened over the source and the target,
 * then takes the source's place under every parent of the source (except the edges below the
 * filter itself, such as a fleecing image's backing edge to the source).
 */
import type { Engine } from '../engine.js';
import type { BlockNode } from '../graph/block-node.js';
import { CopyBeforeWriteFilter } from './copy-before-write-filter.js';

/** The filter device of a copy-before-write node, or undefined for any other node. */
export function copyBeforeWriteOf(node: BlockNode): CopyBeforeWriteFilter | undefined {
  const device = node.device;
  return device instanceof CopyBeforeWriteFilter ? device : undefined;
}

/** A filter put in place by {@link appendCopyBeforeWrite}. */
export interface AppendedFilter {
  /** The filter node (named `filterNodeName`, else `#blockNNN`); not owned by the monitor. */
  node: BlockNode;
  /** Its device: `filter.state` is the block-copy state a backup job copies with. */
  filter: CopyBeforeWriteFilter;
}

/**
 * Opens a copy-before-write node over `source` and `target` (every cluster to copy) and puts it
 * in `source`'s place, in a drained section.
 * @throws what opening throws (a read-only target: "Block node is read-only"), or
 *   PermissionConflictError when the source's parents conflict with the filter; nothing is left
 *   behind then
 */
export async function appendCopyBeforeWrite(engine: Engine, source: BlockNode, target: BlockNode, filterNodeName?: string): Promise<AppendedFilter> {
  const options = { driver: 'copy-before-write', ...(filterNodeName !== undefined ? { 'node-name': filterNodeName } : {}), file: source.name, target: target.name };
  const node = await engine.addNode(options, { readOnly: false, unmap: false }, { monitorOwned: false });
  try {
    await engine.graph.drained(() => engine.graph.replace(source, node));
  } catch (e) {
    await engine.graph.remove(node);
    throw e;
  }
  return { node, filter: copyBeforeWriteOf(node)! };
}

/**
 * Takes the filter out again: its parents go back to the node it filters, then it closes
 * (waiting for copies in flight) and leaves the graph.
 */
export async function dropCopyBeforeWrite(engine: Engine, node: BlockNode): Promise<void> {
  const source = node.child('file')?.node;
  await engine.graph.drained(async () => {
    if (source !== undefined) engine.graph.replace(node, source);
    await engine.graph.remove(node);
  });
}
