/**
 * A QMP server: greets like QEMU 7.2, negotiates capabilities, runs the commands registered on
 * its dispatcher (one at a time per monitor, replies in order), and broadcasts events to every
 * monitor that finished negotiation. Serves several monitors at once, on Unix sockets
 * (`listen`) or on any duplex stream (`handleConnection`).
 *
 * Built in: `qmp_capabilities`, `query-commands`, `query-version`. The engine registers the rest.
 */
import { createServer, type Server } from 'node:net';
import { type Duplex } from 'node:stream';
import { BitbackError } from '../../errors.js';
import { bindListener, type BoundListener } from '../../nbd/server/listen.js';
import { DEFAULT_MAX_DEPTH, DEFAULT_MAX_MESSAGE_BYTES, QMP_CAPABILITIES, QMP_CAPABILITIES_COMMAND, QmpText } from '../protocol/constants.js';
import { commandId, decodeCommand } from '../protocol/decode.js';
import { encodeError, encodeEvent, encodeGreeting, encodeReturn } from '../protocol/encode.js';
import { QmpError } from '../protocol/errors.js';
import { type JsonObject, type QmpEvent, type QmpVersionInfo } from '../protocol/messages.js';
import { QmpDispatcher, type QmpHandler } from './dispatcher.js';
import { errorBodyFor } from './error-reply.js';
import { QmpMonitor, type MonitorInput } from './monitor.js';
import { bitbackPackage } from './package-version.js';
import { qmpArray, qmpEnum, type QmpArgsOf, type QmpArgsSchema } from './schema.js';

/** Where an unexpected handler failure happened (see {@link QmpServerOptions.onError}). */
export interface QmpServerErrorInfo {
  monitorId: number;
  /** The command whose handler failed, or undefined when encoding a reply failed. */
  command: string | undefined;
}

/** Options of {@link QmpServer}. */
export interface QmpServerOptions {
  /** The QEMU version the server claims in its greeting and `query-version`. Default 7.2.0. */
  qemuVersion?: { major: number; minor: number; micro: number };
  /** The `package` text of the greeting and `query-version`. Default `bitback VERSION`. */
  package?: string;
  /** Capabilities offered in the greeting. Default `["oob"]` like QEMU 7.2. */
  capabilities?: readonly string[];
  /** Largest message accepted from a client, in bytes. Default 1 MiB. */
  maxMessageBytes?: number;
  /** Deepest nesting of `{`/`[` accepted from a client. Default 64. */
  maxDepth?: number;
  /** Reply and event bytes a client may leave unread before its monitor is closed. Default 16 MiB. */
  maxUnsentBytes?: number;
  /** Told about handler failures that are not bitback errors (the client got "internal error"). */
  onError?: (error: unknown, info: QmpServerErrorInfo) => void;
  /** The command table to use; a new one by default. Built-in commands are added to it. */
  dispatcher?: QmpDispatcher;
}

/** Where to listen: a Unix socket created with `mode` (default 0o600) before anyone can connect. */
export interface QmpListenOptions {
  path: string;
  mode?: number;
  /** Group owning the socket (name or id). */
  group?: string | number;
}

/** Default for {@link QmpServerOptions.maxUnsentBytes}. */
const DEFAULT_MAX_UNSENT_BYTES = 16 << 20;

/** A QMP server. */
export class QmpServer {
  /** The command table; `register` on the server is a shortcut. */
  readonly dispatcher: QmpDispatcher;
  /** The version reported by the greeting and `query-version`. */
  readonly version: QmpVersionInfo;
  readonly #capabilities: readonly string[];
  readonly #options: QmpServerOptions;
  readonly #monitors = new Map<number, QmpMonitor>();
  readonly #listeners: { server: Server; bound: BoundListener }[] = [];
  #nextMonitorId = 1;
  #closed = false;

  constructor(options: QmpServerOptions = {}) {
    this.#options = options;
    const qemu = options.qemuVersion ?? { major: 7, minor: 2, micro: 0 };
    this.version = { qemu: { micro: qemu.micro, minor: qemu.minor, major: qemu.major }, package: options.package ?? bitbackPackage() };
    this.#capabilities = [...(options.capabilities ?? QMP_CAPABILITIES)];
    this.dispatcher = options.dispatcher ?? new QmpDispatcher();
    this.#registerBuiltins();
  }

  /** Adds a command (see `QmpDispatcher.register`). */
  register<const S extends QmpArgsSchema>(name: string, handler: QmpHandler<QmpArgsOf<S>>, schema: S): this {
    this.dispatcher.register<S>(name, handler, schema);
    return this;
  }

  /** How many monitors are connected. */
  get monitorCount(): number {
    return this.#monitors.size;
  }

