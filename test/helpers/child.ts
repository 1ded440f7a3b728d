import type { ChildProcess } from 'node:child_process';

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
