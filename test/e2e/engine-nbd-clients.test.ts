/**
 * Real NBD clients writing to a writable export of the engine: their writes go through the
 * engine's node graph, so the enabled bitmap of the node records them exactly as QEMU records
 * the same writes made inside QEMU.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { needPeers } from '../helpers/peers.js';
import { startBitbackPeer, startQemuPeer } from '../helpers/qmp-peers.js';

const exec = promisify(execFile);
const WRITES = ['write -P 0x5a 0 64k', 'write -P 0x11 1000 3000', 'write -z 1M 192k', 'write -P 0x22 8M 1M', 'write -P 0x33 63M 4k'];

test('QEMU writing through the engine\'s writable export (-blockdev driver=nbd) dirties the engine\'s bitmap as its own writes dirty its own', { skip: needPeers('qemu-system-x86_64', 'qemu-img') }, async () => {
  const engine = await startBitbackPeer();
  const client = await startQemuPeer();
  const reference = await startQemuPeer();
  try {
    for (const peer of [engine, reference]) await exec('qemu-img', ['create', '-q', '-f', 'qcow2', `${peer.dir}/disk.qcow2`, '64M']);
    const setup = [
      ['blockdev-add', { driver: 'qcow2', 'node-name': 'disk0', file: { driver: 'file', filename: '$D/disk.qcow2' } }],
      ['block-dirty-bitmap-add', { node: 'disk0', name: 'b0', persistent: true }],
    ] as const;
    for (const peer of [engine, reference]) for (const [command, args] of setup) assert.deepEqual(await peer.run(command, args), { return: {} });
    assert.deepEqual(await engine.run('nbd-server-start', { addr: { type: 'unix', data: { path: '$D/nbd.sock' } } }), { return: {} });
    assert.deepEqual(await engine.run('block-export-add', { type: 'nbd', id: 'e0', 'node-name': 'disk0', writable: true }), { return: {} });
    assert.deepEqual(
      await client.run('blockdev-add', { driver: 'nbd', 'node-name': 'remote', server: { type: 'unix', path: `${engine.dir}/nbd.sock` }, export: 'disk0' }),
      { return: {} },
    );
    for (const w of WRITES) {
      assert.deepEqual(await client.run('human-monitor-command', { 'command-line': `qemu-io remote "${w}"` }), { return: '' });
      assert.deepEqual(await reference.run('human-monitor-command', { 'command-line': `qemu-io disk0 "${w}"` }), { return: '' });
    }
    assert.deepEqual(await client.run('blockdev-del', { 'node-name': 'remote' }), { return: {} });
    const sha = { node: 'disk0', name: 'b0' };
    assert.deepEqual(await engine.run('x-debug-block-dirty-bitmap-sha256', sha), await reference.run('x-debug-block-dirty-bitmap-sha256', sha));
    for (const peer of [engine, reference]) assert.deepEqual(await peer.run('blockdev-del', { 'node-name': 'disk0' }), peer === engine ? { error: { class: 'GenericError', desc: 'Node disk0 is in use' } } : { return: {} });
    assert.deepEqual(await engine.run('block-export-del', { id: 'e0' }), { return: {} });
    assert.deepEqual(await engine.run('blockdev-del', { 'node-name': 'disk0' }), { return: {} });
    await exec('qemu-img', ['compare', '-q', `${engine.dir}/disk.qcow2`, `${reference.dir}/disk.qcow2`]);
  } finally {
    await client.stop();
    await reference.stop();
    await engine.stop();
  }
});
