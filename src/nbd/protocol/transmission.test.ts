import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NBD_CMD_READ,
  NBD_EIO,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
} from './constants.js';
import { NbdProtocolError } from './errors.js';
import {
  blockStatusReplyType,
  decodeBlockStatus,
  decodeErrorPayload,
  decodeOffsetData,
  decodeOffsetHole,
  decodeRequest,
  encodeBlockStatus,
  encodeErrorPayload,
  encodeOffsetDataPrefix,
  encodeOffsetHole,
  encodeRequest,
  type NbdRequest,
} from './transmission.js';
import { concat } from './testing/split.js';

const requestArb = (extended: boolean): fc.Arbitrary<NbdRequest> => fc.record({
  flags: fc.integer({ min: 0, max: 0xffff }),
  type: fc.integer({ min: 0, max: 0xffff }),
  cookie: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  offset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
  length: extended ? fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }) : fc.integer({ min: 0, max: 0xffffffff }),
}).map((r) => ({ ...r }));

test('requests round-trip with compact and extended headers', () => {
  for (const extended of [false, true]) {
    fc.assert(fc.property(requestArb(extended), (r) => {
      const bytes = encodeRequest(r, extended);
      assert.equal(bytes.length, extended ? 32 : 28);
      assert.deepEqual(decodeRequest(bytes, extended), r);
    }));
  }
});

test('decodeRequest() says when the header kind does not match what was negotiated', () => {
  const compact = encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 1n, offset: 0, length: 512 }, false);
  const extended = encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 1n, offset: 0, length: 512 }, true);
  assert.throws(() => decodeRequest(extended, false), /extended header, but compact/);
  assert.throws(() => decodeRequest(concat(compact, new Uint8Array(4)), true), /compact header, but extended/);
  const bad = compact.slice();
  bad[0] = 0;
  assert.throws(() => decodeRequest(bad, false), /bad magic/);
});

test('decodeRequest() reads offsets past 2^53 as numbers too large for any disk instead of failing', () => {
  const bytes = encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 1n, offset: 0, length: 1 }, false).slice();
  new DataView(bytes.buffer).setBigUint64(16, 0xffffffffffffffffn);
  assert.ok(decodeRequest(bytes, false).offset > Number.MAX_SAFE_INTEGER);
});

test('data, hole and error chunk payloads round-trip', () => {
  const data = decodeOffsetData(concat(encodeOffsetDataPrefix(2 ** 40), new Uint8Array([1, 2, 3])));
  assert.deepEqual(data, { offset: 2 ** 40, data: new Uint8Array([1, 2, 3]) });
  assert.deepEqual(decodeOffsetHole(encodeOffsetHole(4096, 65536)), { offset: 4096, length: 65536 });
  assert.deepEqual(decodeErrorPayload(encodeErrorPayload(NBD_EIO, 'disk on fire'), NBD_REPLY_TYPE_ERROR), { error: NBD_EIO, message: 'disk on fire' });
  assert.deepEqual(decodeErrorPayload(encodeErrorPayload(NBD_EIO, 'bad sector', 512), NBD_REPLY_TYPE_ERROR_OFFSET), { error: NBD_EIO, message: 'bad sector', offset: 512 });
});

test('empty data chunks and zero-length holes are protocol errors', () => {
  assert.throws(() => decodeOffsetData(encodeOffsetDataPrefix(0)), NbdProtocolError);
  assert.throws(() => decodeOffsetHole(encodeOffsetHole(0, 0)), NbdProtocolError);
});

test('encodeErrorPayload() truncates a message past the 4096-byte string limit', () => {
  const decoded = decodeErrorPayload(encodeErrorPayload(NBD_EIO, 'x'.repeat(10000)), NBD_REPLY_TYPE_ERROR);
  assert.ok(decoded.message.length <= 4096 && decoded.message.length > 0);
});

test('block status payloads round-trip in both forms', () => {
  const extents = fc.array(fc.record({ length: fc.integer({ min: 1, max: 0xffffffff }), flags: fc.integer({ min: 0, max: 0xffffffff }) }).map((e) => ({ ...e })), { minLength: 1, maxLength: 20 });
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), extents, fc.boolean(), (id, list, extended) => {
    const type = blockStatusReplyType(extended);
    assert.deepEqual(decodeBlockStatus(encodeBlockStatus(id, list, extended), type), { contextId: id, extents: list });
  }));
});

test('decodeBlockStatus() rejects empty lists, zero lengths and ragged payloads', () => {
  assert.throws(() => decodeBlockStatus(encodeBlockStatus(1, [], false), NBD_REPLY_TYPE_BLOCK_STATUS), /no descriptors/);
  assert.throws(() => decodeBlockStatus(encodeBlockStatus(1, [{ length: 0, flags: 0 }], false), NBD_REPLY_TYPE_BLOCK_STATUS), /length 0/);
  const ragged = encodeBlockStatus(1, [{ length: 1, flags: 0 }], false).subarray(0, 10);
  assert.throws(() => decodeBlockStatus(ragged, NBD_REPLY_TYPE_BLOCK_STATUS), /whole number/);
  const lying = encodeBlockStatus(1, [{ length: 1, flags: 0 }], true).slice();
  new DataView(lying.buffer).setUint32(4, 1000);
  assert.throws(() => decodeBlockStatus(lying, NBD_REPLY_TYPE_BLOCK_STATUS_EXT), /do not fill/);
});
