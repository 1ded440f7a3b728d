/**
 * Test helper for push decoders (STYLE.md 3): feeds the same bytes whole, cut at every byte, and
 * one byte at a time, and checks that the frames are the same every way.
 */
import assert from 'node:assert/strict';

/** Anything with `feed(chunk) → frames`. */
export interface PushDecoder<F> {
  feed(chunk: Uint8Array): F[];
}

/**
 * Returns the frames of `bytes` fed in one chunk, after asserting that every split (two pieces at
 * each cut, and byte by byte) gives equal frames. `make` returns a fresh decoder.
 */
export function framesEverySplit<F>(make: () => PushDecoder<F>, bytes: Uint8Array): F[] {
  const whole = make().feed(bytes.slice());
  for (let cut = 0; cut <= bytes.length; cut++) {
    const d = make();
    const frames = [...d.feed(bytes.slice(0, cut)), ...d.feed(bytes.slice(cut))];
    assert.deepEqual(frames, whole, `frames differ when the input is cut at byte ${cut}`);
  }
  const d = make();
  const frames: F[] = [];
  for (let i = 0; i < bytes.length; i++) frames.push(...d.feed(bytes.slice(i, i + 1)));
  assert.deepEqual(frames, whole, 'frames differ when the input is fed one byte at a time');
  return whole;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
