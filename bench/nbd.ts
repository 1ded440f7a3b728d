/**
 * NBD benchmarks, ours against qemu-nbd and nbdcopy in the same run, on the same qcow2 image
 * (4 GiB virtual, 1 GiB of data in 1 MiB runs; `BITBACK_BENCH_GIB` changes the size):
 * 1. `nbdcopy URI null:` reading the whole export from `bitback serve` vs from `qemu-nbd`
 *    (both read-only, multi-conn; goal ratio <= 1.1);
 * 2. 4 KiB random reads for `BITBACK_BENCH_SECONDS` (default 5) from each server: with fio's nbd
 *    engine when `fio` is installed, else with bitback's own client as the load (32 in flight);
 *    goal >= 0.8 of qemu-nbd's IOPS;
 * 3. copying from `qemu-nbd` to a file, durable: `bitback nbd copy` vs `nbdcopy --flush`
 *    (goal ratio <= 1.0).
 * Each timed command runs `BITBACK_BENCH_RUNS` times (default 3); the median is printed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NbdClient } from '../src/nbd/client/index.js';
import { makeSource, median, syncAll, timed } from './common.js';
import { type BenchResult, formatResults } from './result.js';

const GiB = 1024 ** 3;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface Server {
  uri: string;
  stop: () => Promise<void>;
}

/** Starts a server process whose argument `{socket}` is replaced by a socket path; waits until it accepts. */
async function startServer(dir: string, name: string, program: string, args: string[]): Promise<Server> {
  const socket = join(dir, `${name}.sock`);
  const child: ChildProcess = spawn(program, args.map((a) => a.replace('{socket}', socket)), { stdio: ['ignore', 'ignore', 'inherit'] });
  let exited = false;
  const exit = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));
  for (let i = 0; ; i++) {
    if (exited) throw new Error(`${program} exited before listening`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(socket);
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (i > 400) throw new Error(`${program} did not listen on ${socket}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    uri: `nbd+unix:///?socket=${socket}`,
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await exit;
    },
  };
}

function run(program: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (status) => (status === 0 ? resolve(out) : reject(new Error(`${program} exited ${status}: ${err}`))));
  });
}

async function hasProgram(name: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${name}`]);
    return true;
  } catch {
    return false;
  }
}

/** Random 4 KiB reads through bitback's client: IOPS over `seconds`, `depth` in flight. */
async function clientRandomReads(uri: string, seconds: number, depth: number): Promise<number> {
  const client = await NbdClient.connect(uri, { readOnly: true, maxInFlight: depth });
  try {
    const blocks = Math.floor(client.size / 4096);
    let x = 0x1234567;
    let done = 0;
    const end = performance.now() + seconds * 1000;
    const lane = async (): Promise<void> => {
      while (performance.now() < end) {
        x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
        await client.read(((x >>> 0) % blocks) * 4096, 4096);
        done++;
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: depth }, lane));
    return done / ((performance.now() - started) / 1000);
  } finally {
    await client.close();
  }
}

/** Random 4 KiB reads with fio's nbd engine: IOPS. */
async function fioRandomReads(uri: string, seconds: number, depth: number): Promise<number> {
  const out = await run('fio', ['--name=randread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randread', '--bs=4k', `--iodepth=${depth}`,
    `--runtime=${seconds}`, '--time_based', '--output-format=json']);
  const parsed = JSON.parse(out.slice(out.indexOf('{'))) as { jobs: Array<{ read: { iops: number } }> };
  return parsed.jobs[0]!.read.iops;
}

/** Runs the NBD benchmarks. */
export async function runNbd(): Promise<BenchResult[]> {
  const runs = Number.parseInt(process.env.BITBACK_BENCH_RUNS ?? '3', 10);
  const size = Number.parseFloat(process.env.BITBACK_BENCH_GIB ?? '4') * GiB;
  const seconds = Number.parseFloat(process.env.BITBACK_BENCH_SECONDS ?? '5');
  const dir = await mkdtemp(join(process.env.BITBACK_BENCH_DIR ?? tmpdir(), 'bitback-bench-nbd-'));
  const servers: Server[] = [];
  try {
    const raw = join(dir, 'source.raw');
    const image = join(dir, 'disk.qcow2');
    await makeSource(raw, size, size / 4);
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, image]);
    await rm(raw);
    await syncAll();
    const ours = await startServer(dir, 'ours', process.execPath, [CLI, 'serve', '-r', '-f', 'qcow2', '--socket', '{socket}', image]);
    servers.push(ours);
    const theirs = await startServer(dir, 'theirs', 'qemu-nbd', ['-r', '-t', '-e', '4', '-f', 'qcow2', '-k', '{socket}', image]);
    servers.push(theirs);
    const results: BenchResult[] = [];

    // 1. nbdcopy reading each server.
    const a: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < runs; i++) {
      b.push((await timed('nbdcopy', [theirs.uri, 'null:'])).seconds);
      a.push((await timed('nbdcopy', [ours.uri, 'null:'])).seconds);
    }
    const ta = median(a);
    const tb = median(b);
    results.push({ name: 'nbdcopy reads the export (4 GiB, 1 GiB data)', value: ta, unit: 's', peer: tb, peerName: 'qemu-nbd -e 4', ratio: ta / tb, goal: 'ratio <= 1.1', met: ta / tb <= 1.1 });

    // 2. 4 KiB random reads.
    const useFio = await hasProgram('fio');
    const load = useFio ? fioRandomReads : clientRandomReads;
    const loadName = useFio ? 'fio nbd engine' : 'bitback client';
    const ia = await load(ours.uri, seconds, 32);
    const ib = await load(theirs.uri, seconds, 32);
    results.push({ name: `4 KiB random reads, depth 32 (${loadName})`, value: ia, unit: 'IOPS', peer: ib, peerName: 'qemu-nbd', ratio: ia / ib, goal: 'ratio >= 0.8', met: ia / ib >= 0.8 });

    // 3. Durable copy from qemu-nbd into a file.
    const outOurs = join(dir, 'copy-ours.raw');
    const outTheirs = join(dir, 'copy-theirs.raw');
    const c: number[] = [];
    const d: number[] = [];
    for (let i = 0; i < runs; i++) {
      await syncAll();
      d.push((await timed('nbdcopy', ['--flush', theirs.uri, outTheirs])).seconds);
      await rm(outTheirs, { force: true });
      await syncAll();
      c.push((await timed(process.execPath, [CLI, 'nbd', 'copy', theirs.uri, outOurs])).seconds);
      await rm(outOurs, { force: true });
    }
    const tc = median(c);
    const td = median(d);
    results.push({ name: 'copy qemu-nbd -> file, durable', value: tc, unit: 's', peer: td, peerName: 'nbdcopy --flush', ratio: tc / td, goal: 'ratio <= 1.0', met: tc / td <= 1.0 });
    return results;
  } finally {
    for (const s of servers) await s.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export { runNbd as run };

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(formatResults('NBD vs qemu-nbd and nbdcopy', await runNbd()));
}
