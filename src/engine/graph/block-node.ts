/**
 * A node of the engine's block graph (QEMU's `BlockDriverState`): a driver instance with a
 * name, the edges to its children, the edges from its parents, and its dirty bitmaps.
 *
 * A node is a `BlockDevice`. Its requests go to the driver's device, which is built over the
 * node's child edges; writes, zero-writes and trims that pass through the node are recorded in
 * the node's enabled bitmaps when they finish (also when they fail part-way), as QEMU's
 * `bdrv_co_write_req_finish` does.
 */
import type { DirtyBitmap } from '../../bitmap/index.js';
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { DirtyTrackingFilter } from '../../block/filters/dirty-tracking-filter.js';
import { checkRange } from '../../block/range.js';
import { NotSupportedError, ReadOnlyError } from '../../errors.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import { Edge, type EdgeParent } from './edge.js';
import { MemoryNodeBitmaps, type NodeBitmaps } from './node-bitmaps.js';
import { changeChecked, refreshQuietly } from './permissions.js';

/** What a driver hands its node once it has opened. */
export interface DriverInstance {
  /** Does the node's I/O; built over the node's child edges. Closed with the node. */
  device: BlockDevice;
  /** The node's bitmaps; default: transient bitmaps in memory. */
  bitmaps?: NodeBitmaps;
  /** The `file` QEMU reports in query replies (a path, a `json:{...}` name, an NBD URI). */
  filename: string;
  /** Extra members for `query-named-block-nodes` (e.g. `image` details); may be computed late. */
  describe?: () => JsonObject;
  /**
   * Where a backing node can be set later (a qcow2 node added with `backing: null`); absent when
   * the node cannot take one, or already has one.
   */
  backingSlot?: { set(device: BlockDevice | undefined): void; readonly target: BlockDevice | undefined };
  /**
   * Opens the driver again over the same children, after the node's device was closed (used
   * to change an image offline while the node stays in the graph, e.g. an internal snapshot).
   */
  reopen?: () => Promise<DriverInstance>;
}

/** How a node is made. */
export interface BlockNodeInit {
  /** The node name (given, or generated `#blockNNN` for an implicit node). */
  name: string;
  /** The driver name, as in `blockdev-add` (`qcow2`, `file`, `copy-before-write`, ...). */
  driver: string;
  readOnly: boolean;
  /** Created implicitly (an inline child of `blockdev-add`); deleted with its last parent. */
  implicit: boolean;
  /** The options it was added with, for query replies. */
  options: JsonObject;
  /**
   * Discard requests reach the driver (`discard: unmap`). Otherwise (QEMU's default, `ignore`)
   * a trim does nothing at all: it is not passed down and no bitmap records it, as in QEMU.
   */
  unmap: boolean;
}

/** A named node; see the module comment. */
export class BlockNode implements BlockDevice, EdgeParent {
  readonly name: string;
  readonly driver: string;
  readonly implicit: boolean;
  readonly options: JsonObject;
  readonly unmap: boolean;
  readonly isNode = true;
  /** Edges to this node's children, in the order they were attached. */
  readonly children: Edge[] = [];
  /** Edges from the node's parents (nodes and backends) to it. */
  readonly parents = new Set<Edge>();
  #readOnly: boolean;
  #instance: DriverInstance | undefined;
  #io: BlockDevice | undefined;
  #memoryBitmaps: MemoryNodeBitmaps | undefined;
  #bitmaps: NodeBitmaps | undefined;
  readonly #anonymous = new Set<DirtyBitmap>();
  /** Named and anonymous bitmaps, oldest first, for {@link listedBitmaps}. */
  #listOrder: DirtyBitmap[] = [];

  constructor(init: BlockNodeInit) {
    this.name = init.name;
    this.driver = init.driver;
    this.#readOnly = init.readOnly;
    this.implicit = init.implicit;
    this.options = init.options;
    this.unmap = init.unmap;
  }

  /** Opened read-only, or made read-only since (a node that became a backing file). */
  get readOnly(): boolean {
    return this.#readOnly;
  }

  /**
   * Makes the node refuse writes from now on, as QEMU reopens a node read-only when it becomes
   * an overlay's backing file. The driver stays as it was opened (its bitmaps are still stored).
   */
  makeReadOnly(): void {
    this.#readOnly = true;
  }

  get parentName(): string {
    return this.name;
  }

  /**
   * Makes `child` a child of this node in `role`; returns the edge, which the driver builds on.
   * @throws PermissionConflictError (permissions.ts) when the edge's permissions conflict with
   *   another user of `child`; nothing is attached then
   */
  attachChild(role: string, child: BlockNode): Edge {
    let edge: Edge | undefined;
    changeChecked(
      () => {
        edge = child.attachParent(this, role);
        this.children.push(edge);
      },
      () => {
        child.parents.delete(edge!);
        this.children.splice(this.children.indexOf(edge!), 1);
      },
      () => [this],
    );
    return edge!;
  }

  /** The child edge in `role`, if any. */
  child(role: string): Edge | undefined {
    return this.children.find((e) => e.role === role);
  }

  /** Records a new parent of this node (a node's child edge, or a backend's root edge). */
  attachParent(parent: EdgeParent, role: string): Edge {
    const edge = new Edge(parent, role, this);
    this.parents.add(edge);
    return edge;
  }

