/**
 * A user of a node from outside the graph (QEMU's `BlockBackend`): an NBD export, a job, a
 * `qemu-io` command. Its requests enter the graph here, which is where a drained section holds
 * new requests back (see {@link NodeGraph.drained}). Its root edge is re-pointed like any other
 * when a filter or an overlay takes the node's place.
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { ClosedError } from '../../errors.js';
import type { BlockNode } from './block-node.js';
import type { Edge, EdgeParent } from './edge.js';
import { ALL_PERMISSIONS, changeChecked, type ImagePermissions } from './permissions.js';

/** The block permissions a backend holds and shares (`BlockPermission` bits), and its name in messages. */
export interface BackendPermissions {
  /** Held; default none. */
  perm?: number;
  /** Shared with other users; default all. */
  shared?: number;
  /** Default "an unnamed block device" (exports, qemu-io); a job is "backup job 'ID'". */
  description?: string;
}

/** What a backend needs of the graph: the drain gate. */
export interface DrainGate {
  /** Resolves at once outside a drained section, else when it ends. */
  whenUndrained(): Promise<void> | undefined;
  /** Called when a backend's last request in flight has settled. */
  backendIdle(): void;
}

/** A backend; see the module comment. Make one with `NodeGraph.attachBackend`. */
export class BlockBackend implements BlockDevice, EdgeParent {
  /** What uses the node, for messages: "export 'vda'", "job 'backup0'". */
  readonly parentName: string;
  readonly isNode = false;
  /**
   * Requests go on in drained sections (a job's backend, as QEMU's
   * `blk_set_disable_request_queuing`): the drain pauses the job itself instead.
   */
  ignoresDrain = false;
  /** How QEMU's permission messages name this user ("an unnamed block device", "backup job 'j'"). */
  readonly userDescription: string;
  readonly root: Edge;
  readonly #gate: DrainGate;
  #inFlight = 0;
  #detached = false;
  #wakeIdle: (() => void) | undefined;

  /**
   * Attaches to `node` holding `permissions` (default: none held, all shared).
   * @throws PermissionConflictError (permissions.ts) with QEMU's text when another user of the
   *   node does not share what the backend holds; nothing is attached then
   */
  constructor(parentName: string, node: BlockNode, gate: DrainGate, permissions: BackendPermissions = {}) {
    this.parentName = parentName;
    this.userDescription = permissions.description ?? 'an unnamed block device';
    this.#gate = gate;
    let root: Edge | undefined;
    changeChecked(
      () => {
        root = node.attachParent(this, 'root');
        root.setPermissions({ perm: permissions.perm ?? 0, shared: permissions.shared ?? ALL_PERMISSIONS });
      },
      () => node.parents.delete(root!),
      () => [node],
    );
    this.root = root!;
  }

  /**
   * Holds and shares other permissions from now on (as qemu-io takes `write` before a writing
   * command). @throws PermissionConflictError with QEMU's text, keeping the old ones
   */
  setPermissions(permissions: ImagePermissions): void {
    const old = { perm: this.root.perm, shared: this.root.shared };
    changeChecked(
      () => this.root.setPermissions(permissions),
      () => this.root.setPermissions(old),
      () => [this.root.node],
    );
  }

  /** The node the backend uses now. */
  get node(): BlockNode {
    return this.root.node;
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.#inFlight;
  }

  get size(): number {
    return this.root.size;
  }

  get capabilities(): BlockCapabilities {
    return this.root.capabilities;
  }

  get blockSize(): BlockSizeConstraints {
    return this.root.blockSize;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#run('read', () => this.root.read(offset, length));
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.#run('write', () => this.root.write(offset, data, options));
  }

  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    return this.#run('write zeroes', () => this.root.writeZeroes(offset, length, options));
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.#run('trim', () => this.root.trim(offset, length, options));
  }

  flush(): Promise<void> {
    return this.#run('flush', () => this.root.flush());
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#run('block status', () => this.root.blockStatus(offset, length));
  }

  /** Detaches from the node once the requests in flight have settled. The node stays open. */
  async close(): Promise<void> {
    if (this.#detached) return;
    this.#detached = true;
    if (this.#inFlight > 0) await new Promise<void>((resolve) => (this.#wakeIdle = resolve));
    this.root.node.detachParent(this.root);
  }

  async #run<T>(verb: string, request: () => Promise<T>): Promise<T> {
    if (this.#detached) throw new ClosedError(`${verb} through ${this.parentName}`);
    const held = this.ignoresDrain ? undefined : this.#gate.whenUndrained();
    if (held !== undefined) await held;
    if (this.#detached) throw new ClosedError(`${verb} through ${this.parentName}`);
    this.#inFlight++;
    try {
      return await request();
    } finally {
      if (--this.#inFlight === 0) {
        this.#wakeIdle?.();
        this.#gate.backendIdle();
      }
    }
  }
}
