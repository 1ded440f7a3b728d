/** Helpers shared by the benchmarks: timing commands, medians, source images, sync. */
import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';

const MiB = 1024 ** 2;

/** Wall time and peak memory of one command. */
export interface Timed {
  seconds: number;
  maxRssKiB: number;
}

/** Runs a command under /usr/bin/time to get its wall time and peak memory. */
export function timed(program: string, args: string[]): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn('/usr/bin/time', ['-f', '%M', program, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => {
      const seconds = (performance.now() - started) / 1000;
      if (status !== 0) return reject(new Error(`${program} ${args.join(' ')} exited ${status}: ${stderr}`));
      const rss = Number.parseInt(stderr.trim().split('\n').pop() ?? '', 10);
      resolve({ seconds, maxRssKiB: rss });
    });
  });
}

/** The median of `values`. */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}

/** A sparse raw image of `size` bytes with `data` bytes of incompressible data in 1 MiB runs spread over it. */
export async function makeSource(path: string, size: number, data: number): Promise<void> {
  const handle = await open(path, 'wx');
  try {
    await handle.truncate(size);
    const runs = Math.floor(data / MiB);
    const stride = Math.floor(size / MiB / runs) * MiB;
    const buffer = new Uint8Array(MiB);
    let x = 0x2545f491;
    for (let r = 0; r < runs; r++) {
      for (let i = 0; i < buffer.length; i += 4) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        buffer[i] = x & 0xff;
        buffer[i + 1] = (x >>> 8) & 0xff;
        buffer[i + 2] = (x >>> 16) & 0xff;
        buffer[i + 3] = (x >>> 24) & 0xff;
      }
      await handle.write(buffer, 0, buffer.length, r * stride);
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Flushes dirty pages, so that one run's writeback does not slow the next one down. */
export function syncAll(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('sync', [], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('close', () => resolve());
  });
}

