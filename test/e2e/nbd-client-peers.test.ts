/**
 * bitback's NBD client against real servers: qemu-nbd (data and maps compared with qemu-img and
 * nbdinfo), nbdkit memory (round trips, multi-conn), a QEMU NBD export with a dirty bitmap, and
 * nbdkit's error filter (a typed EIO).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { NbdClient, describeExport, listExports } from '../../src/nbd/client/index.js';
import { NbdCommandError } from '../../src/nbd/protocol/errors.js';
import { runProgram } from '../helpers/cli.js';
import { startNbdkit, startQemuNbd, type NbdServerProcess } from '../helpers/nbd-peers.js';
import { needPeers } from '../helpers/peers.js';
import { startQemu } from '../helpers/qemu.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** An extent as nbdinfo --map --json prints it (type = the context's flags). */
interface MapEntry {
  offset: number;
  length: number;
  type: number;
}

/** Joins neighbours of the same type, so that maps cut differently compare equal. */
function merged(entries: MapEntry[]): MapEntry[] {
  const out: MapEntry[] = [];
  for (const e of entries) {
    const last = out[out.length - 1];
    if (last !== undefined && last.type === e.type && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ offset: e.offset, length: e.length, type: e.type });
  }
  return out;
}

/** The whole map of `context` (base:allocation through blockStatus) as our client sees it. */
async function ourMap(client: NbdClient, context = 'base:allocation'): Promise<MapEntry[]> {
  const entries: MapEntry[] = [];
  for (let offset = 0; offset < client.size; ) {
    const extents = context === 'base:allocation' ? await client.blockStatus(offset, client.size - offset) : await client.contextStatus(context, offset, client.size - offset);
    for (const e of extents) entries.push({ offset: e.offset, length: e.length, type: e.flags });
    const last = extents[extents.length - 1]!;
    offset = last.offset + last.length;
  }
  return merged(entries);
}

/** What `nbdinfo --map[=CONTEXT] --json URI` prints. */
async function nbdinfoMap(uri: string, context?: string): Promise<MapEntry[]> {
  const result = await runProgram('nbdinfo', [context === undefined ? '--map' : `--map=${context}`, '--json', uri]);
  assert.equal(result.status, 0, result.stderr);
  return merged(JSON.parse(result.stdout) as MapEntry[]);
}

