/**
 * `bitback bitmap` as users run it: both spellings (verbs and qemu-img's flags), the output of
 * `list` and `dump`, exit statuses, and what `qemu-img info` sees after each change.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { qemuBitmaps } from '../../src/qcow2/bitmaps/testing/qemu-peers.js';
import { checkImage, qemuImg, qemuIo } from '../../src/qcow2/image/testing/qemu-tools.js';
import { runBitback } from '../helpers/cli.js';
import { needPeers } from '../helpers/peers.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-bitmap-cli-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function bitback(...args: string[]): Promise<string> {
  const result = await runBitback(['bitmap', ...args]);
  assert.equal(result.status, 0, `bitback bitmap ${args.join(' ')}: ${result.stderr}`);
  return result.stdout;
}

async function status(...args: string[]): Promise<{ status: number | null; stderr: string }> {
  return runBitback(['bitmap', ...args]);
}

const skip = needPeers('qemu-img', 'qemu-io');

test('bitback bitmap verbs and qemu-img-style flags change the image as qemu-img info reports', { skip }, async () => {
  const path = join(dir, 'verbs.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=16K', path, '4M');
  await bitback('add', path, 'a');
  await bitback('add', '-g', '1M', '--disable', path, 'b');
  await bitback('--add', '--granularity', '512', path, 'c', '--disable');
  assert.deepEqual(await qemuBitmaps(path), [
    { name: 'a', granularity: 16384, flags: ['auto'] },
    { name: 'b', granularity: 1048576, flags: [] },
    { name: 'c', granularity: 512, flags: [] },
  ]);
  await bitback('enable', path, 'b');
  await bitback('--disable', path, 'a');
  await bitback('--enable', path, 'c');
  assert.deepEqual((await qemuBitmaps(path)).map((b) => [b.name, b.flags]), [['a', []], ['b', ['auto']], ['c', ['auto']]]);

  await qemuIo(path, ['write 100k 8k', 'write 3M 512']);
  const plain = (await bitback('list', path)).trim().split('\n').map((line) => line.split(/\s+/));
  assert.deepEqual(plain, [
    ['NAME', 'GRANULARITY', 'FLAGS', 'COUNT'],
    ['a', '16384', '-', '0'],
    ['b', '1048576', 'auto', String(2 * 1048576)],
    ['c', '512', 'auto', String(16 * 512 + 512)],
  ]);
  const json = JSON.parse(await bitback('list', '--json', path)) as Array<Record<string, unknown>>;
  assert.deepEqual(json.map((b) => [b.name, b.granularity, b.flags, b.count]), [
    ['a', 16384, [], 0],
    ['b', 1048576, ['auto'], 2 * 1048576],
    ['c', 512, ['auto'], 16 * 512 + 512],
  ]);
  assert.equal(await bitback('dump', path, 'c'), `${100 * 1024} ${8 * 1024}\n${3 * 1048576} 512\n`);
  assert.deepEqual(JSON.parse(await bitback('dump', '--json', path, 'b')), [{ offset: 0, length: 1048576 }, { offset: 3 * 1048576, length: 1048576 }]);

  await bitback('merge', '--merge', 'c', path, 'a');
  assert.deepEqual(JSON.parse(await bitback('dump', '--json', path, 'a')), [{ offset: 98304, length: 16384 }, { offset: 3145728, length: 16384 }]);
  await bitback('--clear', path, 'c');
  assert.equal(await bitback('dump', path, 'c'), '');
  await bitback('remove', path, 'b');
  await bitback('--remove', path, 'a');
  assert.deepEqual((await qemuBitmaps(path)).map((b) => b.name), ['c']);
  const report = await checkImage(path);
  assert.deepEqual([report.checkErrors, report.corruptions, report.leaks], [0, 0, 0], report.text);
});

test('bitback bitmap reports errors with the documented exit statuses', { skip }, async () => {
  const path = join(dir, 'errors.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', path, '1M');
  const raw = join(dir, 'disk.raw');
  await writeFile(raw, new Uint8Array(1024 * 1024));
  const v2 = join(dir, 'v2.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', v2, '1M');
  const other = join(dir, 'other.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', other, '1M');
  await bitback('add', path, 'x');

  const cases: Array<[string[], number, RegExp]> = [
    [['add', path, 'x'], 6, /Bitmap already exists: x/],
    [['clear', path, 'nope'], 3, /Dirty bitmap 'nope' not found/],
    [['dump', path, 'nope'], 3, /not found/],
    [['merge', '--merge', 'nope', path, 'x'], 3, /not found/],
    [['merge', '--merge', 'x', '-b', other, path, 'nope'], 3, /not found/],
    // As qemu-img: the source image is a second open of an image open for writing.
    [['merge', '--merge', 'x', '-b', path, path, 'x'], 6, /Failed to get shared "write" lock/],
    [['add', raw, 'x'], 7, /raw images cannot hold persistent dirty bitmaps/],
    [['list', raw], 7, /raw images/],
    [['add', v2, 'x'], 7, /Cannot store dirty bitmaps in qcow2 v2 files/],
    [['add', '-g', '1000', path, 'y'], 2, /power of two/],
    [['add', '-g', '256', path, 'y'], 2, /power of two/],
    [['add', path], 2, /IMAGE NAME/],
    [['clear', '-g', '4K', path, 'x'], 2, /-g is only valid with add/],
    [['merge', path, 'x'], 2, /--merge SRC/],
    [['list'], 2, /IMAGE/],
    [[path, 'x'], 2, /nothing to do/],
    [['add', join(dir, 'missing.qcow2'), 'x'], 3, /missing\.qcow2/],
  ];
  for (const [args, expected, message] of cases) {
    const result = await status(...args);
    assert.equal(result.status, expected, `bitback bitmap ${args.join(' ')}: ${result.stderr}`);
    assert.match(result.stderr, message, args.join(' '));
  }
  assert.deepEqual((await qemuBitmaps(path)).map((b) => b.name), ['x'], 'failed commands changed nothing');
  const help = await runBitback(['bitmap', '--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Usage: bitback bitmap/);
});
