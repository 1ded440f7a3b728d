/**
 * bitback's engine: a storage daemon with QEMU's block-layer model (a graph of named nodes with
 * dirty bitmaps, jobs, exports), controlled over QMP with QEMU 7.2's commands, texts and events.
 * `bitback daemon` puts it behind a QMP socket; offline backups and tests drive it in-process
 * (`connectInProcess(engine.qmp)`): the same commands either way.
 */
import { InvalidArgumentError, NotFoundError } from '../errors.js';
import type { JsonObject } from '../qmp/protocol/messages.js';
import { QmpServer, type QmpServerOptions } from '../qmp/server/qmp-server.js';
import type { QmpHandler } from '../qmp/server/dispatcher.js';
import type { QmpArgsOf, QmpArgsSchema } from '../qmp/server/schema.js';
import type { BlockDriver, BlockdevRef, OpenContext } from './drivers/driver.js';
import { BUILTIN_DRIVERS } from './drivers/index.js';
import { BlockNode } from './graph/block-node.js';
import type { Edge } from './graph/edge.js';
import { NodeGraph } from './graph/node-graph.js';
import { JobManager } from './jobs/job-manager.js';
import type { Job } from './jobs/job.js';
import { toQmpError } from './qemu-errors.js';

/** Options of {@link Engine}. */
export interface EngineOptions extends Omit<QmpServerOptions, 'dispatcher'> {
  /** Called after `quit` has been answered (the daemon exits). */
  onQuit?: () => void;
}

/** QEMU's longest node name: 31 bytes (block.c, `bdrv_assign_node_name`). */
const MAX_NODE_NAME = 31;

/** The engine; see the module comment. */
export class Engine {
  readonly graph = new NodeGraph();
  readonly qmp: QmpServer;
  /** The jobs (backup, mirror, commit), with QEMU's job model and events. */
  readonly jobs: JobManager;
  readonly #drivers = new Map<string, BlockDriver>();
  readonly #closers: Array<() => Promise<void>> = [];
  readonly #pausedByDrain: Job[] = [];
  /**
   * QEMU's op blockers: nodes a job uses in a way that forbids other jobs and deletion, with the
   * reason QEMU gives ("block device is in use by block job: backup").
   */
  readonly blockers = new Map<BlockNode, string>();
  #closed: Promise<void> | undefined;

