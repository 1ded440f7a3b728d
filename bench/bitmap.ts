/**
 * Dirty bitmap benchmark: a 1 TiB disk at 64 KiB granularity (16 Mi granules), 1% dirty in
 * random runs of 1..64 granules. Times the operations a backup does with such a bitmap; the goal
 * for each is under 20 ms. Figures are medians of several runs after a warm-up.
 *
 * Usage: `node dist/bench/bitmap.js` (or through `node dist/bench/run.js bitmap`).
 */
import { pathToFileURL } from 'node:url';
import {
  DirtyBitmap,
  bytesAreClean,
  decodeCompact,
  deserializeBytes,
  encodeCompact,
  serializeBytes,
  serializedByteLength,
  sha256Qemu,
} from '../src/bitmap/index.js';
import { formatResults, type BenchResult } from './result.js';

const SIZE = 2 ** 40;
const GRANULARITY = 65536;
const DIRTY_FRACTION = 0.01;
/** qcow2 stores bitmap data in clusters; 64 KiB is the default cluster size. */
const CLUSTER = 65536;
const GOAL_MS = 20;
const RUNS = 9;

/** A small deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** A bitmap with about 1% of its granules dirty, in runs of 1..64 granules at random places. */
function randomBitmap(seed: number): DirtyBitmap {
  const b = new DirtyBitmap({ size: SIZE, granularity: GRANULARITY, name: `bench-${seed}` });
  const random = prng(seed);
  const target = b.granuleCount * DIRTY_FRACTION * GRANULARITY;
  while (b.count() < target) {
    const first = Math.floor(random() * b.granuleCount);
    const granules = 1 + Math.floor(random() * 64);
    b.set(first * GRANULARITY, Math.min(granules * GRANULARITY, SIZE - first * GRANULARITY));
  }
  return b;
}

/** Median time in ms of `fn`, after one warm-up call; `prepare` runs untimed before each call. */
function time<T>(fn: (input: T) => unknown, prepare: () => T): number {
  fn(prepare());
  const times: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const input = prepare();
    const start = performance.now();
    fn(input);
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

function result(name: string, ms: number): BenchResult {
  return { name, value: ms, unit: 'ms', goal: `< ${GOAL_MS} ms`, met: ms < GOAL_MS };
}

/** Runs the benchmark and returns its figures (milliseconds). */
export async function run(): Promise<BenchResult[]> {
  const a = randomBitmap(1);
  const b = randomBitmap(2);
  const results: BenchResult[] = [];
  const none = (): undefined => undefined;

  let runs = 0;
  results.push(
    result(
      'iterate dirty extents',
      time(() => {
        runs = 0;
        for (const _ of a.dirtyExtents()) runs++;
      }, none),
    ),
  );
  results.push(result('merge into another such bitmap', time((target: DirtyBitmap) => target.merge(a), () => b.copy())));
  // count() is O(1): time a million calls and report one.
  results.push(
    result(
      'count (per call)',
      time(() => {
        for (let i = 0; i < 1e6; i++) a.count();
      }, none) / 1e6,
    ),
  );

  const dataLength = serializedByteLength(a);
  const clusters: (Uint8Array | undefined)[] = [];
  results.push(
    result(
      `qcow2 serialize, ${CLUSTER / 1024} KiB clusters`,
      time(() => {
        clusters.length = 0;
        for (let pos = 0; pos < dataLength; pos += CLUSTER) {
          clusters.push(bytesAreClean(a, pos, CLUSTER) ? undefined : serializeBytes(a, pos, CLUSTER));
        }
      }, none),
    ),
  );
  results.push(
    result(
      'qcow2 deserialize, same clusters',
      time(
        (target: DirtyBitmap) => {
          clusters.forEach((data, i) => {
            if (data !== undefined) deserializeBytes(target, i * CLUSTER, data.subarray(0, Math.min(CLUSTER, dataLength - i * CLUSTER)));
          });
        },
        () => new DirtyBitmap({ size: SIZE, granularity: GRANULARITY }),
      ),
    ),
  );

  let compact = encodeCompact(a);
  results.push(result('compact encode', time(() => (compact = encodeCompact(a)), none)));
  results.push(result('compact decode', time(() => decodeCompact(compact), none)));
  results.push(result('sha256Qemu', time(() => sha256Qemu(a), none)));
  results.push({ name: 'dirty runs', value: runs, unit: 'runs' });
  results.push({ name: 'compact size', value: compact.length / 1024, unit: 'KiB' });
  return results;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(formatResults('bitmap: dirty bitmap, 16 Mi granules (1 TiB at 64 KiB), 1% dirty', await run()));
}
