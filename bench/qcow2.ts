/**
 * qcow2 benchmarks against qemu-img, measured in the same run on the same files:
 * - `bitback image convert -O qcow2` of a 4 GiB raw image holding 1 GiB of data vs
 *   `qemu-img convert -O qcow2` (time and output size; goal ratio <= 1.0, size within 1%);
 * - reading that qcow2 back: `bitback image convert -O raw` vs `qemu-img convert -O raw`, both
 *   into tmpfs (/dev/shm) so the target costs nothing;
 * - peak memory (max RSS) of each command;
 * - for reference, the conversion against `qemu-img convert -t writeback`, which syncs its output
 *   at the end as bitback does (qemu-img's default for convert, cache=unsafe, never syncs).
 * Each command runs `BITBACK_BENCH_RUNS` times (default 3); the median is printed.
 * Environment: `BITBACK_BENCH_DIR` (default: a temporary folder), `BITBACK_BENCH_GIB` (virtual size, default 4).
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BenchResult, formatResults } from './result.js';
import { makeSource, median, syncAll, timed, type Timed } from './common.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

async function compareRuns(
  name: string,
  runs: number,
  ours: () => Promise<Timed>,
  theirs: () => Promise<Timed>,
  cleanup: () => Promise<void>,
  peerName = 'qemu-img',
  goal = true,
): Promise<BenchResult[]> {
  const a: Timed[] = [];
  const b: Timed[] = [];
  for (let i = 0; i < runs; i++) {
    // Alternate so that neither side always runs on a warmer cache.
    await syncAll();
    b.push(await theirs());
    await cleanup();
    await syncAll();
    a.push(await ours());
    await cleanup();
  }
  const ta = median(a.map((t) => t.seconds));
  const tb = median(b.map((t) => t.seconds));
  const ma = median(a.map((t) => t.maxRssKiB)) / 1024;
  const mb = median(b.map((t) => t.maxRssKiB)) / 1024;
  const time: BenchResult = { name: `${name}: time`, value: ta, unit: 's', peer: tb, peerName, ratio: ta / tb };
  if (goal) Object.assign(time, { goal: 'ratio <= 1.0', met: ta / tb <= 1.0 });
  return [time, { name: `${name}: peak memory`, value: ma, unit: 'MiB', peer: mb, peerName, ratio: ma / mb }];
}

/** Runs the qcow2 benchmarks. */
export async function run(): Promise<BenchResult[]> {
  const runs = Number.parseInt(process.env.BITBACK_BENCH_RUNS ?? '3', 10);
  const size = Number.parseFloat(process.env.BITBACK_BENCH_GIB ?? '4') * GiB;
  const dir = await mkdtemp(join(process.env.BITBACK_BENCH_DIR ?? tmpdir(), 'bitback-bench-qcow2-'));
  const shm = await mkdtemp(join('/dev/shm', 'bitback-bench-'));
  try {
    const source = join(dir, 'source.raw');
    await makeSource(source, size, size / 4);
    await syncAll();
    const ours = join(dir, 'ours.qcow2');
    const theirs = join(dir, 'theirs.qcow2');
    const results: BenchResult[] = [];
    const removeOutputs = async (): Promise<void> => {
      await rm(ours, { force: true });
      await rm(theirs, { force: true });
    };
    results.push(
      ...(await compareRuns(
        'convert raw -> qcow2 (4 GiB, 1 GiB data)',
        runs,
        () => timed(process.execPath, [CLI, 'image', 'convert', '-f', 'raw', '-O', 'qcow2', source, ours]),
        () => timed('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', source, theirs]),
        removeOutputs,
      )),
    );
    // For reference, not a goal: qemu-img convert writes with cache=unsafe by default and never
    // syncs its output, while bitback's convert ends with fdatasync (the image is durable when it
    // returns). `-t writeback` makes qemu-img flush too: the same durability as ours.
    results.push(
      ...(await compareRuns(
        'convert raw -> qcow2, both synced at the end',
        runs,
        () => timed(process.execPath, [CLI, 'image', 'convert', '-f', 'raw', '-O', 'qcow2', source, ours]),
        () => timed('qemu-img', ['convert', '-t', 'writeback', '-f', 'raw', '-O', 'qcow2', source, theirs]),
        removeOutputs,
        'qemu-img -t writeback',
        true,
      )).slice(0, 1),
    );
    // Keep one output of each for the size comparison and the read-back.
    await timed(process.execPath, [CLI, 'image', 'convert', '-f', 'raw', '-O', 'qcow2', source, ours]);
    await timed('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', source, theirs]);
    await syncAll();
    const sizeOurs = (await stat(ours)).size / MiB;
    const sizeTheirs = (await stat(theirs)).size / MiB;
    results.push({
      name: 'convert raw -> qcow2: output file size',
      value: sizeOurs,
      unit: 'MiB',
      peer: sizeTheirs,
      peerName: 'qemu-img',
      ratio: sizeOurs / sizeTheirs,
      goal: 'within 1%',
      met: Math.abs(sizeOurs / sizeTheirs - 1) <= 0.01,
    });
    const rawOurs = join(shm, 'ours.raw');
    const rawTheirs = join(shm, 'theirs.raw');
    results.push(
      ...(await compareRuns(
        'read qcow2 back (convert -O raw into tmpfs)',
        runs,
        () => timed(process.execPath, [CLI, 'image', 'convert', '-f', 'qcow2', '-O', 'raw', theirs, rawOurs]),
        () => timed('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', theirs, rawTheirs]),
        async () => {
          await rm(rawOurs, { force: true });
          await rm(rawTheirs, { force: true });
        },
      )),
    );
    return results;
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(shm, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(formatResults('qcow2 vs qemu-img', await run()));
}
