import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ExtentFlags } from '../../block/block-device.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { testBlockDevice, type DeviceFactory } from '../../block/testing/conformance.js';
import { IoError, hasCode } from '../../errors.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EIO,
  NBD_ENOSPC,
  NBD_ESHUTDOWN,
  NBD_FLAG_READ_ONLY,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
} from '../protocol/constants.js';
import { NbdCommandError, NbdProtocolError } from '../protocol/errors.js';
import { encodeBlockStatus, encodeErrorPayload, encodeOffsetHole, type NbdRequest } from '../protocol/transmission.js';
import { NbdClient, type NbdConnectOptions } from './index.js';
import { FAKE_FLAGS, FakeConnection, negotiate, serveDevice, startFakeServer, type FakeExport, type FakeSession } from './testing/fake-server.js';

const SIZE = 1024 * 1024;
const DATA = FakeConnection.data;

/**
 * Connects a client to a fake server whose transmission phase is `script` (after a standard
 * negotiation of `exported`), runs `body`, closes both, and checks the script saw no error.
 */
async function scripted(
  exported: FakeExport,
  script: (c: FakeConnection, session: FakeSession) => Promise<void>,
  body: (client: NbdClient) => Promise<void>,
  options: NbdConnectOptions = {},
): Promise<void> {
  const server = await startFakeServer(async (c) => {
    const session = await negotiate(c, exported);
    if (session !== undefined) await script(c, session);
  });
  try {
    const client = await NbdClient.connect(server.uri(), options);
    try {
      await body(client);
    } finally {
      await client.close();
    }
  } finally {
    await server.close();
  }
  assert.deepEqual(server.errors, [], 'the fake server script failed');
}

/** Reads requests until NBD_CMD_DISC (or the client hangs up), answering each with `answer`. */
async function answerEach(c: FakeConnection, session: FakeSession, answer: (r: NbdRequest, payload?: Uint8Array) => void): Promise<void> {
  for (;;) {
    const { request, payload } = await c.request(session.extended);
    if (request.type === NBD_CMD_DISC) return;
    answer(request, payload);
  }
}

const bytes = (length: number, seed: number): Uint8Array => new Uint8Array(length).map((_, i) => ((i * 31 + seed) & 0xff) || 1);

/** Content of the segmented export: 8 KiB segments, even ones holes, odd ones data. */
const SEGMENT = 8192;
const segmentValue = (at: number): number => (Math.floor(at / SEGMENT) % 2 === 0 ? 0 : ((at * 7) & 0xff) || 1);
const SEGMENTED = new Uint8Array(SIZE).map((_, i) => segmentValue(i));

/** Answers each READ of the segmented export with one data or hole chunk per segment, listed backwards. */
function segmentedReplies(c: FakeConnection, s: FakeSession): Promise<void> {
  return answerEach(c, s, (r) => {
    const end = r.offset + r.length;
    const segments: Array<[number, number]> = [];
    for (let at = r.offset; at < end; at = Math.min(end, (Math.floor(at / SEGMENT) + 1) * SEGMENT)) {
      segments.push([at, Math.min(end, (Math.floor(at / SEGMENT) + 1) * SEGMENT) - at]);
    }
    for (const [at, length] of segments.reverse()) {
      if (segmentValue(at) === 0) c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_HOLE, encodeOffsetHole(at, length), false);
      else c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_DATA, DATA(at, SEGMENTED.subarray(at, at + length)), false);
    }
    c.chunk(r.cookie, NBD_REPLY_TYPE_NONE, new Uint8Array(0), true);
  });
}

