/**
 * Persistent bitmaps against QEMU 7.2: bitmaps QEMU wrote read by bitback, bitmaps bitback
 * wrote read by QEMU (`qemu-img info`, `qemu-nbd -B` + `nbdinfo --map`, `qemu-img check`),
 * merges across granularities compared with `qemu-img bitmap --merge`, and bitback's SHA-256 of
 * a loaded bitmap compared with QEMU's `x-debug-block-dirty-bitmap-sha256`.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { sha256Qemu } from '../../src/bitmap/index.js';
import { Qcow2Bitmaps } from '../../src/qcow2/bitmaps/index.js';
import { GranuleModel, prng } from '../../src/qcow2/bitmaps/testing/granule-model.js';
import { qemuBitmaps, qemuDirtyExtents } from '../../src/qcow2/bitmaps/testing/qemu-peers.js';
import { createQcow2 } from '../../src/qcow2/create.js';
import { checkImage, qemuImg, qemuIo } from '../../src/qcow2/image/testing/qemu-tools.js';
import { runBitback } from '../helpers/cli.js';
import { needPeers } from '../helpers/peers.js';
import { startQemu } from '../helpers/qemu.js';

const K = 1024;
const M = K * K;
/** Not a multiple of any granularity used: the last granule is partial. */
const SIZE = 5 * M + 3 * 512;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-qcow2-bitmaps-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Random guest writes inside the disk, the same for a given seed. */
function randomWrites(seed: number, count: number): Array<[number, number]> {
  const random = prng(seed);
  const writes: Array<[number, number]> = [];
  for (let i = 0; i < count; i++) {
    const offset = random(SIZE - 1);
    writes.push([offset, 1 + random(Math.min(SIZE - offset, 300 * K))]);
  }
  writes.push([SIZE - 512, 512]);
  return writes;
}

async function assertNoCorruption(path: string): Promise<void> {
  const report = await checkImage(path);
  assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
}

test('bitmaps QEMU stored after qemu-io writes load in bitback with the extents qemu-nbd exports', { skip: needPeers('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo') }, async () => {
  const path = join(dir, 'qemu-made.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', path, String(SIZE));
  await qemuImg('bitmap', '--add', '-g', '512', path, 'fine');
  await qemuImg('bitmap', '--add', path, 'default');
  await qemuImg('bitmap', '--add', '-g', '1M', path, 'coarse');
  const writes = randomWrites(1, 25);
  await qemuIo(path, writes.map(([o, l]) => `write -P 0x3c ${o} ${l}`));
  await qemuImg('bitmap', '--disable', path, 'coarse');

  const bitmaps = await Qcow2Bitmaps.open(path, { readOnly: true });
  assert.deepEqual(
    bitmaps.list().map((b) => [b.name, b.granularity, b.flags, b.inconsistent]),
    [['fine', 512, ['auto'], false], ['default', 4096, ['auto'], false], ['coarse', M, [], false]],
  );
  for (const name of ['fine', 'default', 'coarse']) {
    const ours = bitmaps.dirtyExtents(name);
    assert.ok(ours.length > 0, `${name} is dirty`);
    assert.deepEqual(ours, await qemuDirtyExtents(path, name), name);
  }
  await bitmaps.close();
});

test('bitmaps bitback stores are listed by qemu-img info, exported by qemu-nbd with the same extents, and qemu-img check is clean', { skip: needPeers('qemu-img', 'qemu-nbd', 'nbdinfo') }, async () => {
  for (const clusterSize of [512, 65536]) {
    const path = join(dir, `ours-${clusterSize}.qcow2`);
    await createQcow2(path, { size: SIZE, clusterSize });
    const granularities = [512, 8192, 2 * M];
    const bitmaps = await Qcow2Bitmaps.open(path);
    for (const g of granularities) await bitmaps.add(`g${g}`, { granularity: g });
    await bitmaps.add('default');
    await bitmaps.add('off', { disabled: true });
    const models = granularities.map((g) => new GranuleModel(SIZE, g));
    for (const [o, l] of randomWrites(clusterSize, 30)) {
      await bitmaps.image.write(o, new Uint8Array(l).fill(0xa5));
      for (const m of models) m.write(o, l);
    }
    await bitmaps.close();

    const defaultGranularity = Math.min(65536, Math.max(4096, clusterSize));
    assert.deepEqual(await qemuBitmaps(path), [
      ...granularities.map((g) => ({ name: `g${g}`, granularity: g, flags: ['auto'] })),
      { name: 'default', granularity: defaultGranularity, flags: ['auto'] },
      { name: 'off', granularity: defaultGranularity, flags: [] },
    ]);
    for (const [i, g] of granularities.entries()) {
      assert.deepEqual(await qemuDirtyExtents(path, `g${g}`), models[i]!.extents(), `cluster size ${clusterSize}, granularity ${g}`);
    }
    assert.deepEqual(await qemuDirtyExtents(path, 'off'), []);
    await assertNoCorruption(path);
    // QEMU goes on using them: qemu-io records more writes into what bitback stored.
    await qemuIo(path, [`write 0 512`]);
    models[0]!.write(0, 512);
    assert.deepEqual(await qemuDirtyExtents(path, 'g512'), models[0]!.extents());
    await assertNoCorruption(path);
  }
});

