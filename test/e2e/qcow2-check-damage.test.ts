/**
 * checkQcow2 against qemu-img check on images damaged on purpose (bytes patched at offsets the
 * format codecs find): the counts, the exit status and the human report must agree. And
 * repairs: what they fix agrees with `qemu-img check -r`, qemu-img finds the result clean, and
 * the guest data is unchanged.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Qcow2RepairRefusedError,
  checkQcow2,
  formatQcow2CheckHuman,
  qcow2CheckExitStatus,
} from '../../src/qcow2/check/index.js';
import { assertSameAsQemu } from '../../src/qcow2/check/testing/compare-with-qemu.js';
import { PatchableImage } from '../../src/qcow2/check/testing/image-patch.js';
import { guestBytes, makeQcow2, qemuImgCheckHuman, qemuImgCheckJson, runTool } from '../../src/qcow2/check/testing/qemu-tools.js';
import { needPeers } from '../helpers/peers.js';

const skip = needPeers('qemu-img', 'qemu-io');

/** A damage: patches a copy of the base image. */
type Damage = (image: PatchableImage) => void;

/** The first cluster whose stored refcount is 0 (the base image has a discarded hole). */
function freeCluster(image: PatchableImage, skipFirst = 0): number {
  let skipped = 0;
  for (let cluster = 0; cluster < image.fileClusters; cluster++) {
    if (image.refcount(cluster) !== 0) continue;
    if (skipped++ === skipFirst) return cluster;
  }
  throw new Error('the base image has no free cluster');
}

/** The L2 table of the first L1 entry and the host cluster of its first entry. */
function firstData(image: PatchableImage): { l2Offset: number; cluster: number } {
  const l2Offset = image.l1()[0]!.l2Offset;
  const entry = image.l2(l2Offset, 0);
  if (entry.kind !== 'normal') throw new Error(`guest cluster 0 is ${entry.kind}`);
  return { l2Offset, cluster: entry.hostOffset / image.clusterSize };
}

const DAMAGES: Array<{ name: string; damage: Damage }> = [
  { name: 'a leaked cluster (a free cluster with refcount 1)', damage: (img) => img.setRefcount(freeCluster(img), 1) },
  { name: 'a used data cluster with refcount 0', damage: (img) => img.setRefcount(firstData(img).cluster, 0) },
  { name: 'a used data cluster with refcount 2', damage: (img) => img.setRefcount(firstData(img).cluster, 2) },
  {
    name: 'an L2 table pointer past the end of the file',
    damage: (img) => img.setL1(0, { l2Offset: (img.fileClusters + 10) * img.clusterSize, copied: true }),
  },
  {
    name: 'a COPIED flag wrongly cleared in an L2 entry',
    damage: (img) => {
      const { l2Offset } = firstData(img);
      const entry = img.l2(l2Offset, 0);
      if (entry.kind !== 'normal') throw new Error('not normal');
      img.setL2(l2Offset, 0, { ...entry, copied: false });
    },
  },
  { name: 'a COPIED flag wrongly cleared in an L1 entry', damage: (img) => img.setL1(0, { ...img.l1()[0]!, copied: false }) },
  { name: 'a refcount block missing from the refcount table', damage: (img) => img.dropRefcountBlock(0) },
];

