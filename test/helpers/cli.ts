/**
 * Runs the compiled `bitback` CLI as a child process, the way users and scripts run it.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** Absolute path of the compiled CLI entry point (dist/src/cli/main.js). */
export const BITBACK_MAIN = fileURLToPath(new URL('../../src/cli/main.js', import.meta.url));

/** What a finished command printed and returned. */
export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs any program to completion, optionally feeding `input` on stdin. */
export function runProgram(program: string, args: string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    // A program that exits without reading its input makes the write fail with EPIPE: not an error here.
    child.stdin.on('error', () => undefined);
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

/** Runs `bitback ARGS...` with the same Node.js that runs the tests. */
export function runBitback(args: string[], options: { input?: string } = {}): Promise<RunResult> {
  return runProgram(process.execPath, [BITBACK_MAIN, ...args], options);
}
