/**
 * The NBD server: a set of exports, any number of listening sockets and client connections, and
 * a graceful shutdown. Protocol work is in negotiation.ts and transmission.ts; one connection's
 * I/O in connection.ts; binding sockets in listen.ts.
 */
import { createServer, Socket, type Server } from 'node:net';
import { type Duplex } from 'node:stream';
import { ClosedError, InvalidArgumentError, NotFoundError } from '../../errors.js';
import { BufferPool } from './buffer-pool.js';
import { Connection, type ConnectionHost } from './connection.js';
import { bindListener, type BoundListener } from './listen.js';
import { makeServedExport, type ServedExport } from './served-export.js';
import {
  resolveServerOptions,
  type NbdExport,
  type NbdListenAddress,
  type NbdListening,
  type NbdServerOptions,
  type NbdServerStats,
  type ResolvedServerOptions,
} from './types.js';

/** How long the server keeps free read buffers when no read takes one. */
const POOL_IDLE_MS = 5000;

/**
 * Serves `BlockDevice`s over NBD (fixed newstyle; structured replies, extended headers, meta
 * contexts `base:allocation`, `qemu:dirty-bitmap:NAME` and `qemu:allocation-depth`, STARTTLS).
 *
 * The server never closes the devices it serves: their owner closes them after
 * {@link removeExport} or {@link close} resolved (no request runs on them any more then).
 */
export class NbdServer {
  readonly #options: ResolvedServerOptions;
  readonly #exports = new Map<string, ServedExport>();
  readonly #connections = new Set<Connection>();
  readonly #attached = new Map<ServedExport, Set<Connection>>();
  readonly #listeners: Array<{ server: Server; bound: BoundListener | undefined }> = [];
  readonly #host: ConnectionHost;
  readonly #buffers: BufferPool;
  #closing: Promise<void> | undefined;

