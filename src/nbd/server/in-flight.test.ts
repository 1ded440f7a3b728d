import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_ESHUTDOWN,
  NBD_OPT_GO,
  NBD_OPT_LIST,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_UNKNOWN,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REPLY_TYPE_NONE,
  encodeInfoRequest,
  encodeRequest,
} from '../protocol/index.js';
import { NbdServer } from './server.js';
import { duplexPair } from '../../util/duplex-pair.js';
import { GatedDevice } from './testing/gated-device.js';
import { RawClient } from './testing/raw-client.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { blockStatusOf, readReplyData, replyError } from './testing/replies.js';

const MiB = 1 << 20;
const GiB = 1024 * MiB;

/** Waits (without asserting any duration) until `condition` holds. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; !condition(); i++) {
    if (i > 2000) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('NbdServer with requests in flight', () => {
  let t: TestServer;
  let gated: GatedDevice;
  before(async () => {
    const inner = new MemoryBlockDevice(8 * MiB);
    await inner.write(0, new Uint8Array(2 * MiB).fill(0x33));
    gated = new GatedDevice(inner);
    t = await startTestServer([{ name: '', device: gated }, { name: 'big', device: new MemoryBlockDevice(6 * GiB) }]);
  });
  after(() => t.close());

  test('replies go out in the order requests complete, each whole', async () => {
    const c = await t.connect();
    await c.hello();
    await c.negotiate({ structured: true });
    gated.hold('read');
    const first = c.request({ type: NBD_CMD_READ, offset: 0, length: MiB });
    const second = c.request({ type: NBD_CMD_READ, offset: MiB, length: 4096 });
    await gated.waitHeld(2);
    gated.release((call) => call.offset === MiB);
    const early = await c.reply();
    assert.equal(early[0]!.cookie, second);
    gated.unhold('read');
    gated.release();
    const late = await c.reply();
    assert.equal(late[0]!.cookie, first);
    assert.deepEqual(readReplyData(late, 0, MiB).data, new Uint8Array(MiB).fill(0x33));
  });

  test('NBD_CMD_DISC lets the write in flight finish and be answered, then the server closes', async () => {
    const c = await t.connect();
    await c.hello();
    await c.negotiate();
    gated.hold('write');
    const cookie = c.request({ type: NBD_CMD_WRITE, offset: 4 * MiB }, new Uint8Array(4096).fill(0x44));
    c.request({ type: NBD_CMD_DISC });
    await gated.waitHeld(1);
    gated.unhold('write');
    gated.release();
    const reply = await c.reply();
    assert.deepEqual(reply, [{ kind: 'simple', cookie, error: 0 }]);
    await c.closed;
    assert.deepEqual(await gated.read(4 * MiB, 4096), new Uint8Array(4096).fill(0x44));
  });

  test('extended headers carry 64-bit lengths and every reply is an extended chunk', async () => {
    const c = await t.connect();
    await c.hello();
    const { contexts } = await c.negotiate({ exportName: 'big', extended: true, contexts: ['base:allocation'] });
    const write = await c.call({ type: NBD_CMD_WRITE, offset: 5 * GiB }, new Uint8Array(512).fill(9));
    assert.deepEqual(write.map((f) => f.kind === 'chunk' && [f.type, f.flags, f.offset]), [[NBD_REPLY_TYPE_NONE, 1, 5 * GiB]]);
    const status = await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 5 * GiB + 65536 });
    assert.deepEqual(status.map((f) => f.kind === 'chunk' && f.type), [NBD_REPLY_TYPE_BLOCK_STATUS_EXT]);
    assert.deepEqual(blockStatusOf(status).get([...contexts.keys()][0]!), [{ length: 5 * GiB, flags: 3 }, { length: 65536, flags: 0 }]);
    assert.equal(replyError(await c.call({ type: NBD_CMD_WRITE_ZEROES, offset: 0, length: 6 * GiB })).errno, 0);
    const read = await c.call({ type: NBD_CMD_READ, offset: 5 * GiB, length: 4096 });
    assert.ok(read.every((f) => f.kind === 'chunk' && f.offset === 5 * GiB));
    assert.deepEqual(readReplyData(read, 5 * GiB, 4096).data, new Uint8Array(4096));
  });

  test('a compact header after extended headers were negotiated ends that connection', async () => {
    const c = await t.connect();
    await c.hello();
    await c.negotiate({ extended: true });
    // 28 bytes of compact header, then 4 more: the server sees a 32-byte header with the wrong magic.
    c.send(encodeRequest({ type: NBD_CMD_READ, flags: 0, cookie: 1n, offset: 0, length: 512 }, false), new Uint8Array(4));
    await c.closed;
    assert.ok(t.errors.some((e) => /compact header/.test(e)), t.errors.join('\n'));
  });

  test('a client that disconnects in the middle of a payload leaves the server serving others', async () => {
    const c = await t.connect();
    await c.hello();
    await c.negotiate();
    const errors = t.errors.length;
    const connections = t.server.connectionCount;
    c.send(encodeRequest({ type: NBD_CMD_WRITE, flags: 0, cookie: 1n, offset: 0, length: MiB }, false), new Uint8Array(1000));
    c.close();
    await until(() => t.server.connectionCount === connections - 1, 'the connection to go');
    assert.deepEqual(t.errors.slice(errors), []);
    const d = await t.connect();
    await d.hello();
    await d.negotiate();
    assert.equal(readReplyData(await d.call({ type: NBD_CMD_READ, offset: 0, length: 8 }), 0, 8).data[0], 0x33);
  });
});

describe('NbdServer flow control', () => {
  test('no more than maxInFlight requests run at once', async () => {
    const gated = new GatedDevice(new MemoryBlockDevice(MiB));
    const t = await startTestServer([{ name: '', device: gated }], { maxInFlight: 2 });
    try {
      const c = await t.connect();
      await c.hello();
      await c.negotiate();
      gated.hold('read');
      for (let i = 0; i < 6; i++) c.request({ type: NBD_CMD_READ, offset: i * 4096, length: 4096 });
      for (let answered = 0; answered < 6; answered++) {
        await gated.waitHeld(Math.min(2, 6 - answered));
        gated.release((call) => call === gated.held[0]);
        await c.reply();
      }
      assert.equal(gated.maxHeld, 2);
      assert.equal(gated.started.read, 6);
    } finally {
      await t.close();
    }
  });

  test('payload bytes in flight stay within twice the maximum payload', async () => {
    const gated = new GatedDevice(new MemoryBlockDevice(MiB));
    const t = await startTestServer([{ name: '', device: gated }], { maxPayload: 65536 });
    try {
      const c = await t.connect();
      await c.hello();
      await c.negotiate();
      gated.hold('write');
      for (let i = 0; i < 5; i++) c.request({ type: NBD_CMD_WRITE, offset: i * 65536 }, new Uint8Array(65536).fill(i + 1));
      for (let answered = 0; answered < 5; answered++) {
        await gated.waitHeld(Math.min(2, 5 - answered));
        gated.release((call) => call === gated.held[0]);
        assert.equal(replyError(await c.reply()).errno, 0);
      }
      assert.equal(gated.maxHeld, 2);
      assert.deepEqual(await gated.read(4 * 65536, 1), new Uint8Array([5]));
    } finally {
      await t.close();
    }
  });
});

describe('NbdServer shutdown', () => {
  test('close() lets the request in flight finish and answers later options and requests with SHUTDOWN', async () => {
    const gated = new GatedDevice(MemoryBlockDevice.fromBytes(new Uint8Array(MiB).fill(0x77)));
    const t = await startTestServer([{ name: '', device: gated }]);
    try {
      const negotiating = await t.connect();
      await negotiating.hello();
      const c = await t.connect();
      await c.hello();
      await c.negotiate();
      gated.hold('read');
      const cookie = c.request({ type: NBD_CMD_READ, offset: 0, length: 65536 });
      await gated.waitHeld(1);
      let closed = false;
      const closing = t.server.close().then(() => (closed = true));
      assert.equal((await negotiating.option(NBD_OPT_LIST))[0]!.type, NBD_REP_ERR_SHUTDOWN);
      assert.equal(replyError(await c.call({ type: NBD_CMD_READ, offset: 0, length: 512 })).errno, NBD_ESHUTDOWN);
      gated.release();
      const reply = await c.reply();
      assert.equal(closed, false, 'close() waits for the reply to be written');
      assert.equal(reply[0]!.cookie, cookie);
      assert.deepEqual(readReplyData(reply, 0, 65536).data, new Uint8Array(65536).fill(0x77));
      await closing;
      await Promise.all([c.closed, negotiating.closed]);
      assert.equal(t.server.connectionCount, 0);
      await t.server.close();
    } finally {
      await t.close();
    }
  });

  test('removeExport() drains the connections using it and hides it from new clients', async () => {
    const gated = new GatedDevice(new MemoryBlockDevice(MiB));
    const t = await startTestServer([{ name: 'a', device: gated }, { name: 'b', device: new MemoryBlockDevice(MiB) }]);
    try {
      const a = await t.connect();
      await a.hello();
      await a.negotiate({ exportName: 'a' });
      const b = await t.connect();
      await b.hello();
      await b.negotiate({ exportName: 'b' });
      gated.hold('write');
      const cookie = a.request({ type: NBD_CMD_WRITE, offset: 0 }, new Uint8Array(512).fill(1));
      await gated.waitHeld(1);
      let removed = false;
      const removing = t.server.removeExport('a').then(() => (removed = true));
      const late = await t.connect();
      await late.hello();
      assert.equal((await late.option(NBD_OPT_GO, encodeInfoRequest({ name: 'a', infos: [] })))[0]!.type, NBD_REP_ERR_UNKNOWN);
      gated.release();
      assert.deepEqual(await a.reply(), [{ kind: 'simple', cookie, error: 0 }]);
      assert.equal(removed, false);
      await removing;
      await a.closed;
      assert.equal(readReplyData(await b.call({ type: NBD_CMD_READ, offset: 0, length: 16 }), 0, 16).data.length, 16);
      await assert.rejects(t.server.removeExport('a'), /no export of that name/);
    } finally {
      await t.close();
    }
  });
});

describe('NbdServer with many clients', () => {
  test('64 clients at once with mixed reads and writes keep the data consistent', async () => {
    const disk = new MemoryBlockDevice(64 * 65536);
    const t = await startTestServer([{ name: '', device: disk }]);
    try {
      await Promise.all(Array.from({ length: 64 }, async (_, i) => {
        const c = await t.connect();
        await c.hello();
        await c.negotiate({ structured: i % 2 === 0 });
        const mine = new Uint8Array(65536).fill(i + 1);
        const cookies = [c.request({ type: NBD_CMD_WRITE, offset: i * 65536 }, mine), c.request({ type: NBD_CMD_READ, offset: ((i + 1) % 64) * 65536, length: 4096 })];
        const replies = [await c.reply(), await c.reply()];
        assert.deepEqual(replies.map((r) => r[0]!.cookie).sort(), cookies.sort());
        assert.deepEqual(readReplyData(await c.call({ type: NBD_CMD_READ, offset: i * 65536, length: 65536 }), i * 65536, 65536).data, mine);
      }));
      for (let i = 0; i < 64; i++) assert.deepEqual(await disk.read(i * 65536 + 100, 1), new Uint8Array([i + 1]));
    } finally {
      await t.close();
    }
  });

  test('handleConnection() serves an in-process stream pair', async () => {
    const server = new NbdServer();
    server.addExport({ name: '', device: MemoryBlockDevice.fromBytes(new Uint8Array(65536).fill(3)) });
    const [serverEnd, clientEnd] = duplexPair();
    server.handleConnection(serverEnd);
    const c = new RawClient(clientEnd);
    await c.hello();
    await c.negotiate({ structured: true });
    assert.deepEqual(readReplyData(await c.call({ type: NBD_CMD_READ, offset: 0, length: 4 }), 0, 4).data, new Uint8Array(4).fill(3));
    c.request({ type: NBD_CMD_DISC });
    await c.closed;
    await server.close();
    assert.equal(server.connectionCount, 0);
  });
});
