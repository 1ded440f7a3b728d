import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import {
  NBD_CMD_READ,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_PEEK_EXPORT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_SERVER,
  decodeExportNameReply,
  decodeInfoReply,
  decodeServerReply,
  encodeClientFlags,
  encodeInfoRequest,
  encodeOptionRequest,
} from '../protocol/index.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { readReplyData } from './testing/replies.js';
import { type RawOptionReply } from './testing/raw-client.js';

const text = (bytes: Uint8Array): string => new TextDecoder().decode(bytes);
const types = (replies: RawOptionReply[]): number[] => replies.map((r) => r.type);

describe('NbdServer negotiation', () => {
  let t: TestServer;
  const disk = MemoryBlockDevice.fromBytes(new Uint8Array(1 << 20).fill(7));
  before(async () => {
    t = await startTestServer([
      { name: '', device: disk, description: 'the default' },
      { name: 'ro', device: new MemoryBlockDevice(65536), readOnly: true },
    ]);
  });
  after(() => t.close());

  test('the greeting offers fixed newstyle and no zeroes', async () => {
    const c = await t.connect();
    assert.equal(await c.greeting(), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
  });

  test('unknown client flags end the connection', async () => {
    const c = await t.connect();
    await c.greeting();
    c.send(encodeClientFlags(0x80));
    await c.closed;
    await assert.rejects(c.optionReply());
  });

  test('a client without fixed newstyle may only send NBD_OPT_EXPORT_NAME, and gets the 124 zeroes', async () => {
    const plain = await t.connect();
    await plain.hello(0);
    plain.send(encodeOptionRequest(NBD_OPT_EXPORT_NAME, new TextEncoder().encode('')));
    const reply = await plain.readBytes(10 + 124);
    assert.equal(decodeExportNameReply(reply).size, 1 << 20);
    assert.ok(reply.subarray(10).every((b) => b === 0));
    const other = await t.connect();
    await other.hello(0);
    other.send(encodeOptionRequest(NBD_OPT_LIST));
    await other.closed;
    assert.equal(other.ended, true);
  });

  test('NBD_OPT_EXPORT_NAME enters transmission without zeroes when asked, and ends the session for an unknown export', async () => {
    const c = await t.connect();
    await c.hello(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    c.send(encodeOptionRequest(NBD_OPT_EXPORT_NAME, new TextEncoder().encode('ro')));
    const reply = decodeExportNameReply(await c.readBytes(10));
    assert.equal(reply.size, 65536);
    c.startTransmission();
    assert.equal(readReplyData(await c.call({ type: NBD_CMD_READ, offset: 0, length: 512 }), 0, 512).data.length, 512);
    const d = await t.connect();
    await d.hello();
    d.send(encodeOptionRequest(NBD_OPT_EXPORT_NAME, new TextEncoder().encode('missing')));
    await d.closed;
  });

  test('NBD_OPT_LIST answers one NBD_REP_SERVER per export then ACK, and refuses data', async () => {
    const c = await t.connect();
    await c.hello();
    const replies = await c.option(NBD_OPT_LIST);
    assert.deepEqual(types(replies), [NBD_REP_SERVER, NBD_REP_SERVER, NBD_REP_ACK]);
    assert.deepEqual(replies.slice(0, 2).map((r) => decodeServerReply(r.data)), [
      { name: '', description: 'the default' },
      { name: 'ro', description: '' },
    ]);
    const bad = await c.option(NBD_OPT_LIST, new Uint8Array(3));
    assert.deepEqual(types(bad), [NBD_REP_ERR_INVALID]);
    assert.match(text(bad[0]!.data), /takes no data/);
  });

  test('NBD_OPT_INFO describes an export (name and description when asked) and stays in negotiation', async () => {
    const c = await t.connect();
    await c.hello();
    const replies = await c.option(NBD_OPT_INFO, encodeInfoRequest({ name: '', infos: [NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE] }));
    assert.equal(replies[replies.length - 1]!.type, NBD_REP_ACK);
    const infos = replies.filter((r) => r.type === NBD_REP_INFO).map((r) => decodeInfoReply(r.data));
    const flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO | NBD_FLAG_CAN_MULTI_CONN;
    assert.deepEqual(infos, [
      { type: 'export', size: 1 << 20, transmissionFlags: flags },
      { type: 'name', name: '' },
      { type: 'description', description: 'the default' },
      { type: 'block-size', minimum: 1, preferred: 4096, maximum: 32 * 1024 * 1024 },
    ]);
    // Still negotiating: another option is answered.
    assert.deepEqual(types(await c.option(NBD_OPT_LIST)).at(-1), NBD_REP_ACK);
  });

  test('NBD_OPT_INFO and NBD_OPT_GO answer NBD_REP_ERR_UNKNOWN for an unknown export and NBD_REP_ERR_INVALID for bad data', async () => {
    const c = await t.connect();
    await c.hello();
    const unknown = await c.option(NBD_OPT_GO, encodeInfoRequest({ name: 'nope', infos: [] }));
    assert.deepEqual(types(unknown), [NBD_REP_ERR_UNKNOWN]);
    assert.match(text(unknown[0]!.data), /nope/);
    const bad = await c.option(NBD_OPT_INFO, new Uint8Array([0, 0, 0, 9, 1]));
    assert.deepEqual(types(bad), [NBD_REP_ERR_INVALID]);
    assert.notEqual(bad[0]!.data.length, 0, 'the error carries a message');
    // A failed GO leaves the client negotiating: a good GO works.
    const go = await c.option(NBD_OPT_GO, encodeInfoRequest({ name: 'ro', infos: [] }));
    assert.equal(go.at(-1)!.type, NBD_REP_ACK);
  });

  test('the transmission flags say read-only, and DF only with structured replies', async () => {
    const c = await t.connect();
    await c.hello();
    const plain = await c.negotiate({ exportName: 'ro' });
    assert.equal(plain.transmissionFlags, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE | NBD_FLAG_CAN_MULTI_CONN);
    const s = await t.connect();
    await s.hello();
    const structured = await s.negotiate({ exportName: 'ro', structured: true });
    assert.equal(structured.transmissionFlags, plain.transmissionFlags | NBD_FLAG_SEND_DF);
  });

  test('NBD_OPT_ABORT is acknowledged, then the server closes', async () => {
    const c = await t.connect();
    await c.hello();
    assert.deepEqual(types(await c.option(NBD_OPT_ABORT)), [NBD_REP_ACK]);
    await c.closed;
  });

  test('unknown options and NBD_OPT_PEEK_EXPORT get NBD_REP_ERR_UNSUP', async () => {
    const c = await t.connect();
    await c.hello();
    assert.deepEqual(types(await c.option(NBD_OPT_PEEK_EXPORT)), [NBD_REP_ERR_UNSUP]);
    assert.deepEqual(types(await c.option(0x1234, new Uint8Array(100))), [NBD_REP_ERR_UNSUP]);
  });

  test('an option longer than the limit gets NBD_REP_ERR_TOO_BIG and negotiation goes on', async () => {
    const c = await t.connect();
    await c.hello();
    assert.deepEqual(types(await c.option(NBD_OPT_LIST, new Uint8Array(200_000))), [NBD_REP_ERR_TOO_BIG]);
    assert.equal((await c.option(NBD_OPT_LIST)).at(-1)!.type, NBD_REP_ACK);
  });

  test('NBD_OPT_STRUCTURED_REPLY refuses data and is refused after extended headers; extended headers are acknowledged after it', async () => {
    const c = await t.connect();
    await c.hello();
    assert.deepEqual(types(await c.option(NBD_OPT_STRUCTURED_REPLY, new Uint8Array(1))), [NBD_REP_ERR_INVALID]);
    assert.deepEqual(types(await c.option(NBD_OPT_STRUCTURED_REPLY)), [NBD_REP_ACK]);
    assert.deepEqual(types(await c.option(NBD_OPT_EXTENDED_HEADERS)), [NBD_REP_ACK]);
    assert.deepEqual(types(await c.option(NBD_OPT_STRUCTURED_REPLY)), [NBD_REP_ERR_INVALID]);
    assert.deepEqual(types(await c.option(NBD_OPT_EXTENDED_HEADERS, new Uint8Array(1))), [NBD_REP_ERR_INVALID]);
  });

  test('NBD_OPT_STARTTLS on a server without TLS gets NBD_REP_ERR_POLICY', async () => {
    const c = await t.connect();
    await c.hello();
    assert.deepEqual(types(await c.option(NBD_OPT_STARTTLS)), [NBD_REP_ERR_POLICY]);
    assert.deepEqual(types(await c.option(NBD_OPT_STARTTLS, new Uint8Array(1))), [NBD_REP_ERR_INVALID]);
  });

  test('a bad option magic ends that connection only', async () => {
    const bad = await t.connect();
    await bad.hello();
    const request = encodeOptionRequest(NBD_OPT_LIST).slice();
    request[0] ^= 0xff;
    bad.send(request);
    await bad.closed;
    const good = await t.connect();
    await good.hello();
    assert.equal((await good.option(NBD_OPT_LIST)).at(-1)!.type, NBD_REP_ACK);
    assert.ok(t.errors.some((e) => /bad magic/.test(e)), t.errors.join('\n'));
  });

  test('requests sent right behind NBD_OPT_GO are served', async () => {
    const c = await t.connect();
    await c.hello();
    c.send(encodeOptionRequest(NBD_OPT_GO, encodeInfoRequest({ name: '', infos: [] })));
    c.startTransmission();
    // Pipelined before the GO reply was read; the replies to GO come first, then the read's.
    const cookie = c.request({ type: NBD_CMD_READ, offset: 4096, length: 4096 });
    const go: RawOptionReply[] = [];
    while (go.at(-1)?.type !== NBD_REP_ACK) go.push(await c.optionReply());
    const reply = await c.reply();
    assert.equal(reply[0]!.cookie, cookie);
    assert.deepEqual(readReplyData(reply, 4096, 4096).data, new Uint8Array(4096).fill(7));
  });
});
