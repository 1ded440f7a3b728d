import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_GO,
  NBD_OPT_LIST,
  NBD_REP_ACK,
  NBD_REP_ERR_UNKNOWN,
} from './constants.js';
import { NbdOptionError, NbdProtocolError } from './errors.js';
import {
  decodeErrorMessage,
  decodeExportNameReply,
  decodeInfoReply,
  decodeInfoRequest,
  decodeMetaContextReply,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeServerGreeting,
  decodeServerReply,
  encodeExportNameReply,
  encodeInfoReply,
  encodeInfoRequest,
  encodeMetaContextReply,
  encodeMetaContextRequest,
  encodeOptionReply,
  encodeOptionRequest,
  encodeServerGreeting,
  encodeServerReply,
  type InfoReply,
} from './handshake.js';
import { WireWriter } from './wire.js';

const name = fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0'));

test('decodeServerGreeting() reads back the flags encodeServerGreeting() wrote', () => {
  const flags = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
  assert.equal(decodeServerGreeting(encodeServerGreeting(flags)), flags);
});

test('decodeServerGreeting() names a peer that is not an NBD server and an oldstyle server', () => {
  assert.throws(() => decodeServerGreeting(new TextEncoder().encode('SSH-2.0-OpenSSH_9.2p1 ')), (e: unknown) =>
    e instanceof NbdProtocolError && /not an NBD server/.test(e.message));
  const oldstyle = new WireWriter().string('NBDMAGIC').u64Big(0x00420281861253n).u16(0).finish();
  assert.throws(() => decodeServerGreeting(oldstyle), /oldstyle/);
});

test('option requests and replies round-trip', () => {
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.uint8Array({ maxLength: 64 }), (option, data) => {
    const req = encodeOptionRequest(option, data);
    assert.deepEqual(decodeOptionHeader(req.subarray(0, 16)), { option, length: data.length });
    assert.deepEqual(req.subarray(16), data);
    const rep = encodeOptionReply(option, NBD_REP_ACK, data);
    assert.deepEqual(decodeOptionReplyHeader(rep.subarray(0, 20)), { option, type: NBD_REP_ACK, length: data.length });
  }));
});

test('decodeOptionReplyHeader() refuses a length past the limit before anything is allocated', () => {
  const header = encodeOptionReply(NBD_OPT_LIST, NBD_REP_ACK).slice(0, 20);
  new DataView(header.buffer).setUint32(16, 0xfffffff0);
  assert.throws(() => decodeOptionReplyHeader(header), (e: unknown) => e instanceof NbdProtocolError && /past the limit/.test(e.message));
});

test('decodeOptionHeader() rejects a bad magic', () => {
  const bytes = encodeOptionRequest(NBD_OPT_GO).slice(0, 16);
  bytes[0] ^= 1;
  assert.throws(() => decodeOptionHeader(bytes), /bad magic/);
});

test('INFO/GO requests round-trip', () => {
  fc.assert(fc.property(name, fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 8 }), (n, infos) => {
    assert.deepEqual(decodeInfoRequest(encodeInfoRequest({ name: n, infos })), { name: n, infos });
  }));
});

test('decodeInfoRequest() rejects truncated data, trailing bytes and bad UTF-8', () => {
  const good = encodeInfoRequest({ name: 'disk', infos: [NBD_INFO_BLOCK_SIZE] });
  assert.throws(() => decodeInfoRequest(good.subarray(0, good.length - 1)), NbdProtocolError);
  const trailing = new Uint8Array(good.length + 1);
  trailing.set(good);
  assert.throws(() => decodeInfoRequest(trailing), /trailing/);
  const bad = new WireWriter().u32(2).bytes(new Uint8Array([0xc3, 0x28])).u16(0).finish();
  assert.throws(() => decodeInfoRequest(bad), /UTF-8/);
  const long = new WireWriter().u32(5000).zeroes(5000).u16(0).finish();
  assert.throws(() => decodeInfoRequest(long), /limit/);
});

test('NBD_REP_INFO payloads round-trip, unknown types included', () => {
  const infos: InfoReply[] = [
    { type: 'export', size: 2 ** 40 + 512, transmissionFlags: 0xded },
    { type: 'name', name: 'vda' },
    { type: 'description', description: 'a disk' },
    { type: 'block-size', minimum: 1, preferred: 4096, maximum: 32 << 20 },
    { type: 'unknown', infoType: 77, data: new Uint8Array([1, 2, 3]) },
  ];
  for (const info of infos) assert.deepEqual(decodeInfoReply(encodeInfoReply(info)), info);
});

test('decodeInfoReply() rejects an export size past 2^53', () => {
  const bytes = new WireWriter().u16(0).u64Big(1n << 60n).u16(1).finish();
  assert.throws(() => decodeInfoReply(bytes), /beyond 2\^53/);
});

test('NBD_REP_SERVER and NBD_REP_META_CONTEXT payloads round-trip', () => {
  fc.assert(fc.property(name, name, fc.integer({ min: 0, max: 0xffffffff }), (n, d, id) => {
    assert.deepEqual(decodeServerReply(encodeServerReply(n, d)), { name: n, description: d });
    assert.deepEqual(decodeMetaContextReply(encodeMetaContextReply(id, n)), { id, name: n });
  }));
});

test('meta context requests round-trip', () => {
  fc.assert(fc.property(name, fc.array(name, { maxLength: 6 }), (exportName, queries) => {
    assert.deepEqual(decodeMetaContextRequest(encodeMetaContextRequest({ exportName, queries })), { exportName, queries });
  }));
});

test('decodeMetaContextRequest() refuses a query count that cannot fit, without allocating for it', () => {
  const bytes = new WireWriter().u32(0).u32(0xffffffff).finish();
  assert.throws(() => decodeMetaContextRequest(bytes), /cannot fit/);
});

test('the NBD_OPT_EXPORT_NAME reply has 124 zero bytes unless NO_ZEROES was agreed', () => {
  assert.equal(encodeExportNameReply(1 << 20, 3, false).length, 134);
  const short = encodeExportNameReply(1 << 20, 3, true);
  assert.equal(short.length, 10);
  assert.deepEqual(decodeExportNameReply(short), { size: 1 << 20, transmissionFlags: 3 });
});

test('decodeErrorMessage() keeps readable text and describes unreadable bytes', () => {
  assert.equal(decodeErrorMessage(new TextEncoder().encode('no such export')), 'no such export');
  assert.match(decodeErrorMessage(new Uint8Array([0xff, 0xfe])), /unreadable/);
});

test('NbdOptionError for NBD_REP_ERR_UNKNOWN has code NOT_FOUND and the server text', () => {
  const e = new NbdOptionError('open export x', NBD_REP_ERR_UNKNOWN, 'export not found');
  assert.equal(e.code, 'NOT_FOUND');
  assert.match(e.message, /NBD_REP_ERR_UNKNOWN: export not found/);
});
