import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SocketInput, type InputConsumer } from './socket-input.js';

/** A consumer with a buffer of its own that records what it gets. */
function consumer(): InputConsumer & { buffer: Uint8Array; got: Array<Array<string | number>> } {
  const buffer = new Uint8Array(8);
  const got: Array<Array<string | number>> = [];
  return {
    buffer,
    got,
    nextBuffer: () => buffer,
    received: (n) => got.push(['received', ...buffer.subarray(0, n)]),
    feed: (chunk) => got.push(['feed', ...chunk]),
  };
}

/** What the socket does: ask for a buffer, read `bytes` into it, report. */
function socketRead(input: SocketInput, bytes: number[]): void {
  const buffer = input.onread.buffer();
  buffer.set(bytes);
  input.onread.callback(bytes.length);
}

test('SocketInput reads into the consumer\'s buffer, and keeps what arrives with no consumer for the next one', () => {
  const input = new SocketInput();
  socketRead(input, [1, 2, 3]); // before anyone attached: kept
  const a = consumer();
  input.attach(a);
  assert.deepEqual(a.got, [['feed', 1, 2, 3]]);
  socketRead(input, [4, 5]);
  assert.deepEqual(a.got.at(-1), ['received', 4, 5]);
  // The socket holds a's buffer when a detaches: what lands there goes to b, in order.
  const buffer = input.onread.buffer();
  input.detach();
  buffer.set([6]);
  input.onread.callback(1);
  socketRead(input, [7]);
  const b = consumer();
  input.attach(b);
  assert.deepEqual(b.got, [['feed', 6], ['feed', 7]]);
  assert.equal(a.got.length, 2, 'a got nothing after it detached');
});

test('SocketInput drops everything after discard()', () => {
  const input = new SocketInput();
  socketRead(input, [1]);
  input.discard();
  socketRead(input, [2]);
  const c = consumer();
  input.attach(c);
  assert.deepEqual(c.got, []);
});
