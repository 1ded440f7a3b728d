/**
 * QEMU's block permissions in the node graph, as far as they decide what a script sees: which
 * users of a node may write while another user forbids it.
 *
 * Each edge carries the permissions its parent holds on the child (`perm`) and those it lets
 * other users of the child hold (`shared`), as QEMU's `BdrvChild` does. A backend's root edge
 * holds what the backend asked for; a node's child edges are derived from the node's own
 * cumulative permissions (the union of its parents' `perm`, the intersection of their
 * `shared`) by the edge's rule: the driver's (copy-before-write unshares writes on its source
 * while anyone uses the filter), else the default of the edge's role (block.c
 * `bdrv_default_perms`: a backing file only passes consistent reads and shares writes when
 * every user of the overlay does; every other role passes the permissions through, as QEMU's
 * filters do).
 *
 * After each graph change (an edge attached or re-pointed, a rule or a backend's permissions
 * changed) the permissions of the nodes below are recomputed and checked; a conflict leaves
 * every edge as it was and throws QEMU's text:
 * - a user holds what another user of the same node does not share: "Permission conflict on
 *   node 'disk0': permissions 'write' are both required by an unnamed block device (uses node
 *   'disk0' as 'root' child) and unshared by node 'cbw' (uses node 'disk0' as 'file' child)."
 *   (block.c `bdrv_a_allow_b`, users in QEMU's order: newest parent first);
 * - someone would write to a read-only node: "Block node is read-only".
 *
 * Not modelled: format drivers' rules for their `file` child (QEMU's qcow2 takes write and
 * unshares write on its file; see {@link storageRule}), `write unchanged` users, inactive
 * nodes, and the image locks between processes (src/block/image-lock.ts).
 */
import { ALL_PERMISSIONS, BlockPermission, permissionNames, type ImagePermissions } from '../../block/image-permissions.js';
import { BitbackError } from '../../errors.js';
import type { BlockNode } from './block-node.js';
import type { Edge } from './edge.js';

export { ALL_PERMISSIONS, BlockPermission, type ImagePermissions };

const { CONSISTENT_READ, WRITE, WRITE_UNCHANGED, RESIZE } = BlockPermission;

/**
 * How a node derives the permissions of one of its child edges from its own cumulative
 * permissions (`perm`, `shared`: what the node's users hold and share). QEMU's
 * `bdrv_child_perm`.
 */
export type PermissionRule = (node: BlockNode, perm: number, shared: number) => ImagePermissions;

/** A filter's child: what the users of the filter hold and share (block.c `bdrv_filter_default_perms`). */
export const passThroughRule: PermissionRule = (_node, perm, shared) => ({ perm, shared });

/** A backing child (block.c `bdrv_default_perms_for_cow`): see the module comment. */
export const backingRule: PermissionRule = (_node, perm, shared) => ({
  perm: perm & CONSISTENT_READ,
  shared: ((shared & WRITE) !== 0 ? WRITE | RESIZE : 0) | CONSISTENT_READ | WRITE_UNCHANGED,
});

/**
 * A format driver's `file` child (block.c `bdrv_default_perms_for_storage` with metadata):
 * consistent reads always, writes and resizes unless the node is read-only, and never shares
 * writes or resizes. Offered for format drivers; bitback's qcow2 driver does not use it yet.
 */
export const storageRule: PermissionRule = (node, perm, shared) => ({
  perm: perm | CONSISTENT_READ | (node.readOnly ? 0 : WRITE | RESIZE),
  shared: shared & ~(WRITE | RESIZE),
});

/** The rule of an edge without its own: by role. */
function defaultRule(role: string): PermissionRule {
  return role === 'backing' ? backingRule : passThroughRule;
}

/** Two users of a node want what the other forbids, or someone would write a read-only node. */
export class PermissionConflictError extends BitbackError {
  constructor(reason: string) {
    super('BUSY', 'change the users of a node', reason);
  }
}

