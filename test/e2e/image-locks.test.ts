/**
 * bitback's image locks against QEMU 7.2's: a QEMU (`-blockdev` of a qcow2 image) holding an
 * image keeps bitback out and the other way round, with QEMU's messages; read-only users coexist.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ImageLockedError } from '../../src/block/image-lock-error.js';
import { RawFileDevice } from '../../src/block/raw-file-device.js';
import { Qcow2Image } from '../../src/qcow2/image/index.js';
import { ImageFile } from '../../src/qcow2/image/image-file.js';
import { runBitback, runProgram } from '../helpers/cli.js';
import { needPeers } from '../helpers/peers.js';
import { startQemu, type QemuInstance } from '../helpers/qemu.js';

const skip = needPeers('qemu-system-x86_64', 'qemu-img', 'qemu-io');
let dir: string;
let counter = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-locks-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function newQcow2(): Promise<string> {
  const path = join(dir, `disk-${counter++}.qcow2`);
  const created = await runProgram('qemu-img', ['create', '-q', '-f', 'qcow2', path, '64M']);
  assert.equal(created.status, 0, created.stderr);
  return path;
}

/** A QEMU with `path` as a qcow2 node (no guest device); it holds the image's locks once QMP answers. */
function qemuWith(path: string, readOnly = false): Promise<QemuInstance> {
  const node = `driver=qcow2,node-name=disk0,${readOnly ? 'read-only=on,' : ''}file.driver=file,file.filename=${path}`;
  return startQemu(['-M', 'none', '-nodefaults', '-display', 'none', '-blockdev', node]);
}

