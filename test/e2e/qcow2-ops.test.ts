/**
 * `bitback image create / map / compare / convert` and `bitback io` on qcow2, against qemu-img and
 * qemu-io on the same images.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needPeers } from '../helpers/peers.js';
import { mustRun } from '../../src/qcow2/check/testing/qemu-tools.js';
import { runBitback, runProgram } from '../helpers/cli.js';

const MiB = 1024 * 1024;
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-ops-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Runs a peer program and fails unless it exits 0; resolves with its standard output. */
const sh = (program: string, ...args: string[]): Promise<string> => mustRun(program, args);

async function bitback(...args: string[]): Promise<string> {
  const r = await runBitback(args);
  assert.equal(r.status, 0, `bitback ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

async function checkClean(path: string): Promise<void> {
  const r = await runProgram('qemu-img', ['check', '--output=json', path]);
  assert.equal(r.status, 0, `qemu-img check ${path}: ${r.stdout}${r.stderr}`);
  const report = JSON.parse(r.stdout) as { 'check-errors': number; leaks?: number; corruptions?: number };
  assert.equal(report['check-errors'], 0);
  assert.equal(report.leaks ?? 0, 0, `leaks in ${path}`);
  assert.equal(report.corruptions ?? 0, 0, `corruptions in ${path}`);
}

/** A source image with data, zeroes over data, and a hole: written by qemu-io. */
async function sourceImage(name: string): Promise<string> {
  const path = join(dir, name);
  await sh('qemu-img', 'create', '-q', '-f', 'qcow2', path, '64M');
  await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x22 10M 100k', '-c', 'write -z 1M 64k', '-c', 'write -P 0x33 63M 1M', path);
  return path;
}

describe('bitback image against qemu-img', { skip: needPeers('qemu-img', 'qemu-io') }, () => {
  test('create makes images qemu-img accepts, with every creation option', async () => {
    const cases: Array<[string, string[], Record<string, unknown>]> = [
      ['c1.qcow2', ['-o', 'cluster_size=512'], { 'cluster-size': 512 }],
      ['c2.qcow2', ['-o', 'cluster_size=2M,refcount_bits=1'], { 'cluster-size': 2 * MiB }],
      ['c3.qcow2', ['-o', 'compat=0.10'], { 'cluster-size': 65536 }],
      ['c4.qcow2', ['-o', 'refcount_bits=64,preallocation=metadata'], { 'cluster-size': 65536 }],
    ];
    for (const [name, args, expected] of cases) {
      const path = join(dir, name);
      await bitback('image', 'create', '-q', '-f', 'qcow2', ...args, path, '100M');
      await checkClean(path);
      const info = JSON.parse(await sh('qemu-img', 'info', '--output=json', path)) as Record<string, unknown>;
      assert.equal(info['virtual-size'], 100 * MiB);
      for (const [k, v] of Object.entries(expected)) assert.equal(info[k], v, `${name} ${k}`);
    }
    const overlay = join(dir, 'overlay.qcow2');
    await bitback('image', 'create', '-q', '-b', 'c1.qcow2', '-F', 'qcow2', overlay);
    const info = JSON.parse(await sh('qemu-img', 'info', '--output=json', overlay)) as Record<string, unknown>;
    assert.equal(info['backing-filename'], 'c1.qcow2');
    assert.equal(info['virtual-size'], 100 * MiB);
    await checkClean(overlay);
    const raw = join(dir, 'r.raw');
    await bitback('image', 'create', '-q', '-f', 'raw', raw, '5M');
    assert.equal((await stat(raw)).size, 5 * MiB);
    const exists = await runBitback(['image', 'create', '-q', '-f', 'raw', raw, '5M']);
    assert.equal(exists.status, 6, exists.stderr);
  });

  test('map --json gives the runs qemu-img map gives (host offsets aside)', async () => {
    const base = join(dir, 'mbase.qcow2');
    const top = join(dir, 'mtop.qcow2');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', base, '16M');
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 2M', '-c', 'write -z 4M 1M', base);
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 2 1M 2M', '-c', 'write -z 8M 64k', top);
    for (const image of [top, base]) {
      type Entry = { start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean };
      const theirs = (JSON.parse(await sh('qemu-img', 'map', '--output=json', image)) as Array<Entry & { offset?: number }>).reduce<Entry[]>((acc, { offset: _o, ...e }) => {
        const last = acc[acc.length - 1];
        if (last && last.depth === e.depth && last.present === e.present && last.zero === e.zero && last.data === e.data) last.length += e.length;
        else acc.push({ ...e });
        return acc;
      }, []);
      assert.deepEqual(JSON.parse(await bitback('image', 'map', '--json', image)), theirs, image);
    }
  });

  test('convert to qcow2 and raw (plain and compressed) gives images qemu-img compare calls identical', async () => {
    const source = await sourceImage('src.qcow2');
    const outputs: Array<[string, string[]]> = [
      ['out.qcow2', ['-O', 'qcow2']],
      ['out.raw', ['-O', 'raw']],
      ['outc.qcow2', ['-O', 'qcow2', '-c']],
      ['out512.qcow2', ['-O', 'qcow2', '-o', 'cluster_size=512']],
    ];
    for (const [name, args] of outputs) {
      const target = join(dir, name);
      await bitback('image', 'convert', ...args, source, target);
      await sh('qemu-img', 'compare', source, target);
      if (name.endsWith('.qcow2')) await checkClean(target);
    }
    // Sparse: the hole and the zeroed range were not written.
    const ours = JSON.parse(await sh('qemu-img', 'info', '--output=json', join(dir, 'out.qcow2'))) as { 'actual-size': number };
    const theirsPath = join(dir, 'theirs.qcow2');
    await sh('qemu-img', 'convert', '-O', 'qcow2', source, theirsPath);
    const theirs = JSON.parse(await sh('qemu-img', 'info', '--output=json', theirsPath)) as { 'actual-size': number };
    assert.ok(ours['actual-size'] <= theirs['actual-size'] * 1.01 + 65536, `ours ${ours['actual-size']} vs qemu-img ${theirs['actual-size']}`);
    const compressed = JSON.parse(await sh('qemu-img', 'info', '--output=json', join(dir, 'outc.qcow2'))) as { 'actual-size': number };
    assert.ok(compressed['actual-size'] < ours['actual-size'] / 4, `compressed ${compressed['actual-size']} vs ${ours['actual-size']}`);
    // And back: our reader on qemu-img's compressed output.
    const qc = join(dir, 'qc.qcow2');
    await sh('qemu-img', 'convert', '-c', '-O', 'qcow2', source, qc);
    await bitback('image', 'convert', '-O', 'raw', qc, join(dir, 'qc.raw'));
    await sh('qemu-img', 'compare', source, join(dir, 'qc.raw'));
  });

  test('compare agrees with qemu-img compare, and names the first differing byte', async () => {
    const a = await sourceImage('ca.qcow2');
    const b = join(dir, 'cb.qcow2');
    await sh('qemu-img', 'convert', '-O', 'qcow2', a, b);
    assert.match(await bitback('image', 'compare', a, b), /Images are identical/);
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x44 10485861 1', b);
    const r = await runBitback(['image', 'compare', a, b]);
    assert.equal(r.status, 1);
    assert.match(r.stdout, /Content mismatch at offset 10485861!/);
    const q = await runProgram('qemu-img', ['compare', a, b]);
    assert.equal(q.status, 1);
    // Different sizes: equal when the tail is zero, unless strict.
    const small = join(dir, 'small.raw');
    const big = join(dir, 'big.raw');
    await sh('qemu-img', 'create', '-q', '-f', 'raw', small, '1M');
    await sh('qemu-img', 'create', '-q', '-f', 'raw', big, '2M');
    assert.equal((await runBitback(['image', 'compare', small, big])).status, 0);
    assert.equal((await runBitback(['image', 'compare', '-s', small, big])).status, 1);
    await sh('qemu-io', '-f', 'raw', '-c', 'write -P 1 1536k 1', big);
    const tail = await runBitback(['image', 'compare', small, big]);
    assert.equal(tail.status, 1);
    assert.match(tail.stdout, /offset 1572864!/);
  });

  test('bitback io on a qcow2 backing chain reads through it and writes only the top', async () => {
    const base = join(dir, 'iobase.qcow2');
    const top = join(dir, 'iotop.qcow2');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', base, '8M');
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x61 0 4M', base);
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top);
    await bitback('io', '-c', 'read -P 0x61 0 4M', '-c', 'write -P 0x62 1M 4k', '-c', 'write -z 2M 64k', '-c', 'read -P 0 4M 4M', top);
    await sh('qemu-io', '-f', 'qcow2', '-c', 'read -P 0x62 1M 4k', '-c', 'read -P 0 2M 64k', '-c', 'read -P 0x61 3M 1M', top);
    await sh('qemu-io', '-f', 'qcow2', '-c', 'read -P 0x61 1M 4k', base);
    await checkClean(top);
    await checkClean(base);
  });
});

describe('bitback image rebase and commit against qemu-img', { skip: needPeers('qemu-img', 'qemu-io') }, () => {
  /** base <- mid <- top, each with its own writes; returns a raw flattening of top made by qemu-img. */
  async function chain(prefix: string): Promise<{ base: string; mid: string; top: string; flat: string }> {
    const base = join(dir, `${prefix}-base.qcow2`);
    const mid = join(dir, `${prefix}-mid.qcow2`);
    const top = join(dir, `${prefix}-top.qcow2`);
    const flat = join(dir, `${prefix}-flat.raw`);
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', base, '16M');
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 1 0 4M', '-c', 'write -P 9 12M 1M', base);
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', `${prefix}-base.qcow2`, '-F', 'qcow2', mid);
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 2 1M 1M', '-c', 'write -z 3M 256k', '-c', 'write -P 7 8M 100k', mid);
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', '-b', `${prefix}-mid.qcow2`, '-F', 'qcow2', top);
    await sh('qemu-io', '-f', 'qcow2', '-c', 'write -P 3 1536k 64k', top);
    await sh('qemu-img', 'convert', '-O', 'raw', top, flat);
    return { base, mid, top, flat };
  }

  test('safe rebase onto the grandparent keeps the content and copies only what differs', async () => {
    const { top, flat } = await chain('rb');
    const out = await bitback('image', 'rebase', '-b', 'rb-base.qcow2', '-F', 'qcow2', top);
    assert.match(out, /copied/);
    const info = JSON.parse(await sh('qemu-img', 'info', '--output=json', top)) as Record<string, unknown>;
    assert.equal(info['backing-filename'], 'rb-base.qcow2');
    assert.equal(info['backing-filename-format'], 'qcow2');
    await sh('qemu-img', 'compare', '-F', 'raw', top, flat);
    await checkClean(top);
  });

  test("rebase -b '' flattens the image; rebase -u only changes the header", async () => {
    const { top, flat } = await chain('rf');
    await bitback('image', 'rebase', '-b', '', top);
    const info = JSON.parse(await sh('qemu-img', 'info', '--output=json', top)) as Record<string, unknown>;
    assert.equal(info['backing-filename'], undefined);
    await sh('qemu-img', 'compare', '-F', 'raw', top, flat);
    await checkClean(top);
    await bitback('image', 'rebase', '-u', '-b', 'rf-mid.qcow2', '-F', 'qcow2', top);
    const after = JSON.parse(await sh('qemu-img', 'info', '--output=json', top)) as Record<string, unknown>;
    assert.equal(after['backing-filename'], 'rf-mid.qcow2');
    // The flattened image holds everything itself, so the unsafe rebase changes nothing visible.
    await sh('qemu-img', 'compare', '-F', 'raw', top, flat);
  });

  test('commit writes the overlay into its backing file and empties the overlay', async () => {
    const { mid, top, flat } = await chain('cm');
    await bitback('image', 'commit', top);
    await sh('qemu-img', 'compare', '-F', 'raw', mid, flat);
    await sh('qemu-img', 'compare', '-F', 'raw', top, flat);
    const map = JSON.parse(await sh('qemu-img', 'map', '--output=json', top)) as Array<{ depth: number; present: boolean }>;
    assert.ok(map.every((e) => e.depth > 0 || !e.present), 'the overlay holds no data after commit');
    await checkClean(top);
    await checkClean(mid);
  });
});

describe('bitback image check against qemu-img check', { skip: needPeers('qemu-img', 'qemu-io') }, () => {
  test('the JSON report and exit status equal qemu-img check on a clean, a compressed and a leaky image', async () => {
    const clean = await sourceImage('chk.qcow2');
    const compressed = join(dir, 'chkc.qcow2');
    await sh('qemu-img', 'convert', '-c', '-O', 'qcow2', clean, compressed);
    for (const image of [clean, compressed]) {
      const ours = await runBitback(['image', 'check', '--json', image]);
      const theirs = await runProgram('qemu-img', ['check', '--output=json', image]);
      assert.equal(ours.status, theirs.status);
      assert.deepEqual(JSON.parse(ours.stdout), JSON.parse(theirs.stdout));
    }
    // A leak: bump the refcount of a free cluster past the end of the used ones through the raw
    // refcount block (the first refcount block is the cluster after the refcount table, as
    // qemu-img lays out a fresh image: header, refcount table, refcount block).
    const leaky = join(dir, 'leaky.qcow2');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', leaky, '16M');
    const { open } = await import('node:fs/promises');
    const handle = await open(leaky, 'r+');
    await handle.truncate(6 * 65536); // clusters 4 and 5 now lie in the file, unused
    const entry = Buffer.alloc(2);
    entry.writeUInt16BE(1);
    await handle.write(entry, 0, 2, 2 * 65536 + 2 * 5); // refcount of cluster 5 in the block at 128 KiB
    await handle.close();
    const ours = await runBitback(['image', 'check', '--json', leaky]);
    const theirs = await runProgram('qemu-img', ['check', '--output=json', leaky]);
    assert.equal(theirs.status, 3, theirs.stdout + theirs.stderr);
    assert.equal(ours.status, 3, ours.stdout + ours.stderr);
    assert.deepEqual(JSON.parse(ours.stdout), JSON.parse(theirs.stdout));
    assert.equal((await runBitback(['image', 'check', '-r', 'leaks', leaky])).status, 0);
    assert.equal((await runProgram('qemu-img', ['check', leaky])).status, 0);
  });
});

describe('writes through bitback record into the image\'s persistent bitmaps', { skip: needPeers('qemu-img', 'qemu-nbd', 'nbdinfo') }, () => {
  test('bitback io dirties an enabled bitmap as qemu-io would; a disabled one stays clean', async () => {
    const { qemuBitmaps, qemuDirtyExtents } = await import('../../src/qcow2/bitmaps/testing/qemu-peers.js');
    const image = join(dir, 'tracked.qcow2');
    await sh('qemu-img', 'create', '-q', '-f', 'qcow2', image, '16M');
    await sh('qemu-img', 'bitmap', '--add', '--granularity', '4K', image, 'on');
    await sh('qemu-img', 'bitmap', '--add', '--disable', image, 'off');
    await bitback('io', '-c', 'write -P 1 1M 10k', '-c', 'write -z 8M 4k', '-c', 'discard 12M 64k', image);
    const info = await qemuBitmaps(image);
    assert.deepEqual(info.map((b) => [b.name, b.flags]).sort(), [['off', []], ['on', ['auto']]]);
    assert.deepEqual(await qemuDirtyExtents(image, 'on'), [
      { offset: MiB, length: 12288 },
      { offset: 8 * MiB, length: 4096 },
      { offset: 12 * MiB, length: 65536 },
    ]);
    assert.deepEqual(await qemuDirtyExtents(image, 'off'), []);
    await checkClean(image);
  });
});
