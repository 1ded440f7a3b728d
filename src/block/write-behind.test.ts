import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { inCI } from '../../test/helpers/peers.js';
import { nativeAddon, type NativeAddon } from './native.js';
import { RawFileDevice } from './raw-file-device.js';
import { testBlockDevice } from './testing/conformance.js';
import { WriteBehind } from './write-behind.js';

const MiB = 1024 * 1024;
const noAddon = nativeAddon() === undefined && !inCI ? 'native addon not built (npm install builds it)' : false;
let dir: string;
let counter = 0;
const nextPath = (): string => join(dir, `disk-${counter++}.raw`);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-write-behind-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A fake `writeBack` that records its calls and fails those `fail` picks. */
function fakeAddon(fail: (call: number) => NodeJS.ErrnoException | undefined = () => undefined): { addon: Pick<NativeAddon, 'writeBack'>; calls: Array<[number, number, number, number]> } {
  const calls: Array<[number, number, number, number]> = [];
  const addon = {
    writeBack: async (_fd: number, data: Uint8Array | null, offset: number, length: number, evictOffset: number, evictLength: number): Promise<void> => {
      assert.ok(data === null || data.length === length);
      calls.push([offset, length, evictOffset, evictLength]);
      const error = fail(calls.length - 1);
      if (error !== undefined) throw error;
    },
  };
  return { addon, calls };
}

const systemError = (code: string, syscall: string): NodeJS.ErrnoException => Object.assign(new Error(`${syscall}: ${code}`), { code, syscall });

test('WriteBehind starts the writeback of every write and, past its window, evicts the oldest ranges, merging contiguous ones', async () => {
  const { addon, calls } = fakeAddon();
  const behind = WriteBehind.create(3, 4 * MiB, addon)!;
  for (const at of [0, 1, 2, 3]) await behind.write(at * MiB, new Uint8Array(MiB));
  await behind.write(10 * MiB, new Uint8Array(MiB)); // 5 MiB waiting: the oldest goes
  await behind.written(20 * MiB, 2 * MiB); // 6 MiB: 1 and 2 go, merged (contiguous)
  await behind.write(30 * MiB, new Uint8Array(3 * MiB)); // 7 MiB: 3 goes, then 10 is not contiguous
  assert.deepEqual(calls, [
    [0, MiB, 0, 0],
    [MiB, MiB, 0, 0],
    [2 * MiB, MiB, 0, 0],
    [3 * MiB, MiB, 0, 0],
    [10 * MiB, MiB, 0, MiB],
    [20 * MiB, 2 * MiB, MiB, 2 * MiB],
    [30 * MiB, 3 * MiB, 3 * MiB, MiB],
  ]);
  assert.equal(behind.failure, undefined);
});

test('WriteBehind keeps a failed writeback as its failure, but not a failed pwrite (that write reports it)', async () => {
  const { addon } = fakeAddon((call) => (call === 0 ? systemError('ENOSPC', 'pwrite') : call === 2 ? systemError('EIO', 'sync_file_range') : undefined));
  const behind = WriteBehind.create(3, MiB, addon)!;
  await assert.rejects(behind.write(0, new Uint8Array(10)), { code: 'ENOSPC' });
  assert.equal(behind.failure, undefined);
  await behind.write(10, new Uint8Array(10));
  await assert.rejects(behind.write(20, new Uint8Array(10)), { code: 'EIO' });
  await behind.write(30, new Uint8Array(10));
  const failure: unknown = behind.failure;
  assert.equal((failure as NodeJS.ErrnoException).code, 'EIO');
});

test('WriteBehind.create() returns undefined for an addon built without writeBack', () => {
  assert.equal(WriteBehind.create(3, MiB, {} as Pick<NativeAddon, 'writeBack'>), undefined);
});

testBlockDevice('RawFileDevice with write-behind', async (size) => {
  const path = nextPath();
  const device = await RawFileDevice.open(path, { create: { size }, writeBehind: true });
  return { device, cleanup: () => rm(path) };
});

test('with the native addon, a RawFileDevice writes behind: data written past the window reads back, from the device and the file', { skip: noAddon }, async () => {
  const path = nextPath();
  const device = await RawFileDevice.open(path, { create: { size: 64 * MiB }, writeBehind: true });
  try {
    assert.equal(device.writesBehind, true);
    const pattern = (at: number): Uint8Array => new Uint8Array(MiB).map((_, i) => ((i + at) * 7) & 0xff);
    // 40 MiB of writes, out of order and in parallel, with zero-writes among them: several windows.
    const order = Array.from({ length: 40 }, (_, i) => (i * 17) % 40);
    await Promise.all(order.map((m) => (m % 10 === 9 ? device.writeZeroes(m * MiB, MiB) : device.write(m * MiB, pattern(m)))));
    await device.flush();
    const file = await readFile(path);
    for (const m of order) {
      const expected = m % 10 === 9 ? new Uint8Array(MiB) : pattern(m);
      assert.deepEqual(await device.read(m * MiB, MiB), expected, `MiB ${m} through the device`);
      assert.ok(file.subarray(m * MiB, (m + 1) * MiB).equals(expected), `MiB ${m} in the file`);
    }
  } finally {
    await device.close();
  }
});

test('a read-only RawFileDevice never writes behind', async () => {
  const path = nextPath();
  await (await RawFileDevice.open(path, { create: { size: MiB } })).close();
  const device = await RawFileDevice.open(path, { readOnly: true, writeBehind: true });
  assert.equal(device.writesBehind, false);
  await device.close();
});
