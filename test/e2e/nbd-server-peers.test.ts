/**
 * bitback's NBD server (in process: NbdServer serving Qcow2Image devices) against the real
 * peers: nbdinfo prints the same lists and maps as for qemu-nbd on the same image; nbdcopy,
 * qemu-img and qemu-io read and write through it; a QEMU uses it as a disk and its writes land
 * in the image and in the image's enabled bitmap.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Qcow2Bitmaps } from '../../src/qcow2/bitmaps/index.js';
import { Qcow2Image } from '../../src/qcow2/image/index.js';
import { openQcow2Tracking } from '../../src/qcow2/open-image.js';
import { makeQcow2, mustRun, runTool } from '../../src/qcow2/check/testing/qemu-tools.js';
import { NbdServer, type NbdExport } from '../../src/nbd/server/index.js';
import { loadPskCredentials, loadX509Credentials, type TlsCredentials } from '../../src/nbd/tls.js';
import { makePskFile, makeX509Directory } from '../../src/nbd/server/testing/tls-credentials.js';
import { needPeers } from '../helpers/peers.js';
import { startQemuNbd } from '../helpers/nbd-peers.js';
import { startQemu } from '../helpers/qemu.js';

const skip = needPeers('qemu-img', 'qemu-io', 'qemu-nbd', 'qemu-system-x86_64', 'nbdinfo', 'nbdcopy');
const MiB = 1 << 20;

let dir: string;
let sockets = 0;

/** An in-process server on a fresh socket in `dir`. */
async function serve(exports: NbdExport[], tls?: TlsCredentials): Promise<{ socket: string; uri(name?: string): string; close(): Promise<void> }> {
  const server = new NbdServer({ ...(tls ? { tls } : {}), onError: (e, context) => process.stderr.write(`# server: ${context}: ${String(e)}\n`) });
  for (const e of exports) server.addExport(e);
  const socket = join(dir, `bitback-${sockets++}.sock`);
  await server.listen({ transport: 'unix', path: socket });
  return { socket, uri: (name = '') => `nbd+unix:///${encodeURIComponent(name)}?socket=${socket}`, close: () => server.close() };
}

/** Runs nbdinfo and returns its output with the socket path replaced, failing on a non-zero exit. */
async function nbdinfo(args: string[], socket: string): Promise<string> {
  const run = await runTool('nbdinfo', args);
  assert.equal(run.status, 0, `nbdinfo ${args.join(' ')}: ${run.stderr}`);
  return run.stdout.replaceAll(socket, 'SOCKET');
}

