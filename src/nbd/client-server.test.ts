/**
 * bitback's NBD client against bitback's NBD server: the BlockDevice conformance suite through
 * both, extended headers (no real peer here speaks them), multi-conn, 64 clients at once, dirty
 * bitmaps as meta contexts, and a server that goes away under a client.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirtyBitmap } from '../bitmap/dirty-bitmap.js';
import { type BlockDevice } from '../block/block-device.js';
import { MemoryBlockDevice } from '../block/memory-device.js';
import { testBlockDevice } from '../block/testing/conformance.js';
import { NbdClient, type NbdConnectOptions } from './client/index.js';
import { NbdServer, type NbdExport } from './server/index.js';
import { hasCode } from '../errors.js';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Serves `exports` on a fresh Unix socket; returns the server and the URI of an export. */
async function serve(exports: NbdExport[]): Promise<{ server: NbdServer; uri: (name?: string) => string }> {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-cs-'));
  dirs.push(dir);
  const server = new NbdServer();
  for (const e of exports) server.addExport(e);
  const path = join(dir, 'nbd.sock');
  await server.listen({ transport: 'unix', path });
  return { server, uri: (name = exports[0]!.name) => `nbd+unix:///${encodeURIComponent(name)}?socket=${path}` };
}

/** A conformance factory: one server per device, closed in cleanup. */
function viaServer(options: NbdConnectOptions) {
  return async (size: number, setup: { readOnly: boolean; content?: Uint8Array }) => {
    const device = setup.content ? MemoryBlockDevice.fromBytes(setup.content) : new MemoryBlockDevice(size);
    const { server, uri } = await serve([{ name: 'disk', device, readOnly: setup.readOnly }]);
    const client = await NbdClient.connect(uri(), options);
    return { device: client as BlockDevice, cleanup: () => server.close() };
  };
}

testBlockDevice('NbdClient over NbdServer (extended headers)', viaServer({}));
testBlockDevice('NbdClient over NbdServer (structured replies, no extended headers)', viaServer({ extendedHeaders: false }));
testBlockDevice('NbdClient over NbdServer (simple replies)', viaServer({ structuredReplies: false }));
testBlockDevice('NbdClient over NbdServer (4 connections)', viaServer({ connections: 4, requestSize: 64 * 1024 }));
testBlockDevice('NbdClient over NbdServer, read-only export', viaServer({}), { readOnly: true });

describe('NbdClient and NbdServer together', () => {
  test('they agree on extended headers, and a block status query may then span more than 4 GiB', async () => {
    const size = 8 * 1024 ** 3;
    const device = new MemoryBlockDevice(size);
    await device.write(6 * 1024 **3, new Uint8Array(4096).fill(1));
    const { server, uri } = await serve([{ name: 'big', device }]);
    try {
      const extended = await NbdClient.connect(uri());
      const compact = await NbdClient.connect(uri(), { extendedHeaders: false });
      try {
        assert.equal(extended.extendedHeaders, true);
        assert.equal(compact.extendedHeaders, false);
        assert.equal(compact.structuredReplies, true);
        const [first] = await extended.blockStatus(0, size);
        assert.ok(first!.length > 2 ** 32, `one extent covers the 6 GiB hole (got ${first!.length})`);
        const [short] = await compact.blockStatus(0, size);
        assert.ok(short!.length < 2 ** 32, 'compact headers cannot say more than 4 GiB');
        assert.deepEqual(await extended.read(6 * 1024 ** 3, 4096), new Uint8Array(4096).fill(1));
      } finally {
        await extended.close();
        await compact.close();
      }
    } finally {
      await server.close();
    }
  });

  test('a dirty bitmap is served as qemu:dirty-bitmap:NAME and read back as the same extents', async () => {
    const size = 16 * 1024 * 1024;
    const bitmap = new DirtyBitmap({ name: 'b0', size, granularity: 65536 });
    bitmap.set(1024 * 1024, 65536);
    bitmap.set(5 * 1024 * 1024 + 100, 200_000);
    const { server, uri } = await serve([{ name: 'vda', device: new MemoryBlockDevice(size), bitmaps: [bitmap], readOnly: true }]);
    try {
      const client = await NbdClient.connect(uri(), { contexts: ['qemu:dirty-bitmap:b0'] });
      try {
        assert.ok(client.contexts.includes('qemu:dirty-bitmap:b0'));
        const dirty: Array<{ offset: number; length: number }> = [];
        for (let offset = 0; offset < size; ) {
          for (const e of await client.contextStatus('qemu:dirty-bitmap:b0', offset, size - offset)) {
            if (e.flags & 1) dirty.push({ offset: e.offset, length: e.length });
            offset = e.offset + e.length;
          }
        }
        assert.deepEqual(dirty, [...bitmap.dirtyExtents()].map((e) => ({ offset: e.offset, length: e.length })));
      } finally {
        await client.close();
      }
      await assert.rejects(NbdClient.connect(uri(), { contexts: ['qemu:dirty-bitmap:nope'] }), (e: unknown) => hasCode(e, 'NOT_FOUND'));
    } finally {
      await server.close();
    }
  });

  test('64 clients at once, each writing and reading its own region while all read a shared one, keep data consistent', async () => {
    const clients = 64;
    const region = 256 * 1024;
    const shared = new Uint8Array(region).map((_, i) => (i * 7) & 0xff);
    const device = new MemoryBlockDevice((clients + 1) * region);
    await device.write(clients * region, shared);
    const { server, uri } = await serve([{ name: 'disk', device }]);
    try {
      const connected = await Promise.all(Array.from({ length: clients }, () => NbdClient.connect(uri())));
      try {
        await Promise.all(connected.map(async (client, n) => {
          for (let round = 0; round < 4; round++) {
            const value = (n * 4 + round) & 0xff;
            const piece = 16 * 1024;
            const writes = [];
            for (let at = 0; at < region; at += piece) writes.push(client.write(n * region + at, new Uint8Array(piece).fill(value)));
            const read = client.read(clients * region + ((n * 4096 * (round + 1)) % (region - 4096)), 4096);
            await Promise.all(writes);
            assert.deepEqual(await client.read(n * region, region), new Uint8Array(region).fill(value), `client ${n} round ${round}`);
            const offset = (n * 4096 * (round + 1)) % (region - 4096);
            assert.deepEqual(await read, shared.subarray(offset, offset + 4096));
          }
          await client.flush();
        }));
      } finally {
        await Promise.all(connected.map((c) => c.close()));
      }
      for (let n = 0; n < clients; n++) {
        assert.deepEqual(await device.read(n * region, region), new Uint8Array(region).fill((n * 4 + 3) & 0xff), `region ${n} on the server`);
      }
      assert.equal(server.connectionCount, 0);
    } finally {
      await server.close();
    }
  });

  test('a server closing while a client is connected ends the client cleanly: requests reject, nothing hangs', async () => {
    const { server, uri } = await serve([{ name: 'disk', device: new MemoryBlockDevice(1024 * 1024) }]);
    const client = await NbdClient.connect(uri());
    assert.deepEqual(await client.read(0, 512), new Uint8Array(512));
    await server.close();
    await assert.rejects(client.read(0, 512), (e: unknown) => hasCode(e, 'IO_ERROR') || hasCode(e, 'CLOSED'));
    await client.close();
  });
});
