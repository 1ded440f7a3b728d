import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ExtentFlags } from '../../block/block-device.js';
import { FaultInjectionFilter } from '../../block/filters/fault-injection-filter.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { ClosedError, IoError, NotSupportedError, OutOfRangeError, ReadOnlyError } from '../../errors.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ENOTSUP,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
} from '../protocol/index.js';
import { nbdFailureOf } from './errors-map.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { type RawClient } from './testing/raw-client.js';
import { blockStatusOf, readReplyData, replyError } from './testing/replies.js';

const MiB = 1 << 20;
const SIZE = 4 * MiB;
const pattern = (length: number, seed: number): Uint8Array => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff || 1);

test('nbdFailureOf() maps device errors to NBD error values', () => {
  assert.equal(nbdFailureOf(new IoError('write', 'full', 'ENOSPC')).errno, NBD_ENOSPC);
  assert.equal(nbdFailureOf(new IoError('write', 'quota', 'EDQUOT')).errno, NBD_ENOSPC);
  assert.equal(nbdFailureOf(new ReadOnlyError('write', 'read-only')).errno, NBD_EPERM);
  assert.equal(nbdFailureOf(new OutOfRangeError('read', 'past the end')).errno, NBD_EINVAL);
  assert.equal(nbdFailureOf(new NotSupportedError('zero', 'not fast')).errno, NBD_ENOTSUP);
  assert.equal(nbdFailureOf(new ClosedError('read')).errno, NBD_ESHUTDOWN);
  assert.equal(nbdFailureOf(new Error('boom')).errno, NBD_EIO);
  assert.equal(nbdFailureOf(new Error('boom')).message, 'boom');
});