  /** @throws InvalidArgumentError for out-of-range options */
  constructor(options: NbdServerOptions = {}) {
    this.#options = resolveServerOptions(options);
    // Free read buffers kept: as many bytes as one connection may have in flight (nbdcopy's four
    // connections of 64 reads of 256 KiB use 64 MiB), dropped after a while without reads.
    const buffers = new BufferPool(this.#options.maxInFlightBytes, POOL_IDLE_MS);
    this.#buffers = buffers;
    const server = this;
    this.#host = {
      options: this.#options,
      get shuttingDown() {
        return server.#closing !== undefined;
      },
      findExport: (name) => this.#exports.get(name),
      listExports: () => [...this.#exports.values()],
      attach: (connection, exp) => {
        if (this.#exports.get(exp.name) !== exp) return false;
        let set = this.#attached.get(exp);
        if (set === undefined) this.#attached.set(exp, (set = new Set()));
        set.add(connection);
        return true;
      },
      buffers,
      detach: (connection) => {
        this.#connections.delete(connection);
        for (const [exp, set] of this.#attached) {
          if (set.delete(connection) && set.size === 0) this.#attached.delete(exp);
        }
      },
      report: (e, context) => {
        try {
          this.#options.onError(e, context);
        } catch {
          // a logger that throws must not break the server
        }
      },
    };
  }

  /**
   * Adds an export; clients can select it at once.
   * @throws InvalidArgumentError for a name already served or a malformed export;
   *   BitmapStateError for an inconsistent bitmap; ClosedError once the server is closing
   */
  addExport(e: NbdExport): void {
    if (this.#closing !== undefined) throw new ClosedError(`add NBD export '${e.name}'`, 'the server is closing');
    const exp = makeServedExport(e);
    if (this.#exports.has(exp.name)) throw new InvalidArgumentError(`add NBD export '${exp.name}'`, 'an export of that name exists');
    this.#exports.set(exp.name, exp);
  }

  /**
   * Removes an export: later clients cannot select it; connections using it answer the requests
   * they already received (new ones get NBD_ESHUTDOWN) and are then closed. Resolves when they
   * are closed and no request runs on the device any more.
   * @throws NotFoundError when no export has that name
   */
  async removeExport(name: string): Promise<void> {
    const exp = this.#exports.get(name);
    if (exp === undefined) throw new NotFoundError(`remove NBD export '${name}'`, 'there is no export of that name');
    this.#exports.delete(name);
    await Promise.all([...(this.#attached.get(exp) ?? [])].map((c) => c.shutdown()));
  }

  /**
   * Listens on a Unix socket or TCP address (may be called more than once). Resolves with the
   * address actually bound (the absolute socket path; the real port when `port` is 0).
   * @throws BitbackError ALREADY_EXISTS when the socket path exists (and is not a stale
   *   socket), IoError when binding fails, ClosedError once the server is closing
   */
  async listen(address: NbdListenAddress): Promise<NbdListening> {
    if (this.#closing !== undefined) throw new ClosedError('listen for NBD clients', 'the server is closing');
    const server = createServer({ allowHalfOpen: false }, (socket) => this.handleConnection(socket));
    server.on('error', (e) => this.#host.report(e, 'NBD listener'));
    const entry: { server: Server; bound: BoundListener | undefined } = { server, bound: undefined };
    this.#listeners.push(entry);
    try {
      entry.bound = await bindListener(server, address);
    } catch (e) {
      this.#listeners.splice(this.#listeners.indexOf(entry), 1);
      throw e;
    }
    if (this.#closing !== undefined) await entry.bound.close();
    return entry.bound.address;
  }

  /**
   * Serves a socket connected elsewhere (an accepted socket, one end of an in-process pair).
   * The server owns it from now on. Once the server is closing, the socket is destroyed.
   */
  handleConnection(socket: Duplex): void {
    if (this.#closing !== undefined) {
      socket.destroy();
      return;
    }
    if (socket instanceof Socket) socket.setNoDelay(true);
    const connection = Connection.start(this.#host, socket);
    if (connection.phase !== 'closed') this.#connections.add(connection);
  }

  /** Connections open now (negotiating or transmitting). */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** What the server holds now: requests and bytes in flight, waiting and unsent (diagnostics). */
  stats(): NbdServerStats {
    const totals: NbdServerStats = { connections: 0, requestsInFlight: 0, bytesInFlight: 0, requestsWaiting: 0, bytesUnsent: 0, pausedConnections: 0, maxConnectionBytes: 0 };
    for (const c of this.#connections) {
      const s = c.stats;
      totals.connections++;
      totals.requestsInFlight += s.requestsInFlight;
      totals.bytesInFlight += s.bytesInFlight;
      totals.requestsWaiting += s.requestsWaiting;
      totals.bytesUnsent += s.bytesUnsent;
      if (s.paused) totals.pausedConnections++;
      totals.maxConnectionBytes = Math.max(totals.maxConnectionBytes, s.bytesInFlight + s.bytesWaiting + s.bytesUnsent);
    }
    return totals;
  }

  /**
   * Stops listening (the Unix socket is removed), answers further options with
   * NBD_REP_ERR_SHUTDOWN and further requests with NBD_ESHUTDOWN, lets every request in flight
   * finish and its reply be written, then closes every connection (a client that reads none of
   * its replies is dropped after 30 s). Idempotent.
   */
  close(): Promise<void> {
    if (this.#closing === undefined) this.#closing = this.#shutdown();
    return this.#closing;
  }

  async #shutdown(): Promise<void> {
    // Draining starts at once: a request that arrives from now on gets NBD_ESHUTDOWN.
    const draining = [...this.#connections].filter((c) => c.phase === 'transmission').map((c) => c.shutdown());
    await Promise.all(this.#listeners.map((l) => l.bound?.close()));
    await Promise.all(draining);
    // Connections still negotiating were answered NBD_REP_ERR_SHUTDOWN meanwhile; now they go.
    const rest = [...this.#connections];
    for (const c of rest) c.terminate();
    await Promise.all(rest.map((c) => c.done));
    await Promise.all(this.#listeners.map((l) => new Promise<void>((resolve) => (l.server.listening ? l.server.close(() => resolve()) : resolve()))));
    this.#buffers.clear();
  }
}
