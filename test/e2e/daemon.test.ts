/**
 * `bitback daemon` as a process: start-up nodes from --blockdev, several monitors where one
 * sending garbage does not disturb another, quit and signals storing the bitmaps, and a killed
 * daemon leaving its bitmaps marked inconsistent (never trusted), as QEMU does.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { QmpClient } from '../../src/qmp/index.js';
import { spawnWatched, type WatchedProcess } from '../helpers/child.js';
import { BITBACK_MAIN, runBitback } from '../helpers/cli.js';
import { needPeers } from '../helpers/peers.js';

const exec = promisify(execFile);
const skip = needPeers('qemu-img');
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-daemon-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function startDaemon(socket: string, blockdevs: string[]): Promise<{ proc: WatchedProcess; qmp: QmpClient }> {
  const proc = spawnWatched(process.execPath, [BITBACK_MAIN, 'daemon', '--qmp', `unix:${socket}`, ...blockdevs.flatMap((b) => ['--blockdev', b])]);
  for (let i = 0; ; i++) {
    try {
      return { proc, qmp: await QmpClient.connect(socket) };
    } catch (e) {
      if (proc.exited() || i > 500) {
        await proc.terminate('SIGKILL');
        throw new Error(`the daemon did not listen: ${String(e)}\n${proc.output()}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

async function bitmapsOf(image: string): Promise<Array<{ name: string; flags: string[] }>> {
  const info = JSON.parse((await exec('qemu-img', ['info', '-U', '--output=json', image])).stdout) as { 'format-specific': { data: { bitmaps?: Array<{ name: string; flags: string[] }> } } };
  return info['format-specific'].data.bitmaps ?? [];
}

/** A raw line-oriented connection, for sending bytes no client would send. */
async function rawMonitor(socket: string): Promise<{ send(text: string): void; line(): Promise<string>; closed: Promise<void>; socket: Socket }> {
  const s = connect(socket);
  let buffer = '';
  const waiting: Array<(line: string) => void> = [];
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  s.on('error', () => undefined);
  s.setEncoding('utf8').on('data', (d: string) => {
    buffer += d;
    for (let i = buffer.indexOf('\n'); i >= 0 && waiting.length > 0; i = buffer.indexOf('\n')) {
      const line = buffer.slice(0, i);
      buffer = buffer.slice(i + 1);
      waiting.shift()!(line);
    }
  });
  const line = (): Promise<string> =>
    new Promise((resolve) => {
      const i = buffer.indexOf('\n');
      if (i >= 0) {
        const l = buffer.slice(0, i);
        buffer = buffer.slice(i + 1);
        resolve(l);
      } else waiting.push(resolve);
    });
  await line(); // greeting
  s.write('{"execute":"qmp_capabilities"}\n');
  await line();
  return { send: (text) => s.write(text), line, closed, socket: s };
}

test('the daemon opens --blockdev nodes (key=value form), serves several monitors, and one monitor sending garbage disturbs no other', { skip }, async () => {
  const image = join(dir, 'a.qcow2');
  await exec('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
  const socket = join(dir, 'a.sock');
  const { proc, qmp } = await startDaemon(socket, [`driver=qcow2,node-name=disk0,file.driver=file,file.filename=${image}`]);
  try {
    const nodes = await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes');
    assert.ok(nodes.some((n) => n['node-name'] === 'disk0'));
    const bad = await rawMonitor(socket);
    bad.send('{"execute": query-version}\n');
    assert.match(await bad.line(), /"class": "GenericError", "desc": "JSON parse error/);
    bad.send(`{"execute": "query-version", "arguments": {"x": "${'a'.repeat(2 * 1024 * 1024)}"}}\n`);
    assert.match(await bad.line(), /JSON token size limit exceeded/);
    await bad.closed;
    assert.deepEqual(await qmp.execute('block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true }), {});
    const shutdown = qmp.waitForEvent('SHUTDOWN');
    assert.deepEqual(await qmp.execute('quit'), {});
    assert.deepEqual((await shutdown).data, { guest: false, reason: 'host-qmp-quit' });
    await proc.exit;
    assert.equal(proc.child.exitCode, 0);
    // Stored on the way out, not in use.
    assert.deepEqual(await bitmapsOf(image), [{ name: 'b0', granularity: 65536, flags: ['auto'] }]);
  } finally {
    await qmp.close().catch(() => undefined);
    await proc.terminate('SIGKILL');
  }
});

test('SIGTERM stores the bitmaps; SIGKILL leaves them in use, and the next daemon reports them inconsistent and lets them be removed', { skip }, async () => {
  const image = join(dir, 'b.qcow2');
  await exec('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
  const socket = join(dir, 'b.sock');
  const spec = JSON.stringify({ driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: image } });
  let { proc, qmp } = await startDaemon(socket, [spec]);
  await qmp.execute('block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true });
  await qmp.execute('human-monitor-command', { 'command-line': 'qemu-io disk0 "write -P 0x5a 0 64k"' });
  await qmp.close();
  await proc.terminate('SIGTERM');
  assert.equal(proc.child.exitCode, 0);
  assert.deepEqual((await bitmapsOf(image)).map((b) => b.flags), [['auto']]);

  ({ proc, qmp } = await startDaemon(socket, [spec]));
  try {
    const before = await qmp.execute<Array<{ 'dirty-bitmaps'?: Array<{ count: number }> }>>('query-named-block-nodes');
    assert.equal(before.find((n) => n['dirty-bitmaps'] !== undefined)?.['dirty-bitmaps']?.[0]?.count, 65536, 'the stored bitmap came back with its bit');
    await qmp.close();
    await proc.terminate('SIGKILL');
    assert.deepEqual((await bitmapsOf(image)).map((b) => b.flags), [['in-use', 'auto']]);
    ({ proc, qmp } = await startDaemon(socket, [spec]));
    const nodes = await qmp.execute<Array<{ 'node-name': string; 'dirty-bitmaps'?: Array<Record<string, unknown>> }>>('query-named-block-nodes');
    const bitmap = nodes.find((n) => n['node-name'] === 'disk0')?.['dirty-bitmaps']?.[0];
    assert.equal(bitmap?.inconsistent, true);
    await assert.rejects(qmp.execute('block-dirty-bitmap-clear', { node: 'disk0', name: 'b0' }), { desc: "Bitmap 'b0' is inconsistent and cannot be used" });
    assert.deepEqual(await qmp.execute('block-dirty-bitmap-remove', { node: 'disk0', name: 'b0' }), {});
  } finally {
    await qmp.close().catch(() => undefined);
    await proc.terminate();
  }
  assert.deepEqual(await bitmapsOf(image), []);
});

test('a --blockdev the schema refuses stops the daemon with QEMU\'s text and exit status 2', async () => {
  const result = await runBitback(['daemon', '--qmp', `unix:${join(dir, 'c.sock')}`, '--blockdev', 'driver=qcow2,node-name=d,file.driver=file,file.filename=/x,bogus=1']);
  assert.equal(result.status, 2);
  assert.match(result.stderr, /Parameter 'bogus' is unexpected/);
});