describe('NbdClient reads', () => {
  test('a read assembles data and hole chunks that arrive out of order, also into a buffer shared by pieces', async () => {
    await scripted({ size: SIZE }, segmentedReplies, async (client) => {
      for (const [offset, length] of [[5000, 30000], [0, SEGMENT], [SEGMENT + 1, 100], [3, 200000], [0, SIZE]] as const) {
        assert.deepEqual(await client.read(offset, length), SEGMENTED.subarray(offset, offset + length), `read(${offset}, ${length})`);
      }
    }, { requestSize: 20000 });
  });

  test('readInto() fills the caller\'s buffer, holes included, over several requests, and checks its arguments', async () => {
    await scripted({ size: SIZE }, segmentedReplies, async (client) => {
      for (const [offset, length] of [[5000, 30000], [SEGMENT + 1, 100], [3, 200000], [0, SIZE]] as const) {
        const target = new Uint8Array(length).fill(0xee); // holes must overwrite what the buffer held
        await client.readInto(offset, target);
        assert.deepEqual(target, SEGMENTED.subarray(offset, offset + length), `readInto(${offset}, ${length} bytes)`);
      }
      await client.readInto(7, new Uint8Array(0));
      await assert.rejects(client.readInto(SIZE - 1, new Uint8Array(2)), (e: unknown) => hasCode(e, 'OUT_OF_RANGE'));
      await assert.rejects(client.readInto(0, [1, 2] as unknown as Uint8Array), (e: unknown) => hasCode(e, 'INVALID_ARGUMENT'));
    }, { requestSize: 20000 });
  });

  test('a read larger than requestSize is split into requests that each get their own bytes', async () => {
    const device = MemoryBlockDevice.fromBytes(bytes(SIZE, 3));
    const log: NbdRequest[] = [];
    await scripted({ size: SIZE }, (c, s) => serveDevice(c, s, device, { log }), async (client) => {
      assert.deepEqual(await client.read(1000, 3 * 65536 + 17), await device.read(1000, 3 * 65536 + 17));
    }, { requestSize: 65536 });
    assert.deepEqual(log.filter((r) => r.type === NBD_CMD_READ).map((r) => [r.offset, r.length]), [[1000, 65536], [66536, 65536], [132072, 65536], [197608, 17]]);
  });

  test('overlapping chunks fail the read with NbdProtocolError, and the connection goes on', async () => {
    let n = 0;
    await scripted({ size: SIZE }, (c, s) => answerEach(c, s, (r) => {
      if (n++ === 0) {
        c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_DATA, DATA(r.offset, bytes(600, 1)), false);
        c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_HOLE, encodeOffsetHole(r.offset + 500, 524), true);
      } else {
        c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_DATA, DATA(r.offset, bytes(r.length, 5)), true);
      }
    }), async (client) => {
      await assert.rejects(client.read(0, 1024), (e: unknown) => e instanceof NbdProtocolError && /overlaps/.test(e.message));
      assert.deepEqual(await client.read(0, 1024), bytes(1024, 5));
    });
  });

  test('chunks that leave part of the request uncovered fail the read', async () => {
    await scripted({ size: SIZE }, (c, s) => answerEach(c, s, (r) => {
      c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_DATA, DATA(r.offset, bytes(r.length - 1, 1)), true);
    }), async (client) => {
      await assert.rejects(client.read(0, 1024), (e: unknown) => e instanceof NbdProtocolError && /covers 1023 of the 1024/.test(e.message));
    });
  });

  test('a chunk outside the request, or of the wrong type, fails the read', async () => {
    let n = 0;
    await scripted({ size: SIZE }, (c, s) => answerEach(c, s, (r) => {
      if (n++ === 0) c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_HOLE, encodeOffsetHole(r.offset + 1, r.length), true);
      else c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(100, [{ length: 512, flags: 0 }], false), true);
    }), async (client) => {
      await assert.rejects(client.read(0, 1024), (e: unknown) => e instanceof NbdProtocolError && /outside the request/.test(e.message));
      await assert.rejects(client.read(0, 1024), (e: unknown) => e instanceof NbdProtocolError && /NBD_CMD_READ with NBD_REPLY_TYPE_BLOCK_STATUS/.test(e.message));
    });
  });

  test('an error chunk rejects with NbdCommandError carrying the errno and the server message', async () => {
    let n = 0;
    await scripted({ size: SIZE }, (c, s) => answerEach(c, s, (r) => {
      if (n++ === 0) {
        c.chunk(r.cookie, NBD_REPLY_TYPE_OFFSET_DATA, DATA(r.offset, bytes(512, 1)), false);
        c.chunk(r.cookie, NBD_REPLY_TYPE_ERROR_OFFSET, encodeErrorPayload(NBD_EIO, 'bad sector', r.offset + 512), true);
      } else {
        c.chunk(r.cookie, NBD_REPLY_TYPE_ERROR, encodeErrorPayload(NBD_ENOSPC, ''), true);
      }
    }), async (client) => {
      await assert.rejects(client.read(0, 1024), (e: unknown) =>
        e instanceof NbdCommandError && e.errno === 'EIO' && e.nbdErrno === NBD_EIO && e.serverMessage === 'bad sector' && !e.retryable && /bad sector/.test(e.message));
      await assert.rejects(client.write(0, new Uint8Array(10)), (e: unknown) => e instanceof NbdCommandError && e.code === 'NO_SPACE');
    });
  });

  test('simple replies carry read data and errors when structured replies are off', async () => {
    let n = 0;
    await scripted({ size: SIZE }, (c, s) => answerEach(c, s, (r) => {
      if (n++ === 0) c.simple(r.cookie, 0, bytes(r.length, 9));
      else c.simple(r.cookie, NBD_EIO);
    }), async (client) => {
      assert.deepEqual(await client.read(7, 3000), bytes(3000, 9));
      await assert.rejects(client.read(7, 3000), (e: unknown) => e instanceof NbdCommandError && e.errno === 'EIO');
    }, { structuredReplies: false });
  });

  test('ESHUTDOWN rejects with a retryable error and the client sends nothing more on that connection', async () => {
    const seen: number[] = [];
    await scripted({ size: SIZE }, (c, s) => answerEach(c, s, (r) => {
      seen.push(r.type);
      c.chunk(r.cookie, NBD_REPLY_TYPE_ERROR, encodeErrorPayload(NBD_ESHUTDOWN, 'going away'), true);
    }), async (client) => {
      await assert.rejects(client.read(0, 512), (e: unknown) => e instanceof NbdCommandError && e.errno === 'ESHUTDOWN' && e.retryable);
      await assert.rejects(client.read(0, 512), (e: unknown) => e instanceof IoError && e.errno === 'ESHUTDOWN' && e.retryable);
    });
    assert.deepEqual(seen, [NBD_CMD_READ], 'nothing but the first read, then a soft disconnect');
  });
});