describe('NbdClient against qemu-nbd', { skip: needPeers('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo') }, () => {
  let dir: string;
  let image: string;
  let server: NbdServerProcess;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-client-'));
    image = join(dir, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '24M']);
    await run('qemu-io', ['-c', 'write -P 0x11 1M 3M', '-c', 'write -z 8M 1M', '-c', 'write -P 0x44 23M 100k', image]);
    await run('qemu-img', ['bitmap', '--add', '--granularity', '64K', image, 'b0']);
    await run('qemu-io', ['-c', 'write -P 0x22 2M 100k', '-c', 'write -P 0x33 20M 64k', '-c', 'discard 1M 512k', '-c', 'write -P 0x55 12345678 1000', image]);
    server = await startQemuNbd(image, ['-r', '-f', 'qcow2', '-B', 'b0', '-A']);
  });

  after(async () => {
    await server?.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  test('it reads the same bytes as qemu-img convert writes', async () => {
    const raw = join(dir, 'disk.raw');
    await run('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
    const expected = new Uint8Array(await readFile(raw));
    const client = await NbdClient.connect(server.uri(), { requestSize: 1 * MiB });
    try {
      assert.equal(client.size, expected.length);
      assert.equal(client.capabilities.readOnly, true);
      assert.equal(client.structuredReplies, true);
      assert.equal(client.extendedHeaders, false, 'QEMU 7.2 does not speak extended headers');
      const data = await client.read(0, client.size);
      assert.ok(Buffer.from(data).equals(Buffer.from(expected)), 'the whole disk is identical');
      assert.deepEqual(await client.read(12345677, 1002), expected.subarray(12345677, 12345677 + 1002));
    } finally {
      await client.close();
    }
  });

  test('base:allocation and qemu:dirty-bitmap:b0 extents equal what nbdinfo --map reports', async () => {
    const client = await NbdClient.connect(server.uri(), { contexts: ['qemu:dirty-bitmap:b0'] });
    let base: MapEntry[];
    let dirty: MapEntry[];
    try {
      assert.deepEqual(client.contexts, ['base:allocation', 'qemu:dirty-bitmap:b0']);
      base = await ourMap(client);
      dirty = await ourMap(client, 'qemu:dirty-bitmap:b0');
    } finally {
      await client.close();
    }
    // qemu-nbd (-e 1) serves one client at a time: nbdinfo only after our client is gone.
    assert.deepEqual(base, await nbdinfoMap(server.uri()));
    assert.ok(base.some((e) => e.type === 0) && base.some((e) => e.type === 3), 'the map has data and holes');
    assert.deepEqual(dirty, await nbdinfoMap(server.uri(), 'qemu:dirty-bitmap:b0'));
    assert.deepEqual(dirty.filter((e) => e.type === 1).map((e) => [e.offset, e.length]), [
      [1 * MiB, 512 * 1024], [2 * MiB, 128 * 1024], [12320768, 65536], [20 * MiB, 64 * 1024],
    ]);
  });

  test('qemu:allocation-depth gives each extent a depth', async () => {
    const client = await NbdClient.connect(server.uri(), { contexts: ['qemu:allocation-depth'] });
    try {
      const extents = await client.blockStatus(0, client.size);
      assert.ok(extents.every((e) => e.depth === 0 || e.depth === 1), JSON.stringify(extents));
      assert.ok(extents.some((e) => e.depth === 1 && e.flags === 0), 'allocated data has depth 1');
    } finally {
      await client.close();
    }
  });

  test('describeExport and listExports say what nbdinfo says', async () => {
    const info = await describeExport(server.uri());
    assert.equal(info.size, 24 * MiB);
    assert.deepEqual([...info.contexts].sort(), ['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:b0']);
    const json = JSON.parse((await runProgram('nbdinfo', ['--json', server.uri()])).stdout) as { exports: Array<{ 'export-size': number; contexts: string[] }> };
    assert.equal(json.exports[0]!['export-size'], info.size);
    assert.deepEqual([...json.exports[0]!.contexts].sort(), [...info.contexts].sort());
    const listed = await listExports(server.uri());
    assert.deepEqual(listed.map((e) => [e.name, e.size]), [['', 24 * MiB]]);
  });
});

describe('NbdClient with several connections', { skip: needPeers('qemu-img', 'qemu-nbd', 'nbdkit') }, () => {
  test('nbdkit memory advertises multi-conn: 4 connections are opened and writes round-trip', async () => {
    const server = await startNbdkit(['memory', '64M']);
    try {
      const client = await NbdClient.connect(server.uri(), { connections: 4, requestSize: 256 * 1024 });
      try {
        assert.equal(client.connectionCount, 4);
        assert.equal(client.capabilities.multiConn, true);
        const data = new Uint8Array(9 * MiB + 123).map((_, i) => (i * 7 + 3) & 0xff);
        await client.write(5 * MiB - 77, data, { fua: true });
        await client.flush();
        assert.deepEqual(await client.read(5 * MiB - 77, data.length), data);
        await client.writeZeroes(6 * MiB, MiB, { mayTrim: true });
        data.fill(0, MiB + 77, 2 * MiB + 77);
        assert.deepEqual(await client.read(5 * MiB - 77, data.length), data);
        const extents = await client.blockStatus(0, 64 * MiB);
        assert.ok(extents[0]!.flags !== 0, 'the start was never written: a hole');
        await client.cache(0, 8 * MiB + 1);
      } finally {
        await client.close();
      }
    } finally {
      await server.stop();
    }
  });

  test('qemu-nbd -e 4 advertises multi-conn: 4 connections read and write one image', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-client-'));
    const image = join(dir, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '32M']);
    const server = await startQemuNbd(image, ['-f', 'qcow2', '-e', '4']);
    try {
      const client = await NbdClient.connect(server.uri(), { connections: 4, requestSize: 128 * 1024 });
      try {
        assert.equal(client.connectionCount, 4);
        const data = new Uint8Array(4 * MiB).map((_, i) => (i * 13) & 0xff);
        await client.write(MiB, data);
        await client.flush();
        assert.deepEqual(await client.read(MiB, data.length), data);
      } finally {
        await client.close();
      }
      const single = await NbdClient.connect(server.uri(), { connections: 1 });
      try {
        assert.equal(single.connectionCount, 1);
        assert.deepEqual((await single.read(MiB, 8)).length, 8);
      } finally {
        await single.close();
      }
    } finally {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('NbdClient and a QEMU NBD export with a dirty bitmap', { skip: needPeers('qemu-img', 'qemu-system-x86_64') }, () => {
  test('the client sees the bitmap extents and the data written through QEMU', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-client-qemu-'));
    const image = join(dir, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '64M']);
    const qemu = await startQemu(['-M', 'none', '-nodefaults', '-display', 'none', '-blockdev', `driver=qcow2,node-name=disk0,file.driver=file,file.filename=${image}`]);
    try {
      await qemu.hmp('qemu-io disk0 "write -P 0x5a 0 1M"');
      await qemu.qmp('block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true, granularity: 65536 });
      await qemu.hmp('qemu-io disk0 "write -P 0x77 1M 192k"');
      await qemu.hmp('qemu-io disk0 "write -P 0x66 40000000 100"');
      // An enabled bitmap cannot be exported read-only (QEMU refuses): freeze it first.
      await qemu.qmp('block-dirty-bitmap-disable', { node: 'disk0', name: 'b0' });
      const socket = join(qemu.dir, 'nbd.sock');
      await qemu.qmp('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
      await qemu.qmp('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', name: 'disk0', bitmaps: [{ node: 'disk0', name: 'b0' }] });
      const client = await NbdClient.connect(`nbd+unix:///disk0?socket=${socket}`, { contexts: ['qemu:dirty-bitmap:b0'] });
      try {
        assert.equal(client.size, 64 * MiB);
        const dirty = (await ourMap(client, 'qemu:dirty-bitmap:b0')).filter((e) => e.type === 1).map((e) => [e.offset, e.length]);
        assert.deepEqual(dirty, [[MiB, 192 * 1024], [39976960, 65536]]);
        assert.deepEqual(await client.read(MiB - 2, 4), new Uint8Array([0x5a, 0x5a, 0x77, 0x77]));
        assert.deepEqual(await client.read(40000000, 100), new Uint8Array(100).fill(0x66));
      } finally {
        await client.close();
      }
      await qemu.qmp('block-export-del', { id: 'e0' });
      await qemu.qmp('nbd-server-stop');
    } finally {
      await qemu.kill();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('NbdClient and nbdkit --filter=error', { skip: needPeers('nbdkit') }, () => {
  test('a failing read rejects with NbdCommandError EIO, and the client goes on', async () => {
    const server = await startNbdkit(['--filter=error', 'memory', '16M', 'error-pread-rate=100%', 'error=EIO']);
    try {
      const client = await NbdClient.connect(server.uri());
      try {
        for (let i = 0; i < 2; i++) {
          await assert.rejects(client.read(4096, 65536), (e: unknown) => e instanceof NbdCommandError && e.errno === 'EIO' && e.code === 'IO_ERROR' && !e.retryable);
        }
        await client.write(0, new Uint8Array(512).fill(1));
        await client.flush();
      } finally {
        await client.close();
      }
    } finally {
      await server.stop();
    }
  });
});