  /**
   * Serves QMP on `stream` (a socket, or one end of an in-process pair): sends the greeting at
   * once. The returned monitor's `closed` resolves when the connection ends.
   */
  handleConnection(stream: Duplex): QmpMonitor {
    const id = this.#nextMonitorId++;
    const greeting = encodeGreeting({ version: this.version, capabilities: [...this.#capabilities] });
    const monitor = new QmpMonitor(
      id,
      stream,
      greeting,
      {
        process: (m, input) => this.#process(m, input),
        fatalReply: (desc) => encodeError({ class: 'GenericError', desc }),
        closed: (m) => this.#monitors.delete(m.id),
      },
      {
        maxMessageBytes: this.#options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
        maxDepth: this.#options.maxDepth ?? DEFAULT_MAX_DEPTH,
        maxUnsentBytes: this.#options.maxUnsentBytes ?? DEFAULT_MAX_UNSENT_BYTES,
      },
    );
    if (this.#closed) monitor.close();
    else if (monitor.open) this.#monitors.set(id, monitor);
    return monitor;
  }

  /**
   * Listens on a Unix socket at `options.path` (created with mode 0o600 unless told otherwise;
   * a stale socket is replaced, a live one or another file is not). May be called more than once.
   *
   * @returns the absolute socket path
   * @throws BitbackError ALREADY_EXISTS, INVALID_ARGUMENT, IO_ERROR
   */
  async listen(options: QmpListenOptions): Promise<{ path: string }> {
    const action = `listen for QMP clients on ${options.path}`;
    if (this.#closed) throw new BitbackError('CLOSED', action, 'the server is closed');
    const server = createServer({ allowHalfOpen: true }, (socket) => this.handleConnection(socket));
    let bound: BoundListener;
    try {
      bound = await bindListener(server, { transport: 'unix', path: options.path, mode: options.mode ?? 0o600, group: options.group });
    } catch (e) {
      // Same failure, worded for QMP (the helper belongs to the NBD server).
      if (e instanceof BitbackError) throw new BitbackError(e.code, action, e.reason, { cause: e, retryable: e.retryable });
      throw e;
    }
    this.#listeners.push({ server, bound });
    if (bound.address.transport !== 'unix') throw new Error('unreachable: a Unix listener has a Unix address');
    return { path: bound.address.path };
  }

  /**
   * Sends event `event` with `data` (left out when undefined) and the current time to every
   * monitor that finished negotiation. Returns the event as sent.
   */
  emit(event: string, data?: JsonObject): QmpEvent {
    const message: QmpEvent = { event, timestamp: now() };
    if (data !== undefined) message.data = data;
    const bytes = encodeEvent(message);
    for (const monitor of this.#monitors.values()) monitor.sendEvent(bytes);
    return message;
  }

  /** Stops listening and closes every monitor. Commands in progress finish but are not answered. */
  async close(): Promise<void> {
    this.#closed = true;
    await Promise.all(this.#listeners.splice(0).map(({ bound }) => bound.close()));
    const monitors = [...this.#monitors.values()];
    for (const monitor of monitors) monitor.close();
    await Promise.all(monitors.map((m) => m.closed));
  }

  #registerBuiltins(): void {
    const d = this.dispatcher;
    // qapi/control.json: qmp_capabilities(enable?: [QMPCapability]); query-commands; query-version.
    d.register(QMP_CAPABILITIES_COMMAND, (args, ctx) => this.#negotiate(ctx.monitorId, args.enable ?? []), { '*enable': qmpArray(qmpEnum(['oob'])) });
    d.register('query-commands', () => d.names().map((name) => ({ name })), {});
    d.register('query-version', () => this.version, {});
  }

  #negotiate(monitorId: number, enable: readonly string[]): void {
    const monitor = this.#monitors.get(monitorId);
    if (monitor === undefined || monitor.negotiated) throw new QmpError('CommandNotFound', QmpText.negotiationComplete);
    for (const capability of enable) {
      // monitor/qmp.c qmp_caps_accept
      if (!this.#capabilities.includes(capability)) throw new QmpError('GenericError', `Capability '${capability}' not available`);
    }
    monitor.enabled = [...enable];
    monitor.negotiated = true;
  }

  /** The reply to one input of `monitor`, following qapi/qmp-dispatch.c and monitor/qmp.c. */
  async #process(monitor: QmpMonitor, input: Exclude<MonitorInput, { type: 'fatal' }>): Promise<Uint8Array> {
    if (input.type === 'malformed') return encodeError({ class: 'GenericError', desc: input.error.desc });
    const id = commandId(input.value);
    let command: string | undefined;
    let result: unknown;
    try {
      const decoded = decodeCommand(input.value, { allowOob: monitor.enabled.includes('oob') });
      command = decoded.execute;
      if (!monitor.negotiated && command !== QMP_CAPABILITIES_COMMAND) {
        throw new QmpError('CommandNotFound', QmpText.expectingCapabilities);
      }
      if (decoded.oob === true) {
        // No bitback command runs out of band; QEMU checks existence first.
        if (!this.dispatcher.has(command)) throw new QmpError('CommandNotFound', QmpText.commandNotFound(command));
        throw new QmpError('GenericError', QmpText.noOob(command));
      }
      result = await this.dispatcher.dispatch(command, decoded.arguments, { monitorId: monitor.id });
    } catch (e) {
      const { body, expected } = errorBodyFor(e);
      if (!expected) this.#report(e, monitor.id, command);
      return encodeError(body, id);
    }
    try {
      return encodeReturn(result, id);
    } catch (e) {
      this.#report(e, monitor.id, command);
      return encodeError({ class: 'GenericError', desc: QmpText.internalError }, id);
    }
  }

  #report(error: unknown, monitorId: number, command: string | undefined): void {
    try {
      this.#options.onError?.(error, { monitorId, command });
    } catch {
      // A failing reporter must not take the monitor down.
    }
  }
}

/** Wall-clock time as QEMU stamps events (`g_get_real_time`): seconds and microseconds. */
function now(): { seconds: number; microseconds: number } {
  const us = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return { seconds: Math.floor(us / 1e6), microseconds: us % 1e6 };
}