describe('NbdClient when the connection breaks', () => {
  test('a connection dropped mid-read rejects every request in flight with a retryable IoError, and later calls too', async () => {
    await scripted({ size: SIZE }, async (c, s) => {
      const requests = [await c.request(s.extended), await c.request(s.extended), await c.request(s.extended)];
      c.chunk(requests[1]!.request.cookie, NBD_REPLY_TYPE_OFFSET_DATA, DATA(0, bytes(4096, 1)).subarray(0, 1000), false);
      await new Promise((r) => setTimeout(r, 20));
      c.socket.destroy();
    }, async (client) => {
      const results = await Promise.allSettled([client.read(0, 4096), client.read(0, 4096), client.write(0, new Uint8Array(4096))]);
      for (const r of results) {
        assert.equal(r.status, 'rejected');
        const e = (r as PromiseRejectedResult).reason;
        assert.ok(e instanceof IoError && e.errno === 'ECONNRESET' && e.retryable, String(e));
      }
      await assert.rejects(client.read(0, 1), (e: unknown) => e instanceof IoError && e.retryable);
      await assert.rejects(client.flush(), (e: unknown) => e instanceof IoError && e.retryable);
    });
  });

  test('garbage in the transmission phase drops the connection with a retryable IoError naming the violation', async () => {
    await scripted({ size: SIZE }, async (c, s) => {
      await c.request(s.extended);
      c.send(new Uint8Array(64).fill(0x5a));
      await c.read(1 << 20).catch(() => undefined);
    }, async (client) => {
      await assert.rejects(client.read(0, 4096), (e: unknown) =>
        e instanceof IoError && e.errno === 'ECONNRESET' && e.retryable && /broke the protocol: .*bad magic/.test(e.message) && e.cause instanceof NbdProtocolError);
    });
  });

  test('a reply naming an unknown cookie drops the connection', async () => {
    await scripted({ size: SIZE }, async (c, s) => {
      const { request } = await c.request(s.extended);
      c.chunk(request.cookie + 1000n, NBD_REPLY_TYPE_NONE, new Uint8Array(0), true);
      await c.read(1 << 20).catch(() => undefined);
    }, async (client) => {
      await assert.rejects(client.read(0, 4096), (e: unknown) => e instanceof IoError && /cookie/.test(e.message));
    });
  });

  test('close waits for requests in flight, then sends NBD_CMD_DISC', async () => {
    const types: number[] = [];
    await scripted({ size: SIZE }, async (c, s) => {
      for (;;) {
        const { request } = await c.request(s.extended);
        types.push(request.type);
        if (request.type === NBD_CMD_DISC) {
          c.socket.end();
          return;
        }
        setTimeout(() => c.simple(request.cookie, 0), 30);
      }
    }, async (client) => {
      const write = client.write(0, new Uint8Array(100));
      await client.close();
      await write;
      await assert.rejects(client.read(0, 1), (e: unknown) => hasCode(e, 'CLOSED'));
    });
    assert.deepEqual(types, [NBD_CMD_WRITE, NBD_CMD_DISC]);
  });
});

