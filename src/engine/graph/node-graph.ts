/**
 * The engine's block graph: nodes by name, the backends that use them, and the graph changes
 * QEMU makes (a filter inserted above a node under all its parents, an overlay taking a node's
 * place, a node deleted with its implicit children), plus drained sections in which no request
 * is in flight anywhere.
 */
import { InvalidArgumentError, NotFoundError } from '../../errors.js';
import { BlockBackend, type BackendPermissions, type DrainGate } from './backend.js';
import type { BlockNode } from './block-node.js';
import type { Edge } from './edge.js';
import { changeChecked } from './permissions.js';

/** Every child edge at and below `node`. */
function edgesBelow(node: BlockNode): Set<Edge> {
  const edges = new Set<Edge>();
  const visit = (n: BlockNode): void => {
    for (const edge of n.children) {
      if (edges.has(edge)) continue;
      edges.add(edge);
      visit(edge.node);
    }
  };
  visit(node);
  return edges;
}

/** See {@link NodeGraph.addDrainParticipant}. */
export interface DrainParticipant {
  quiesce(): Promise<void>;
  release(): void;
}

/** The graph; see the module comment. */
export class NodeGraph implements DrainGate {
  readonly #nodes = new Map<string, BlockNode>();
  readonly #backends = new Set<BlockBackend>();
  #implicitCounter = 0;
  #drainDepth = 0;
  readonly #participants = new Set<DrainParticipant>();
  #undrained: Promise<void> | undefined;
  #endDrain: (() => void) | undefined;
  #idleWaiters: Array<() => void> = [];

  /** Every node, in the order they were added. */
  get nodes(): BlockNode[] {
    return [...this.#nodes.values()];
  }

  /** The backends attached now. */
  get backends(): BlockBackend[] {
    return [...this.#backends];
  }

  /** The node named `name`, if any. */
  get(name: string): BlockNode | undefined {
    return this.#nodes.get(name);
  }

  /** The node named `name`. @throws NotFoundError naming it as QEMU does */
  require(name: string): BlockNode {
    const node = this.#nodes.get(name);
    if (node === undefined) throw new NotFoundError(`find node '${name}'`, `Cannot find device='${name}' nor node-name='${name}'`);
    return node;
  }

  /** A fresh name for an implicit node, in QEMU's form (`#block` and a number). */
  implicitName(): string {
    let name: string;
    do name = `#block${String(++this.#implicitCounter).padStart(3, '0')}`;
    while (this.#nodes.has(name));
    return name;
  }

  /** Adds an opened node. @throws InvalidArgumentError when the name is taken */
  add(node: BlockNode): void {
    if (this.#nodes.has(node.name)) throw new InvalidArgumentError(`add node '${node.name}'`, `Duplicate nodes with node-name='${node.name}'`);
    this.#nodes.set(node.name, node);
  }

  /**
   * Removes `node` from the graph and closes it, then removes each implicit child that no
   * other parent uses (recursively); explicitly added children stay. The caller has checked
   * that nothing uses `node`.
   */
  async remove(node: BlockNode): Promise<void> {
    this.#nodes.delete(node.name);
    await node.close();
    for (const edge of node.children) {
      const child = edge.node;
      child.detachParent(edge);
      if (child.implicit && child.parents.size === 0 && this.#nodes.get(child.name) === child) await this.remove(child);
    }
  }

  /** The nodes no other node uses as a child (backends do not count): QEMU's top-level nodes. */
  topLevel(): BlockNode[] {
    return this.nodes.filter((n) => ![...n.parents].some((e) => e.parent.isNode));
  }

  /**
   * Starts using `node` from outside the graph (an export, a job, a command), holding
   * `permissions` (default: none held, all shared; see permissions.ts).
   * @throws PermissionConflictError with QEMU's text when another user of the node forbids them
   */
  attachBackend(parentName: string, node: BlockNode, permissions?: BackendPermissions): BlockBackend {
    const backend = new BlockBackend(parentName, node, this, permissions);
    this.#backends.add(backend);
    return backend;
  }

  /**
   * Stops using a backend (waits for its requests in flight). An implicit node left without
   * parents goes away, as a QEMU node whose last reference drops.
   */
  async detachBackend(backend: BlockBackend): Promise<void> {
    this.#backends.delete(backend);
    const node = backend.node;
    await backend.close();
    if (node.implicit && node.parents.size === 0 && this.#nodes.get(node.name) === node) await this.remove(node);
  }

  /**
   * Points every parent edge of `from` at `to` instead, except the edges in `to`'s own subtree
   * (a filter's own child edge to `from`, a fleecing image's backing edge below the filter:
   * re-pointing those would make a loop; block.c `should_update_child`) and those `keep`
   * accepts. This is how a filter goes above a node under all its parents, and how an overlay
   * takes a node's place.
   * @throws PermissionConflictError when the users moved to `to` conflict there; nothing moves then
   */
  replace(from: BlockNode, to: BlockNode, keep: (parentName: string) => boolean = () => false): void {
    const below = edgesBelow(to);
    const moved = [...from.parents].filter((edge) => !below.has(edge) && !keep(edge.parent.parentName));
    const move = (edges: Edge[], a: BlockNode, b: BlockNode): void => {
      for (const edge of edges) {
        a.parents.delete(edge);
        edge.retarget(b);
        b.parents.add(edge);
      }
    };
    changeChecked(
      () => move(moved, from, to),
      () => move(moved, to, from),
      () => [from, to],
    );
  }

  /**
   * Runs `body` with no request in flight through any backend: new requests wait until it
   * returns (QEMU's drained section). Sections nest.
   */
  async drained<T>(body: () => Promise<T> | T): Promise<T> {
    const outermost = this.#drainDepth++ === 0;
    if (outermost) this.#undrained = new Promise<void>((resolve) => (this.#endDrain = resolve));
    const quiesced: DrainParticipant[] = [];
    try {
      if (outermost) {
        for (const p of this.#participants) {
          quiesced.push(p);
          await p.quiesce();
        }
      }
      while ([...this.#backends].some((b) => b.inFlight > 0)) await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
      return await body();
    } finally {
      for (const p of quiesced) p.release();
      if (--this.#drainDepth === 0) {
        this.#undrained = undefined;
        this.#endDrain?.();
      }
    }
  }

  /**
   * Adds something that must stop sending requests during drained sections (the engine's jobs:
   * QEMU pauses every job in a drain). `quiesce` is awaited at the start of each outermost
   * section, after new backend requests are held; `release` runs at its end.
   */
  addDrainParticipant(participant: DrainParticipant): void {
    this.#participants.add(participant);
  }

  whenUndrained(): Promise<void> | undefined {
    return this.#undrained;
  }

  backendIdle(): void {
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Detaches every backend and closes every node, parents before children. */
  async close(): Promise<void> {
    for (const b of [...this.#backends]) await this.detachBackend(b);
    for (;;) {
      const top = this.topLevel();
      if (top.length === 0) break;
      for (const node of top) if (this.#nodes.has(node.name)) await this.remove(node);
    }
  }
}
