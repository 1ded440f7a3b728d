/**
 * Write ordering, checked at every point: a scripted sequence of changes (allocation, refcount
 * table growth, copy-on-write of clusters and L2 tables shared with an internal snapshot,
 * compressed clusters, zero-writes and trims that free clusters) is run again and again, each
 * time with every write to the file after the n-th failing, as if the process died there. For
 * every n, `qemu-img check` must find no corruption (leaks are allowed) and the image must
 * still open and read.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { needPeers } from '../../../test/helpers/peers.js';
import { Random } from '../../block/testing/pattern.js';
import { createQcow2 } from '../create.js';
import { ImageFile } from './image-file.js';
import { Qcow2Image } from './image.js';
import { checkImage, qemuImg, qemuIo } from './testing/qemu-tools.js';

const K = 1024;
let dir: string;
let template: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-crash-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * The changes, the same every run, over the template (see the test). 512-byte clusters with
 * 64-bit refcounts: one refcount table cluster covers 2 MiB of file, which the template almost
 * fills, so that the big write here makes the table grow.
 */
async function script(image: Qcow2Image): Promise<void> {
  const random = new Random(99);
  await image.write(0, random.nonZeroBytes(6 * K)); // over the snapshot: copies shared clusters and L2 tables
  await image.writeCompressed(600 * K, new Uint8Array(512).fill(3)); // a compressed cluster
  await image.write(600 * K + 100, new Uint8Array(50).fill(4)); // copy-on-write out of it
  await image.writeZeroes(4 * K, 3 * K, { mayTrim: true }); // frees clusters
  await image.trim(30 * K, 2 * K);
  await image.write(4000 * K, random.nonZeroBytes(200 * K)); // grows the refcount table
  await image.write(5 * K, random.nonZeroBytes(3 * K)); // reuses freed clusters
}

/** Runs the script with every file write after the `limit`-th failing; returns how many writes were attempted. */
async function runUntil(path: string, limit: number): Promise<number> {
  const original = ImageFile.prototype.write;
  let writes = 0;
  ImageFile.prototype.write = function (this: ImageFile, position: number, data: Uint8Array): Promise<void> {
    writes++;
    if (writes > limit) return Promise.reject(new Error('simulated crash'));
    return original.call(this, position, data);
  };
  try {
    const image = await Qcow2Image.open(path);
    try {
      await script(image);
    } catch (e) {
      if (!(e instanceof Error) || !/simulated crash/.test(e.message + String((e as Error).cause))) throw e;
    }
    await image.close().catch(() => {});
  } finally {
    ImageFile.prototype.write = original;
  }
  return writes;
}

test('a crash after any write of a sequence of changes leaves an image qemu-img check finds consistent', { skip: needPeers('qemu-img', 'qemu-io') }, async () => {
  template = join(dir, 'template.qcow2');
  await createQcow2(template, { size: 6 * 1024 * K, clusterSize: 512, refcountBits: 64 });
  await qemuIo(template, ['write -P 0x11 0 40k', 'write -P 0x22 1200k 300k', 'write -P 0x33 2000k 1500k']);
  await qemuImg('snapshot', '-c', 'snap', template);
  const tableClusters = async (path: string): Promise<number> => new DataView((await readFile(path)).buffer).getUint32(56);
  assert.equal(await tableClusters(template), 1, 'the template still has its first refcount table');

  const full = join(dir, 'full.qcow2');
  await copyFile(template, full);
  const total = await runUntil(full, Infinity);
  assert.ok(total > 50, `the script makes ${total} writes`);
  assert.ok((await tableClusters(full)) > 1, 'the script grows the refcount table');
  for (let limit = 0; limit < total; limit++) {
    const path = join(dir, `crash-${limit}.qcow2`);
    await copyFile(template, path);
    await runUntil(path, limit);
    const report = await checkImage(path);
    assert.deepEqual([report.checkErrors, report.corruptions], [0, 0], `crash after write ${limit} of ${total}: ${report.text}`);
    const image = await Qcow2Image.open(path, { readOnly: true });
    await image.read(0, image.size);
    await image.close();
    await rm(path);
  }
});
