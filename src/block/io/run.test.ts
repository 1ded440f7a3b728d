import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBlockDevice } from '../memory-device.js';
import { parseIoCommand } from './commands.js';
import { IO_CHUNK, runIoCommand } from './run.js';
import { BitbackError } from '../../errors.js';

async function run(device: MemoryBlockDevice, line: string): Promise<string[]> {
  const out: string[] = [];
  await runIoCommand(device, parseIoCommand(line), (l) => out.push(l));
  return out;
}

test('write then read -P verifies the pattern and reports like qemu-io', async () => {
  const disk = new MemoryBlockDevice(4 * 1024 * 1024);
  const w = await run(disk, 'write -P 0x5a 1M 64k');
  assert.equal(w[0], 'wrote 65536/65536 bytes at offset 1048576');
  assert.match(w[1] as string, /^64 KiB, 1 ops; /);
  const r = await run(disk, 'read -P 0x5a 1M 64k');
  assert.equal(r[0], 'read 65536/65536 bytes at offset 1048576');
  const data = await disk.read(1048576 - 1, 65538);
  assert.equal(data[0], 0);
  assert.equal(data[1], 0x5a);
  assert.equal(data[65536], 0x5a);
  assert.equal(data[65537], 0);
});

test('read -P names the first differing byte and how many differ', async () => {
  const disk = new MemoryBlockDevice(1024 * 1024);
  await run(disk, 'write -P 1 0 8k');
  await run(disk, 'write -P 2 5000 3');
  await assert.rejects(run(disk, 'read -P 1 0 8k'), (e: unknown) => {
    assert.ok(e instanceof BitbackError);
    assert.equal(e.code, 'VERIFY_FAILED');
    assert.match(e.message, /byte at offset 5000 is 0x02 \(3 of 8192 bytes differ\)/);
    return true;
  });
});

test('requests larger than one chunk are split and still verified entirely', async () => {
  const size = IO_CHUNK * 3;
  const disk = new MemoryBlockDevice(size);
  await run(disk, `write -P 0x33 0 ${size}`);
  await disk.write(size - 1, new Uint8Array([7]));
  await assert.rejects(run(disk, `read -P 0x33 0 ${size}`), new RegExp(`offset ${size - 1} is 0x07 \\(1 of`));
});

test('write -z zeroes, discard trims, map and length describe the disk', async () => {
  const disk = new MemoryBlockDevice(1024 * 1024);
  await run(disk, 'write -P 9 0 256k');
  await run(disk, 'write -z 64k 64k');
  await run(disk, 'discard 128k 64k');
  await run(disk, 'read -P 0 64k 128k');
  await run(disk, 'read -P 9 192k 64k');
  assert.deepEqual(await run(disk, 'length'), ['1 MiB']);
  const map = await run(disk, 'map');
  assert.ok(map.length >= 2, map.join('\n'));
  assert.match(map[0] as string, /allocated at offset 0 bytes \(0x0\)/);
  assert.match(map[map.length - 1] as string, /not allocated/);
});

test('read -v prints a hex dump with offsets and text', async () => {
  const disk = new MemoryBlockDevice(4096);
  await disk.write(16, new TextEncoder().encode('bitback!'));
  const out = await run(disk, 'read -v -q 0 32');
  assert.equal(out.length, 2);
  assert.match(out[1] as string, /^00000010:  62 69 74 62 61 63 6b 21 00 .*  bitback!\.\.\.\.\.\.\.\.$/);
});
