/**
 * A process writing through an image with an enabled persistent bitmap is killed with SIGKILL:
 * the bitmap must be left in use (QEMU lists it `in-use`), bitback must load it as
 * inconsistent and refuse to use it, removing it must work, and `qemu-img check` must find no
 * corruption — exactly what QEMU gives after `kill -9`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { hasCode } from '../../src/errors.js';
import { Qcow2Bitmaps } from '../../src/qcow2/bitmaps/index.js';
import { qemuBitmaps } from '../../src/qcow2/bitmaps/testing/qemu-peers.js';
import { createQcow2 } from '../../src/qcow2/create.js';
import { checkImage, qemuImg } from '../../src/qcow2/image/testing/qemu-tools.js';
import { runBitback } from '../helpers/cli.js';
import { whenReady } from '../helpers/child.js';
import { needPeers } from '../helpers/peers.js';

const M = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-e2e-bitmaps-kill-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The child: attaches the bitmaps (mode track) and writes until killed. Arguments: module URL, path. */
const WRITER = `
const [moduleUrl, path] = process.argv.slice(1);
const { Qcow2Bitmaps } = await import(moduleUrl);
const bitmaps = await Qcow2Bitmaps.open(path);
let seed = 12345;
const next = (bound) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % bound; };
await bitmaps.image.write(0, new Uint8Array(4096).fill(1));
process.stdout.write('ready\\n');
for (;;) {
  const offset = next(bitmaps.image.size - 70000);
  await bitmaps.image.write(offset, new Uint8Array(1 + next(65536)).fill(1 + next(255)));
}
`;

test('a writer killed with SIGKILL leaves its bitmaps in use: bitback loads them inconsistent, refuses them, and can remove them', { skip: needPeers('qemu-img') }, async () => {
  const path = join(dir, 'killed.qcow2');
  await createQcow2(path, { size: 16 * M, clusterSize: 4096 });
  const setup = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  await setup.add('live', { granularity: 512 });
  await setup.add('idle', { granularity: 65536, disabled: true });
  await setup.close();

  const moduleUrl = new URL('../../src/qcow2/bitmaps/index.js', import.meta.url).href;
  const child = spawn(process.execPath, ['--input-type=module', '-e', WRITER, moduleUrl, path], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    await whenReady(child);
    await sleep(200);
    assert.ok(child.exitCode === null, 'the writer was still running when it was killed');
    child.kill('SIGKILL');
    await exited;
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }

  assert.deepEqual(await qemuBitmaps(path), [
    { name: 'live', granularity: 512, flags: ['in-use', 'auto'] },
    { name: 'idle', granularity: 65536, flags: ['in-use'] },
  ]);
  const killedCheck = await checkImage(path);
  assert.deepEqual([killedCheck.checkErrors, killedCheck.corruptions], [0, 0], killedCheck.text);

  const bitmaps = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  assert.deepEqual(bitmaps.list().map((b) => [b.name, b.inconsistent, b.recording, b.count, b.flags]), [
    ['live', true, false, 0, ['in-use']],
    ['idle', true, false, 0, ['in-use']],
  ]);
  const refused = (e: unknown): boolean => hasCode(e, 'BITMAP_STATE') && /inconsistent/.test(String(e));
  assert.throws(() => bitmaps.dirtyExtents('live'), refused);
  await assert.rejects(bitmaps.clear('live'), refused);
  await assert.rejects(bitmaps.enable('idle'), refused);
  await bitmaps.add('fresh');
  await assert.rejects(bitmaps.merge('fresh', 'live'), refused);
  await bitmaps.remove('live');
  await bitmaps.close();

  // The CLI says the same, with the exit status of a state error.
  const dump = await runBitback(['bitmap', 'dump', path, 'idle']);
  assert.equal(dump.status, 6, dump.stderr);
  assert.match(dump.stderr, /Bitmap 'idle' is inconsistent and cannot be used/);
  const removed = await runBitback(['bitmap', '--remove', path, 'idle']);
  assert.equal(removed.status, 0, removed.stderr);

  assert.deepEqual(await qemuBitmaps(path), [{ name: 'fresh', granularity: 4096, flags: ['auto'] }]);
  const report = await checkImage(path);
  assert.deepEqual([report.checkErrors, report.corruptions], [0, 0], report.text);
  await qemuImg('bitmap', '--clear', path, 'fresh'); // QEMU accepts what is left
});
