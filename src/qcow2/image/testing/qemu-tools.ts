/**
 * Test-only: running `qemu-img` and `qemu-io` against images, for the qcow2 tests. Not part of
 * the public API. Every process started here runs to completion (no daemons).
 */
import { execFile } from 'node:child_process';

/** The outcome of a peer program. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `program` with `args` and resolves with its exit code and output (never rejects on a non-zero exit). */
export function run(program: string, args: readonly string[]): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(program, args, { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error !== null && typeof error.code !== 'number') return reject(error);
      resolve({ code: error === null ? 0 : (error.code as number), stdout, stderr });
    });
  });
}

/** Runs `qemu-img`; rejects with its output when it exits non-zero. */
export async function qemuImg(...args: string[]): Promise<string> {
  const result = await run('qemu-img', args);
  if (result.code !== 0) throw new Error(`qemu-img ${args.join(' ')} exited ${result.code}: ${result.stdout}${result.stderr}`);
  return result.stdout;
}

/** What `qemu-img check --output=json` found. */
export interface CheckReport {
  checkErrors: number;
  corruptions: number;
  leaks: number;
  /** The whole report, for messages. */
  text: string;
}

/** Runs `qemu-img check --output=json` on a qcow2 image. */
export async function checkImage(path: string): Promise<CheckReport> {
  const result = await run('qemu-img', ['check', '--output=json', '-f', 'qcow2', path]);
  let report: Record<string, unknown>;
  try {
    report = JSON.parse(result.stdout) as Record<string, unknown>;
  } catch {
    throw new Error(`qemu-img check ${path} exited ${result.code} without a JSON report: ${result.stdout}${result.stderr}`);
  }
  const count = (key: string): number => (typeof report[key] === 'number' ? (report[key] as number) : 0);
  return { checkErrors: count('check-errors'), corruptions: count('corruptions'), leaks: count('leaks'), text: result.stdout };
}

/**
 * Compares two images' contents with `qemu-img compare`; resolves with undefined when they are
 * identical, else with its message ("Content mismatch at offset ...").
 */
export async function compareImages(a: string, formatA: string, b: string, formatB: string): Promise<string | undefined> {
  const result = await run('qemu-img', ['compare', '-f', formatA, '-F', formatB, a, b]);
  if (result.code === 0) return undefined;
  if (result.code === 1) return result.stdout.trim() || 'images differ';
  throw new Error(`qemu-img compare ${a} ${b} failed (${result.code}): ${result.stdout}${result.stderr}`);
}

/**
 * Runs `qemu-io` commands (`write -P 0x5a 0 64k`, `write -z 0 1M`, `discard 0 64k`) on an
 * image, in order, in one process. Rejects when qemu-io reports a failure.
 */
export async function qemuIo(path: string, commands: readonly string[], format = 'qcow2'): Promise<string> {
  const args = ['-f', format];
  for (const command of commands) args.push('-c', command);
  args.push(path);
  const result = await run('qemu-io', args);
  const text = result.stdout + result.stderr;
  if (result.code !== 0 || /failed|error|Pattern verification/i.test(text)) {
    throw new Error(`qemu-io on ${path} failed (${result.code}): ${text.slice(0, 2000)}`);
  }
  return text;
}