test('merges across granularities and images equal what qemu-img bitmap --merge makes', { skip: needPeers('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo') }, async () => {
  const base = join(dir, 'merge-base.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', base, String(SIZE));
  await qemuImg('bitmap', '--add', '-g', '64K', base, 'coarse');
  await qemuImg('bitmap', '--add', '-g', '512', base, 'fine');
  await qemuIo(base, randomWrites(5, 6).map(([o, l]) => `write ${o} ${l}`));
  await qemuImg('bitmap', '--disable', base, 'coarse');
  await qemuImg('bitmap', '--disable', base, 'fine');
  await qemuImg('bitmap', '--add', '-g', '4K', base, 'src');
  await qemuIo(base, randomWrites(6, 8).map(([o, l]) => `write ${o} ${l}`));
  const other = join(dir, 'merge-other.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', other, String(SIZE));
  await qemuImg('bitmap', '--add', '-g', '2M', other, 'far');
  await qemuIo(other, randomWrites(7, 5).map(([o, l]) => `write ${o} ${l}`));

  const theirs = join(dir, 'merge-qemu.qcow2');
  const ours = join(dir, 'merge-bitback.qcow2');
  await copyFile(base, theirs);
  await copyFile(base, ours);
  for (const [target, args] of [['coarse', ['src']], ['fine', ['src']], ['fine', ['far', '-b', other]], ['coarse', ['far', '-b', other, '-F', 'qcow2']]] as const) {
    await qemuImg('bitmap', '--merge', ...args, theirs, target);
    const result = await runBitback(['bitmap', 'merge', '--merge', ...args, ours, target]);
    assert.equal(result.status, 0, result.stderr);
  }
  for (const name of ['coarse', 'fine', 'src']) {
    const expected = await qemuDirtyExtents(theirs, name);
    const dump = await runBitback(['bitmap', 'dump', '--json', ours, name]);
    assert.equal(dump.status, 0, dump.stderr);
    assert.deepEqual(JSON.parse(dump.stdout), expected, `${name}: bitback's merge`);
    assert.deepEqual(await qemuDirtyExtents(ours, name), expected, `${name}: bitback's merge as QEMU reads it`);
  }
  // The merge really changed something.
  assert.notDeepEqual(await qemuDirtyExtents(base, 'fine'), await qemuDirtyExtents(ours, 'fine'));
  await assertNoCorruption(ours);
});

test('the SHA-256 of a loaded bitmap equals QEMU\'s x-debug-block-dirty-bitmap-sha256 of the same image', { skip: needPeers('qemu-img', 'qemu-io', 'qemu-system-x86_64') }, async () => {
  const ours = join(dir, 'sha-ours.qcow2');
  await createQcow2(ours, { size: SIZE });
  const writer = await Qcow2Bitmaps.open(ours);
  await writer.add('a', { granularity: 512 });
  await writer.add('b', { granularity: 65536 });
  for (const [o, l] of randomWrites(9, 20)) await writer.image.write(o, new Uint8Array(l).fill(1));
  await writer.close();
  const theirs = join(dir, 'sha-qemu.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', theirs, String(SIZE));
  await qemuImg('bitmap', '--add', '-g', '16K', theirs, 'c');
  await qemuIo(theirs, randomWrites(10, 20).map(([o, l]) => `write ${o} ${l}`));

  const qemu = await startQemu([
    '-M', 'none', '-nodefaults', '-display', 'none',
    '-blockdev', `driver=qcow2,node-name=ours,read-only=on,file.driver=file,file.filename=${ours}`,
    '-blockdev', `driver=qcow2,node-name=theirs,read-only=on,file.driver=file,file.filename=${theirs}`,
  ]);
  try {
    for (const [node, path, names] of [['ours', ours, ['a', 'b']], ['theirs', theirs, ['c']]] as const) {
      const loaded = await Qcow2Bitmaps.open(path, { readOnly: true });
      for (const name of names) {
        const { sha256 } = await qemu.qmp<{ sha256: string }>('x-debug-block-dirty-bitmap-sha256', { node, name });
        const bitmap = loaded.get(name)!;
        assert.ok(!bitmap.isEmpty(), `${node}/${name} is dirty`);
        assert.equal(sha256Qemu(bitmap), sha256, `${node}/${name}`);
      }
      await loaded.close();
    }
  } finally {
    await qemu.kill();
  }
});