describe('image locks against QEMU', { skip }, () => {
  test('an image QEMU has open for writing cannot be opened by bitback, and the error names QEMU', async () => {
    const path = await newQcow2();
    const qemu = await qemuWith(path);
    try {
      const who = `process ${qemu.pid} (qemu-system-x86)`;
      await assert.rejects(Qcow2Image.open(path), (e: unknown) => {
        assert.ok(e instanceof ImageLockedError, String(e));
        assert.equal(e.code, 'BUSY');
        assert.deepEqual(e.holders.map((h) => h.pid), [qemu.pid]);
        assert.equal(e.message, `Cannot open qcow2 image ${path}: Failed to get "write" lock: ${who} does not share "write". Is another process using the image [${path}]?`);
        return true;
      });
      await assert.rejects(Qcow2Image.open(path, { readOnly: true }), (e: unknown) => {
        assert.ok(e instanceof ImageLockedError);
        assert.equal(e.message, `Cannot open qcow2 image ${path}: Failed to get shared "write" lock: ${who} holds "write". Is another process using the image [${path}]?`);
        return true;
      });
      // What qemu-img -U does: share everything, read anyway.
      const forced = await ImageFile.open(path, true, undefined, { forceShare: true });
      assert.equal((await forced.read(0, 4)).join(','), '81,70,73,251'); // QFI\xfb
      await forced.close();

      const io = await runBitback(['io', '-c', 'write 0 512', path]);
      assert.equal(io.status, 6, io.stderr);
      assert.match(io.stderr, /Failed to get "write" lock: process \d+ \(qemu-system-x86\) does not share "write"\. Is another process using the image \[/);
    } finally {
      await qemu.kill();
    }
    // QEMU's locks went with its process.
    const image = await Qcow2Image.open(path);
    await image.close();
  });

  test('an image bitback has open for writing is refused to qemu-img and qemu-io as QEMU refuses it', async () => {
    const path = await newQcow2();
    const image = await Qcow2Image.open(path);
    try {
      const info = await runProgram('qemu-img', ['info', path]);
      assert.equal(info.status, 1);
      assert.match(info.stderr, /Failed to get shared "write" lock\nIs another process using the image \[.*\]\?/);
      const forced = await runProgram('qemu-img', ['info', '-U', '--output=json', path]);
      assert.equal(forced.status, 0, forced.stderr);
      assert.equal(JSON.parse(forced.stdout)['virtual-size'], 64 * 1024 * 1024);
      const write = await runProgram('qemu-io', ['-c', 'write 0 512', path]);
      assert.notEqual(write.status, 0);
      assert.match(write.stderr, /Failed to get "write" lock/);
      const read = await runProgram('qemu-io', ['-r', '-c', 'read 0 512', path]);
      assert.match(read.stderr, /Failed to get shared "write" lock/);
      const readForced = await runProgram('qemu-io', ['-r', '-U', '-c', 'read 0 512', path]);
      assert.equal(readForced.status, 0, readForced.stderr);
      // Nor can a QEMU (its monitor on stdin quits it at once should it start).
      const node = `driver=qcow2,node-name=disk0,file.driver=file,file.filename=${path}`;
      const vm = await runProgram('qemu-system-x86_64', ['-M', 'none', '-nodefaults', '-display', 'none', '-monitor', 'stdio', '-blockdev', node], { input: 'quit\n' });
      assert.equal(vm.status, 1);
      assert.match(vm.stderr, /Failed to get "write" lock\nIs another process using the image/);
    } finally {
      await image.close();
    }
    const after = await runProgram('qemu-io', ['-c', 'write 0 512', path]);
    assert.equal(after.status, 0, after.stderr);
  });

  test('readers coexist: QEMU read-only, bitback read-only twice, qemu-img info; writers stay out', async () => {
    const path = await newQcow2();
    const qemu = await qemuWith(path, true);
    try {
      const a = await Qcow2Image.open(path, { readOnly: true });
      const b = await Qcow2Image.open(path, { readOnly: true });
      const info = await runProgram('qemu-img', ['info', path]);
      assert.equal(info.status, 0, info.stderr);
      const io = await runProgram('qemu-io', ['-r', '-c', 'read 0 512', path]);
      assert.equal(io.status, 0, io.stderr);
      await assert.rejects(Qcow2Image.open(path), { code: 'BUSY', message: /Failed to get "write" lock/ });
      const write = await runProgram('qemu-io', ['-c', 'write 0 512', path]);
      assert.match(write.stderr, /Failed to get "write" lock/);
      await a.close();
      await b.close();
    } finally {
      await qemu.kill();
    }
  });
});

describe('bitback commands on an image in use, with and without -U (as qemu-img)', { skip }, () => {
  test('read-only commands refuse an image QEMU writes and read it with -U; commands that write refuse -U', async () => {
    const path = await newQcow2();
    const made = await runBitback(['snapshot', 'create', path, 's1']);
    assert.equal(made.status, 0, made.stderr);
    const added = await runBitback(['bitmap', 'add', path, 'b0']);
    assert.equal(added.status, 0, added.stderr);
    const qemu = await qemuWith(path);
    try {
      const locked = /Failed to get shared "write" lock: process \d+ \(qemu-system-x86\) holds "write"\. Is another process using the image \[/;
      const target = (name: string): string => join(dir, `${name}-${counter++}`);
      const readers: string[][] = [
        ['image', 'info', path],
        ['image', 'info', '--backing-chain', path],
        ['image', 'map', path],
        ['image', 'check', path],
        ['image', 'compare', path, path],
        ['image', 'convert', '-O', 'raw', path, target('copy.raw')],
        ['bitmap', 'list', path],
        ['snapshot', 'list', path],
        ['snapshot', '-l', path],
      ];
      for (const args of readers) {
        const refused = await runBitback(args);
        assert.equal(refused.status, 6, `bitback ${args.join(' ')}: ${refused.stderr}`);
        assert.match(refused.stderr, locked, args.join(' '));
        const forcedArgs = [...args.slice(0, 2), '-U', ...args.slice(2)].map((a) => (a.endsWith('.raw') ? target('copy.raw') : a));
        const forced = await runBitback(forcedArgs);
        assert.equal(forced.status, 0, `bitback ${forcedArgs.join(' ')}: ${forced.stderr}`);
      }
      const info = JSON.parse((await runBitback(['image', 'info', '-U', '--json', path])).stdout);
      assert.equal(info['virtual-size'], 64 * 1024 * 1024);
      // What -U shows is the file as the writer left it: QEMU marks the bitmap in use.
      const bitmaps = JSON.parse((await runBitback(['bitmap', 'list', '-U', '--json', path])).stdout);
      assert.deepEqual(bitmaps.map((b: { name: string; inconsistent: boolean }) => [b.name, b.inconsistent]), [['b0', true]]);
      const usage: string[][] = [
        ['image', 'check', '-U', '-r', 'leaks', path],
        ['bitmap', 'add', '-U', path, 'b1'],
        ['snapshot', 'create', '-U', path, 's2'],
      ];
      for (const args of usage) {
        const refused = await runBitback(args);
        assert.equal(refused.status, 2, `bitback ${args.join(' ')}: ${refused.stderr}`);
        assert.match(refused.stderr, /-U/);
      }
      for (const args of [['bitmap', 'add', path, 'b1'], ['snapshot', 'create', path, 's2'], ['image', 'rebase', '-u', '-b', '', path]]) {
        const refused = await runBitback(args);
        assert.equal(refused.status, 6, `bitback ${args.join(' ')}: ${refused.stderr}`);
        assert.match(refused.stderr, /Failed to get "write" lock/);
      }
    } finally {
      await qemu.kill();
    }
  });

  test('convert locks its raw source as qemu-img convert does: no writer may hold it, unless -U', async () => {
    const raw = join(dir, `source-${counter++}.raw`);
    const created = await runProgram('qemu-img', ['create', '-q', '-f', 'raw', raw, '1M']);
    assert.equal(created.status, 0, created.stderr);
    const writer = await RawFileDevice.open(raw);
    try {
      // A raw file shares everything: readers get in beside a writer...
      const info = await runBitback(['image', 'info', raw]);
      assert.equal(info.status, 0, info.stderr);
      // ...but a convert source does not share write, in qemu-img and in bitback.
      const theirs = await runProgram('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(dir, `q-${counter++}.qcow2`)]);
      assert.match(theirs.stderr, /Failed to get shared "write" lock/);
      const ours = await runBitback(['image', 'convert', '-f', 'raw', '-O', 'qcow2', raw, join(dir, `b-${counter++}.qcow2`)]);
      assert.equal(ours.status, 6, ours.stderr);
      assert.match(ours.stderr, /Failed to get shared "write" lock: another open in|process \d+/);
      const forced = await runBitback(['image', 'convert', '-U', '-f', 'raw', '-O', 'qcow2', raw, join(dir, `f-${counter++}.qcow2`)]);
      assert.equal(forced.status, 0, forced.stderr);
    } finally {
      await writer.close();
    }
  });
});
