/**
 * Runs the benchmarks and prints their figures, goals and ratios against peers measured in the
 * same run. Usage: `node dist/bench/run.js [NAME...]` (default: all). See bench/README.md.
 */
import { formatResults, type BenchResult } from './result.js';

/** Each benchmark module exports `run(): Promise<BenchResult[]>`. */
const BENCHMARKS: Record<string, { title: string; load: () => Promise<() => Promise<BenchResult[]>> }> = {
  qcow2: { title: 'qcow2 convert and read-back vs qemu-img (4 GiB raw, 1 GiB data)', load: async () => (await import('./qcow2.js')).run },
  nbd: { title: 'NBD server and client vs qemu-nbd and nbdcopy (4 GiB qcow2, 1 GiB data)', load: async () => (await import('./nbd.js')).run },
  engine: { title: 'engine: writes through a writable NBD export with and without a dirty bitmap', load: async () => (await import('./engine.js')).run },
  bitmap: { title: 'dirty bitmap, 16 Mi granules (1 TiB at 64 KiB), 1% dirty', load: async () => (await import('./bitmap.js')).run },
};

async function main(): Promise<void> {
  const names = process.argv.slice(2);
  const unknown = names.filter((n) => !(n in BENCHMARKS));
  if (unknown.length > 0) {
    console.error(`unknown benchmark(s): ${unknown.join(', ')}; known: ${Object.keys(BENCHMARKS).join(', ')}`);
    process.exitCode = 2;
    return;
  }
  for (const name of names.length > 0 ? names : Object.keys(BENCHMARKS)) {
    const bench = BENCHMARKS[name] as (typeof BENCHMARKS)[string];
    const results = await (await bench.load())();
    console.log(formatResults(`${name}: ${bench.title}`, results));
    console.log('');
  }
}

await main();
