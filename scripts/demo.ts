/**
 * `make demo`: an end-to-end walk-through of what bitback has today, with no QEMU.
 *
 * bitback's engine runs in-process and is driven over QMP exactly as QEMU would be. A "guest"
 * writes a realistic workload to a qcow2 disk through a writable NBD export of the engine. Each
 * backup is taken the way bitback takes backups from a running VM: one `transaction` freezes the
 * previous checkpoint bitmap, starts the next one (persistent, in the image) and starts fleecing
 * (a `sync: none` backup job into a scratch image backed by the disk, whose copy-before-write
 * filter keeps the point in time); the scratch image is exported with the frozen bitmap, and
 * bitback's NBD client copies what `base:allocation` (full) or `qemu:dirty-bitmap:NAME`
 * (incremental) marks, while the guest goes on writing. One incremental hits a full repository
 * half-way (fault injection: ENOSPC); the checkpoint is rolled back with another transaction and
 * the retry still contains every change. Every backup point is restored from its chain and
 * compared with the workload's own record of the disk at that point (a SHA-256 of the model), and
 * `bitback io` verifies a pattern in the restored disk.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ExtentFlags, type BlockDevice } from '../src/block/block-device.js';
import { FaultInjectionFilter } from '../src/block/filters/fault-injection-filter.js';
import { formatSize } from '../src/block/io/size.js';
import { isZero } from '../src/block/is-zero.js';
import { createQcow2 } from '../src/qcow2/create.js';
import { convertImage } from '../src/qcow2/convert.js';
import { Qcow2Image } from '../src/qcow2/image/index.js';
import { checkQcow2 } from '../src/qcow2/check/index.js';
import { NbdClient } from '../src/nbd/client/index.js';
import { createEngine } from '../src/engine/index.js';
import { connectInProcess, type QmpClient } from '../src/qmp/index.js';

const MiB = 1024 * 1024;
const DISK_SIZE = 64 * MiB;
const GRANULARITY = 64 * 1024;
const COPY_CHUNK = 4 * MiB;

/** A deterministic PRNG (xorshift32), so every run of the demo does the same thing. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

/** The workload: writes to the disk and the same writes to a model of it. */
class Workload {
  readonly model = new Uint8Array(DISK_SIZE);
  readonly #random: () => number;
  #logHead = 40 * MiB;

  constructor(readonly disk: BlockDevice, seed: number) {
    this.#random = prng(seed);
  }

  #int(max: number): number {
    return Math.floor(this.#random() * max);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await this.disk.write(offset, data);
    this.model.set(data, offset);
  }

  async zero(offset: number, length: number): Promise<void> {
    await this.disk.writeZeroes(offset, length);
    this.model.fill(0, offset, offset + length);
  }

  /** Random bytes that compress like real data would not (worst case for a backup). */
  #data(length: number): Uint8Array {
    const data = new Uint8Array(length);
    for (let i = 0; i < length; i += 4) {
      const v = (this.#random() * 2 ** 32) >>> 0;
      data[i] = v & 0xff;
      data[i + 1] = (v >>> 8) & 0xff;
      data[i + 2] = (v >>> 16) & 0xff;
      data[i + 3] = v >>> 24;
    }
    return data;
  }

