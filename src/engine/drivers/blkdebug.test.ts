import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createQcow2 } from '../../qcow2/index.js';
import { connectInProcess } from '../../qmp/client/in-process.js';
import type { QmpClient } from '../../qmp/client/qmp-client.js';
import { createEngine } from '../create.js';
import type { Engine } from '../engine.js';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-blkdebug-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Started {
  engine: Engine;
  qmp: QmpClient;
  d: string;
  log: string[];
  run: (command: string, args?: Record<string, unknown>) => Promise<unknown>;
  io: (node: string, command: string) => Promise<string[]>;
}

/** An engine with `disk0` (a 4 MiB qcow2 image) in a fresh folder. */
async function start(name: string): Promise<Started> {
  const d = join(dir, name);
  await mkdir(d);
  await createQcow2(join(d, 'disk.qcow2'), { size: 4 * MiB });
  const log: string[] = [];
  const engine = createEngine({ ioLog: (line) => log.push(line) });
  const qmp = await connectInProcess(engine.qmp);
  const run = async (command: string, args?: Record<string, unknown>): Promise<unknown> => {
    try {
      return await qmp.execute(command, args);
    } catch (e) {
      return { error: (e as { desc?: string }).desc ?? String(e) };
    }
  };
  const io = async (node: string, command: string): Promise<string[]> => {
    log.length = 0;
    await run('human-monitor-command', { 'command-line': `qemu-io ${node} "${command}"` });
    return log.filter((l) => !l.includes('ops/sec'));
  };
  await run('blockdev-add', { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: join(d, 'disk.qcow2') } });
  return { engine, qmp, d, log, run, io };
}

async function stop({ engine, qmp }: Started): Promise<void> {
  await qmp.close();
  await engine.close();
}

test('blockdev-add blkdebug checks its limits and config file with QEMU\'s texts, in QEMU\'s order', async () => {
  const s = await start('errors');
  try {
    const add = (extra: Record<string, unknown>) => s.run('blockdev-add', { driver: 'blkdebug', 'node-name': 'bd', image: 'disk0', ...extra });
    await writeFile(join(s.d, 'bad.conf'), '[inject-error]\nevent = "bogus"\n');
    assert.deepEqual(await add({ align: 3 }), { error: 'Cannot meet constraints with align 3' });
    assert.deepEqual(await add({ align: 2147483648 }), { error: 'Cannot meet constraints with align 2147483648' });
    assert.deepEqual(await add({ align: -1 }), { error: "Parameter 'align' expects a non-negative number below 2^64" });
    assert.deepEqual(await add({ 'max-transfer': -5 }), { error: "Parameter 'max-transfer' expects a non-negative number below 2^64" });
    assert.deepEqual(await add({ align: 4096, 'max-transfer': 1000 }), { error: 'Cannot meet constraints with max-transfer 1000' });
    assert.deepEqual(await add({ align: 512, 'opt-write-zero': 1000 }), { error: 'Cannot meet constraints with opt-write-zero 1000' });
    assert.deepEqual(await add({ 'opt-write-zero': 512, 'max-write-zero': 1000 }), { error: 'Cannot meet constraints with max-write-zero 1000' });
    assert.deepEqual(await add({ config: join(s.d, 'nope.conf') }), { error: 'Could not read blkdebug config file: No such file or directory' });
    assert.deepEqual(await add({ config: s.d }), { error: 'Cannot read config file: Is a directory' });
    assert.deepEqual(await add({ config: join(s.d, 'bad.conf'), image: 'nosuch' }), { error: 'invalid parameter value: bogus' });
    assert.deepEqual(await add({ image: 'nosuch', align: 3 }), { error: "Cannot find device='nosuch' nor node-name='nosuch'" });
    assert.deepEqual(await add({ align: 0, 'max-transfer': 1000 }), {});
  } finally {
    await stop(s);
  }
});

test('a blkdebug node reports QEMU\'s file names, the image\'s size and cluster size', async () => {
  const s = await start('names');
  try {
    await s.run('blockdev-add', { driver: 'blkdebug', 'node-name': 'plain', image: 'disk0', 'read-only': true });
    await s.run('blockdev-add', { driver: 'blkdebug', 'node-name': 'ruled', image: 'disk0', align: 512 });
    const nodes = (await s.run('query-named-block-nodes')) as Array<Record<string, unknown>>;
    const byName = new Map(nodes.map((n) => [n['node-name'], n]));
    assert.equal(byName.get('plain')!.file, `blkdebug::${join(s.d, 'disk.qcow2')}`);
    assert.match(String(byName.get('ruled')!.file), /^json:\{.*"align":512/);
    const image = byName.get('ruled')!.image as Record<string, unknown>;
    assert.equal(image['virtual-size'], 4 * MiB);
    assert.equal(image['cluster-size'], 65536);
  } finally {
    await stop(s);
  }
});

test('rules of the event none are active from the start; qemu-io prints the injected errno as QEMU does', async () => {
  const s = await start('none');
  try {
    await s.run('blockdev-add', {
      driver: 'blkdebug',
      'node-name': 'bd',
      image: 'disk0',
      'inject-error': [
        { event: 'none', errno: 28, sector: 7 },
        { event: 'none', errno: 1, iotype: 'write', once: true },
      ],
    });
    assert.deepEqual(await s.io('bd', 'read 0 4k'), ['read failed: No space left on device']);
    assert.deepEqual(await s.io('bd', 'read 4k 4k'), ['read 4096/4096 bytes at offset 4096']);
    assert.deepEqual(await s.io('bd', 'write 64k 4k'), ['write failed: Operation not permitted']);
    assert.deepEqual(await s.io('bd', 'write 64k 4k'), ['wrote 4096/4096 bytes at offset 65536']);
  } finally {
    await stop(s);
  }
});

test('rules from a config file come before the options\' rules', async () => {
  const s = await start('config');
  try {
    await writeFile(join(s.d, 'bd.conf'), '[inject-error]\nevent = "none"\nerrno = "28"\n');
    await s.run('blockdev-add', { driver: 'blkdebug', 'node-name': 'bd', image: 'disk0', config: join(s.d, 'bd.conf'), 'inject-error': [{ event: 'none', errno: 1 }] });
    assert.deepEqual(await s.io('bd', 'read 0 512'), ['read failed: No space left on device']);
  } finally {
    await stop(s);
  }
});

test('take-child-perms and unshare-child-perms change what the node holds and shares on its image', async () => {
  const s = await start('perms');
  try {
    assert.deepEqual(await s.run('blockdev-add', { driver: 'blkdebug', 'node-name': 'bd', image: 'disk0', 'unshare-child-perms': ['write'] }), {});
    assert.deepEqual(await s.run('blockdev-add', { driver: 'blkdebug', 'node-name': 'bd2', image: 'disk0', 'take-child-perms': ['write'] }), {
      error:
        "Permission conflict on node 'disk0': permissions 'write' are both required by node 'bd2' (uses node 'disk0' as 'image' child) and unshared by node 'bd' (uses node 'disk0' as 'image' child).",
    });
    assert.deepEqual(await s.run('blockdev-add', { driver: 'blkdebug', 'node-name': 'bd3', image: 'disk0', 'take-child-perms': ['resize'] }), {});
  } finally {
    await stop(s);
  }
});
