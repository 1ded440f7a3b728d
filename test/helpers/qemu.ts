/**
 * Test-only: starts `qemu-system-x86_64` as a child process with a QMP socket, and a minimal QMP
 * client for it (request/response by id, events collected). Used by end-to-end tests until the
 * real QMP client of `src/qmp/` exists.
 *
 * QEMU is never daemonized: it stays our child, and `kill()` ends it by pid and removes the
 * scratch folder that holds its socket. Call `kill()` in an `after`/`finally` hook.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnWatched } from './child.js';

/** An asynchronous event QEMU sent (`{"event": ..., "data": ..., "timestamp": ...}`). */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

/** A QMP error reply (`{"error": {"class": ..., "desc": ...}}`). */
export class QmpError extends Error {
  readonly errorClass: string;
  readonly desc: string;

  constructor(command: string, errorClass: string, desc: string) {
    super(`QMP ${command} failed: ${errorClass}: ${desc}`);
    this.name = 'QmpError';
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/** A running QEMU and its QMP connection (capabilities already negotiated). */
export interface QemuInstance {
  /** Process id of the QEMU child. */
  readonly pid: number;
  /** A scratch folder, removed by `kill()`: the QMP socket lives here, tests may add files. */
  readonly dir: string;
  /** Events received so far, in order. */
  readonly events: QmpEvent[];
  /** Runs a QMP command; resolves with its `return` value, rejects with a {@link QmpError}. */
  qmp<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T>;
  /** Runs an HMP command line through `human-monitor-command`; resolves with its text output. */
  hmp(commandLine: string): Promise<string>;
  /** What QEMU printed on stdout and stderr so far (qemu-io output goes there). */
  output(): string;
  /** Ends QEMU (SIGTERM, SIGKILL after 5 s, or `signal` at once) and removes `dir`. Idempotent. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Options of {@link startQemu}. */
export interface StartQemuOptions {
  /** The QEMU binary. Default `qemu-system-x86_64` from `$PATH`. */
  binary?: string;
  /** How long to wait for the QMP socket and for each reply, in ms. Default 30 000. */
  timeoutMs?: number;
  /** A folder to use instead of a fresh one (it is still removed by `kill()`). */
  dir?: string;
}


/**
 * Starts QEMU with `args` plus `-qmp unix:DIR/qmp.sock,server=on,wait=off`, connects, and sends
 * `qmp_capabilities`. `args` is everything else, e.g.
 * `['-M', 'none', '-nodefaults', '-display', 'none', '-blockdev', 'driver=qcow2,...']`.
 */
export async function startQemu(args: string[], options: StartQemuOptions = {}): Promise<QemuInstance> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'bitback-qemu-')));
  const socketPath = join(dir, 'qmp.sock');
  const proc = spawnWatched(options.binary ?? 'qemu-system-x86_64', [...args, '-qmp', `unix:${socketPath},server=on,wait=off`]);

  let socket: Socket | undefined;
  let killed = false;
  const kill = async (signal?: NodeJS.Signals): Promise<void> => {
    if (killed) return;
    killed = true;
    socket?.destroy();
    await proc.terminate(signal);
    await rm(dir, { recursive: true, force: true });
  };

  try {
    socket = await connectWhenReady(socketPath, timeoutMs, proc.exited, proc.output);
    const client = new QmpConnection(socket, timeoutMs);
    await client.greeting;
    await client.execute('qmp_capabilities');
    return {
      pid: proc.child.pid!,
      dir,
      events: client.events,
      qmp: (command, commandArgs) => client.execute(command, commandArgs) as Promise<never>,
      hmp: async (commandLine) => (await client.execute('human-monitor-command', { 'command-line': commandLine })) as string,
      output: proc.output,
      kill,
    };
  } catch (e) {
    await kill('SIGKILL');
    throw e;
  }
}

/** Connects to QEMU's QMP socket, retrying while QEMU starts up. */
async function connectWhenReady(path: string, timeoutMs: number, hasExited: () => boolean, output: () => string): Promise<Socket> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (hasExited()) throw new Error(`QEMU exited before its QMP socket was ready:\n${output()}`);
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const s = connect(path);
        s.once('connect', () => {
          s.off('error', reject);
          resolve(s);
        });
        s.once('error', reject);
      });
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`QMP socket ${path} not ready after ${timeoutMs} ms: ${String(e)}\n${output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

interface Pending {
  command: string;
  resolve: (value: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** JSON lines over the socket: replies matched by `id`, events collected. */
class QmpConnection {
  readonly events: QmpEvent[] = [];
  readonly greeting: Promise<void>;
  #buffer = '';
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #onGreeting: (() => void) | undefined;
  #greetingFailed: ((e: Error) => void) | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly timeoutMs: number,
  ) {
    this.greeting = new Promise((resolve, reject) => {
      this.#onGreeting = resolve;
      this.#greetingFailed = reject;
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.#feed(chunk));
    socket.on('close', () => this.#failAll(new Error('QMP connection closed')));
    socket.on('error', (e) => this.#failAll(e));
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`QMP ${command}: no reply within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.#pending.set(id, { command, resolve, reject, timer });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args === undefined ? {} : { arguments: args }), id })}\n`);
    });
  }

  #feed(chunk: string): void {
    this.#buffer += chunk;
    for (let nl = this.#buffer.indexOf('\n'); nl >= 0; nl = this.#buffer.indexOf('\n')) {
      const line = this.#buffer.slice(0, nl).trim();
      this.#buffer = this.#buffer.slice(nl + 1);
      if (line !== '') this.#message(JSON.parse(line) as Record<string, unknown>);
    }
  }

  #message(msg: Record<string, unknown>): void {
    if ('QMP' in msg) {
      this.#onGreeting?.();
      return;
    }
    if ('event' in msg) {
      this.events.push(msg as unknown as QmpEvent);
      return;
    }
    const pending = typeof msg.id === 'number' ? this.#pending.get(msg.id) : undefined;
    if (pending === undefined) return;
    this.#pending.delete(msg.id as number);
    clearTimeout(pending.timer);
    if ('error' in msg) {
      const error = msg.error as { class?: string; desc?: string };
      pending.reject(new QmpError(pending.command, error.class ?? 'GenericError', error.desc ?? ''));
    } else {
      pending.resolve(msg.return);
    }
  }

  #failAll(e: Error): void {
    this.#greetingFailed?.(e);
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      this.#pending.delete(id);
      pending.reject(e);
    }
  }
}