describe('checkQcow2() on damaged images agrees with qemu-img check', { skip }, () => {
  let dir: string;
  let base: string;
  let snapshotted: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-damage-'));
    base = join(dir, 'base.qcow2');
    await makeQcow2(base, { size: '64M', io: ['write -P 0x11 0 1M', 'discard 256k 256k', 'write -P 0x22 40M 64k'] });
    snapshotted = join(dir, 'snapshotted.qcow2');
    await makeQcow2(snapshotted, { size: '16M', io: ['write -P 0x11 0 512k'], snapshots: [{ name: 's1', io: ['write -P 0x22 64k 64k'] }] });
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A copy of `source` with `damage` applied. */
  async function damaged(source: string, name: string, damage: Damage): Promise<string> {
    const path = join(dir, `${name}.qcow2`);
    await copyFile(source, path);
    const image = await PatchableImage.load(path);
    damage(image);
    await image.save();
    return path;
  }

  for (const [i, { name, damage }] of DAMAGES.entries()) {
    test(`checkQcow2() counts ${name} as qemu-img check does`, async () => {
      const path = await damaged(base, `damage-${i}`, damage);
      const ours = await checkQcow2(path);
      const theirs = await qemuImgCheckJson(path);
      assertSameAsQemu(ours, theirs.json, name);
      assert.notEqual(theirs.status, 0, 'qemu-img check finds the damage');
      assert.equal(qcow2CheckExitStatus(ours), theirs.status, 'exit status (2 corruptions, 3 leaks only)');
      assert.ok(ours.findings.length > 0, 'the findings say what is wrong');
      assert.equal(formatQcow2CheckHuman(ours), (await qemuImgCheckHuman(path)).stdout, 'human report');
    });
  }

  test('checkQcow2() counts a shared cluster whose refcount is too small as qemu-img check does', async () => {
    const path = await damaged(snapshotted, 'shared-too-small', (img) => img.setRefcount(firstData(img).cluster, 1));
    const ours = await checkQcow2(path);
    assertSameAsQemu(ours, (await qemuImgCheckJson(path)).json, 'shared cluster with refcount 1');
    assert.ok(ours.findings.some((f) => f.kind === 'refcount-too-small'));
  });

  test("repair 'leaks' frees leaked clusters: qemu-img check then finds the image clean and the data unchanged", async () => {
    const damage: Damage = (img) => {
      img.setRefcount(freeCluster(img, 0), 1);
      img.setRefcount(freeCluster(img, 0), 3); // the next free one
      img.setRefcount(firstData(img).cluster, 2);
    };
    const ours = await damaged(base, 'leaky-ours', damage);
    const theirs = await damaged(base, 'leaky-qemu', damage);
    await guestBytes(base, join(dir, 'before.raw'));

    const result = await checkQcow2(ours, { repair: 'leaks' });
    const qemuRepair = await qemuImgCheckJson(theirs, ['-r', 'leaks']);
    assertSameAsQemu({ ...result, filename: theirs }, qemuRepair.json, "repair 'leaks' compared with qemu-img check -r leaks");
    assert.ok(result['leaks-fixed'] >= 3);
    assert.ok(result.findings.some((f) => f.repaired === true && f.kind === 'leak'));

    const after = await qemuImgCheckJson(ours);
    assert.equal(after.status, 0, `qemu-img check after the repair: ${after.stderr}`);
    await guestBytes(ours, join(dir, 'after.raw'));
    assert.ok((await readFile(join(dir, 'before.raw'))).equals(await readFile(join(dir, 'after.raw'))), 'the guest data is unchanged');
  });

  test("repair 'leaks' leaves corruptions alone, as qemu-img check -r leaks does", async () => {
    const damage = DAMAGES[3]!.damage; // L2 pointer past the end: its old table and data leak
    const ours = await damaged(base, 'past-eof-ours', damage);
    const theirs = await damaged(base, 'past-eof-qemu', damage);
    const result = await checkQcow2(ours, { repair: 'leaks' });
    const qemuRepair = await qemuImgCheckJson(theirs, ['-r', 'leaks']);
    assertSameAsQemu({ ...result, filename: theirs }, qemuRepair.json, "repair 'leaks' with corruptions");
    assert.ok(result.corruptions > 0 && result['leaks-fixed'] > 0);
  });

  test("repair 'all' fixes COPIED flags and too-small refcounts as qemu-img check -r all does", async () => {
    const cases: Array<[string, string, Damage]> = [
      [base, 'copied', (img) => {
        DAMAGES[4]!.damage(img);
        DAMAGES[5]!.damage(img);
      }],
      [snapshotted, 'too-small', (img) => img.setRefcount(firstData(img).cluster, 1)],
    ];
    for (const [source, name, damage] of cases) {
      const ours = await damaged(source, `all-${name}-ours`, damage);
      const theirs = await damaged(source, `all-${name}-qemu`, damage);
      const result = await checkQcow2(ours, { repair: 'all' });
      const qemuRepair = await qemuImgCheckJson(theirs, ['-r', 'all']);
      assertSameAsQemu({ ...result, filename: theirs }, qemuRepair.json, `repair 'all' of ${name}`);
      assert.ok(result['corruptions-fixed'] > 0, name);
      const after = await qemuImgCheckJson(ours);
      assert.equal(after.status, 0, `${name}: qemu-img check after the repair: ${after.stderr}`);
      const human = await runTool('qemu-img', ['check', '-f', 'qcow2', '-r', 'all', await damaged(source, `all-${name}-human`, damage)]);
      assert.equal(formatQcow2CheckHuman({ ...result }), human.stdout, `${name}: human report of the repair`);
    }
  });

  test('repairs that need a rebuild or fix other corruptions are refused and write nothing', async () => {
    const cases: Array<[string, Damage, 'leaks' | 'all']> = [
      ['missing-block', DAMAGES[6]!.damage, 'leaks'],
      ['missing-block-all', DAMAGES[6]!.damage, 'all'],
      ['refcount-zero', DAMAGES[1]!.damage, 'leaks'],
      ['past-eof-all', DAMAGES[3]!.damage, 'all'],
    ];
    for (const [name, damage, repair] of cases) {
      const path = await damaged(base, `refused-${name}`, damage);
      const before = await readFile(path);
      await assert.rejects(checkQcow2(path, { repair }), (e: unknown) => {
        assert.ok(e instanceof Qcow2RepairRefusedError, `${name}: ${String(e)}`);
        assert.equal(e.code, 'NOT_SUPPORTED');
        assert.match(e.message, new RegExp(`^Cannot repair qcow2 image ${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
        return true;
      });
      assert.ok(before.equals(await readFile(path)), `${name}: the file is unchanged`);
    }
  });
});
