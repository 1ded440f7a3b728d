/**
 * Test-only: runs QEMU's tools (qemu-img, qemu-io) to make qcow2 images and to check them, so
 * that `checkQcow2` can be compared with `qemu-img check`. No shell: arguments are passed as
 * given. Every process is awaited; none outlives its call.
 */
import { run } from '../../image/testing/qemu-tools.js';

/** What a tool printed and how it exited. */
export interface ToolRun {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs `program` with `args`; resolves whatever the exit status (rejects only if it cannot start). */
export async function runTool(program: string, args: readonly string[]): Promise<ToolRun> {
  const { code, stdout, stderr } = await run(program, args);
  return { status: code, stdout, stderr };
}

/** Runs a tool and fails unless it exits 0. */
export async function mustRun(program: string, args: readonly string[]): Promise<string> {
  const run = await runTool(program, args);
  if (run.status !== 0) throw new Error(`${program} ${args.join(' ')} exited ${run.status}: ${run.stderr}${run.stdout}`);
  return run.stdout;
}

/** `qemu-img check` of a qcow2 image: its exit status, parsed JSON (when it printed some), human text. */
export interface QemuCheck {
  status: number;
  json: Record<string, unknown> | undefined;
  stderr: string;
}

/** Runs `qemu-img check -f qcow2 --output=json [extra] path`. */
export async function qemuImgCheckJson(path: string, extra: readonly string[] = []): Promise<QemuCheck> {
  const run = await runTool('qemu-img', ['check', '-f', 'qcow2', '--output=json', ...extra, path]);
  const start = run.stdout.indexOf('{');
  return { status: run.status, json: start < 0 ? undefined : (JSON.parse(run.stdout.slice(start)) as Record<string, unknown>), stderr: run.stderr };
}

/** Runs `qemu-img check -f qcow2 path` and returns its stdout (the human report). */
export async function qemuImgCheckHuman(path: string): Promise<ToolRun> {
  return runTool('qemu-img', ['check', '-f', 'qcow2', path]);
}

/** How to make an image with {@link makeQcow2}. */
export interface MakeImageOptions {
  /** Virtual size, e.g. '64M'. */
  size: string;
  /** `-o` options, e.g. `['cluster_size=4096', 'refcount_bits=1']`. */
  options?: string[];
  /** qemu-io commands run in order on the image, e.g. `'write -P 0x11 0 1M'`. */
  io?: string[];
  /** Internal snapshots to take after the writes, each followed by its own qemu-io commands. */
  snapshots?: Array<{ name: string; io?: string[] }>;
  /** Persistent bitmaps to add (enabled) before the writes. */
  bitmaps?: string[];
}

/** Makes a qcow2 image at `path` with qemu-img and qemu-io. */
export async function makeQcow2(path: string, o: MakeImageOptions): Promise<void> {
  const opts = o.options ?? [];
  await mustRun('qemu-img', ['create', '-q', '-f', 'qcow2', ...(opts.length > 0 ? ['-o', opts.join(',')] : []), path, o.size]);
  for (const name of o.bitmaps ?? []) await mustRun('qemu-img', ['bitmap', '-f', 'qcow2', '--add', path, name]);
  await qemuIo(path, o.io ?? []);
  for (const s of o.snapshots ?? []) {
    await mustRun('qemu-img', ['snapshot', '-c', s.name, path]);
    await qemuIo(path, s.io ?? []);
  }
}

/** Runs qemu-io commands on a qcow2 image (`-f qcow2`, so that bitmaps are loaded and dirtied). */
export async function qemuIo(path: string, commands: readonly string[]): Promise<void> {
  if (commands.length === 0) return;
  const out = await mustRun('qemu-io', ['-f', 'qcow2', ...commands.flatMap((c) => ['-c', c]), path]);
  if (/error|failed|mismatch/i.test(out)) throw new Error(`qemu-io ${commands.join('; ')}: ${out}`);
}

/** The guest contents of an image as raw bytes (`qemu-img convert -O raw`). */
export async function guestBytes(path: string, rawPath: string): Promise<void> {
  await mustRun('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', path, rawPath]);
}
