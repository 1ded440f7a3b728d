/**
 * `bitback io` against the real qemu-io / qemu-img on raw images: what one writes the other reads,
 * the same random command sequence gives identical images, and bad input gives clear errors.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { needPeers } from '../helpers/peers.js';
import { runBitback, runProgram } from '../helpers/cli.js';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-io-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function rawImage(name: string, size: number): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, '');
  await truncate(path, size);
  return path;
}

describe('bitback io and qemu-io on the same raw image', { skip: needPeers('qemu-io', 'qemu-img') }, () => {
  test('qemu-io reads back with -P what bitback io wrote, zero writes included', async () => {
    const img = await rawImage('a.raw', 8 * MiB);
    const w = await runBitback(['io', '-c', 'write -P 0x5a 1M 64k', '-c', 'write -P 0x11 2M 8k', '-c', 'write -z 2M 4k', img]);
    assert.equal(w.status, 0, w.stderr);
    assert.match(w.stdout, /wrote 65536\/65536 bytes at offset 1048576/);
    for (const [cmd, ok] of [
      ['read -P 0x5a 1M 64k', true],
      ['read -P 0x00 2M 4k', true],
      ['read -P 0x11 2052k 4k', true],
      ['read -P 0x5b 1M 64k', false],
    ] as const) {
      const r = await runProgram('qemu-io', ['-f', 'raw', '-c', cmd, img]);
      assert.equal(/Pattern verification failed/.test(r.stdout + r.stderr), !ok, `${cmd}: ${r.stdout}${r.stderr}`);
    }
  });

  test('bitback io verifies what qemu-io wrote and names the first differing offset', async () => {
    const img = await rawImage('b.raw', 4 * MiB);
    const q = await runProgram('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 3M 512', '-c', 'write -P 0x78 3145984 1', img]);
    assert.equal(q.status, 0, q.stderr);
    const good = await runBitback(['io', '-r', '-c', 'read -P 0x77 3M 256', img]);
    assert.equal(good.status, 0, good.stderr);
    const bad = await runBitback(['io', '-r', '-c', 'read -P 0x77 3M 512', img]);
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /byte at offset 3145984 is 0x78 \(1 of 512 bytes differ\)/);
  });

  test('the same random command sequence from both tools gives identical images', async () => {
    const size = 4 * MiB;
    const command = fc.oneof(
      fc.record({ kind: fc.constant('write'), pattern: fc.integer({ min: 1, max: 255 }) }),
      fc.record({ kind: fc.constant('zero'), pattern: fc.constant(0) }),
    );
    const step = fc.tuple(command, fc.integer({ min: 0, max: size - 1 }), fc.integer({ min: 1, max: 256 * 1024 }));
    const sequences = fc.sample(fc.array(step, { minLength: 5, maxLength: 25 }), { numRuns: 3, seed: 2026 });
    let n = 0;
    for (const sequence of sequences) {
      const ours = await rawImage(`ours-${n}.raw`, size);
      const theirs = await rawImage(`theirs-${n}.raw`, size);
      n++;
      const lines = sequence.flatMap(([c, offset, length]) => {
        const len = Math.min(length, size - offset);
        switch (c.kind) {
          case 'write':
            return [`write -P ${c.pattern} ${offset} ${len}`];
          default:
            return [`write -z ${offset} ${len}`];
        }
      });
      const a = await runBitback(['io', '-f', 'raw', ...lines.flatMap((l) => ['-c', l]), ours]);
      assert.equal(a.status, 0, a.stderr);
      const b = await runProgram('qemu-io', ['-f', 'raw', ...lines.flatMap((l) => ['-c', l]), theirs]);
      assert.equal(b.status, 0, b.stderr);
      const cmp = await runProgram('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', ours, theirs]);
      assert.equal(cmp.status, 0, `${lines.join('\n')}\n${cmp.stdout}${cmp.stderr}`);
    }
  });
});

describe('bitback io on bad input', () => {
  test('commands read from stdin run in order, comments and blank lines skipped', async () => {
    const img = await rawImage('stdin.raw', MiB);
    const r = await runBitback(['io', img], { input: '# a comment\n\nwrite -P 0x42 0 4k\nread -P 0x42 0 4k\n' });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /read 4096\/4096 bytes at offset 0/);
    const data = await readFile(img);
    assert.equal(data[4095], 0x42);
    assert.equal(data[4096], 0);
  });

  test('a request past the end fails with exit 2 and changes nothing', async () => {
    const img = await rawImage('small.raw', MiB);
    const r = await runBitback(['io', '-c', 'write -P 1 1020k 8k', img]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /ends past the device size 1048576/);
    const data = await readFile(img);
    assert.equal(data.length, MiB);
    assert.ok(data.every((b) => b === 0));
  });

  test('a malformed command is refused before the image is opened or changed', async () => {
    const img = await rawImage('typo.raw', MiB);
    const r = await runBitback(['io', '-c', 'write -P 1 0 4k', '-c', 'wirte 0 4k', img]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown command 'wirte'/);
    assert.ok((await readFile(img)).every((b) => b === 0));
  });

  test('a missing image exits 3, a write on -r exits 6, usage errors exit 2', async () => {
    const missing = await runBitback(['io', '-c', 'read 0 1', join(dir, 'nope.raw')]);
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /nope\.raw/);
    const img = await rawImage('ro.raw', MiB);
    const ro = await runBitback(['io', '-r', '-c', 'write 0 1', img]);
    assert.equal(ro.status, 6, ro.stderr);
    const noTarget = await runBitback(['io', '-c', 'read 0 1']);
    assert.equal(noTarget.status, 2);
    const badOption = await runBitback(['io', '--frobnicate', img]);
    assert.equal(badOption.status, 2);
    assert.match(badOption.stderr, /frobnicate/);
    const unknown = await runBitback(['nosuchcommand']);
    assert.equal(unknown.status, 2);
  });

  test('--version prints the package version', async () => {
    const r = await runBitback(['--version']);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /^bitback \d+\.\d+\.\d+/);
  });
});
