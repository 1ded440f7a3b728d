/**
 * Failure paths of the NBD layer with real fault injection: a source that fails reads (nbdkit's
 * error filter), and a writable `bitback serve` killed with SIGKILL under a connected client.
 * Nothing acknowledged as flushed is lost, errors are typed, and nothing hangs.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needPeers } from '../helpers/peers.js';
import { runBitback, runProgram, type RunResult } from '../helpers/cli.js';
import { startBitbackServe, startNbdkit, type NbdServerProcess } from '../helpers/nbd-peers.js';
import { NbdClient } from '../../src/nbd/client/index.js';
import { IoError } from '../../src/errors.js';

const skip = needPeers('qemu-img', 'qemu-io', 'nbdkit');

function ok(r: RunResult, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

describe('NBD failure paths', { skip }, () => {
  let dir = '';
  const servers: NbdServerProcess[] = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-faults-'));
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('bitback nbd copy from a source whose reads fail exits with an I/O error naming EIO and leaves no partial target', async () => {
    const source = await startNbdkit(['--filter=error', 'pattern', 'size=64M', 'error-pread-rate=100%', 'error=EIO']);
    servers.push(source);
    const target = join(dir, 'copy.raw');
    const r = await runBitback(['nbd', 'copy', source.uri(), target]);
    assert.equal(r.status, 4, `exit status 4 (I/O error), got ${r.status}: ${r.stderr}`);
    assert.match(r.stderr, /EIO/);
    assert.equal(await exists(target), false, 'the target bitback created is removed');
    // An existing target is left in place (it was the user's), reported the same way.
    const existing = join(dir, 'existing.raw');
    ok(await runProgram('qemu-img', ['create', '-f', 'raw', existing, '64M']), 'qemu-img create');
    const again = await runBitback(['nbd', 'copy', source.uri(), existing]);
    assert.equal(again.status, 4, again.stderr);
    assert.equal(await exists(existing), true);
    await source.stop();
  });

  test('a writable bitback serve killed with SIGKILL: the client fails cleanly and flushed writes are in a consistent image', async () => {
    const image = join(dir, 'served.qcow2');
    ok(await runProgram('qemu-img', ['create', '-f', 'qcow2', image, '32M']), 'qemu-img create');
    ok(await runProgram('qemu-img', ['bitmap', '--add', image, 'b0']), 'qemu-img bitmap');
    const server = await startBitbackServe([image]);
    servers.push(server);
    const client = await NbdClient.connect(server.uri());
    try {
      await client.write(1024 * 1024, new Uint8Array(256 * 1024).fill(0x5a));
      await client.flush();
      process.kill(server.pid, 'SIGKILL');
      await assert.rejects(client.read(0, 4096), (e: unknown) => e instanceof IoError && e.retryable, 'a dropped server fails requests with a retryable I/O error');
    } finally {
      await client.close();
      await server.stop();
    }
    const check = await runProgram('qemu-img', ['check', '--output=json', image]);
    const report = JSON.parse(check.stdout) as { corruptions?: number; 'check-errors'?: number };
    assert.equal(report.corruptions ?? 0, 0, check.stdout);
    assert.equal(report['check-errors'] ?? 0, 0, check.stdout);
    ok(await runProgram('qemu-io', ['-r', '-c', 'read -P 0x5a 1M 256k', image]), 'the flushed data is there');
    // As after a kill -9 of QEMU, the bitmap that was in use is now inconsistent (never trusted).
    const info = JSON.parse(ok(await runProgram('qemu-img', ['info', '--output=json', image]), 'qemu-img info')) as {
      'format-specific': { data: { bitmaps?: Array<{ name: string; flags: string[] }> } };
    };
    const b0 = info['format-specific'].data.bitmaps?.find((b) => b.name === 'b0');
    assert.ok(b0 !== undefined && b0.flags.includes('in-use'), `b0 is marked in use: ${JSON.stringify(b0)}`);
  });
});
