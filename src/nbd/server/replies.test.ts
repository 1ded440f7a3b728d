import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Random } from '../../block/testing/pattern.js';
import {
  NBD_CMD_READ,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  encodeChunkHeader,
  encodeErrorPayload,
  encodeOffsetDataPrefix,
  encodeOffsetHole,
  encodeSimpleReply,
  type NbdRequest,
} from '../protocol/index.js';
import { encodeReadReply } from './read-reply.js';
import { chunkHead, errorReply, simpleReply, successReply, type ReplyMode } from './replies.js';

const MODES: ReplyMode[] = [
  { structured: false, extended: false },
  { structured: true, extended: false },
  { structured: true, extended: true },
];

const concat = (parts: readonly Uint8Array[]): Uint8Array => Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.length)));

/** Requests with random cookies, offsets (also past 2^53, as an out-of-range request may echo) and lengths. */
function randomRequests(count: number): NbdRequest[] {
  const random = new Random(0x5eed);
  const requests: NbdRequest[] = [];
  for (let i = 0; i < count; i++) {
    const cookie = (BigInt(random.below(2 ** 32)) << 32n) | BigInt(random.below(2 ** 32));
    const offset = [0, random.below(2 ** 32), random.below(2 ** 32) * 0x200000 + random.below(2 ** 32), 2 ** 53 + 2 * random.below(2 ** 32), 2 ** 64 - 2 ** 12][i % 5]!;
    requests.push({ type: NBD_CMD_READ, flags: 0, cookie, offset, length: random.below(2 ** 32) });
  }
  return requests;
}

test('chunkHead() writes the same bytes as encodeChunkHeader(), compact and extended', () => {
  for (const request of randomRequests(200)) {
    for (const mode of MODES.slice(1)) {
      for (const done of [false, true]) {
        const length = request.length % 0x10000;
        const expected = encodeChunkHeader({ flags: done ? NBD_REPLY_FLAG_DONE : 0, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: request.cookie, offset: request.offset, length }, mode.extended);
        const head = chunkHead(mode, request, NBD_REPLY_TYPE_OFFSET_DATA, done, length, 0);
        assert.deepEqual(new Uint8Array(head), expected);
      }
    }
  }
});

test('simpleReply(), successReply() and errorReply() match the protocol encoders', () => {
  for (const request of randomRequests(50)) {
    assert.deepEqual(new Uint8Array(simpleReply(request, 5)), encodeSimpleReply(request.cookie, 5));
    for (const mode of MODES) {
      const success = concat(successReply(mode, request));
      const expectedSuccess = mode.extended
        ? encodeChunkHeader({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_NONE, cookie: request.cookie, offset: request.offset, length: 0 }, true)
        : encodeSimpleReply(request.cookie, 0);
      assert.deepEqual(new Uint8Array(success), expectedSuccess);
      const error = concat(errorReply(mode, request, 22, 'bad'));
      const payload = encodeErrorPayload(22, 'bad');
      const expectedError = mode.structured
        ? concat([encodeChunkHeader({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_ERROR, cookie: request.cookie, offset: request.offset, length: payload.length }, mode.extended), payload])
        : encodeSimpleReply(request.cookie, 22);
      assert.deepEqual(new Uint8Array(error), new Uint8Array(expectedError));
    }
  }
});

test('encodeReadReply() writes data and hole chunks as the protocol encoders do, DONE on the last', () => {
  const request: NbdRequest = { type: NBD_CMD_READ, flags: 0, cookie: 0x0102030405060708n, offset: 1 << 20, length: 12288 };
  const data = Uint8Array.from({ length: 4096 }, (_, i) => i & 0xff);
  const pieces = [
    { kind: 'data' as const, offset: 1 << 20, data },
    { kind: 'hole' as const, offset: (1 << 20) + 4096, length: 4096 },
    { kind: 'data' as const, offset: (1 << 20) + 8192, data },
  ];
  for (const mode of MODES.slice(1)) {
    const reply = encodeReadReply(mode, request, { pieces, borrowed: data });
    assert.equal(reply.borrowed, data);
    const header = (type: number, done: boolean, length: number): Uint8Array =>
      encodeChunkHeader({ flags: done ? NBD_REPLY_FLAG_DONE : 0, type, cookie: request.cookie, offset: request.offset, length }, mode.extended);
    const expected = concat([
      header(NBD_REPLY_TYPE_OFFSET_DATA, false, 8 + 4096), encodeOffsetDataPrefix(1 << 20), data,
      header(NBD_REPLY_TYPE_OFFSET_HOLE, false, 12), encodeOffsetHole((1 << 20) + 4096, 4096),
      header(NBD_REPLY_TYPE_OFFSET_DATA, true, 8 + 4096), encodeOffsetDataPrefix((1 << 20) + 8192), data,
    ]);
    assert.deepEqual(new Uint8Array(concat(reply.parts)), new Uint8Array(expected));
  }
  const simple = encodeReadReply(MODES[0]!, { ...request, length: 4096 }, { pieces: pieces.slice(0, 1), borrowed: undefined });
  assert.deepEqual(new Uint8Array(concat(simple.parts)), new Uint8Array(concat([encodeSimpleReply(request.cookie, 0), data])));
  assert.equal(simple.borrowed, undefined);
});
