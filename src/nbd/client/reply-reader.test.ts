import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  NBD_EIO,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
} from '../protocol/constants.js';
import { NbdProtocolError } from '../protocol/errors.js';
import { encodeBlockStatus, encodeChunk, encodeOffsetDataPrefix, encodeOffsetHole, encodeSimpleReply } from '../protocol/transmission.js';
import { ReplyDecoder } from '../protocol/transmission-decoder.js';
import { concat } from '../protocol/testing/split.js';
import { ReplyReader, type ClientFrame, type ReplyReaderHooks } from './reply-reader.js';

const bytes = (length: number, seed: number): Uint8Array => new Uint8Array(length).map((_, i) => ((i * 13 + seed) & 0xff) || 1);
const dataPayload = (offset: number, data: Uint8Array): Uint8Array => concat(encodeOffsetDataPrefix(offset), data);

/** Cookie 7 is a READ of 5 bytes answered by a simple reply; cookie 9 a READ of 40000 bytes at 4096 whose data the tests place. */
const SIMPLE_READ = 7n;
const PLACED_READ = 9n;
const BIG = bytes(40_000, 3);

/** One of everything, compact and extended, plus two OFFSET_DATA chunks for PLACED_READ (cut in two). */
const STREAM = concat(
  encodeSimpleReply(1n, 0),
  encodeSimpleReply(2n, NBD_EIO),
  encodeSimpleReply(SIMPLE_READ, 0),
  bytes(5, 1),
  encodeChunk({ flags: 0, type: NBD_REPLY_TYPE_OFFSET_HOLE, cookie: 3n, offset: 0 }, encodeOffsetHole(4096, 512), false),
  encodeChunk({ flags: 0, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: 3n, offset: 0 }, dataPayload(8192, bytes(300, 2)), false),
  encodeChunk({ flags: 0, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: PLACED_READ, offset: 0 }, dataPayload(4096 + 30_000, BIG.subarray(30_000)), false),
  encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_BLOCK_STATUS, cookie: 4n, offset: 0 }, encodeBlockStatus(1, [{ length: 4096, flags: 3 }], false), false),
  encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_NONE, cookie: 3n, offset: 0 }, new Uint8Array(0), false),
  encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: PLACED_READ, offset: 4096 }, dataPayload(4096, BIG.subarray(0, 30_000)), true),
  encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_BLOCK_STATUS_EXT, cookie: 5n, offset: 1 << 20 }, encodeBlockStatus(2, [{ length: 65536, flags: 0 }], true), true),
);

const simpleReplyDataLength = (cookie: bigint): number => (cookie === SIMPLE_READ ? 5 : 0);

/** A reader whose hooks record frames; with `target`, PLACED_READ's data is placed into it. */
function recorder(target?: Uint8Array): { reader: ReplyReader; frames: ClientFrame[] } {
  const frames: ClientFrame[] = [];
  const hooks: ReplyReaderHooks = {
    maxPayload: 1 << 20,
    simpleReplyDataLength,
    place: (cookie, _extended, offset, length) => (target !== undefined && cookie === PLACED_READ ? target.subarray(offset - 4096, offset - 4096 + length) : undefined),
    // Payloads may be views of buffers the reader reuses later: compare copies.
    frame: (frame) => frames.push(frame.kind === 'chunk' ? { ...frame, payload: frame.payload.slice() } : frame.kind === 'simple' && frame.data ? { ...frame, data: frame.data.slice() } : frame),
  };
  return { reader: new ReplyReader(hooks), frames };
}

/** What the protocol's ReplyDecoder makes of the same bytes. */
function decoderFrames(stream: Uint8Array): ClientFrame[] {
  return new ReplyDecoder({ maxPayload: 1 << 20, simpleReplyDataLength }).feed(stream).map((f) => (f.kind === 'chunk' ? { ...f, payload: f.payload.slice() } : f));
}

/** Feeds `stream` as the socket would: each read fills at most `sizes[i]` bytes of the buffer the reader asks for. */
function readLikeSocket(reader: ReplyReader, stream: Uint8Array, sizes: number[]): void {
  for (let at = 0, i = 0; at < stream.length; i++) {
    const buffer = reader.nextBuffer();
    const n = Math.min(buffer.length, stream.length - at, sizes[i % sizes.length]!);
    buffer.set(stream.subarray(at, at + n));
    reader.received(n);
    at += n;
  }
}

