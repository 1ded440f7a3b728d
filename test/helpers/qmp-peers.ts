/**
 * Test-only: the two QMP peers a differential test drives with one script — QEMU 7.2
 * (`qemu-system-x86_64 -M none`) and `bitback daemon` — behind one interface whose `run` never
 * throws for a QMP error but returns the outcome, so that both sides can be compared step by step.
 *
 * Each peer works in its own folder (`dir`); scripts write `$D` where a path goes, and each peer
 * substitutes its folder, so both work on their own copies of the same images.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, QmpError, type QmpEvent } from '../../src/qmp/index.js';
import { spawnWatched, type WatchedProcess } from './child.js';
import { BITBACK_MAIN } from './cli.js';

/** What one command gave: its return value or its error. */
export type QmpOutcome = { return: unknown } | { error: { class: string; desc: string } };

/** A peer driven by a script. */
export interface QmpPeer {
  /** `qemu` or `bitback`. */
  readonly kind: 'qemu' | 'bitback';
  /** The peer's own folder (its `$D`); removed by `stop`. */
  readonly dir: string;
  /** Runs a command with `$D` in string arguments replaced by `dir`. */
  run(command: string, args?: Record<string, unknown>): Promise<QmpOutcome>;
  /** Events received so far (names and data, without timestamps). */
  events(): Array<{ event: string; data?: unknown }>;
  /** What the process printed (qemu-io output goes there). */
  output(): string;
  /** Ends the process (quit, else SIGTERM, else SIGKILL) and removes `dir` unless `keepDir`. */
  stop(options?: { keepDir?: boolean }): Promise<void>;
}

/** Replaces `$D` in every string of `value` by `dir`. */
export function substituteDir<T>(value: T, dir: string): T {
  if (typeof value === 'string') return value.replaceAll('$D', dir) as T;
  if (Array.isArray(value)) return value.map((v) => substituteDir(v, dir)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteDir(v, dir)])) as T;
  }
  return value;
}

/** The inverse of {@link substituteDir}: `dir` in every string becomes `$D`, so that both peers' replies compare. */
function restoreDir<T>(value: T, dir: string): T {
  if (typeof value === 'string') return value.replaceAll(dir, '$D') as T;
  if (Array.isArray(value)) return value.map((v) => restoreDir(v, dir)) as T;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, restoreDir(v, dir)])) as T;
  }
  return value;
}

async function connectWhenReady(path: string, proc: WatchedProcess): Promise<QmpClient> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await QmpClient.connect(path, { timeoutMs: 30_000 });
    } catch (e) {
      if (proc.exited()) throw new Error(`the process exited before its QMP socket was ready:\n${proc.output()}`);
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 30));
    }
  }
}

/** Starts `program args` with a QMP socket at `DIR/qmp.sock` (`socketArgs` gives the arguments naming it). */
async function startPeer(kind: 'qemu' | 'bitback', program: string, args: (socket: string) => string[], dir?: string): Promise<QmpPeer> {
  const folder = dir ?? (await mkdtemp(join(tmpdir(), `bitback-${kind}-`)));
  const socket = join(folder, 'qmp.sock');
  const proc = spawnWatched(program, args(socket));
  let client: QmpClient;
  try {
    client = await connectWhenReady(socket, proc);
  } catch (e) {
    await proc.terminate('SIGKILL');
    await rm(folder, { recursive: true, force: true });
    throw e;
  }
  const events: QmpEvent[] = [];
  client.onEvent((e) => events.push(e));
  let stopped = false;
  return {
    kind,
    dir: folder,
    async run(command, commandArgs) {
      try {
        const value = await client.execute(command, commandArgs === undefined ? undefined : substituteDir(commandArgs, folder));
        return { return: restoreDir(value, folder) };
      } catch (e) {
        if (e instanceof QmpError) return { error: { class: e.errorClass, desc: e.desc.replaceAll(folder, '$D') } };
        throw e;
      }
    },
    events: () => events.map((e) => ({ event: e.event, ...(e.data !== undefined ? { data: e.data } : {}) })),
    output: proc.output,
    async stop(options = {}) {
      if (stopped) return;
      stopped = true;
      await client.execute('quit').catch(() => undefined);
      await client.close().catch(() => undefined);
      await proc.terminate();
      if (options.keepDir !== true) await rm(folder, { recursive: true, force: true });
    },
  };
}

/** QEMU without devices, as the engine is. */
export function startQemuPeer(dir?: string): Promise<QmpPeer> {
  return startPeer('qemu', 'qemu-system-x86_64', (socket) => ['-M', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${socket},server=on,wait=off`], dir);
}

/** `bitback daemon`, printing qemu-io output as QEMU does. */
export function startBitbackPeer(dir?: string): Promise<QmpPeer> {
  return startPeer('bitback', process.execPath, (socket) => [BITBACK_MAIN, 'daemon', '--qmp', `unix:${socket}`, '--qemu-io-log'], dir);
}

/** One step of a differential script: a command and its arguments (`$D` is the peer's folder). */
export type QmpStep = [command: string, args?: Record<string, unknown>];

/** What of a reply two peers must agree on (query replies reduced to what both define alike). */
export type QmpNormalizer = (command: string, outcome: QmpOutcome) => unknown;

/**
 * Runs `steps` on QEMU and on bitback, one step on each in turn, and asserts after each step
 * that the normalized replies are equal (naming the step that differs).
 */
export async function runOnBoth(qemu: QmpPeer, bitback: QmpPeer, steps: QmpStep[], normalize: QmpNormalizer): Promise<void> {
  for (const [i, [command, args]] of steps.entries()) {
    const theirs = normalize(command, await qemu.run(command, args));
    const ours = normalize(command, await bitback.run(command, args));
    assert.deepEqual(ours, theirs, `step ${i} ${command} ${JSON.stringify(args ?? {})}: bitback and QEMU differ`);
  }
}
