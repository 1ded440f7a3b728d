/**
 * Test-only: what QEMU's tools say about the bitmaps of an image — `qemu-img info`, and the
 * dirty extents `qemu-nbd -B NAME` exports as `qemu:dirty-bitmap:NAME` (read with `nbdinfo
 * --map`). Every process started here is ended by pid. Not part of the public API.
 */
import { spawn } from 'node:child_process';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { qemuImg, run } from '../../image/testing/qemu-tools.js';

/** A byte range. */
export interface Extent {
  offset: number;
  length: number;
}

/** One bitmap as `qemu-img info --output=json` lists it. */
export interface QemuBitmapInfo {
  name: string;
  granularity: number;
  flags: string[];
}

/** The bitmaps `qemu-img info` lists for a qcow2 image (empty when none). */
export async function qemuBitmaps(path: string): Promise<QemuBitmapInfo[]> {
  const info = JSON.parse(await qemuImg('info', '--output=json', '-f', 'qcow2', path)) as {
    'format-specific'?: { data?: { bitmaps?: QemuBitmapInfo[] } };
  };
  return info['format-specific']?.data?.bitmaps ?? [];
}

/**
 * The dirty extents of bitmap `name` as QEMU exports them: `qemu-nbd -r -f qcow2 -B NAME` on a
 * socket of a fresh folder, `nbdinfo --json --map=qemu:dirty-bitmap:NAME`, adjacent dirty
 * extents joined. qemu-nbd (without `-t`) exits after the client; it is killed by pid anyway.
 */
export async function qemuDirtyExtents(path: string, name: string): Promise<Extent[]> {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-'));
  const socket = join(dir, 'nbd.sock');
  const server = spawn('qemu-nbd', ['-r', '-f', 'qcow2', '-B', name, '-k', socket, path], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  let exited = false;
  server.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<void>((resolve) => server.once('exit', () => ((exited = true), resolve())));
  try {
    for (let waited = 0; ; waited += 20) {
      if (exited) throw new Error(`qemu-nbd exited before serving ${path}: ${stderr}`);
      if (await access(socket).then(() => true, () => false)) break;
      if (waited > 20_000) throw new Error(`qemu-nbd did not create ${socket}: ${stderr}`);
      await sleep(20);
    }
    const result = await run('nbdinfo', ['--json', `--map=qemu:dirty-bitmap:${name}`, `nbd+unix:///?socket=${socket}`]);
    if (result.code !== 0) throw new Error(`nbdinfo failed (${result.code}): ${result.stderr} / qemu-nbd: ${stderr}`);
    const map = JSON.parse(result.stdout) as Array<{ offset: number; length: number; type: number }>;
    const dirty: Extent[] = [];
    for (const e of map) {
      if ((e.type & 1) === 0) continue;
      const last = dirty[dirty.length - 1];
      if (last !== undefined && last.offset + last.length === e.offset) last.length += e.length;
      else dirty.push({ offset: e.offset, length: e.length });
    }
    return dirty;
  } finally {
    if (!exited && server.pid !== undefined) server.kill('SIGKILL');
    await exit;
    await rm(dir, { recursive: true, force: true });
  }
}