describe('NbdClient block status', () => {
  const contexts = ['base:allocation', 'qemu:dirty-bitmap:b0', 'qemu:allocation-depth'];
  const ids = { base: 100, dirty: 101, depth: 102 };

  test('extents are placed from the request offset, clamped to the request, and merged with allocation depth', async () => {
    const requests: NbdRequest[] = [];
    await scripted({ size: SIZE, contexts }, (c, s) => answerEach(c, s, (r) => {
      requests.push(r);
      c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(ids.dirty, [{ length: 1000, flags: 1 }, { length: 1 << 19, flags: 0 }], false), false);
      c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(ids.depth, [{ length: 4096, flags: 1 }, { length: 1 << 20, flags: 0 }], false), false);
      c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(ids.base, [{ length: 3000, flags: 0 }, { length: 9000, flags: 3 }, { length: 50, flags: 0 }], false), true);
    }), async (client) => {
      assert.deepEqual(client.contexts, contexts);
      assert.deepEqual(await client.blockStatus(100, 20000), [
        { offset: 100, length: 3000, flags: 0, depth: 1 },
        { offset: 3100, length: 1096, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 1 },
        { offset: 4196, length: 7904, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 0 },
        { offset: 12100, length: 50, flags: 0, depth: 0 },
      ]);
      assert.deepEqual(await client.contextStatus('qemu:dirty-bitmap:b0', 100, 2000, { reqOne: true }), [
        { offset: 100, length: 1000, flags: 1 },
        { offset: 1100, length: 1000, flags: 0 },
      ]);
    }, { contexts: ['qemu:dirty-bitmap:b0', 'qemu:allocation-depth'] });
    assert.deepEqual(requests.map((r) => [r.type, r.flags, r.offset, r.length]), [[NBD_CMD_BLOCK_STATUS, 0, 100, 20000], [NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, 100, 2000]]);
  });

  test('a reply with an unknown context id, a zero-length extent, or a context missing fails with NbdProtocolError', async () => {
    let n = 0;
    await scripted({ size: SIZE, contexts }, (c, s) => answerEach(c, s, (r) => {
      const step = n++;
      if (step === 0) c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(7, [{ length: 512, flags: 0 }], false), false);
      if (step === 1) c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(ids.base, [{ length: 0, flags: 0 }], false), false);
      c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(ids.base, [{ length: 512, flags: 0 }], false), true);
    }), async (client) => {
      await assert.rejects(client.blockStatus(0, 4096), (e: unknown) => e instanceof NbdProtocolError && /context id 7/.test(e.message));
      await assert.rejects(client.blockStatus(0, 4096), (e: unknown) => e instanceof NbdProtocolError && /length 0|two block status chunks/.test(e.message));
      await assert.rejects(client.contextStatus('qemu:dirty-bitmap:b0', 0, 4096), (e: unknown) => e instanceof NbdProtocolError && /no block status for context qemu:dirty-bitmap:b0/.test(e.message));
    }, { contexts: ['qemu:dirty-bitmap:b0'] });
  });

  test('compact headers cap a query below 4 GiB; a server without base:allocation reports everything as data', async () => {
    const big = 16 * 1024 ** 3;
    const lengths: number[] = [];
    await scripted({ size: big, blockSize: { minimum: 512, preferred: 4096, maximum: 1 << 25 } }, (c, s) => answerEach(c, s, (r) => {
      lengths.push(r.length);
      c.chunk(r.cookie, NBD_REPLY_TYPE_BLOCK_STATUS, encodeBlockStatus(100, [{ length: r.length, flags: 3 }], false), true);
    }), async (client) => {
      const [extent] = await client.blockStatus(0, big);
      assert.deepEqual(extent, { offset: 0, length: 2 ** 32 - 512, flags: 3 });
    });
    assert.deepEqual(lengths, [2 ** 32 - 512]);
    await scripted({ size: SIZE, contexts: [] }, (c, s) => answerEach(c, s, () => assert.fail('no request expected')), async (client) => {
      assert.equal(client.capabilities.canBlockStatus, false);
      assert.deepEqual(await client.blockStatus(5, 10), [{ offset: 5, length: 10, flags: 0 }]);
    });
  });
});

