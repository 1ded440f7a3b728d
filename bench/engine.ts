/**
 * Engine benchmarks (issue 5), each peer measured in the same run:
 * 1. Writes through a writable NBD export of a qcow2 node: `nbdcopy --flush` of a raw file of
 *    `BITBACK_BENCH_GIB` GiB (default 1, all data) into the export, with one enabled dirty bitmap
 *    on the node vs none (goal: <= 5% slower), and the same on QEMU 7.2 (for reference).
 * Each variant runs `BITBACK_BENCH_RUNS` times (default 3) on a fresh image; the median is printed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { QmpClient } from '../src/qmp/index.js';
import { makeSource, median, syncAll, timed } from './common.js';
import { type BenchResult, formatResults } from './result.js';

const GiB = 1024 ** 3;
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

interface Peer {
  qmp: QmpClient;
  stop(): Promise<void>;
}

/** Starts `bitback daemon` or QEMU with a QMP socket in `dir` and connects to it. */
async function startPeer(kind: 'bitback' | 'qemu', dir: string): Promise<Peer> {
  const socket = join(dir, `${kind}-qmp.sock`);
  const child: ChildProcess =
    kind === 'bitback'
      ? spawn(process.execPath, [CLI, 'daemon', '--qmp', `unix:${socket}`], { stdio: ['ignore', 'ignore', 'inherit'] })
      : spawn('qemu-system-x86_64', ['-M', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${socket},server=on,wait=off`], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let qmp: QmpClient | undefined;
  for (let i = 0; qmp === undefined; i++) {
    try {
      qmp = await QmpClient.connect(socket);
    } catch (e) {
      if (i > 300) {
        child.kill('SIGKILL');
        throw e;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  const client = qmp;
  return {
    qmp: client,
    async stop() {
      await client.execute('quit').catch(() => undefined);
      await client.close().catch(() => undefined);
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

async function run(program: string, args: string[]): Promise<void> {
  const child = spawn(program, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  const status = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  if (status !== 0) throw new Error(`${program} ${args.join(' ')} exited ${status}`);
}

/** Seconds `nbdcopy --flush` takes to write `source` into a fresh qcow2 exported writable by `kind`. */
async function writeThroughExport(kind: 'bitback' | 'qemu', dir: string, source: string, size: number, bitmap: boolean): Promise<number> {
  const image = join(dir, `${kind}.qcow2`);
  await rm(image, { force: true });
  await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, String(size)]);
  await syncAll();
  const peer = await startPeer(kind, dir);
  try {
    const nbd = join(dir, `${kind}-nbd.sock`);
    await peer.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: image } });
    if (bitmap) await peer.qmp.execute('block-dirty-bitmap-add', { node: 'disk0', name: 'b0' });
    await peer.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: nbd } } });
    await peer.qmp.execute('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', writable: true });
    return (await timed('nbdcopy', ['--flush', source, `nbd+unix:///disk0?socket=${nbd}`])).seconds;
  } finally {
    await peer.stop();
  }
}

/** Runs the engine benchmarks. */
export async function runEngine(): Promise<BenchResult[]> {
  const runs = Number.parseInt(process.env.BITBACK_BENCH_RUNS ?? '3', 10);
  const size = Number.parseFloat(process.env.BITBACK_BENCH_GIB ?? '1') * GiB;
  const dir = await mkdtemp(join(process.env.BITBACK_BENCH_DIR ?? tmpdir(), 'bitback-bench-engine-'));
  try {
    const source = join(dir, 'source.raw');
    await makeSource(source, size, size);
    const plain: number[] = [];
    const tracked: number[] = [];
    const qemu: number[] = [];
    for (let i = 0; i < runs; i++) {
      plain.push(await writeThroughExport('bitback', dir, source, size, false));
      tracked.push(await writeThroughExport('bitback', dir, source, size, true));
      qemu.push(await writeThroughExport('qemu', dir, source, size, true));
    }
    const a = median(tracked);
    const b = median(plain);
    const q = median(qemu);
    const gib = size / GiB;
    return [
      { name: `NBD writes, ${gib} GiB, one enabled bitmap vs none`, value: a, unit: 's', peer: b, peerName: 'bitback, no bitmap', ratio: a / b, goal: 'ratio <= 1.05', met: a / b <= 1.05 },
      { name: `NBD writes, ${gib} GiB, one enabled bitmap (reference)`, value: a, unit: 's', peer: q, peerName: 'QEMU 7.2, same', ratio: a / q, goal: 'reference, no goal' },
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

export { runEngine as run };

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  console.log(formatResults('engine', await runEngine()));
}