  /** Forgets a parent edge of this node (and the permissions it held). */
  detachParent(edge: Edge): void {
    this.parents.delete(edge);
    refreshQuietly([this]);
  }

  /**
   * Closes the node's driver, runs `change` (on the closed image files), and opens the driver
   * again. The caller holds a drained section. Transient bitmaps are kept across it; a driver
   * without `reopen` cannot do this.
   * @throws NotSupportedError when the driver cannot reopen
   */
  async reopenAround<T>(change: () => Promise<T>): Promise<T> {
    const reopen = this.#opened().reopen;
    if (reopen === undefined) throw new NotSupportedError(`reopen node '${this.name}'`, `driver '${this.driver}' cannot be reopened`);
    const transient = this.bitmaps.bitmaps.filter((b) => !b.persistent).map((b) => ({ name: b.name!, copy: b.copy(), granularity: b.granularity, enabled: b.enabled }));
    await this.#io?.close();
    let result: T;
    try {
      result = await change();
    } finally {
      this.setDriver(await reopen());
      for (const t of transient) {
        const bitmap = await this.bitmaps.add(t.name, { granularity: t.granularity, persistent: false, disabled: !t.enabled });
        bitmap.merge(t.copy);
      }
    }
    return result;
  }

  /** Hands the node its opened driver, before any I/O (and again after a reopen). */
  setDriver(instance: DriverInstance): void {
    this.#instance = instance;
    if (instance.bitmaps !== undefined) {
      this.#bitmaps = instance.bitmaps;
      this.#io = instance.device;
    } else {
      this.#memoryBitmaps = new MemoryNodeBitmaps(this.name, instance.device.size);
      this.#bitmaps = this.#memoryBitmaps;
      this.#io = new DirtyTrackingFilter(instance.device, [this.#memoryBitmaps], { closeInner: true });
    }
  }

  /**
   * Lists an anonymous bitmap on this node, as QEMU lists the bitmaps that block-copy and the
   * copy-before-write filter create on their nodes: in query replies only (never found by name;
   * whoever made it sets its bits). Remove it with {@link removeAnonymousBitmap}.
   */
  addAnonymousBitmap(bitmap: DirtyBitmap): void {
    this.#syncListOrder();
    this.#anonymous.add(bitmap);
    this.#listOrder.push(bitmap);
  }

  /** Stops listing an anonymous bitmap. */
  removeAnonymousBitmap(bitmap: DirtyBitmap): void {
    this.#anonymous.delete(bitmap);
    this.#listOrder = this.#listOrder.filter((b) => b !== bitmap);
  }

  /** Every bitmap of the node, named and anonymous, newest first (QEMU's order in query replies). */
  listedBitmaps(): DirtyBitmap[] {
    this.#syncListOrder();
    return [...this.#listOrder].reverse();
  }

  /** Appends named bitmaps made since the last call to the creation order; drops removed ones. */
  #syncListOrder(): void {
    const named = this.#bitmaps?.bitmaps ?? [];
    const listed = new Set(this.#listOrder);
    for (const b of named) if (!listed.has(b)) this.#listOrder.push(b);
    this.#listOrder = this.#listOrder.filter((b) => this.#anonymous.has(b) || named.includes(b));
  }

  /** The node's bitmaps. */
  get bitmaps(): NodeBitmaps {
    return this.#bitmaps ?? this.#opened().bitmaps!;
  }

  /** What QEMU reports as the node's `file`. */
  get filename(): string {
    return this.#opened().filename;
  }

  /** Extra members for query replies. */
  describe(): JsonObject {
    return this.#opened().describe?.() ?? {};
  }

  /** Where a backing node can be set later, if the node can take one now (see {@link DriverInstance}). */
  get backingSlot(): DriverInstance['backingSlot'] {
    return this.#opened().backingSlot;
  }

  /** The driver's own device (under the node's dirty tracking), e.g. to reach driver features. */
  get device(): BlockDevice {
    return this.#opened().device;
  }

  get size(): number {
    return this.#device().size;
  }

  get capabilities(): BlockCapabilities {
    return this.#device().capabilities;
  }

  get blockSize(): BlockSizeConstraints {
    return this.#device().blockSize;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#device().read(offset, length);
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    if (this.#readOnly) return this.#refuse();
    return this.#device().write(offset, data, options);
  }

  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    if (this.#readOnly) return this.#refuse();
    return this.#device().writeZeroes(offset, length, options);
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    if (this.#readOnly) return this.#refuse();
    if (!this.unmap) {
      try {
        checkRange(`trim node '${this.name}'`, this.size, offset, length);
      } catch (e) {
        return Promise.reject(e);
      }
      return Promise.resolve();
    }
    return this.#device().trim(offset, length, options);
  }

  flush(): Promise<void> {
    return this.#device().flush();
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#device().blockStatus(offset, length);
  }

  /** Closes the driver (its files, sockets); the graph closes the children. */
  async close(): Promise<void> {
    await this.#io?.close();
  }

  #refuse(): Promise<never> {
    return Promise.reject(new ReadOnlyError(`write to node '${this.name}'`, 'Block node is read-only'));
  }

  #opened(): DriverInstance {
    if (this.#instance === undefined) throw new Error(`node '${this.name}' used before its driver opened`);
    return this.#instance;
  }

  #device(): BlockDevice {
    if (this.#io === undefined) throw new Error(`node '${this.name}' used before its driver opened`);
    return this.#io;
  }
}