/** Who holds an edge, as QEMU's messages name it (`bdrv_child_user_desc`). */
function userOf(edge: Edge): string {
  return edge.parent.isNode ? `node '${edge.parent.parentName}'` : (edge.parent.userDescription ?? 'an unnamed block device');
}

/** The nodes at and below `roots`, each after every node of the set that is its parent. */
function topologicalOrder(roots: Iterable<BlockNode>): BlockNode[] {
  const set = new Set<BlockNode>();
  const visit = (node: BlockNode): void => {
    if (set.has(node)) return;
    set.add(node);
    for (const edge of node.children) visit(edge.node);
  };
  for (const root of roots) visit(root);
  const pending = new Map<BlockNode, number>();
  for (const node of set) pending.set(node, [...node.parents].filter((e) => e.parent.isNode && set.has(e.parent as unknown as BlockNode)).length);
  const order: BlockNode[] = [];
  const ready = [...set].filter((n) => pending.get(n) === 0);
  while (ready.length > 0) {
    const node = ready.shift()!;
    order.push(node);
    for (const edge of node.children) {
      const left = pending.get(edge.node)! - 1;
      pending.set(edge.node, left);
      if (left === 0) ready.push(edge.node);
    }
  }
  return order;
}

/** The union of the `perm` and the intersection of the `shared` of `node`'s parent edges. */
export function cumulativePermissions(node: BlockNode): ImagePermissions {
  let perm = 0;
  let shared = ALL_PERMISSIONS;
  for (const edge of node.parents) {
    perm |= edge.perm;
    shared &= edge.shared;
  }
  return { perm, shared };
}

/** QEMU's complaint about `node`'s users, if any (see the module comment). */
function conflictOn(node: BlockNode): string | undefined {
  const users = [...node.parents].reverse();
  if (node.readOnly && users.some((e) => (e.perm & (WRITE | WRITE_UNCHANGED)) !== 0)) return 'Block node is read-only';
  for (const a of users) {
    for (const b of users) {
      if (a === b) continue;
      const denied = b.perm & ~a.shared;
      if (denied === 0) continue;
      return (
        `Permission conflict on node '${node.name}': permissions '${permissionNames(denied)}' are both required by ` +
        `${userOf(b)} (uses node '${node.name}' as '${b.role}' child) and unshared by ${userOf(a)} (uses node '${node.name}' as '${a.role}' child).`
      );
    }
  }
  return undefined;
}

/**
 * Recomputes the permissions of every child edge at and below `roots` and checks every node
 * there. On a conflict every edge gets its permissions back and `PermissionConflictError`
 * is thrown; the caller undoes the graph change it made.
 */
export function refreshPermissions(roots: Iterable<BlockNode>): void {
  const saved = new Map<Edge, ImagePermissions>();
  const order = topologicalOrder(roots);
  for (const node of order) {
    const { perm, shared } = cumulativePermissions(node);
    for (const edge of node.children) {
      const next = (edge.rule ?? defaultRule(edge.role))(node, perm, shared);
      if (!saved.has(edge)) saved.set(edge, { perm: edge.perm, shared: edge.shared });
      edge.setPermissions(next);
    }
  }
  for (const node of order) {
    const conflict = conflictOn(node);
    if (conflict === undefined) continue;
    for (const [edge, old] of saved) edge.setPermissions(old);
    throw new PermissionConflictError(conflict);
  }
}

/**
 * Makes a graph change under the permission check: runs `change`, then refreshes the nodes at
 * and below `roots()`; on a conflict runs `undo`, refreshes again and rethrows.
 */
export function changeChecked(change: () => void, undo: () => void, roots: () => Iterable<BlockNode>): void {
  change();
  try {
    refreshPermissions(roots());
  } catch (e) {
    undo();
    refreshQuietly(roots());
    throw e;
  }
}

/** Recomputes after a change that only loosens (an edge gone); a conflict left by earlier changes is ignored. */
export function refreshQuietly(roots: Iterable<BlockNode>): void {
  try {
    refreshPermissions(roots);
  } catch {
    // Nothing was tightened; the graph stays as it was before.
  }
}