test('ReplyReader yields the frames ReplyDecoder yields, whatever the chunking', () => {
  const expected = decoderFrames(STREAM);
  assert.equal(expected.length, 10);
  for (let cut = 0; cut <= STREAM.length; cut += cut < 200 ? 1 : 97) {
    const { reader, frames } = recorder();
    reader.feed(STREAM.subarray(0, cut));
    reader.feed(STREAM.subarray(cut));
    assert.deepEqual(frames, expected, `cut at ${cut}`);
  }
  const { reader, frames } = recorder();
  for (let i = 0; i < STREAM.length; i++) reader.feed(STREAM.subarray(i, i + 1));
  assert.deepEqual(frames, expected, 'byte by byte');
});

test('ReplyReader places OFFSET_DATA data where place() says, fed in chunks or read into the buffers it chooses', () => {
  const placedFrames = (frames: ClientFrame[]): ClientFrame[] => frames.filter((f) => f.cookie === PLACED_READ);
  const others = decoderFrames(STREAM).filter((f) => f.cookie !== PLACED_READ);
  const check = (frames: ClientFrame[], target: Uint8Array, how: string): void => {
    assert.deepEqual(target, BIG, how);
    assert.deepEqual(placedFrames(frames), [{ kind: 'placed', cookie: PLACED_READ, flags: 0 }, { kind: 'placed', cookie: PLACED_READ, flags: NBD_REPLY_FLAG_DONE }], how);
    assert.deepEqual(frames.filter((f) => f.cookie !== PLACED_READ), others, how);
  };
  for (let cut = 0; cut <= STREAM.length; cut += cut < 200 ? 1 : 211) {
    const target = new Uint8Array(BIG.length);
    const { reader, frames } = recorder(target);
    reader.feed(STREAM.subarray(0, cut));
    reader.feed(STREAM.subarray(cut));
    check(frames, target, `cut at ${cut}`);
  }
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 20 }), (sizes) => {
    const target = new Uint8Array(BIG.length);
    const { reader, frames } = recorder(target);
    readLikeSocket(reader, STREAM, sizes);
    check(frames, target, `reads of ${sizes.join(', ')}`);
  }), { numRuns: 200 });
});

test('ReplyReader reads a large payload straight into its destination, not through the scratch buffer', () => {
  const chunk = encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: PLACED_READ, offset: 0 }, dataPayload(4096, BIG), false);
  const target = new Uint8Array(BIG.length);
  const { reader, frames } = recorder(target);
  const buffers: Uint8Array[] = [];
  const nextBuffer = reader.nextBuffer.bind(reader);
  reader.nextBuffer = () => {
    const buffer = nextBuffer();
    buffers.push(buffer);
    return buffer;
  };
  // The header and the offset, then the rest in one read, as a socket with everything queued gives it.
  readLikeSocket(reader, chunk, [20 + 8, 1 << 20]);
  assert.deepEqual(target, BIG);
  assert.deepEqual(frames, [{ kind: 'placed', cookie: PLACED_READ, flags: NBD_REPLY_FLAG_DONE }]);
  assert.equal(buffers.length, 2);
  assert.equal(buffers[1]!.buffer, target.buffer, 'the second read went into the destination');
  assert.equal(buffers[1]!.length, BIG.length);
});

test('ReplyReader refuses a bad magic, a chunk past its payload limit and a simple reply to an unknown cookie', () => {
  const hooks = (maxPayload: number): ReplyReaderHooks => ({ maxPayload, simpleReplyDataLength: () => undefined, place: () => undefined, frame: () => {} });
  assert.throws(() => new ReplyReader(hooks(1 << 20)).feed(new Uint8Array([1, 2, 3, 4, 5])), (e: unknown) => e instanceof NbdProtocolError && /bad magic/.test(e.message));
  const big = encodeChunk({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: 1n, offset: 0 }, dataPayload(0, bytes(2000, 1)), false);
  assert.throws(() => new ReplyReader(hooks(1000)).feed(big.subarray(0, 20)), (e: unknown) => e instanceof NbdProtocolError && /past the limit of 1000/.test(e.message));
  assert.throws(() => new ReplyReader(hooks(1000)).feed(encodeSimpleReply(3n, 0)), (e: unknown) => e instanceof NbdProtocolError && /cookie 3/.test(e.message));
});

test('ReplyReader ignores everything after stop()', () => {
  const { reader, frames } = recorder();
  reader.feed(STREAM.subarray(0, 16));
  reader.stop();
  reader.feed(STREAM.subarray(16));
  reader.feed(new Uint8Array([1, 2, 3, 4]));
  assert.equal(frames.length, 1);
});
