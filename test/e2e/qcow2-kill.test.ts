/**
 * Crash safety: a child process writes to an image without pause (writes, zero-writes and trims
 * that allocate, free and reuse clusters, grow the refcount table, store compressed clusters)
 * and is killed with SIGKILL at a random moment. `qemu-img check` must then find no corruption:
 * leaked clusters are allowed, nothing else is.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Random } from '../../src/block/testing/pattern.js';
import { createQcow2, type CreateQcow2Options } from '../../src/qcow2/create.js';
import { Qcow2Image } from '../../src/qcow2/image/index.js';
import { checkImage } from '../../src/qcow2/image/testing/qemu-tools.js';
import { whenReady } from '../helpers/child.js';
import { needPeers } from '../helpers/peers.js';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-qcow2-kill-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The child: opens the image and changes it in a loop until it is killed. Arguments: module URL, path, seed, compress. */
const WRITER = `
const [moduleUrl, path, seedText, compress] = process.argv.slice(1);
const { Qcow2Image } = await import(moduleUrl);
const image = await Qcow2Image.open(path, { compress: compress === 'true' });
let seed = Number(seedText);
const next = (bound) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % bound; };
process.stdout.write('ready\\n');
for (let step = 0; ; step++) {
  const offset = next(image.size - 1);
  const length = 1 + next(Math.min(image.size - offset, 200000));
  const roll = next(10);
  const work = [];
  for (let k = 0; k < 4; k++) {
    if (roll < 6) work.push(image.write((offset + k * 7919) % (image.size - length), new Uint8Array(length).fill(1 + next(255))));
    else if (roll < 8) work.push(image.writeZeroes(offset, length, { mayTrim: next(2) === 1 }));
    else work.push(image.trim(offset, length));
  }
  await Promise.allSettled(work);
}
`;

const rounds: Array<[string, CreateQcow2Options, boolean]> = [
  ['64 KiB clusters', { size: 32 * MiB }, false],
  ['512-byte clusters, 64-bit refcounts (the refcount table keeps growing)', { size: 16 * MiB, clusterSize: 512, refcountBits: 64 }, false],
  ['4 KiB clusters, compressed writes', { size: 16 * MiB, clusterSize: 4096 }, true],
  ['version 2', { size: 32 * MiB, compat: '0.10' }, false],
];

for (const [index, [name, options, compress]] of rounds.entries()) {
  test(`a writer killed at a random moment leaves no corruption, at worst leaks (${name})`, { skip: needPeers('qemu-img') }, async () => {
    const path = join(dir, `kill-${index}.qcow2`);
    await createQcow2(path, options);
    const seed = Date.now() >>> 0; // a new moment each run; named in failures
    const random = new Random(seed);
    const moduleUrl = new URL('../../src/qcow2/image/index.js', import.meta.url).href;
    const child = spawn(process.execPath, ['--input-type=module', '-e', WRITER, moduleUrl, path, String(random.below(1e9)), String(compress)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise((resolve) => child.once('exit', resolve));
    try {
      await whenReady(child);
      await sleep(100 + random.below(700));
      assert.ok(child.exitCode === null, 'the writer was still running when it was killed');
      child.kill('SIGKILL');
      await exited;
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    const report = await checkImage(path);
    assert.deepEqual([report.checkErrors, report.corruptions], [0, 0], `seed ${seed}: ${report.text}`);
    const image = await Qcow2Image.open(path, { readOnly: true });
    await image.read(0, image.size); // every L2 entry decodes
    await image.close();
  });
}
