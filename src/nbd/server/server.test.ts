import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { lstat, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirtyBitmap } from '../../bitmap/index.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { InvalidArgumentError, hasCode } from '../../errors.js';
import { NBD_CMD_READ, NBD_OPT_LIST, NBD_REP_ACK } from '../protocol/index.js';
import { NbdServer } from './server.js';
import { RawClient } from './testing/raw-client.js';
import { readReplyData } from './testing/replies.js';

/** Makes a child process listen on `path` and kills it with SIGKILL, leaving the socket file. */
async function leaveStaleSocket(path: string): Promise<void> {
  const child = spawn(process.execPath, ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('up'))", path], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the listener exited with ${code}`)));
  });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

function listenOn(server: Server, path: string): Promise<void> {
  return new Promise((resolve) => server.listen(path, resolve));
}

describe('NbdServer listening', () => {
  let dir: string;
  const device = MemoryBlockDevice.fromBytes(new Uint8Array(65536).fill(5));
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-listen-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  async function served(where: string | number): Promise<void> {
    const c = await RawClient.connect(where);
    try {
      await c.hello();
      await c.negotiate();
      assert.deepEqual(readReplyData(await c.call({ type: NBD_CMD_READ, offset: 0, length: 4 }), 0, 4).data, new Uint8Array(4).fill(5));
    } finally {
      c.close();
    }
  }

  test('a Unix socket is created 0600 by default, served, and removed by close()', async () => {
    const server = new NbdServer();
    server.addExport({ name: '', device });
    const path = join(dir, 'default.sock');
    const bound = await server.listen({ transport: 'unix', path });
    assert.deepEqual(bound, { transport: 'unix', path });
    const st = await lstat(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    await served(path);
    await server.close();
    await assert.rejects(lstat(path), /ENOENT/);
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('.nbd-')), [], 'no private folder is left behind');
  });

  test('the socket gets the mode and group asked for before anyone can connect', async () => {
    const server = new NbdServer();
    server.addExport({ name: '', device });
    const path = join(dir, 'shared.sock');
    const gid = process.getgid!();
    await server.listen({ transport: 'unix', path, mode: 0o660, group: gid });
    const st = await lstat(path);
    assert.equal(st.mode & 0o777, 0o660);
    assert.equal(st.gid, gid);
    await server.close();
  });

  test('an existing file or a live socket is never replaced; a stale socket is', async () => {
    const file = join(dir, 'file.sock');
    await writeFile(file, 'keep me');
    const server = new NbdServer();
    server.addExport({ name: '', device });
    await assert.rejects(server.listen({ transport: 'unix', path: file }), (e) => hasCode(e, 'ALREADY_EXISTS'));
    const live = join(dir, 'live.sock');
    const other = createServer();
    await listenOn(other, live);
    await assert.rejects(server.listen({ transport: 'unix', path: live }), (e) => hasCode(e, 'ALREADY_EXISTS'));
    // A socket left by a process that was killed: nobody listens on it any more.
    const stale = join(dir, 'stale.sock');
    await leaveStaleSocket(stale);
    assert.ok((await lstat(stale)).isSocket());
    await server.listen({ transport: 'unix', path: stale });
    await served(stale);
    await server.close();
    await new Promise<void>((resolve) => other.close(() => resolve()));
    assert.equal((await lstat(file)).isFile(), true);
  });

  test('TCP listens on 127.0.0.1 by default and port 0 gives a real port', async () => {
    const server = new NbdServer();
    server.addExport({ name: '', device });
    const bound = await server.listen({ transport: 'tcp', port: 0 });
    assert.equal(bound.transport, 'tcp');
    assert.ok(bound.transport === 'tcp' && bound.host === '127.0.0.1' && bound.port > 0);
    await served(bound.transport === 'tcp' ? bound.port : 0);
    await server.close();
  });

  test('handleConnection() serves a socket accepted elsewhere, and refuses it once closing', async () => {
    const server = new NbdServer();
    server.addExport({ name: '', device });
    const path = join(dir, 'elsewhere.sock');
    const front = createServer((socket) => server.handleConnection(socket));
    await listenOn(front, path);
    await served(path);
    await server.close();
    const late = await RawClient.connect(path);
    await late.closed;
    assert.equal(server.connectionCount, 0);
    await new Promise<void>((resolve) => front.close(() => resolve()));
  });
});

describe('NbdServer exports', () => {
  test('addExport() refuses a duplicate name, a name with NUL, and a bitmap of another size or inconsistent', () => {
    const server = new NbdServer();
    const device = new MemoryBlockDevice(1 << 20);
    server.addExport({ name: 'a', device });
    assert.throws(() => server.addExport({ name: 'a', device }), InvalidArgumentError);
    const bitmap = new DirtyBitmap({ size: 4096, granularity: 512, name: 'b' });
    assert.throws(() => server.addExport({ name: 'b', device, bitmaps: [bitmap] }), /covers 4096 bytes/);
    assert.throws(() => server.addExport({ name: 'c\0', device }), /NUL/);
    const broken = new DirtyBitmap({ size: 1 << 20, granularity: 65536, name: 'broken' });
    broken.markInconsistent();
    assert.throws(() => server.addExport({ name: 'd', device, bitmaps: [broken] }), /inconsistent/);
  });

  test('options out of range are refused', () => {
    assert.throws(() => new NbdServer({ maxPayload: 100 }), InvalidArgumentError);
    assert.throws(() => new NbdServer({ maxInFlight: 0 }), InvalidArgumentError);
  });

  test('exports added while serving are listed at once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-exports-'));
    const server = new NbdServer();
    try {
      const path = join(dir, 's');
      await server.listen({ transport: 'unix', path });
      server.addExport({ name: 'late', device: new MemoryBlockDevice(4096) });
      const c = await RawClient.connect(path);
      await c.hello();
      const replies = await c.option(NBD_OPT_LIST);
      assert.equal(replies.length, 2);
      assert.equal(replies[1]!.type, NBD_REP_ACK);
      c.close();
    } finally {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