  constructor(options: EngineOptions = {}) {
    this.qmp = new QmpServer(options);
    for (const driver of BUILTIN_DRIVERS) this.addDriver(driver);
    this.jobs = new JobManager({ emit: (event, data) => this.emit(event, data) });
    // As in QEMU, a drained section pauses every job and waits until it sends no requests.
    this.graph.addDrainParticipant({
      quiesce: async () => {
        const jobs = this.jobs.jobs;
        for (const job of jobs) job.pause();
        this.#pausedByDrain.push(...jobs);
        await Promise.all(jobs.map((job) => job.whenIdle()));
      },
      release: () => {
        for (const job of this.#pausedByDrain.splice(0)) job.resume();
      },
    });
  }

  /** Makes a driver available to `blockdev-add`. */
  addDriver(driver: BlockDriver): void {
    this.#drivers.set(driver.name, driver);
  }

  /** The driver names `blockdev-add` accepts. */
  get driverNames(): string[] {
    return [...this.#drivers.keys()];
  }

  /**
   * Registers a QMP command whose handler may throw engine errors: a `BitbackError`'s reason
   * (QEMU's text) becomes the GenericError's `desc`.
   */
  register<const S extends QmpArgsSchema>(name: string, handler: QmpHandler<QmpArgsOf<S>>, schema: S): void {
    this.qmp.register(
      name,
      async (args, context) => {
        try {
          return await handler(args, context);
        } catch (e) {
          throw toQmpError(e);
        }
      },
      schema,
    );
  }

  /** Emits a QMP event to every monitor (with QEMU's timestamp). */
  emit(event: string, data?: JsonObject): void {
    this.qmp.emit(event, data);
  }

  /**
   * Starts a job created inside a drained section: as in QEMU, it pauses at once and runs when
   * the section ends (its events: created, running, paused, running).
   */
  async startInDrain(job: Job): Promise<void> {
    this.jobs.start(job);
    job.pause();
    this.#pausedByDrain.push(job);
    await job.whenIdle();
  }

  /** Runs `close` when the engine closes (exports, servers, jobs), before the nodes close. */
  onClose(close: () => Promise<void>): void {
    this.#closers.push(close);
  }

  /**
   * Opens a node as `blockdev-add` does: children first (inline ones become implicit nodes
   * named `#blockNNN`), then the node's driver. On failure nothing is left behind.
   * `monitorOwned: false` makes even a named node implicit: it goes away with its last parent
   * and `blockdev-del` refuses it (QEMU's overlays of `blockdev-snapshot-sync`).
   *
   * @throws InvalidArgumentError with QEMU's texts ("'node-name' must be specified for the root
   *   node", "Invalid node-name: 'x'", "Duplicate nodes with node-name='x'", "Could not open ...");
   *   NotFoundError for an unknown child node
   */
  async addNode(options: JsonObject, parent?: { readOnly: boolean; unmap: boolean }, ownership: { monitorOwned?: boolean } = {}): Promise<BlockNode> {
    const action = 'add block node';
    const driverName = options.driver;
    const driver = typeof driverName === 'string' ? this.#drivers.get(driverName) : undefined;
    if (driver === undefined) throw new InvalidArgumentError(action, `Parameter 'driver' does not accept value '${String(driverName)}'`);
    const given = options['node-name'];
    let name: string;
    if (typeof given === 'string') {
      checkNodeName(given);
      name = given;
    } else if (parent !== undefined) {
      name = this.graph.implicitName();
    } else {
      throw new InvalidArgumentError(action, "'node-name' must be specified for the root node");
    }
    if (this.graph.get(name) !== undefined) throw new InvalidArgumentError(action, `Duplicate nodes with node-name='${name}'`);
    const readOnly = typeof options['read-only'] === 'boolean' ? options['read-only'] : (parent?.readOnly ?? false);
    // Inline children inherit read-only and discard from their parent, as in QEMU.
    const unmap = options.discard === 'unmap' || (options.discard === undefined && (parent?.unmap ?? false));
    // Inline children are never owned by the monitor, named or not (QEMU deletes them with their parent).
    const implicit = ownership.monitorOwned === false || parent !== undefined || typeof given !== 'string';
    const node = new BlockNode({ name, driver: driver.name, readOnly, implicit, options, unmap });
    const context: OpenContext = {
      graph: this.graph,
      node,
      readOnly,
      child: (role: string, ref: BlockdevRef): Promise<Edge> => this.#attachChild(node, role, ref, { readOnly, unmap }),
    };
    try {
      node.setDriver(await driver.open(options, context));
    } catch (e) {
      await this.#dropChildren(node);
      throw e;
    }
    if (this.graph.get(name) !== undefined) {
      // An inline child took the name meanwhile.
      await node.close();
      await this.#dropChildren(node);
      throw new InvalidArgumentError(action, `Duplicate nodes with node-name='${name}'`);
    }
    this.graph.add(node);
    return node;
  }

  /**
   * Deletes a node as `blockdev-del` does. @throws NotFoundError / InvalidArgumentError with
   * QEMU's texts when it does not exist, is implicit, or is in use
   */
  async deleteNode(name: string): Promise<void> {
    const node = this.graph.get(name);
    if (node === undefined) throw new NotFoundError('delete node', `Failed to find node with node-name='${name}'`);
    this.checkNotBlocked(node);
    // QEMU's order and texts (blockdev.c qmp_blockdev_del): a backend (export, job) first, then
    // a node using it as backing, then ownership, then any other parent.
    const parents = [...node.parents];
    if (parents.some((e) => !e.parent.isNode)) throw new InvalidArgumentError('delete node', `Node ${name} is in use`);
    const backingOf = parents.find((e) => e.role === 'backing');
    if (backingOf !== undefined) throw new InvalidArgumentError('delete node', `Node '${name}' is busy: node is used as backing hd of '${backingOf.parent.parentName}'`);
    if (node.implicit) throw new InvalidArgumentError('delete node', `Node ${name} is not owned by the monitor`);
    if (parents.length > 0) throw new InvalidArgumentError('delete node', `Block device ${name} is in use`);
    await this.graph.remove(node);
  }

  /** @throws InvalidArgumentError "Node 'x' is busy: ..." when a job blocks `node` */
  checkNotBlocked(node: BlockNode): void {
    const reason = this.blockers.get(node);
    if (reason !== undefined) throw new InvalidArgumentError('use node', `Node '${node.name}' is busy: ${reason}`);
  }

  /** Stops exports and jobs, closes every node (storing persistent bitmaps) and the QMP server. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      await this.jobs.cancelAll().catch(() => undefined);
      for (const close of this.#closers.splice(0).reverse()) await close().catch(() => undefined);
      await this.qmp.close();
      await this.graph.close();
    })();
    return this.#closed;
  }

  async #attachChild(node: BlockNode, role: string, ref: BlockdevRef, inherited: { readOnly: boolean; unmap: boolean }): Promise<Edge> {
    const child = typeof ref === 'string' ? this.graph.require(ref) : await this.addNode(ref, inherited);
    return node.attachChild(role, child);
  }

  async #dropChildren(node: BlockNode): Promise<void> {
    for (const edge of node.children.splice(0)) {
      const child = edge.node;
      child.detachParent(edge);
      if (child.implicit && child.parents.size === 0 && this.graph.get(child.name) === child) await this.graph.remove(child);
    }
  }
}

/** QEMU's node-name rules (util/id.c `id_wellformed`, block.c). @throws InvalidArgumentError */
export function checkNodeName(name: string): void {
  if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(name)) throw new InvalidArgumentError('add block node', `Invalid node-name: '${name}'`);
  if (Buffer.byteLength(name) > MAX_NODE_NAME) throw new InvalidArgumentError('add block node', 'Node name too long');
}
