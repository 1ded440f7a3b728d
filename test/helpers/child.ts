import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Resolves once `child` printed `ready` on its standard output; rejects, with everything it
 * printed, if it exits first. For tests that kill a child at a moment when it is known to work.
 */
export function whenReady(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('ready')) resolve();
    });
    child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('exit', (code) => reject(new Error(`the child exited (${code}) before it was ready: ${output}`)));
  });
}

/** A child process whose output is kept (up to 1 MiB) and which can be ended by its pid. */
export interface WatchedProcess {
  child: ChildProcess;
  /** What it printed on stdout and stderr so far. */
  output(): string;
  /** True once it has exited (or failed to spawn). */
  exited(): boolean;
  /** Resolves when it has exited. */
  exit: Promise<void>;
  /**
   * Sends `signal` (default SIGTERM, then SIGKILL after 5 s) and waits for the exit. With an
   * explicit signal, only that one is sent.
   */
  terminate(signal?: NodeJS.Signals): Promise<void>;
}

const MAX_OUTPUT = 1 << 20;

/** Spawns `program args` with piped output, for tests that must stop what they start. */
export function spawnWatched(program: string, args: string[]): WatchedProcess {
  const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const collect = (chunk: Buffer): void => {
    if (output.length < MAX_OUTPUT) output += chunk.toString('utf8');
  };
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
    child.once('error', (e) => {
      exited = true;
      output += `\nspawn failed: ${e.message}`;
      resolve();
    });
  });
  const terminate = async (signal?: NodeJS.Signals): Promise<void> => {
    if (exited || child.pid === undefined) return;
    process.kill(child.pid, signal ?? 'SIGTERM');
    if (signal === undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exit, new Promise<void>((resolve) => (timer = setTimeout(resolve, 5000)))]);
      clearTimeout(timer);
      if (!exited) process.kill(child.pid, 'SIGKILL');
    }
    await exit;
  };
  return { child, output: () => output, exited: () => exited, exit, terminate };
}
