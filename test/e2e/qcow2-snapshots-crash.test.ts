/**
 * Crash ordering of snapshot create, apply and delete: each operation is run again and again
 * on a copy of the same image, every file write after the n-th failing as if the process died
 * there, for every n until the operation completes.
 *
 * What must hold at every n (docs/qcow2-snapshots.md, "Crash safety"):
 * - `qemu-img check` finds leaks at most, plus COPIED flags that are clear on clusters whose
 *   refcount is 1 (the over-cautious direction: a write copies a cluster it could have written
 *   in place). A COPIED flag set on a shared cluster, or a refcount too low, fails the test.
 *   (Those flags cannot be exact at every write: a cluster's refcount and its flag live in
 *   different clusters, and QEMU's own snapshot code has the same windows.)
 * - after `qemu-img check -r all` the image is clean, its content is the content before or
 *   after the operation, and the snapshot table is the old or the new one, never a mix.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ImageFile } from '../../src/qcow2/image/image-file.js';
import { checkImage, compareImages, qemuImg, qemuIo, run } from '../../src/qcow2/image/testing/qemu-tools.js';
import { applySnapshot, createSnapshot, deleteSnapshot, listSnapshots } from '../../src/qcow2/snapshots/index.js';
import { needPeers } from '../helpers/peers.js';

const skip = needPeers('qemu-img', 'qemu-io');
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-snapshot-crash-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs `operation` with every file write after the `limit`-th failing. Returns whether it completed. */
async function runUntil(limit: number, operation: () => Promise<unknown>): Promise<boolean> {
  const original = ImageFile.prototype.write;
  let writes = 0;
  ImageFile.prototype.write = function (this: ImageFile, position: number, data: Uint8Array): Promise<void> {
    writes++;
    if (writes > limit) return Promise.reject(new Error('simulated crash'));
    return original.call(this, position, data);
  };
  try {
    await operation();
    return true;
  } catch (e) {
    if (!(e instanceof Error) || !/simulated crash/.test(e.message + String(e.cause))) throw e;
    return false;
  } finally {
    ImageFile.prototype.write = original;
  }
}

/** Fails unless qemu-img check finds only leaks and over-cautious (clear, refcount 1) COPIED flags. */
async function assertOnlyHarmless(path: string, step: string): Promise<void> {
  const result = await run('qemu-img', ['check', '-f', 'qcow2', path]);
  const errors = result.stderr.split('\n').filter((line) => line.startsWith('ERROR'));
  const harmless = errors.filter((line) => /^ERROR OFLAG_COPIED (data|L2) cluster: .* refcount=1$/.test(line));
  assert.deepEqual(errors, harmless, `${step}: ${result.stdout}${result.stderr}`);
  const report = await checkImage(path);
  assert.equal(report.checkErrors, 0, `${step}: ${report.text}`);
  assert.equal(report.corruptions, harmless.length, `${step}: every corruption is a harmless COPIED flag\n${result.stderr}`);
}

async function repairAndCheck(path: string, step: string): Promise<void> {
  await run('qemu-img', ['check', '-q', '-r', 'all', '-f', 'qcow2', path]);
  const report = await checkImage(path);
  assert.deepEqual([report.corruptions, report.leaks, report.checkErrors], [0, 0, 0], `${step} after repair: ${report.text}`);
}

interface Scenario {
  name: string;
  /** Snapshots the template has. */
  snapshots: string[];
  operation: (path: string) => Promise<unknown>;
  /** Snapshot names after the operation completed. */
  after: string[];
  /** Whether the active content after completion is the snapshot 'old' content (apply). */
  reverts: boolean;
}

const SCENARIOS: Scenario[] = [
  { name: 'the first create', snapshots: [], operation: (p) => createSnapshot(p, 'new'), after: ['new'], reverts: false },
  { name: 'a second create', snapshots: ['old'], operation: (p) => createSnapshot(p, 'new'), after: ['old', 'new'], reverts: false },
  { name: 'apply', snapshots: ['old'], operation: (p) => applySnapshot(p, 'old'), after: ['old'], reverts: true },
  { name: 'delete', snapshots: ['old'], operation: (p) => deleteSnapshot(p, 'old'), after: [], reverts: false },
];

for (const scenario of SCENARIOS) {
  test(`a crash after any write of ${scenario.name} leaves an image qemu-img check finds without harm`, { skip }, async () => {
    // 512-byte clusters, so that the operation spans many L2 tables and refcount blocks.
    const template = join(dir, `${scenario.name}.qcow2`.replaceAll(' ', '-'));
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', template, '1M');
    await qemuIo(template, ['write -P 0x11 0 20k', 'write -c -P 0x12 600k 512', 'write -P 0x13 800k 2k']);
    const rawOld = `${template}.old.raw`;
    await qemuImg('convert', '-O', 'raw', template, rawOld);
    for (const name of scenario.snapshots) await qemuImg('snapshot', '-c', name, template);
    await qemuIo(template, ['write -P 0x14 4k 8k', 'write -P 0x15 900k 1k']);
    const rawBefore = `${template}.before.raw`;
    await qemuImg('convert', '-O', 'raw', template, rawBefore);

    const path = `${template}.crash.qcow2`;
    let completed = false;
    for (let limit = 0; !completed; limit++) {
      assert.ok(limit < 10_000, 'the operation completes eventually');
      await copyFile(template, path);
      completed = await runUntil(limit, () => scenario.operation(path));
      const step = `${scenario.name}, writes after the ${limit}th failing`;
      await assertOnlyHarmless(path, step);
      await repairAndCheck(path, step);
      const names = (await listSnapshots(path)).map((s) => s.name);
      if (completed) assert.deepEqual(names, scenario.after, step);
      else assert.ok([scenario.snapshots, scenario.after].some((n) => JSON.stringify(n) === JSON.stringify(names)), `${step}: table ${names}`);
      const asBefore = (await compareImages(path, 'qcow2', rawBefore, 'raw')) === undefined;
      const asOld = (await compareImages(path, 'qcow2', rawOld, 'raw')) === undefined;
      if (scenario.reverts) {
        assert.ok(asBefore || asOld, `${step}: content is neither before nor the snapshot's`);
        if (completed) assert.ok(asOld, `${step}: reverted`);
      } else {
        assert.ok(asBefore, `${step}: content changed`);
      }
      if (names.includes('new')) {
        // A snapshot that made it into the table is whole: qemu-img reverts to it.
        await qemuImg('snapshot', '-a', 'new', path);
        assert.equal(await compareImages(path, 'qcow2', rawBefore, 'raw'), undefined, `${step}: snapshot 'new'`);
      }
      if (names.includes('old')) {
        await qemuImg('snapshot', '-a', 'old', path);
        assert.equal(await compareImages(path, 'qcow2', rawOld, 'raw'), undefined, `${step}: snapshot 'old'`);
      }
    }
  });
}
