import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
} from './constants.js';
import { NbdProtocolError } from './errors.js';
import { ReplyDecoder, RequestDecoder } from './transmission-decoder.js';
import { encodeChunk, encodeChunkHeader, encodeOffsetDataPrefix, encodeRequest, encodeSimpleReply } from './transmission.js';
import { concat, framesEverySplit } from './testing/split.js';

test('RequestDecoder yields requests with their WRITE payloads, whatever the chunking', () => {
  for (const extended of [false, true]) {
    const payload = new Uint8Array([9, 8, 7, 6, 5]);
    const bytes = concat(
      encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 1n, offset: 0, length: 4096 }, extended),
      encodeRequest({ flags: NBD_CMD_FLAG_FUA, type: NBD_CMD_WRITE, cookie: 2n, offset: 10, length: 5 }, extended),
      payload,
      encodeRequest({ flags: 0, type: NBD_CMD_FLUSH, cookie: 3n, offset: 0, length: 0 }, extended),
    );
    const frames = framesEverySplit(() => new RequestDecoder({ extended, maxPayload: 1024 }), bytes);
    assert.deepEqual(frames, [
      { kind: 'request', request: { flags: 0, type: NBD_CMD_READ, cookie: 1n, offset: 0, length: 4096 } },
      { kind: 'request', request: { flags: NBD_CMD_FLAG_FUA, type: NBD_CMD_WRITE, cookie: 2n, offset: 10, length: 5 }, payload },
      { kind: 'request', request: { flags: 0, type: NBD_CMD_FLUSH, cookie: 3n, offset: 0, length: 0 } },
    ]);
  }
});

test('RequestDecoder drops a payload past the limit and reports it, holding at most one chunk', () => {
  const d = new RequestDecoder({ extended: false, maxPayload: 4096 });
  const header = encodeRequest({ flags: 0, type: NBD_CMD_WRITE, cookie: 7n, offset: 0, length: 1 << 20 }, false);
  assert.deepEqual(d.feed(header), []);
  const frames = [];
  for (let i = 0; i < 16; i++) frames.push(...d.feed(new Uint8Array(65536)));
  assert.deepEqual(frames, [{ kind: 'payload-too-big', request: { flags: 0, type: NBD_CMD_WRITE, cookie: 7n, offset: 0, length: 1 << 20 } }]);
  assert.equal(d.midRequest, false);
});

test('RequestDecoder takes a payload for any command sent with PAYLOAD_LEN under extended headers', () => {
  const d = new RequestDecoder({ extended: true, maxPayload: 4096 });
  const frames = d.feed(concat(encodeRequest({ flags: NBD_CMD_FLAG_PAYLOAD_LEN, type: NBD_CMD_READ, cookie: 1n, offset: 0, length: 3 }, true), new Uint8Array([1, 2, 3])));
  assert.equal(frames.length, 1);
  assert.deepEqual(frames[0], { kind: 'request', request: { flags: NBD_CMD_FLAG_PAYLOAD_LEN, type: NBD_CMD_READ, cookie: 1n, offset: 0, length: 3 }, payload: new Uint8Array([1, 2, 3]) });
});

test('RequestDecoder rejects a bad magic', () => {
  const d = new RequestDecoder({ extended: false, maxPayload: 4096 });
  assert.throws(() => d.feed(new Uint8Array(28)), NbdProtocolError);
});

test('ReplyDecoder reads simple, structured and extended replies, whatever the chunking', () => {
  const data = new Uint8Array([1, 2, 3, 4]);
  const payload = concat(encodeOffsetDataPrefix(512), data);
  const bytes = concat(
    encodeSimpleReply(1n, 0), data,
    encodeSimpleReply(2n, 5),
    encodeSimpleReply(3n, 0),
    encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: 4n, offset: 0 }, payload, false),
    encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: 5n, offset: 512 }, payload, true),
  );
  const lengths = new Map([[1n, 4], [2n, 4], [3n, 0]]);
  const frames = framesEverySplit(() => new ReplyDecoder({ maxPayload: 1 << 20, simpleReplyDataLength: (c) => lengths.get(c) }), bytes);
  assert.deepEqual(frames, [
    { kind: 'simple', cookie: 1n, error: 0, data },
    { kind: 'simple', cookie: 2n, error: 5 },
    { kind: 'simple', cookie: 3n, error: 0 },
    { kind: 'chunk', cookie: 4n, flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, offset: 0, payload },
    { kind: 'chunk', cookie: 5n, flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, offset: 512, payload },
  ]);
});

test('ReplyDecoder refuses a chunk past its payload limit and a simple reply to an unknown cookie', () => {
  const big = new ReplyDecoder({ maxPayload: 1000, simpleReplyDataLength: () => 0 });
  assert.throws(() => big.feed(encodeChunkHeader({ flags: 0, type: 1, cookie: 1n, offset: 0, length: 1001 }, false)), /past the limit/);
  const unknown = new ReplyDecoder({ maxPayload: 1000, simpleReplyDataLength: () => undefined });
  assert.throws(() => unknown.feed(encodeSimpleReply(9n, 0)), /no request in flight/);
  const garbage = new ReplyDecoder({ maxPayload: 1000, simpleReplyDataLength: () => 0 });
  assert.throws(() => garbage.feed(new TextEncoder().encode('HTTP/1.1 400 Bad Request\r\n')), /bad magic/);
});

test('ReplyDecoder never throws anything but NbdProtocolError on random bytes', () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }), (chunks) => {
    const d = new ReplyDecoder({ maxPayload: 4096, simpleReplyDataLength: () => 16 });
    try {
      for (const c of chunks) d.feed(c);
    } catch (e) {
      assert.ok(e instanceof NbdProtocolError, String(e));
    }
  }));
});
