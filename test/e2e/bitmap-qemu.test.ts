/**
 * DirtyBitmap against QEMU's own dirty bitmaps: the same guest-like writes (qemu-io through
 * HMP, so they go through QEMU's block layer) and the same bitmap commands, then QEMU's
 * `x-debug-block-dirty-bitmap-sha256` and `query-named-block-nodes` count compared with ours.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DirtyBitmap, sha256Qemu } from '../../src/bitmap/index.js';
import { needPeers } from '../helpers/peers.js';
import { startQemu, type QemuInstance } from '../helpers/qemu.js';

const skip = needPeers('qemu-img', 'qemu-system-x86_64');

/** Two disks whose sizes are not multiples of 64 granules at any granularity used here. */
const DISKS = [
  { node: 'disk0', size: 1_000_448 },
  { node: 'disk1', size: 10 * 1024 * 1024 + 1536 },
];
const GRANULARITIES = [512, 4096, 65536, 2 * 1024 * 1024, 2 ** 31];

interface BitmapInfo {
  name?: string;
  count: number;
  granularity: number;
  recording: boolean;
  busy: boolean;
}

/** A small deterministic PRNG (mulberry32), so that failures reproduce. */
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

describe('DirtyBitmap compared with QEMU 7.2', { skip }, () => {
  let dir: string;
  let qemu: QemuInstance;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-bitmap-e2e-'));
    const args = ['-M', 'none', '-nodefaults', '-display', 'none'];
    for (const { node, size } of DISKS) {
      const file = join(dir, `${node}.qcow2`);
      await promisify(execFile)('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)]);
      args.push('-blockdev', `driver=qcow2,node-name=${node},file.driver=file,file.filename=${file}`);
    }
    qemu = await startQemu(args);
  });

  after(async () => {
    await qemu?.kill();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  async function write(node: string, offset: number, length: number, ours: DirtyBitmap[]): Promise<void> {
    await qemu.hmp(`qemu-io ${node} "write -P 0x5a ${offset} ${length}"`);
    for (const b of ours) b.recordWrite(offset, length);
  }

  async function info(node: string, name: string): Promise<BitmapInfo> {
    const nodes = await qemu.qmp<{ 'node-name': string; 'dirty-bitmaps'?: BitmapInfo[] }[]>('query-named-block-nodes');
    const found = nodes.find((n) => n['node-name'] === node)?.['dirty-bitmaps']?.find((b) => b.name === name);
    assert.ok(found, `QEMU lists no bitmap ${name} on ${node}`);
    return found;
  }

  async function compare(node: string, ours: DirtyBitmap, context: string): Promise<void> {
    const name = ours.name!;
    const { sha256 } = await qemu.qmp<{ sha256: string }>('x-debug-block-dirty-bitmap-sha256', { node, name });
    const theirs = await info(node, name);
    assert.equal(sha256Qemu(ours), sha256, `${context}: sha256 of ${node}/${name}`);
    assert.equal(ours.count(), theirs.count, `${context}: count of ${node}/${name}`);
    assert.equal(ours.granularity, theirs.granularity);
    assert.equal(ours.enabled, theirs.recording, `${context}: recording of ${node}/${name}`);
  }

  async function addBitmaps(node: string, size: number, prefix: string): Promise<DirtyBitmap[]> {
    const ours: DirtyBitmap[] = [];
    for (const granularity of GRANULARITIES) {
      const name = `${prefix}-${granularity}`;
      await qemu.qmp('block-dirty-bitmap-add', { node, name, granularity });
      ours.push(new DirtyBitmap({ size, granularity, name }));
    }
    return ours;
  }

  test('writes give the same bits (sha256) and count as QEMU, with a partial last granule', async () => {
    for (const { node, size } of DISKS) {
      const ours = await addBitmaps(node, size, 'w');
      for (const b of ours) await compare(node, b, 'empty');

      // One 512-byte write in the last, partial granule: count is a whole granule.
      await write(node, size - 512, 512, ours);
      for (const b of ours) await compare(node, b, 'last granule');
      assert.equal(ours.find((b) => b.granularity === 65536)!.count(), 65536);

      await write(node, 0, 1, ours);
      await write(node, 65535, 2, ours);
      const random = prng(size);
      for (let i = 0; i < 25; i++) {
        const offset = Math.floor(random() * size);
        const length = 1 + Math.floor(random() * Math.min(300_000, size - offset));
        await write(node, offset, Math.min(length, size - offset), ours);
      }
      for (const b of ours) await compare(node, b, 'random writes');
    }
  });

  test('merge between granularities, clear, disable and enable match QEMU', async () => {
    const { node, size } = DISKS[1]!;
    const ours = await addBitmaps(node, size, 'm');
    const random = prng(42);
    for (let i = 0; i < 10; i++) {
      const offset = Math.floor(random() * (size - 70_000));
      await write(node, offset, 1 + Math.floor(random() * 70_000), ours);
    }
    const [fine, , coarse] = ours as [DirtyBitmap, DirtyBitmap, DirtyBitmap];

    // A finer source into a coarser target and back: QEMU merges across granularities.
    const fineCopy = new DirtyBitmap({ size, granularity: 512, name: 'm-fine-target' });
    await qemu.qmp('block-dirty-bitmap-add', { node, name: fineCopy.name, granularity: 512, disabled: true });
    fineCopy.disable();
    await qemu.qmp('block-dirty-bitmap-merge', { node, target: fineCopy.name, bitmaps: [coarse.name] });
    fineCopy.merge(coarse);
    await compare(node, fineCopy, 'coarse merged into fine');

    await qemu.qmp('block-dirty-bitmap-clear', { node, name: coarse.name });
    coarse.clear();
    await compare(node, coarse, 'cleared');
    await write(node, 12345, 1, ours);
    await qemu.qmp('block-dirty-bitmap-merge', { node, target: coarse.name, bitmaps: [fine.name] });
    coarse.merge(fine);
    await compare(node, coarse, 'fine merged into coarse');

    await qemu.qmp('block-dirty-bitmap-disable', { node, name: fine.name });
    fine.disable();
    await write(node, size - 4096, 4096, ours);
    await compare(node, fine, 'disabled');
    await qemu.qmp('block-dirty-bitmap-enable', { node, name: fine.name });
    fine.enable();
    await write(node, size - 8192, 100, ours);
    for (const b of [...ours, fineCopy]) await compare(node, b, 'after enable');
  });
});
