/**
 * checkQcow2 against qemu-img check on clean images that qemu-img and qemu-io made: every
 * field both report must be equal, and so must the human report and the exit status.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkQcow2, formatQcow2CheckHuman, qcow2CheckExitStatus, type Qcow2CheckResult } from '../../src/qcow2/check/index.js';
import { makeQcow2, mustRun, qemuImgCheckHuman, qemuImgCheckJson, type MakeImageOptions } from '../../src/qcow2/check/testing/qemu-tools.js';
import { assertSameAsQemu } from '../../src/qcow2/check/testing/compare-with-qemu.js';
import { needPeers } from '../helpers/peers.js';

const skip = needPeers('qemu-img', 'qemu-io');

const CLEAN_IMAGES: Array<{ name: string; image: MakeImageOptions }> = [
  {
    name: 'default 64 KiB clusters with scattered writes',
    image: { size: '64M', io: ['write -P 0x11 0 1M', 'write -P 0x22 5M 64k', 'write -P 0x33 40M 192k', 'write -P 0x44 3M 8k'] },
  },
  {
    name: '512-byte clusters',
    image: { size: '8M', options: ['cluster_size=512'], io: ['write -P 0x11 0 100k', 'write -P 0x22 3M 4k', 'write -P 0x33 7M 1536'] },
  },
  {
    name: '4 KiB clusters with 1-bit refcounts',
    image: { size: '32M', options: ['cluster_size=4096', 'refcount_bits=1'], io: ['write -P 0x11 0 512k', 'write -P 0x22 20M 64k'] },
  },
  {
    name: '2 MiB clusters',
    image: { size: '64M', options: ['cluster_size=2M'], io: ['write -P 0x11 0 1M', 'write -P 0x22 10M 64k'] },
  },
  {
    name: '64-bit refcounts with snapshots',
    image: {
      size: '16M',
      options: ['refcount_bits=64'],
      io: ['write -P 0x11 0 512k'],
      snapshots: [{ name: 's1', io: ['write -P 0x22 64k 64k', 'write -P 0x23 8M 64k'] }, { name: 's2', io: ['write -P 0x24 0 64k'] }],
    },
  },
  {
    name: 'a version 2 image (compat=0.10) with a snapshot',
    image: { size: '16M', options: ['compat=0.10'], io: ['write -P 0x11 0 256k'], snapshots: [{ name: 's1', io: ['write -P 0x22 128k 64k'] }] },
  },
  {
    name: 'three snapshots over rewritten data',
    image: {
      size: '32M',
      io: ['write -P 0x11 0 2M'],
      snapshots: [
        { name: 'a', io: ['write -P 0x21 0 64k', 'write -P 0x22 1M 128k'] },
        { name: 'b', io: ['write -P 0x31 64k 64k', 'write -P 0x32 20M 64k'] },
        { name: 'c', io: ['discard 0 256k'] },
      ],
    },
  },
  {
    name: 'persistent bitmaps with data',
    image: { size: '64M', bitmaps: ['b0', 'b1'], io: ['write -P 0x11 0 1M', 'write -P 0x22 33M 64k'] },
  },
  {
    name: 'zero clusters, preallocated zero clusters and discards',
    image: { size: '16M', io: ['write -P 0x11 0 1M', 'write -z 0 64k', 'write -z -u 128k 64k', 'discard 256k 128k', 'write -z 4M 64k'] },
  },
  {
    name: 'extended L2 entries with subcluster writes',
    image: { size: '16M', options: ['extended_l2=on'], io: ['write -P 0x11 0 4k', 'write -P 0x22 6k 2k', 'write -P 0x33 1M 64k', 'write -z 2M 4k'] },
  },
  { name: 'an image without data', image: { size: '1G' } },
  { name: 'an image of size 0', image: { size: '0' } },
];

describe('checkQcow2() on clean images agrees with qemu-img check', { skip }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-check-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const [i, { name, image }] of CLEAN_IMAGES.entries()) {
    test(`checkQcow2() of ${name} equals qemu-img check`, async () => {
      const path = join(dir, `clean-${i}.qcow2`);
      await makeQcow2(path, image);
      await assertCleanLikeQemu(path, name);
    });
  }

  test('checkQcow2() of compressed images (qemu-img convert -c) equals qemu-img check', async () => {
    for (const clusterSize of ['64k', '4k', '512']) {
      const source = join(dir, `compress-source-${clusterSize}.qcow2`);
      const target = join(dir, `compressed-${clusterSize}.qcow2`);
      await makeQcow2(source, { size: '8M', io: ['write -P 0x11 0 300k', 'write -P 0x5a 1M 64k', 'write -P 0x22 5M 4k'] });
      await mustRun('qemu-img', ['convert', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, source, target]);
      const result = await assertCleanLikeQemu(target, `compressed, ${clusterSize} clusters`);
      assert.ok(result['compressed-clusters'] > 0, 'the image has compressed clusters');
    }
  });

  test('checkQcow2() reports the file name as given', async () => {
    const path = join(dir, 'named.qcow2');
    await makeQcow2(path, { size: '1M' });
    const result = await checkQcow2(path);
    assert.equal(result.filename, path);
    assert.equal(result.format, 'qcow2');
  });
});

async function assertCleanLikeQemu(path: string, what: string): Promise<Qcow2CheckResult> {
  const ours = await checkQcow2(path);
  const theirs = await qemuImgCheckJson(path);
  assertSameAsQemu(ours, theirs.json, what);
  assert.equal(theirs.status, 0, `${what}: qemu-img check says the image is clean`);
  assert.equal(qcow2CheckExitStatus(ours), theirs.status, `${what}: exit status`);
  assert.deepEqual(ours.findings, [], `${what}: no findings`);
  const human = await qemuImgCheckHuman(path);
  assert.equal(formatQcow2CheckHuman(ours), human.stdout, `${what}: human report`);
  return ours;
}
