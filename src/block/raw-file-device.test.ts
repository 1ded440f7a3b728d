import assert from 'node:assert/strict';
import { execFile, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { BitbackError, IoError } from '../errors.js';
import { ExtentFlags } from './block-device.js';
import { createRawFile, RawFileDevice, ZERO_DETECT_LIMIT } from './raw-file-device.js';
import { nativeAddon } from './native.js';
import { testBlockDevice } from './testing/conformance.js';
import { inCI, which } from '../../test/helpers/peers.js';

const MiB = 1024 * 1024;
let dir: string;
let counter = 0;
const nextPath = (): string => join(dir, `disk-${counter++}.raw`);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-raw-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

for (const preallocate of [false, true]) {
  testBlockDevice(`RawFileDevice (${preallocate ? 'preallocated' : 'sparse'})`, async (size) => {
    const path = nextPath();
    const device = await RawFileDevice.open(path, { create: { size, preallocate } });
    return { device, cleanup: () => rm(path) };
  });
}

testBlockDevice('RawFileDevice (sparse, zeroes detected by reading)', async (size) => {
  const path = nextPath();
  const device = await RawFileDevice.open(path, { create: { size }, detectZeroes: true });
  return { device, cleanup: () => rm(path) };
});

test('with the native addon, blockStatus finds holes and data as lseek does', { skip: nativeAddon() === undefined && !inCI ? 'native addon not built (npm install builds it)' : false }, async () => {
  const path = nextPath();
  await writeFile(path, '');
  await truncate(path, 64 * MiB);
  const handle = await open(path, 'r+');
  await handle.write(new Uint8Array(MiB).fill(1), 0, MiB, 8 * MiB);
  await handle.write(new Uint8Array(MiB).fill(2), 0, MiB, 40 * MiB);
  await handle.close();
  const device = await RawFileDevice.open(path, { readOnly: true });
  const extents = await device.blockStatus(0, 64 * MiB);
  // Filesystems allocate in blocks of their own: the data runs cover the written MiB exactly
  // on every Linux filesystem bitback runs on (4 KiB blocks).
  assert.deepEqual(extents.map((e) => [e.offset / MiB, e.length / MiB, e.flags]), [
    [0, 8, ExtentFlags.HOLE | ExtentFlags.ZERO],
    [8, 1, 0],
    [9, 31, ExtentFlags.HOLE | ExtentFlags.ZERO],
    [40, 1, 0],
    [41, 23, ExtentFlags.HOLE | ExtentFlags.ZERO],
  ]);
  // A range that starts inside a hole and ends inside data.
  assert.deepEqual((await device.blockStatus(7 * MiB, 3 * MiB / 2)).map((e) => [e.offset, e.length, e.flags]), [
    [7 * MiB, MiB, ExtentFlags.HOLE | ExtentFlags.ZERO],
    [8 * MiB, MiB / 2, 0],
  ]);
  await device.close();
  await rm(path);
});

testBlockDevice(
  'RawFileDevice read-only',
  async (size, { content }) => {
    const path = nextPath();
    await writeFile(path, content!);
    return { device: await RawFileDevice.open(path, { readOnly: true }), cleanup: () => rm(path) };
  },
  { readOnly: true },
);

describe('RawFileDevice specifics', () => {
  test('opening a missing file rejects with NotFoundError naming the path', async () => {
    const path = join(dir, 'missing.raw');
    await assert.rejects(RawFileDevice.open(path), (e: unknown) => {
      assert.ok(e instanceof BitbackError);
      assert.equal(e.code, 'NOT_FOUND');
      assert.match(e.message, /missing\.raw/);
      return true;
    });
  });

  test('opening a directory or a device file rejects with a clear error', async () => {
    await assert.rejects(RawFileDevice.open(dir), { code: 'INVALID_ARGUMENT', message: /is a directory/ });
    await assert.rejects(RawFileDevice.open('/dev/null', { readOnly: true }), { code: 'NOT_SUPPORTED' });
  });

  test('opening a FIFO rejects instead of waiting for a writer', { skip: which('mkfifo') || inCI ? false : 'mkfifo not found' }, async () => {
    const path = join(dir, 'fifo');
    execFileSync('mkfifo', [path]);
    await assert.rejects(RawFileDevice.open(path), { code: 'INVALID_ARGUMENT', message: /FIFO/ });
    await rm(path);
  });

  test('the size is the length of the file when it is opened', async () => {
    const path = nextPath();
    await writeFile(path, new Uint8Array(12345).fill(3));
    const device = await RawFileDevice.open(path);
    assert.equal(device.size, 12345);
    assert.deepEqual(await device.read(12340, 5), new Uint8Array(5).fill(3));
    await device.close();
    await rm(path);
  });

  test('createRawFile never overwrites an existing file', async () => {
    const path = nextPath();
    await writeFile(path, 'precious');
    await assert.rejects(createRawFile(path, 4096), { code: 'ALREADY_EXISTS' });
    await assert.rejects(RawFileDevice.open(path, { create: { size: 4096 } }), { code: 'ALREADY_EXISTS' });
    assert.equal(await readFile(path, 'utf8'), 'precious');
    await assert.rejects(createRawFile(join(dir, 'no-such-dir', 'x.raw'), 4096), { code: 'NOT_FOUND' });
    await assert.rejects(createRawFile(nextPath(), -1), { code: 'INVALID_ARGUMENT' });
    await rm(path);
  });

  test('createRawFile makes a sparse file, or an allocated one with preallocate', async () => {
    const sparse = nextPath();
    const full = nextPath();
    await createRawFile(sparse, 3 * MiB + 5);
    await createRawFile(full, 3 * MiB + 5, { preallocate: true });
    const [s, f] = await Promise.all([stat(sparse), stat(full)]);
    assert.equal(s.size, 3 * MiB + 5);
    assert.equal(f.size, 3 * MiB + 5);
    assert.equal(s.blocks, 0);
    assert.ok(f.blocks * 512 >= 3 * MiB, `${f.blocks} blocks allocated`);
    assert.ok((await readFile(full)).every((b) => b === 0));
    await Promise.all([rm(sparse), rm(full)]);
  });

  test('a file without blocks is reported as one HOLE|ZERO extent', async () => {
    const path = nextPath();
    const device = await RawFileDevice.open(path, { create: { size: 40 * MiB } });
    assert.deepEqual(await device.blockStatus(3, 40 * MiB - 3), [
      { offset: 3, length: 40 * MiB - 3, flags: ExtentFlags.HOLE | ExtentFlags.ZERO },
    ]);
    await device.close();
    await rm(path);
  });

  test('blockStatus reports 4 KiB-aligned zero runs as ZERO and the rest as data', async () => {
    const path = nextPath();
    const bytes = new Uint8Array(64 * 1024);
    bytes[5000] = 1;
    bytes[40960] = 2;
    bytes[65535] = 3;
    await writeFile(path, bytes);
    const device = await RawFileDevice.open(path, { readOnly: true, detectZeroes: true });
    const ZERO = ExtentFlags.ZERO;
    assert.deepEqual(await device.blockStatus(0, 65536), [
      { offset: 0, length: 4096, flags: ZERO },
      { offset: 4096, length: 4096, flags: 0 },
      { offset: 8192, length: 32768, flags: ZERO },
      { offset: 40960, length: 4096, flags: 0 },
      { offset: 45056, length: 16384, flags: ZERO },
      { offset: 61440, length: 4096, flags: 0 },
    ]);
    assert.deepEqual(await device.blockStatus(100, 5000), [
      { offset: 100, length: 3996, flags: ZERO },
      { offset: 4096, length: 1004, flags: 0 },
    ]);
    await device.close();
    await rm(path);
  });

  test('blockStatus examines a bounded amount per call and stops on a 4 KiB boundary', async () => {
    const path = nextPath();
    await createRawFile(path, 3 * ZERO_DETECT_LIMIT);
    await writeFile(path, new Uint8Array([1]), { flag: 'r+' });
    const device = await RawFileDevice.open(path, { readOnly: true, detectZeroes: true });
    const first = await device.blockStatus(0, device.size);
    const end = first.at(-1)!.offset + first.at(-1)!.length;
    assert.ok(end < device.size && end % 4096 === 0, `the first reply ends at ${end}`);
    const second = await device.blockStatus(1000, device.size - 1000);
    const secondEnd = second.at(-1)!.offset + second.at(-1)!.length;
    assert.ok(secondEnd % 4096 === 0, `the reply to an unaligned request ends at ${secondEnd}`);
    await device.close();
    await rm(path);
  });

  test('a range written through the device is not reported as a hole, even with zeroes', async () => {
    const path = nextPath();
    const device = await RawFileDevice.open(path, { create: { size: MiB } });
    await device.write(4096, new Uint8Array(4096));
    const extents = await device.blockStatus(0, MiB);
    const covering = extents.filter((e) => e.offset < 8192 && e.offset + e.length > 4096);
    assert.ok(covering.every((e) => (e.flags & ExtentFlags.HOLE) === 0), JSON.stringify(extents));
    await device.close();
    await rm(path);
  });

  test('bytes past the end of a file that was truncated after opening read as zero', async () => {
    const path = nextPath();
    await writeFile(path, new Uint8Array(8192).fill(5));
    const device = await RawFileDevice.open(path);
    await truncate(path, 100);
    const data = await device.read(50, 8000);
    assert.deepEqual(data.subarray(0, 50), new Uint8Array(50).fill(5));
    assert.ok(data.subarray(50).every((b) => b === 0));
    await device.close();
    await rm(path);
  });

  test('writeZeroes with fast rejects with NotSupportedError and changes nothing', async () => {
    const path = nextPath();
    await writeFile(path, new Uint8Array(8192).fill(5));
    const device = await RawFileDevice.open(path);
    await assert.rejects(device.writeZeroes(0, 8192, { fast: true, mayTrim: true }), { code: 'NOT_SUPPORTED' });
    assert.ok((await readFile(path)).every((b) => b === 5));
    await device.close();
    await rm(path);
  });

  test('a failing write rejects with IoError carrying the errno (EFBIG past the file size limit)', async () => {
    const path = nextPath();
    await createRawFile(path, MiB);
    // A child process whose file size limit is 8 KiB (ulimit counts 512-byte blocks); Node ignores SIGXFSZ.
    const module = fileURLToPath(new URL('./raw-file-device.js', import.meta.url));
    const script = `
      const { RawFileDevice } = await import(${JSON.stringify(module)});
      const device = await RawFileDevice.open(${JSON.stringify(path)});
      const result = {};
      for (const [name, offset] of [['short', 4096], ['past', 65536]]) {
        try { await device.write(offset, new Uint8Array(8192).fill(1)); result[name] = 'ok'; }
        catch (e) { result[name] = { name: e.name, code: e.code, errno: e.errno }; }
      }
      await device.close();
      console.log(JSON.stringify(result));`;
    const output = await runChild('sh', ['-c', 'ulimit -f 16 && exec "$0" --input-type=module -e "$1"', process.execPath, script]);
    const expected = { name: IoError.name, code: 'IO_ERROR', errno: 'EFBIG' };
    assert.deepEqual(JSON.parse(output), { short: expected, past: expected });
    // The short write looped: the first 4 KiB within the limit landed before EFBIG.
    const data = await readFile(path);
    assert.ok(data.subarray(4096, 8192).every((b) => b === 1));
    assert.ok(data.subarray(8192).every((b) => b === 0));
    await rm(path);
  });
});

/** Runs a program to its end and returns its stdout; kills it by pid if it is still running on failure. */
async function runChild(program: string, args: string[]): Promise<string> {
  let child: ChildProcess | undefined;
  try {
    return await new Promise<string>((resolve, reject) => {
      child = execFile(program, args, (error, stdout, stderr) => {
        if (error) reject(new Error(`${program} failed: ${error.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
  } finally {
    if (child?.exitCode === null && child.signalCode === null && child.pid !== undefined) process.kill(child.pid);
  }
}

test('readInto() fills a used buffer with what read() returns, and zeroes past the end of a file that became shorter', async () => {
  const path = nextPath();
  const content = new Uint8Array(256 * 1024).map((_, i) => (i * 31 + 7) % 251 + 1);
  await writeFile(path, content);
  const device = await RawFileDevice.open(path, { readOnly: true });
  const target = new Uint8Array(100_000).fill(0xee);
  await device.readInto(12_345, target);
  assert.deepEqual(target, await device.read(12_345, 100_000));
  assert.deepEqual(target, content.subarray(12_345, 112_345));
  await truncate(path, 200_000);
  const tail = new Uint8Array(100_000).fill(0xee);
  await device.readInto(150_000, tail);
  const expected = new Uint8Array(100_000);
  expected.set(content.subarray(150_000, 200_000));
  assert.deepEqual(tail, expected);
  await assert.rejects(device.readInto(200_000, new Uint8Array(100_000)), (e: BitbackError) => e.code === 'OUT_OF_RANGE');
  await device.close();
});
