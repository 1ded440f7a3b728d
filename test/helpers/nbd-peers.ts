/**
 * Starting NBD servers for tests: qemu-nbd, nbdkit and `bitback serve`, each on a Unix socket in
 * a fresh folder, waited for until it accepts connections, and stopped by its pid (the folder is
 * removed). Use `stop()` in `after`/`finally`; it is idempotent.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BITBACK_MAIN } from './cli.js';
import { spawnWatched } from './child.js';

/** A running NBD server process. */
export interface NbdServerProcess {
  pid: number;
  /** Folder of the socket (removed by `stop`). */
  dir: string;
  /** The Unix socket path. */
  socket: string;
  /** `nbd+unix:///EXPORT?socket=PATH` for an export name (default ""). */
  uri(exportName?: string): string;
  /** What the process printed so far. */
  output(): string;
  /** Ends the process (SIGTERM, then SIGKILL after 5 s) and removes `dir`. */
  stop(): Promise<void>;
}


/**
 * Spawns `program args` where `args` may contain the placeholder `{socket}`, replaced by a socket
 * path in a fresh folder; resolves when the socket accepts a connection.
 */
export async function startNbdServer(program: string, args: string[], options: { timeoutMs?: number; dir?: string } = {}): Promise<NbdServerProcess> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'bitback-nbd-')));
  const socket = join(dir, 'nbd.sock');
  const proc = spawnWatched(program, args.map((a) => a.replaceAll('{socket}', socket)));
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    await proc.terminate();
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  try {
    for (;;) {
      if (proc.exited()) throw new Error(`${program} exited before its socket was ready:\n${proc.output()}`);
      if (await canConnect(socket)) break;
      if (Date.now() > deadline) throw new Error(`${program} did not listen on ${socket} in time:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    pid: proc.child.pid!,
    dir,
    socket,
    uri: (exportName = '') => `nbd+unix:///${encodeURIComponent(exportName)}?socket=${socket}`,
    output: proc.output,
    stop,
  };
}

function canConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * `qemu-nbd` serving `image` (persistent server: `-t`, so probing the socket does not end it).
 * `extra` are further qemu-nbd options, e.g. `['-r', '-B', 'b0', '-f', 'qcow2', '-e', '4']`.
 */
export function startQemuNbd(image: string, extra: string[] = []): Promise<NbdServerProcess> {
  return startNbdServer('qemu-nbd', ['-t', '-k', '{socket}', ...extra, image]);
}

/**
 * `nbdkit` in the foreground on a Unix socket: `args` are plugin, filters and parameters, e.g.
 * `['--filter=error', 'memory', '1G', 'error-rate=10%']`.
 */
export function startNbdkit(args: string[]): Promise<NbdServerProcess> {
  return startNbdServer('nbdkit', ['-f', '-U', '{socket}', ...args]);
}

/** `bitback serve --socket {socket} ARGS...` with the compiled CLI. */
export function startBitbackServe(args: string[]): Promise<NbdServerProcess> {
  return startNbdServer(process.execPath, [BITBACK_MAIN, 'serve', '--socket', '{socket}', ...args]);
}
