/**
 * Test helper for the QMP splitter (STYLE.md 3): feeds the same bytes whole, cut in two at every
 * byte, and one byte at a time, and checks that the frames are the same every way.
 */
import assert from 'node:assert/strict';
import { QmpSplitter, type QmpFrame, type QmpSplitterOptions } from '../splitter.js';

/** The frames of `bytes`, after asserting that every way of cutting them gives the same frames. */
export function framesEverySplit(bytes: Uint8Array, options: QmpSplitterOptions = {}): QmpFrame[] {
  const whole = new QmpSplitter(options).feed(bytes.slice());
  for (let cut = 0; cut <= bytes.length; cut++) {
    const s = new QmpSplitter(options);
    const frames = [...s.feed(bytes.slice(0, cut)), ...s.feed(bytes.slice(cut))];
    assert.deepEqual(frames, whole, `frames differ when the input is cut at byte ${cut}`);
  }
  const s = new QmpSplitter(options);
  const frames: QmpFrame[] = [];
  for (let i = 0; i < bytes.length; i++) frames.push(...s.feed(bytes.slice(i, i + 1)));
  assert.deepEqual(frames, whole, 'frames differ when the input is fed one byte at a time');
  return whole;
}

/** UTF-8 bytes of `text`. */
export function bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** The texts of the message frames (errors left out). */
export function texts(frames: QmpFrame[]): string[] {
  return frames.flatMap((f) => (f.type === 'message' ? [new TextDecoder().decode(f.bytes)] : []));
}
