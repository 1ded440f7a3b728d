/**
 * `bitback serve` and `bitback nbd list|info|map|copy`, `bitback io` over NBD URIs, against the
 * real peers: what nbdinfo prints for our server equals what it prints for qemu-nbd on the same
 * image, and `bitback nbd map` prints what nbdinfo prints.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { needPeers } from '../helpers/peers.js';
import { BITBACK_MAIN, runBitback, runProgram, type RunResult } from '../helpers/cli.js';
import { startBitbackServe, startQemuNbd, type NbdServerProcess } from '../helpers/nbd-peers.js';

const skip = needPeers('qemu-img', 'qemu-io', 'qemu-nbd', 'nbdinfo', 'nbdcopy');
const MiB = 1024 * 1024;

function ok(r: RunResult, what: string): string {
  assert.equal(r.status, 0, `${what} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

describe('bitback serve and bitback nbd against nbdinfo, nbdcopy and qemu-nbd', { skip }, () => {
  let dir = '';
  let base = '';
  let disk = '';
  const servers: NbdServerProcess[] = [];
  const start = async (p: Promise<NbdServerProcess>): Promise<NbdServerProcess> => {
    const s = await p;
    servers.push(s);
    return s;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-cli-'));
    base = join(dir, 'base.qcow2');
    disk = join(dir, 'disk.qcow2');
    ok(await runProgram('qemu-img', ['create', '-f', 'qcow2', base, '32M']), 'qemu-img create');
    ok(await runProgram('qemu-io', ['-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x12 20M 1M', base]), 'qemu-io');
    ok(await runProgram('qemu-img', ['create', '-f', 'qcow2', '-b', base, '-F', 'qcow2', disk]), 'qemu-img create overlay');
    ok(await runProgram('qemu-img', ['bitmap', '--add', disk, 'b0']), 'qemu-img bitmap');
    ok(await runProgram('qemu-io', ['-c', 'write -P 0x21 1M 64k', '-c', 'write -z 8M 128k', '-c', 'write -P 0x22 31M 1M', disk]), 'qemu-io overlay');
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('nbdinfo --map prints the same for bitback serve as for qemu-nbd, for every context, and so does bitback nbd map', async () => {
    const ours = await start(startBitbackServe(['-r', '-B', 'b0', disk]));
    const theirs = await start(startQemuNbd(disk, ['-r', '-f', 'qcow2', '-A', '-B', 'b0']));
    for (const context of ['base:allocation', 'qemu:dirty-bitmap:b0', 'qemu:allocation-depth']) {
      const expected = ok(await runProgram('nbdinfo', [`--map=${context}`, theirs.uri()]), `nbdinfo on qemu-nbd (${context})`);
      assert.equal(ok(await runProgram('nbdinfo', [`--map=${context}`, ours.uri()]), `nbdinfo on bitback (${context})`), expected, context);
      assert.equal(ok(await runBitback(['nbd', 'map', '--context', context, theirs.uri()]), `bitback nbd map on qemu-nbd (${context})`), expected, context);
    }
    const json = JSON.parse(ok(await runBitback(['nbd', 'map', '--json', ours.uri()]), 'bitback nbd map --json')) as unknown;
    const nbdinfoJson = JSON.parse(ok(await runProgram('nbdinfo', ['--map', '--json', theirs.uri()]), 'nbdinfo --json')) as unknown;
    assert.deepEqual(json, nbdinfoJson);
    await ours.stop();
    await theirs.stop();
  });

  test('bitback nbd list and info describe every export of a server with several images', async () => {
    const second = join(dir, 'second.raw');
    ok(await runProgram('qemu-img', ['create', '-f', 'raw', second, '5M']), 'qemu-img create raw');
    const s = await start(startBitbackServe(['-r', '-B', 'b0', disk, second]));
    const list = JSON.parse(ok(await runBitback(['nbd', 'list', '--json', s.uri()]), 'nbd list')) as Array<{ name: string; size: number; contexts: string[]; flags: Record<string, boolean> }>;
    assert.deepEqual(list.map((e) => [e.name, e.size]), [['disk', 32 * MiB], ['second', 5 * MiB]]);
    assert.ok(list[0]!.contexts.includes('qemu:dirty-bitmap:b0'));
    assert.ok(!list[1]!.contexts.includes('qemu:dirty-bitmap:b0'));
    assert.equal(list[0]!.flags.read_only, true);
    const nbdinfo = ok(await runProgram('nbdinfo', ['--list', s.uri()]), 'nbdinfo --list');
    assert.match(nbdinfo, /export="disk"/);
    assert.match(nbdinfo, /export="second"/);
    const info = ok(await runBitback(['nbd', 'info', s.uri('second')]), 'nbd info');
    assert.match(info, /export-size: 5242880/);
    await s.stop();
  });

  test('bitback nbd copy and nbdcopy read the same bytes as qemu-img convert, and write into a writable export', async () => {
    const s = await start(startBitbackServe(['-r', disk]));
    const expected = join(dir, 'expected.raw');
    ok(await runProgram('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', disk, expected]), 'qemu-img convert');
    const viaBitback = join(dir, 'via-bitback.raw');
    const viaNbdcopy = join(dir, 'via-nbdcopy.raw');
    ok(await runBitback(['nbd', 'copy', s.uri(), viaBitback]), 'bitback nbd copy');
    ok(await runProgram('nbdcopy', [s.uri(), viaNbdcopy]), 'nbdcopy');
    ok(await runProgram('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', expected, viaBitback]), 'compare bitback copy');
    ok(await runProgram('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', expected, viaNbdcopy]), 'compare nbdcopy copy');
    await s.stop();

    // Into a writable export holding other data: everything, zeroes included, must land.
    const target = join(dir, 'target.qcow2');
    ok(await runProgram('qemu-img', ['create', '-f', 'qcow2', target, '32M']), 'qemu-img create target');
    ok(await runProgram('qemu-io', ['-c', 'write -P 0x77 0 32M', target]), 'qemu-io fill target');
    const w = await start(startBitbackServe([target]));
    ok(await runBitback(['nbd', 'copy', expected, w.uri()]), 'bitback nbd copy into export');
    await w.stop();
    ok(await runProgram('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', expected, target]), 'compare export after copy');
    ok(await runProgram('qemu-img', ['check', target]), 'qemu-img check target');
  });

  test('bitback io works over an NBD URI, and writes through a served image land in its enabled bitmap', async () => {
    const image = join(dir, 'io.qcow2');
    ok(await runProgram('qemu-img', ['create', '-f', 'qcow2', image, '16M']), 'qemu-img create');
    ok(await runProgram('qemu-img', ['bitmap', '--add', '--granularity', '64K', image, 'b1']), 'qemu-img bitmap');
    const s = await start(startBitbackServe([image]));
    ok(await runBitback(['io', '-c', 'write -P 0x5a 1M 64k', '-c', 'read -P 0x5a 1M 64k', '-c', 'flush', s.uri()]), 'bitback io over NBD');
    const mismatch = await runBitback(['io', '-c', 'read -P 0x5b 1M 64k', s.uri()]);
    assert.equal(mismatch.status, 1, mismatch.stderr);
    await s.stop();
    ok(await runProgram('qemu-img', ['check', image]), 'qemu-img check');
    ok(await runProgram('qemu-io', ['-r', '-c', 'read -P 0x5a 1M 64k', image]), 'qemu-io read back');
    const q = await start(startQemuNbd(image, ['-r', '-f', 'qcow2', '-B', 'b1']));
    const map = ok(await runProgram('nbdinfo', ['--map=qemu:dirty-bitmap:b1', q.uri()]), 'nbdinfo bitmap');
    assert.match(map, /^\s+1048576\s+65536\s+1\s+dirty$/m);
    await q.stop();
  });

  test('the socket is 0600 unless --socket-mode says otherwise; TCP binds 127.0.0.1 and prints its URI', async () => {
    const image = join(dir, 'mode.raw');
    ok(await runProgram('qemu-img', ['create', '-f', 'raw', image, '1M']), 'qemu-img create');
    const a = await start(startBitbackServe(['-r', image]));
    assert.equal((await stat(a.socket)).mode & 0o777, 0o600);
    await a.stop();
    const b = await start(startBitbackServe(['-r', '--socket-mode', '0660', image]));
    assert.equal((await stat(b.socket)).mode & 0o777, 0o660);
    await b.stop();

    const child = spawn(process.execPath, [BITBACK_MAIN, 'serve', '-r', '--port', '0', image], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const uri = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          const m = /serving (nbd:\/\/127\.0\.0\.1:\d+\/)/.exec(out);
          if (m) resolve(m[1]!);
        });
        child.once('exit', (code) => reject(new Error(`bitback serve exited ${code}: ${out}`)));
      });
      assert.match(ok(await runProgram('nbdinfo', [uri]), 'nbdinfo over TCP'), /export-size: 1048576/);
    } finally {
      child.kill('SIGTERM');
      const status = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      assert.equal(status, 0, 'bitback serve exits 0 on SIGTERM');
    }
  });

  test('with --tls-psk, TLS clients with the key are served and plain clients are refused', async () => {
    const image = join(dir, 'tls.raw');
    ok(await runProgram('qemu-img', ['create', '-f', 'raw', image, '2M']), 'qemu-img create');
    const psk = join(dir, 'keys.psk');
    await writeFile(psk, `alice:${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    const s = await start(startBitbackServe(['-r', '--tls-psk', psk, image]));
    const tlsUri = `nbds+unix://alice@/?socket=${s.socket}&tls-psk-file=${psk}`;
    assert.match(ok(await runProgram('nbdinfo', [tlsUri]), 'nbdinfo with TLS-PSK'), /export-size: 2097152/);
    assert.match(ok(await runBitback(['nbd', 'info', tlsUri]), 'bitback nbd info with TLS-PSK'), /tls: true/);
    const plain = await runProgram('nbdinfo', [s.uri()]);
    assert.notEqual(plain.status, 0, 'a plain nbdinfo is refused');
    const plainOurs = await runBitback(['nbd', 'info', s.uri()]);
    assert.notEqual(plainOurs.status, 0);
    assert.match(plainOurs.stderr, /TLS/);
    await s.stop();
  });

  test('bad arguments get a clear usage error', async () => {
    const r = await runBitback(['serve', '--socket', join(dir, 'x.sock'), '--port', '1', disk]);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--socket or --port/);
    const names = await runBitback(['serve', '--socket', join(dir, 'y.sock'), '--name', 'a', disk, base]);
    assert.equal(names.status, 2);
    assert.match(names.stderr, /once per image/);
    const missing = await runBitback(['serve', '--socket', join(dir, 'z.sock'), '-B', 'nope', disk]);
    assert.equal(missing.status, 3);
    assert.match(missing.stderr, /no such bitmap/);
    const notUri = await runBitback(['nbd', 'map', disk]);
    assert.equal(notUri.status, 2);
  });
});