describe('bitback NBD server with real peers', { skip }, () => {
  let image: string;
  let top: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-peers-'));
    image = join(dir, 'disk.qcow2');
    // Whole clusters only: in a partly written cluster QEMU reports the unwritten tail as zero
    // from the host file's holes (SEEK_HOLE), which bitback's qcow2 engine does not look at.
    await makeQcow2(image, {
      size: '32M',
      bitmaps: ['b0'],
      io: ['write -P 0x11 1M 192k', 'write -z 4M 64k', 'write -P 0x22 8M 64k', 'write -P 0x33 20M 1M', 'write -P 0x21 20M 64k', 'write -z 20M 64k', 'write -P 0x44 31M 64k'],
    });
    const base = join(dir, 'base.qcow2');
    await makeQcow2(base, { size: '32M', io: ['write -P 0x55 0 4M', 'write -P 0x56 16M 2M'] });
    top = join(dir, 'top.qcow2');
    await mustRun('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top]);
    await mustRun('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x66 1M 1M', '-c', 'write -z 17M 64k', '-c', 'write -P 0x67 24M 128k', top]);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function servedReadOnly(path: string, bitmapNames: string[], allocationDepth = true): Promise<{ socket: string; uri(name?: string): string; close(): Promise<void> }> {
    const device = await Qcow2Image.open(path, { readOnly: true });
    const bitmaps = await Qcow2Bitmaps.attach(device);
    const served = await serve([{ name: '', device, bitmaps: bitmapNames.map((n) => bitmaps.get(n)!), allocationDepth }]);
    return {
      ...served,
      close: async () => {
        await served.close();
        await device.close();
      },
    };
  }

  test('nbdinfo --list prints what it prints for qemu-nbd -r -B b0 -A', async () => {
    const ours = await servedReadOnly(image, ['b0']);
    const qemu = await startQemuNbd(image, ['-r', '-f', 'qcow2', '-B', 'b0', '-A', '-e', '4']);
    try {
      const mine = await nbdinfo(['--list', ours.uri()], ours.socket);
      const theirs = await nbdinfo(['--list', qemu.uri()], qemu.socket);
      // The one deliberate difference: QEMU 7.2 hard-codes a preferred block size of 4096;
      // bitback announces the device's (the qcow2 cluster size), where writes avoid read-modify-write.
      assert.match(mine, /block_size_preferred: 65536/);
      assert.equal(mine.replace(/block_size_preferred: \d+/, 'block_size_preferred: 4096'), theirs);
    } finally {
      await qemu.stop();
      await ours.close();
    }
  });

  test('nbdinfo --map of base:allocation and qemu:dirty-bitmap:b0 prints what it prints for qemu-nbd -r -B b0', async () => {
    const ours = await servedReadOnly(image, ['b0'], false);
    const qemu = await startQemuNbd(image, ['-r', '-f', 'qcow2', '-B', 'b0']);
    try {
      for (const map of ['--map', '--map=qemu:dirty-bitmap:b0']) {
        const mine = await nbdinfo([map, ours.uri()], ours.socket);
        const theirs = await nbdinfo([map, qemu.uri()], qemu.socket);
        assert.equal(mine, theirs, `nbdinfo ${map}`);
      }
      assert.match(await nbdinfo(['--map=qemu:dirty-bitmap:b0', ours.uri()], ours.socket), /1048576\s+196608\s+1\s+dirty/);
    } finally {
      await qemu.stop();
      await ours.close();
    }
  });

  test('nbdinfo --map=qemu:allocation-depth of a backing chain prints what it prints for qemu-nbd -A', async () => {
    const ours = await servedReadOnly(top, []);
    const qemu = await startQemuNbd(top, ['-r', '-f', 'qcow2', '-A']);
    try {
      const mine = await nbdinfo(['--map=qemu:allocation-depth', ours.uri()], ours.socket);
      assert.equal(mine, await nbdinfo(['--map=qemu:allocation-depth', qemu.uri()], qemu.socket));
      assert.match(mine, /backing depth 2/);
    } finally {
      await qemu.stop();
      await ours.close();
    }
  });

  test('nbdcopy and qemu-img convert read what qemu-img convert reads from the image', async () => {
    const expected = join(dir, 'expected.raw');
    await mustRun('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, expected]);
    const ours = await servedReadOnly(image, ['b0']);
    try {
      const copied = join(dir, 'nbdcopy.raw');
      await mustRun('nbdcopy', [ours.uri(), copied]);
      assert.ok((await readFile(copied)).equals(await readFile(expected)), 'nbdcopy read other bytes');
      const converted = join(dir, 'convert.raw');
      await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', ours.uri(), converted]);
      assert.ok((await readFile(converted)).equals(await readFile(expected)), 'qemu-img convert read other bytes');
    } finally {
      await ours.close();
    }
  });

  test('nbdcopy, qemu-img convert and qemu-io write through a writable export', async () => {
    const source = join(dir, 'source.raw');
    await mustRun('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, source]);
    for (const writer of ['nbdcopy', 'qemu-img']) {
      const target = join(dir, `target-${writer}.qcow2`);
      await mustRun('qemu-img', ['create', '-q', '-f', 'qcow2', target, '32M']);
      const device = await openQcow2Tracking(target);
      const ours = await serve([{ name: 'w', device }]);
      try {
        if (writer === 'nbdcopy') await mustRun('nbdcopy', ['--flush', source, ours.uri('w')]);
        else await mustRun('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', source, ours.uri('w')]);
        const io = await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 2M 64k', '-c', 'read -P 0x5a 2M 64k', ours.uri('w')]);
        assert.doesNotMatch(io, /fail|mismatch/i);
      } finally {
        await ours.close();
        await device.close();
      }
      await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 2M 64k', source]);
      const compare = await runTool('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', source, target]);
      assert.equal(compare.status, 0, `${writer}: ${compare.stdout}${compare.stderr}`);
      await mustRun('qemu-io', ['-f', 'raw', '-c', 'write -P 0x00 2M 64k', source]);
      assert.equal((await runTool('qemu-img', ['check', '-q', target])).status, 0);
    }
  });

  test('a QEMU uses the export as a disk: its qemu-io writes land in the image and its enabled bitmap', async () => {
    const disk = join(dir, 'guest.qcow2');
    await makeQcow2(disk, { size: '16M', bitmaps: ['b0'], io: ['write -P 0x11 0 64k'] });
    const device = await openQcow2Tracking(disk);
    const ours = await serve([{ name: 'vda', device }]);
    const qemu = await startQemu(['-M', 'none', '-nodefaults', '-display', 'none',
      '-blockdev', `driver=nbd,server.type=unix,server.path=${ours.socket},export=vda,node-name=n0`]);
    try {
      assert.equal(await qemu.hmp('qemu-io n0 "write -P 0x5a 1M 64k"'), '');
    } finally {
      await qemu.kill();
      await ours.close();
      await device.close();
    }
    const io = await mustRun('qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5a 1M 64k', '-c', 'read -P 0x11 0 64k', disk]);
    assert.doesNotMatch(io, /fail|mismatch/i);
    const bitmaps = await Qcow2Bitmaps.open(disk, { readOnly: true });
    try {
      const dirty = [...bitmaps.get('b0')!.dirtyExtents()];
      assert.ok(dirty.some((e) => e.offset <= MiB && e.offset + e.length >= MiB + 65536), JSON.stringify(dirty));
    } finally {
      await bitmaps.close();
    }
  });

  test('nbdinfo lists an export over TLS with X.509 and PSK credentials, and a TLS-required server refuses it in plain', async () => {
    const x509 = join(dir, 'x509');
    await mustRun('mkdir', [x509]);
    await makeX509Directory(x509);
    const psk = join(dir, 'keys.psk');
    await makePskFile(psk);
    for (const [credentials, query] of [
      [await loadX509Credentials(x509, 'server'), `tls-certificates=${x509}`],
      [await loadPskCredentials(psk), `tls-psk-file=${psk}`],
    ] as const) {
      const device = await Qcow2Image.open(image, { readOnly: true });
      const ours = await serve([{ name: '', device }], credentials);
      try {
        const secure = await nbdinfo(['--list', `nbds+unix://bitback@/?socket=${ours.socket}&${query}`], ours.socket);
        assert.match(secure, /with TLS/);
        assert.match(secure, /export-size: 33554432/);
        const plain = await runTool('nbdinfo', ['--list', ours.uri()]);
        assert.notEqual(plain.status, 0, 'a plain client must be refused');
      } finally {
        await ours.close();
        await device.close();
      }
    }
  });
});