  /**
   * One round: small metadata updates (4 KiB, random places in the first 8 MiB), file writes
   * (64 KiB–1 MiB, anywhere), log appends (sequential), and file deletions (zeroes over old data).
   */
  async round(operations: number): Promise<number> {
    let written = 0;
    for (let i = 0; i < operations; i++) {
      const kind = this.#random();
      if (kind < 0.5) {
        const offset = this.#int((8 * MiB) / 4096) * 4096;
        await this.write(offset, this.#data(4096));
        written += 4096;
      } else if (kind < 0.75) {
        const length = (1 + this.#int(16)) * 64 * 1024;
        const offset = this.#int((DISK_SIZE - length) / 4096) * 4096;
        await this.write(offset, this.#data(length));
        written += length;
      } else if (kind < 0.9) {
        const length = (1 + this.#int(8)) * 32 * 1024;
        if (this.#logHead + length > DISK_SIZE) this.#logHead = 40 * MiB;
        await this.write(this.#logHead, this.#data(length));
        this.#logHead += length;
        written += length;
      } else {
        const length = (1 + this.#int(4)) * 64 * 1024;
        const offset = this.#int((DISK_SIZE - length) / 65536) * 65536;
        await this.zero(offset, length);
        written += length;
      }
    }
    return written;
  }

  digest(): string {
    return createHash('sha256').update(this.model).digest('hex');
  }
}

/** A stored backup: a sparse raw file holding the extents it copied. */
interface StoredBackup {
  name: string;
  level: 'full' | 'inc';
  path: string;
  extents: Array<{ offset: number; length: number }>;
  dirtyBytes: number;
  storedBytes: number;
  seconds: number;
  /** SHA-256 of the model when the backup was taken: what a restore must give. */
  expected: string;
  /** Bytes the guest wrote while this backup copied. */
  writtenMeanwhile: number;
}

/** Ends fleecing: the export goes, the `sync: none` job is cancelled, the scratch node goes. */
async function endFleecing(qmp: QmpClient): Promise<void> {
  await qmp.execute('block-export-del', { id: 'backup' }).catch(() => undefined);
  const gone = qmp.waitForEvent('JOB_STATUS_CHANGE', (e) => (e.data as { id?: string; status?: string }).status === 'null');
  await qmp.execute('job-cancel', { id: 'fleecing' });
  await gone;
  await qmp.execute('blockdev-del', { 'node-name': 'fleece' });
}

/** Copies `extents` from `source` to `target` in bounded chunks; returns the bytes copied. */
async function copyExtents(source: BlockDevice, target: BlockDevice, extents: Array<{ offset: number; length: number }>): Promise<number> {
  let copied = 0;
  for (const { offset, length } of extents) {
    for (let done = 0; done < length; done += COPY_CHUNK) {
      const n = Math.min(COPY_CHUNK, length - done);
      // A range that now reads as zero is stored as zero clusters, never skipped: the parent's
      // data must not show through it on restore.
      const data = await source.read(offset + done, n);
      if (isZero(data)) await target.writeZeroes(offset + done, n);
      else await target.write(offset + done, data);
      copied += n;
    }
  }
  await target.flush();
  return copied;
}

/**
 * The extents of `client` whose flags in `context` satisfy `wanted` (what a backup copies): data
 * for `base:allocation` (not ZERO), dirty for `qemu:dirty-bitmap:NAME`.
 */
async function extentsOver(client: NbdClient, context: string, wanted: (flags: number) => boolean): Promise<Array<{ offset: number; length: number }>> {
  const out: Array<{ offset: number; length: number }> = [];
  for (let offset = 0; offset < client.size; ) {
    for (const e of await client.contextStatus(context, offset, client.size - offset)) {
      if (wanted(e.flags)) {
        const last = out[out.length - 1];
        if (last !== undefined && last.offset + last.length === e.offset) last.length += e.length;
        else out.push({ offset: e.offset, length: e.length });
      }
      offset = e.offset + e.length;
    }
  }
  return out;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-demo-'));
  try {
    console.log(`bitback demo — working in ${dir}\n`);
    // The engine, driven over QMP exactly as QEMU would be (in-process here, no socket needed).
    const engine = createEngine();
    const qmp = await connectInProcess(engine.qmp);
    const diskPath = join(dir, 'vda.qcow2');
    await createQcow2(diskPath, { size: DISK_SIZE });
    await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'vda', file: { driver: 'file', filename: diskPath } });
    const socket = join(dir, 'nbd.sock');
    await qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    // The "guest": writes reach the disk through a writable export, i.e. through the engine's
    // node graph, where dirty bitmaps record them and copy-before-write sees them.
    await qmp.execute('block-export-add', { type: 'nbd', id: 'guest', 'node-name': 'vda', name: 'vda-guest', writable: true });
    const guest = await NbdClient.connect(`nbd+unix:///vda-guest?socket=${socket}`);
    const workload = new Workload(guest, 2026);
    const backups: StoredBackup[] = [];

    console.log(`disk ${formatSize(DISK_SIZE)} (qcow2) in bitback's engine, written by a "guest" over NBD; QMP in-process`);
    const initial = await workload.round(300);
    console.log(`workload: ${formatSize(initial)} written before the first backup`);

    /**
     * Takes one backup the way bitback takes them from QEMU: one transaction freezes the
     * previous checkpoint bitmap, starts the next one, and starts fleecing (a `sync: none`
     * backup job into a scratch image backed by the disk); the scratch image is exported with
     * the frozen bitmap and read over NBD while the guest goes on writing. `failAfter`
     * injects ENOSPC into the repository after that many bytes.
     */
    const backup = async (name: string, failAfter?: number): Promise<StoredBackup> => {
      const level = backups.length === 0 ? 'full' : 'inc';
      const previous = backups.length === 0 ? undefined : `bitback-${backups.length - 1}`;
      const checkpoint = `bitback-${backups.length}`;
      const started = performance.now();
      const fleecePath = join(dir, 'fleece.qcow2');
      await createQcow2(fleecePath, { size: DISK_SIZE });
      await qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': 'fleece', file: { driver: 'file', filename: fleecePath }, backing: 'vda' });
      await qmp.execute('transaction', {
        actions: [
          ...(previous !== undefined ? [{ type: 'block-dirty-bitmap-disable', data: { node: 'vda', name: previous } }] : []),
          { type: 'block-dirty-bitmap-add', data: { node: 'vda', name: checkpoint, persistent: true, granularity: GRANULARITY } },
          { type: 'blockdev-backup', data: { 'job-id': 'fleecing', device: 'vda', target: 'fleece', sync: 'none', 'filter-node-name': 'vda-cbw' } },
        ],
      });
      const expected = workload.digest(); // the point in time this backup must restore
      const exportName = `vda-${name}`;
      const bitmaps = previous !== undefined ? [{ node: 'vda', name: previous }] : [];
      await qmp.execute('block-export-add', { type: 'nbd', id: 'backup', 'node-name': 'fleece', name: exportName, bitmaps });
      // The repository format of DESIGN.md: a full backup is a standalone qcow2; an incremental
      // is a qcow2 whose backing file is its parent's image, by relative path.
      const path = join(dir, `${name}.qcow2`);
      const parent = backups[backups.length - 1];
      await createQcow2(path, { size: DISK_SIZE, ...(parent ? { backingFile: basename(parent.path), backingFormat: 'qcow2' as const } : {}) });
      const file = await Qcow2Image.open(path);
      const target = new FaultInjectionFilter(file, failAfter === undefined ? [] : [{ operations: ['write'], afterBytes: failAfter, errno: 'ENOSPC' }]);
      let extents: Array<{ offset: number; length: number }> = [];
      let writtenMeanwhile = 0;
      try {
        const context = previous === undefined ? 'base:allocation' : `qemu:dirty-bitmap:${previous}`;
        const client = await NbdClient.connect(`nbd+unix:///${exportName}?socket=${socket}`, { contexts: [context], readOnly: true });
        try {
          extents = previous === undefined
            ? await extentsOver(client, context, (flags) => (flags & ExtentFlags.ZERO) === 0)
            : await extentsOver(client, context, (flags) => (flags & 1) !== 0);
          // The guest keeps writing while the backup copies: the export still shows the point in time.
          const [, written] = await Promise.all([copyExtents(client, target, extents), workload.round(20)]);
          writtenMeanwhile = written;
        } finally {
          await client.close();
        }
      } catch (e) {
        // Nothing is lost: the frozen checkpoint takes the new one's changes back and records again.
        await endFleecing(qmp);
        await qmp.execute('transaction', {
          actions: previous !== undefined
            ? [
                { type: 'block-dirty-bitmap-merge', data: { node: 'vda', target: previous, bitmaps: [checkpoint] } },
                { type: 'block-dirty-bitmap-enable', data: { node: 'vda', name: previous } },
                { type: 'block-dirty-bitmap-remove', data: { node: 'vda', name: checkpoint } },
              ]
            : [{ type: 'block-dirty-bitmap-remove', data: { node: 'vda', name: checkpoint } }],
        });
        await target.close();
        await rm(path, { force: true });
        await rm(fleecePath, { force: true });
        throw e;
      }
      await endFleecing(qmp);
      await rm(fleecePath, { force: true });
      // The previous checkpoint's changes are in this backup: its bitmap is no longer needed.
      if (previous !== undefined) await qmp.execute('block-dirty-bitmap-remove', { node: 'vda', name: previous });
      const dirtyBytes = extents.reduce((n, e) => n + e.length, 0);
      await target.close();
      const storedBytes = (await stat(path)).blocks * 512;
      const seconds = (performance.now() - started) / 1000;
      const stored: StoredBackup = { name, level, path, extents, dirtyBytes, storedBytes, seconds, expected, writtenMeanwhile };
      backups.push(stored);
      return stored;
    };

    const dirtyOf = async (name: string): Promise<number> => {
      const nodes = await qmp.execute<Array<{ 'node-name': string; 'dirty-bitmaps'?: Array<{ name?: string; count: number }> }>>('query-named-block-nodes');
      return nodes.find((n) => n['node-name'] === 'vda')?.['dirty-bitmaps']?.find((b) => b.name === name)?.count ?? 0;
    };

    await backup('full');
    console.log(`full backup: ${formatSize(backups[0]!.dirtyBytes)} allocated data copied while the guest wrote ${formatSize(backups[0]!.writtenMeanwhile)}`);

    for (let i = 1; i <= 2; i++) {
      const written = await workload.round(30);
      console.log(`workload: ${formatSize(written)} written; checkpoint bitmap says ${formatSize(await dirtyOf(`bitback-${i - 1}`))} dirty`);
      await backup(`inc${i}`);
    }

    // An incremental whose repository fills up after 1 MiB: the checkpoint is rolled back.
    const written = await workload.round(30);
    const dirtyBefore = await dirtyOf('bitback-2');
    console.log(`workload: ${formatSize(written)} written; checkpoint bitmap says ${formatSize(dirtyBefore)} dirty`);
    try {
      await backup('inc3-failed', MiB);
      throw new Error('the injected ENOSPC did not happen');
    } catch (e) {
      const message = (e as Error).message;
      if (!/ENOSPC|no space/i.test(message) && (e as { errno?: string }).errno !== 'ENOSPC') throw e;
      const dirtyAfter = await dirtyOf('bitback-2');
      console.log(`inc3 failed as injected (${message}); the checkpoint bitmap has ${formatSize(dirtyAfter)} dirty (was ${formatSize(dirtyBefore)})`);
      if (dirtyAfter < dirtyBefore) throw new Error('a failed backup lost dirty bits');
    }
    const more = await workload.round(10);
    await workload.write(5 * MiB, new Uint8Array(64 * 1024).fill(0x5a)); // checked by `bitback io` below
    console.log(`workload: ${formatSize(more)} more written before the retry, and 64 KiB of 0x5a at 5 MiB`);
    await backup('inc3');

    await guest.close();
    await qmp.execute('block-export-del', { id: 'guest' });
    await qmp.close();
    await engine.close(); // stores the checkpoint bitmap in vda.qcow2

    // Restore every point from its chain and compare with the model's digest at that point.
    console.log('');
    const rows: string[][] = [['backup', 'level', 'copied', 'stored', 'time', 'restore = disk at that point']];
    for (let k = 0; k < backups.length; k++) {
      const point = backups[k]!;
      // Restore = convert the point's image (it reads through its chain of parents) to raw.
      const restoredPath = join(dir, `restored-${point.name}.raw`);
      await convertImage(point.path, restoredPath, { targetFormat: 'raw' });
      const digest = createHash('sha256').update(await readFile(restoredPath)).digest('hex');
      const ok = digest === point.expected;
      rows.push([point.name, point.level, formatSize(point.dirtyBytes), formatSize(point.storedBytes), `${point.seconds.toFixed(3)} s`, ok ? 'identical' : 'DIFFERENT']);
      if (!ok) {
        printTable(rows);
        throw new Error(`restore of ${point.name} differs from the disk at that point`);
      }
    }
    printTable(rows);

    // Every image of the chain passes a qemu-img-compatible check (no errors, no leaks).
    for (const b of backups) {
      const report = await checkQcow2(b.path);
      if (report['check-errors'] + report.leaks + report.corruptions > 0) throw new Error(`check of ${b.name}.qcow2 failed: ${JSON.stringify(report)}`);
    }
    console.log(`\nbitback image check: ${backups.map((b) => `${b.name}.qcow2`).join(', ')} — no errors, no leaks`);

    // The restored disks, checked by the CLI as a user would: the pattern written before inc3 is in
    // the inc3 restore and not in the full one (where bitback io says which byte differs, exit 1).
    const cli = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
    for (const [name, wanted] of [['inc3', 0], ['full', 1]] as const) {
      const image = join(dir, `restored-${name}.raw`);
      console.log(`\n$ bitback io -r -c 'read -P 0x5a 5M 64k' restored-${name}.raw`);
      const io = spawnSync(process.execPath, [cli, 'io', '-r', '-c', `read -P 0x5a ${5 * MiB} 64k`, image], { encoding: 'utf8' });
      process.stdout.write(io.stdout);
      process.stdout.write(io.stderr);
      console.log(`(exit status ${io.status})`);
      if (io.status !== wanted) throw new Error(`bitback io on restored-${name}.raw exited ${io.status}, expected ${wanted}`);
    }
    console.log('\ndemo complete: every backup point restored byte-identical.');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) console.log(row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}

await main();