describe('NbdClient with a minimum block size', () => {
  test('unaligned writes and zero-writes become whole-block requests; unaligned reads are widened', async () => {
    const device = MemoryBlockDevice.fromBytes(bytes(SIZE, 4));
    const log: NbdRequest[] = [];
    await scripted({ size: SIZE, blockSize: { minimum: 512, preferred: 4096, maximum: 1 << 20 } }, (c, s) => serveDevice(c, s, device, { minimum: 512, log }), async (client) => {
      assert.equal(client.blockSize.minimum, 512);
      const data = bytes(1000, 8);
      await client.write(700, data);
      const expected = bytes(SIZE, 4);
      expected.set(data, 700);
      await client.writeZeroes(1, 2000);
      expected.fill(0, 1, 2001);
      assert.deepEqual(await client.read(3, 5000), expected.subarray(3, 5003));
      const into = new Uint8Array(5000);
      await client.readInto(3, into);
      assert.deepEqual(into, expected.subarray(3, 5003));
      assert.deepEqual(await device.read(0, SIZE), expected);
    });
    for (const r of log) assert.ok(r.offset % 512 === 0 && r.length % 512 === 0, `request ${JSON.stringify({ ...r, cookie: String(r.cookie) })} is aligned`);
  });
});

describe('NbdClient capabilities', () => {
  test('flags map to capabilities; readOnly refuses writes locally', async () => {
    await scripted({ size: SIZE, flags: FAKE_FLAGS }, (c, s) => answerEach(c, s, () => assert.fail('nothing reaches the server')), async (client) => {
      assert.deepEqual(client.capabilities, {
        readOnly: true, canFlush: true, canFua: true, canTrim: true, trimZeroes: false, canFastZero: false, canBlockStatus: true, multiConn: false,
      });
      await assert.rejects(client.write(0, new Uint8Array(1)), (e: unknown) => hasCode(e, 'READ_ONLY') && /opened read-only/.test(String(e)));
      await assert.rejects(client.trim(0, 1), (e: unknown) => hasCode(e, 'READ_ONLY'));
      await assert.rejects(client.read(SIZE, 1), (e: unknown) => hasCode(e, 'OUT_OF_RANGE'));
    }, { readOnly: true });
  });

  test('without WRITE_ZEROES zeroes are written as data, fast zeroing is refused, and trim is a no-op without TRIM', async () => {
    const device = MemoryBlockDevice.fromBytes(bytes(SIZE, 6));
    const log: NbdRequest[] = [];
    await scripted({ size: SIZE, flags: 0 }, (c, s) => serveDevice(c, s, device, { log }), async (client) => {
      await client.writeZeroes(10, 100000);
      await assert.rejects(client.writeZeroes(0, 10, { fast: true }), (e: unknown) => hasCode(e, 'NOT_SUPPORTED'));
      await client.trim(0, 4096);
      await client.write(0, new Uint8Array(3).fill(1), { fua: true });
    }, { requestSize: 65536 });
    assert.deepEqual(log.map((r) => r.type), [NBD_CMD_WRITE, NBD_CMD_WRITE, NBD_CMD_WRITE, NBD_CMD_DISC]);
    assert.deepEqual(await device.read(10, 100000), new Uint8Array(100000));
  });
});

/** A conformance factory over the fake server (a memory device behind it). */
function viaFake(exported: Omit<FakeExport, 'size'>, options: NbdConnectOptions = {}, minimum = 1): DeviceFactory {
  return async (size, setup) => {
    const device = setup.content === undefined ? new MemoryBlockDevice(size) : MemoryBlockDevice.fromBytes(setup.content);
    const server = await startFakeServer(async (c) => {
      const flags = (exported.flags ?? FAKE_FLAGS) | (setup.readOnly ? NBD_FLAG_READ_ONLY : 0);
      const session = await negotiate(c, { ...exported, size, flags });
      if (session !== undefined) await serveDevice(c, session, device, { minimum });
    });
    const client = await NbdClient.connect(server.uri(), options);
    return {
      device: client,
      cleanup: async () => {
        await server.close();
        assert.deepEqual(server.errors, []);
      },
    };
  };
}

testBlockDevice('NbdClient over a fake server (extended headers)', viaFake({ extendedHeaders: true }));
testBlockDevice('NbdClient over a fake server (simple replies)', viaFake({}, { structuredReplies: false, requestSize: 65536 }));
testBlockDevice(
  'NbdClient over a fake server (minimum block size 512)',
  viaFake({ blockSize: { minimum: 512, preferred: 4096, maximum: 1 << 20 } }, { requestSize: 100000 }, 512),
);
testBlockDevice('NbdClient over a fake server, read-only', viaFake({}), { readOnly: true });