describe('NbdServer transmission', () => {
  let t: TestServer;
  let disk: MemoryBlockDevice;
  const faults = new FaultInjectionFilter(new MemoryBlockDevice(SIZE), [], { closeInner: true });
  before(async () => {
    disk = new MemoryBlockDevice(SIZE);
    await disk.write(MiB, pattern(192 * 1024, 1));
    await disk.write(3 * MiB, pattern(4096, 2));
    await faults.write(0, pattern(65536, 4));
    t = await startTestServer([
      { name: 'rw', device: disk },
      { name: 'ro', device: disk, readOnly: true },
      { name: 'faulty', device: faults },
      { name: 'slowzero', device: Object.assign(new MemoryBlockDevice(SIZE), { writeZeroes: async (_o: number, _l: number, options?: { fast?: boolean }) => {
        if (options?.fast === true) throw new NotSupportedError('zero', 'no cheap zeroing');
      } }) },
    ]);
  });
  after(() => t.close());

  async function client(exportName: string, mode: 'simple' | 'structured' | 'extended' = 'structured', contexts?: string[]): Promise<RawClient> {
    const c = await t.connect();
    await c.hello();
    await c.negotiate({ exportName, structured: mode === 'structured', extended: mode === 'extended', ...(contexts ? { contexts } : {}) });
    return c;
  }

  test('READ without structured replies answers a simple reply with the data', async () => {
    const c = await client('rw', 'simple');
    const reply = await c.call({ type: NBD_CMD_READ, offset: MiB - 4096, length: 12288 });
    assert.equal(reply.length, 1);
    assert.equal(reply[0]!.kind, 'simple');
    const { data } = readReplyData(reply, MiB - 4096, 12288);
    assert.deepEqual(data.subarray(4096), pattern(8192, 1));
  });

  test('a structured READ sends holes for zero runs and data for the rest, the last chunk DONE', async () => {
    const c = await client('rw');
    const reply = await c.call({ type: NBD_CMD_READ, offset: 0, length: 2 * MiB });
    const { data, chunks } = readReplyData(reply, 0, 2 * MiB);
    assert.deepEqual(chunks, [
      { kind: 'hole', offset: 0, length: MiB },
      { kind: 'data', offset: MiB, length: 192 * 1024 },
      { kind: 'hole', offset: MiB + 192 * 1024, length: MiB - 192 * 1024 },
    ]);
    assert.deepEqual(data.subarray(MiB, MiB + 192 * 1024), pattern(192 * 1024, 1));
    assert.ok(reply.every((f, i) => f.kind === 'chunk' && (f.flags & 1) === (i === reply.length - 1 ? 1 : 0)));
  });

  test('a READ with DF gets one data chunk, and a READ of 0 bytes a NONE chunk', async () => {
    const c = await client('rw');
    const { chunks } = readReplyData(await c.call({ type: NBD_CMD_READ, flags: NBD_CMD_FLAG_DF, offset: 0, length: 2 * MiB }), 0, 2 * MiB);
    assert.deepEqual(chunks, [{ kind: 'data', offset: 0, length: 2 * MiB }]);
    const empty = await c.call({ type: NBD_CMD_READ, offset: 5, length: 0 });
    assert.deepEqual(empty.map((f) => f.kind === 'chunk' && f.type), [NBD_REPLY_TYPE_NONE]);
  });

  test('WRITE with FUA, TRIM and FLUSH change the disk as asked', async () => {
    const c = await client('rw');
    const data = pattern(8192, 9);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE, flags: NBD_CMD_FLAG_FUA, offset: 2 * MiB }, data)).errno, 0);
    assert.deepEqual(await disk.read(2 * MiB, 8192), data);
    assert.equal(replyError(await c.call({ type: NBD_CMD_TRIM, offset: 2 * MiB, length: 8192 })).errno, 0);
    assert.deepEqual(await disk.read(2 * MiB, 8192), new Uint8Array(8192));
    assert.equal(replyError(await c.call({ type: NBD_CMD_FLUSH })).errno, 0);
    assert.equal(replyError(await c.call({ type: NBD_CMD_FLUSH, offset: 1 })).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_CACHE, offset: 0, length: MiB })).errno, 0);
  });

  test('WRITE_ZEROES deallocates unless NO_HOLE, and FAST_ZERO fails with ENOTSUP where zeroing is slow', async () => {
    const c = await client('rw');
    await disk.write(2 * MiB, pattern(131072, 3));
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE_ZEROES, flags: NBD_CMD_FLAG_NO_HOLE, offset: 2 * MiB, length: 65536 })).errno, 0);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE_ZEROES, offset: 2 * MiB + 65536, length: 65536 })).errno, 0);
    assert.deepEqual((await disk.blockStatus(2 * MiB, 131072)).map((e) => e.flags), [ExtentFlags.ZERO, ExtentFlags.ZERO | ExtentFlags.HOLE]);
    const slow = await client('slowzero');
    const fast = replyError(await slow.call({ type: NBD_CMD_WRITE_ZEROES, flags: NBD_CMD_FLAG_FAST_ZERO, offset: 0, length: 65536 }));
    assert.equal(fast.errno, NBD_ENOTSUP);
    assert.match(fast.message, /no cheap zeroing/);
    assert.equal(replyError(await slow.call({ type: NBD_CMD_WRITE_ZEROES, offset: 0, length: 65536 })).errno, 0);
  });

  test('requests past the end fail as the spec says: EINVAL for reads, trims and block status, ENOSPC for writes', async () => {
    const c = await client('rw', 'structured', ['base:allocation']);
    const past = { offset: SIZE - 512, length: 1024 };
    assert.equal(replyError(await c.call({ type: NBD_CMD_READ, ...past })).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE, offset: SIZE - 512 }, new Uint8Array(1024))).errno, NBD_ENOSPC);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE_ZEROES, ...past })).errno, NBD_ENOSPC);
    assert.equal(replyError(await c.call({ type: NBD_CMD_TRIM, ...past })).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_BLOCK_STATUS, ...past })).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_CACHE, ...past })).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_READ, offset: 2 ** 60, length: 1 })).errno, NBD_EINVAL);
  });

  test('a read-only export refuses writes, zeroes and trims with EPERM and still reads', async () => {
    const c = await client('ro', 'simple');
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE, offset: 0 }, new Uint8Array(512))).errno, NBD_EPERM);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE_ZEROES, offset: 0, length: 512 })).errno, NBD_EPERM);
    assert.equal(replyError(await c.call({ type: NBD_CMD_TRIM, offset: 0, length: 512 })).errno, NBD_EPERM);
    assert.deepEqual(readReplyData(await c.call({ type: NBD_CMD_READ, offset: MiB, length: 512 }), MiB, 512).data, pattern(512, 1));
  });

  test('unknown commands and flags not valid for a command get EINVAL', async () => {
    const c = await client('rw');
    assert.equal(replyError(await c.call({ type: 42, offset: 0, length: 512 })).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_READ, flags: NBD_CMD_FLAG_REQ_ONE, offset: 0, length: 512 })).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE, flags: NBD_CMD_FLAG_DF, offset: 0 }, new Uint8Array(8))).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_TRIM, flags: 1 << 9, offset: 0, length: 8 })).errno, NBD_EINVAL);
    const simple = await client('rw', 'simple');
    // DF is only advertised (and valid) with structured replies.
    assert.equal(replyError(await simple.call({ type: NBD_CMD_READ, flags: NBD_CMD_FLAG_DF, offset: 0, length: 512 })).errno, NBD_EINVAL);
  });

  test('a WRITE past the maximum payload gets EINVAL and the stream stays in step', async () => {
    const c = await client('rw');
    const big = 32 * MiB + 1;
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE, offset: 0 }, new Uint8Array(big))).errno, NBD_EINVAL);
    assert.equal(replyError(await c.call({ type: NBD_CMD_READ, offset: 0, length: big })).errno, NBD_EINVAL);
    assert.deepEqual(readReplyData(await c.call({ type: NBD_CMD_READ, offset: MiB, length: 16 }), MiB, 16).data, pattern(16, 1));
  });

  test('device errors become their NBD value, with the message in an error chunk', async () => {
    faults.setRules([{ operations: ['read'], errno: 'EIO', times: 1 }, { operations: ['write'], errno: 'ENOSPC', times: 1 }]);
    const c = await client('faulty');
    const reply = await c.call({ type: NBD_CMD_READ, offset: 0, length: 4096 });
    assert.deepEqual(reply.map((f) => f.kind === 'chunk' && f.type), [NBD_REPLY_TYPE_ERROR]);
    const failure = replyError(reply);
    assert.equal(failure.errno, NBD_EIO);
    assert.match(failure.message, /Cannot/);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE, offset: 0 }, new Uint8Array(10))).errno, NBD_ENOSPC);
    faults.setRules([{ operations: ['read'], errno: 'EIO', times: 1 }]);
    const simple = await client('faulty', 'simple');
    const plain = await simple.call({ type: NBD_CMD_READ, offset: 0, length: 4096 });
    assert.deepEqual(plain, [{ kind: 'simple', cookie: plain[0]!.cookie, error: NBD_EIO }]);
    // The connection goes on after the error.
    assert.equal(readReplyData(await simple.call({ type: NBD_CMD_READ, offset: 0, length: 16 }), 0, 16).data.length, 16);
  });

  test('BLOCK_STATUS with REQ_ONE answers exactly one extent per context, within the request', async () => {
    const c = await client('rw', 'structured', ['base:allocation', 'qemu:allocation-depth']);
    const status = blockStatusOf(await c.call({ type: NBD_CMD_BLOCK_STATUS, flags: NBD_CMD_FLAG_REQ_ONE, offset: MiB + 4096, length: 8192 }));
    assert.equal(status.size, 2);
    for (const extents of status.values()) assert.deepEqual(extents.map((e) => e.length), [8192]);
    const all = blockStatusOf(await c.call({ type: NBD_CMD_BLOCK_STATUS, flags: NBD_CMD_FLAG_REQ_ONE, offset: 0, length: SIZE }));
    for (const extents of all.values()) assert.deepEqual(extents, [{ length: MiB, flags: extents[0]!.flags }]);
  });

  test('BLOCK_STATUS of length 0, or without contexts, gets EINVAL', async () => {
    const c = await client('rw', 'structured', ['base:allocation']);
    assert.equal(replyError(await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 0 })).errno, NBD_EINVAL);
    const none = await client('rw', 'structured');
    assert.equal(replyError(await none.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).errno, NBD_EINVAL);
    const simple = await client('rw', 'simple');
    assert.equal(replyError(await simple.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).errno, NBD_EINVAL);
  });

  test('BLOCK_STATUS merges adjacent extents with equal flags', async () => {
    const c = await client('rw', 'structured', ['base:allocation']);
    // Eight 64 KiB chunks of data written one by one are one data extent.
    for (let i = 0; i < 8; i++) await c.call({ type: NBD_CMD_WRITE, offset: 3 * MiB + 65536 + i * 65536 }, pattern(65536, i));
    const [extents] = [...blockStatusOf(await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 3 * MiB, length: MiB })).values()];
    assert.deepEqual(extents, [{ length: 9 * 65536, flags: 0 }, { length: MiB - 9 * 65536, flags: 3 }]);
  });
});
