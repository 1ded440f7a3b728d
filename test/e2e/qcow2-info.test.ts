/**
 * `imageInfo` against `qemu-img info --output=json` on images qemu-img made: every field we
 * report must equal qemu-img's.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needPeers } from '../helpers/peers.js';
import { mustRun } from '../../src/qcow2/check/testing/qemu-tools.js';
import { imageInfo, imageInfoChain } from '../../src/qcow2/info.js';
import { BitbackError } from '../../src/errors.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-info-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs a peer program and fails unless it exits 0; resolves with its standard output. */
const sh = (program: string, ...args: string[]): Promise<string> => mustRun(program, args);

async function qemuInfo(path: string, chain = false): Promise<unknown> {
  return JSON.parse(await sh('qemu-img', 'info', '-U', '--output=json', ...(chain ? ['--backing-chain'] : []), path));
}

describe('imageInfo() reports what qemu-img info reports', { skip: needPeers('qemu-img', 'qemu-io') }, () => {
  test('a plain image, a v2 image, 512-byte and 2 MiB clusters, 64-bit refcounts, a raw file', async () => {
    const cases: Array<[string, string[]]> = [
      ['plain.qcow2', ['-f', 'qcow2']],
      ['v2.qcow2', ['-f', 'qcow2', '-o', 'compat=0.10']],
      ['small.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=512,refcount_bits=64']],
      ['big.qcow2', ['-f', 'qcow2', '-o', 'cluster_size=2M,refcount_bits=1']],
      ['l2.qcow2', ['-f', 'qcow2', '-o', 'extended_l2=on']],
    ];
    for (const [name, args] of cases) {
      const path = join(dir, name);
      await sh('qemu-img', 'create', '-q', ...args, path, '100M');
      await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 7 1M 300k', path);
      assert.deepEqual(await imageInfo(path), await qemuInfo(path), name);
    }
    const raw = join(dir, 'disk.raw');
    await writeFile(raw, '');
    await truncate(raw, 12345 * 512);
    assert.deepEqual(await imageInfo(raw), await qemuInfo(raw));
  });

  test('a backing chain with bitmaps (enabled, disabled, in use) and internal snapshots', async () => {
    const base = join(dir, 'base.qcow2');
    const mid = join(dir, 'mid.qcow2');
    const top = join(dir, 'top.qcow2');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', base, '64M');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', mid);
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', mid, '-F', 'qcow2', top);
    await sh('qemu-img', 'bitmap', '--add', '--granularity', '4K', top, 'b0');
    await sh('qemu-img', 'bitmap', '--add', '--disable', top, 'b1');
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 1M', top);
    await sh('qemu-img', 'snapshot', '-c', 'first', top);
    await sh('qemu-img', 'snapshot', '-c', 'second', top);
    assert.deepEqual(await imageInfo(top), await qemuInfo(top));
    assert.deepEqual(await imageInfo(mid), await qemuInfo(mid));
    assert.deepEqual(await imageInfoChain(top), await qemuInfo(top, true));
  });

  test('a backing cycle is an error naming the chain, not a hang', async () => {
    const a = join(dir, 'cycle-a.qcow2');
    const b = join(dir, 'cycle-b.qcow2');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', a, '1M');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', a, '-F', 'qcow2', b);
    await sh('qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', b, '-F', 'qcow2', a);
    await assert.rejects(imageInfoChain(a), (e: unknown) => e instanceof BitbackError && /cycle/.test(e.message) && e.message.includes('cycle-a.qcow2'));
  });
});

test('imageInfo() of a missing file is NOT_FOUND naming it', async () => {
  await assert.rejects(imageInfo(join(tmpdir(), 'bitback-no-such-image.qcow2')), (e: unknown) => e instanceof BitbackError && e.code === 'NOT_FOUND' && /no-such-image/.test(e.message));
});

test('imageInfo() reads a snapshot table that ends the file without its last padding (regression)', { skip: needPeers('qemu-img', 'qemu-io') }, async () => {
  const path = join(dir, 'snap512.qcow2');
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', path, '1M');
  await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 8k', path);
  await sh('qemu-img', 'snapshot', '-c', 's', path);
  assert.deepEqual(await imageInfo(path), await qemuInfo(path));
});
