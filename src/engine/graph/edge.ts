/**
 * An edge of the node graph: a parent (a node or a backend) uses a child node in a role
 * (`file`, `backing`, `target`, `image`, `root`). QEMU calls this a `BdrvChild`.
 *
 * An edge is itself a `BlockDevice` that forwards every request to the node it points to *now*:
 * drivers and filters are built over edges, never over nodes, so that re-pointing an edge (a
 * filter inserted above a node "under every parent", an overlay taking a node's place) changes
 * where all later requests go without the parent noticing. `close` of an edge does nothing: an
 * edge owns no node.
 *
 * An edge also carries the block permissions its parent holds on the node and lets others hold
 * (permissions.ts).
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import type { BlockNode } from './block-node.js';
import { ALL_PERMISSIONS, changeChecked, type ImagePermissions, type PermissionRule } from './permissions.js';

/** Who uses a node through an edge. */
export interface EdgeParent {
  /** For messages and query replies: a node name, or a backend's description. */
  readonly parentName: string;
  /** The parent is a node (a backend otherwise). */
  readonly isNode: boolean;
  /** How QEMU's permission messages name a backend ("an unnamed block device"); nodes are "node 'NAME'". */
  readonly userDescription?: string;
}

/** One use of a node by a parent. */
export class Edge implements BlockDevice {
  readonly parent: EdgeParent;
  readonly role: string;
  #node: BlockNode;
  #perm = 0;
  #shared = ALL_PERMISSIONS;
  #rule: PermissionRule | undefined;

  /** Use {@link BlockNode.attachParent} to make edges: it keeps the child's parent set right. */
  constructor(parent: EdgeParent, role: string, node: BlockNode) {
    this.parent = parent;
    this.role = role;
    this.#node = node;
  }

  /** The node this edge points to now. */
  get node(): BlockNode {
    return this.#node;
  }

  /** Re-points the edge (the graph does this, keeping both nodes' parent sets right). */
  retarget(node: BlockNode): void {
    this.#node = node;
  }

  /** The block permissions (`BlockPermission` bits) the parent holds on the node. */
  get perm(): number {
    return this.#perm;
  }

  /** The permissions the parent lets other users of the node hold. */
  get shared(): number {
    return this.#shared;
  }

  /** The driver's rule for this edge's permissions; undefined: the default of its role. */
  get rule(): PermissionRule | undefined {
    return this.#rule;
  }

  /** Sets the permissions; only the permission refresh and backends call this. */
  setPermissions(p: ImagePermissions): void {
    this.#perm = p.perm;
    this.#shared = p.shared;
  }

  /**
   * Gives the edge its driver's permission rule (a driver calls this while it opens, once it has
   * its child) and applies it to the nodes below.
   * @throws PermissionConflictError with QEMU's text, leaving the rule as it was
   */
  setRule(rule: PermissionRule): void {
    const old = this.#rule;
    changeChecked(
      () => (this.#rule = rule),
      () => (this.#rule = old),
      () => [this.parent.isNode ? (this.parent as BlockNode) : this.#node],
    );
  }

  get size(): number {
    return this.#node.size;
  }

  get capabilities(): BlockCapabilities {
    return this.#node.capabilities;
  }

  get blockSize(): BlockSizeConstraints {
    return this.#node.blockSize;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#node.read(offset, length);
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.#node.write(offset, data, options);
  }

  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    return this.#node.writeZeroes(offset, length, options);
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.#node.trim(offset, length, options);
  }

  flush(): Promise<void> {
    return this.#node.flush();
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#node.blockStatus(offset, length);
  }

  /** Does nothing: the node belongs to the graph, not to the edge. */
  async close(): Promise<void> {}
}
