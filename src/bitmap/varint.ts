/**
 * Unsigned LEB128 varints for values up to 2^32 (granule counts), as the compact bitmap form
 * uses them: 7 bits per byte, least significant group first, high bit set on every byte but the
 * last. Arithmetic is done with numbers, not 32-bit bitwise operators, because 2^32 needs 33 bits.
 */
import { BitmapFormatError } from './errors.js';

/** Largest value a varint of the compact form may hold. */
export const MAX_VARINT = 2 ** 32;
/** Bytes of the longest varint (2^32 needs 33 bits: 5 groups of 7). */
export const MAX_VARINT_BYTES = 5;

/** A growable byte buffer for encoders. */
export class ByteWriter {
  #bytes: Uint8Array;
  #length = 0;

  constructor(initialCapacity = 64) {
    this.#bytes = new Uint8Array(initialCapacity);
  }

  /** Bytes written so far. */
  get length(): number {
    return this.#length;
  }

  /** Appends `bytes`. */
  append(bytes: Uint8Array): void {
    this.#reserve(bytes.length);
    this.#bytes.set(bytes, this.#length);
    this.#length += bytes.length;
  }

  /** Appends one byte (0..255). */
  byte(value: number): void {
    this.#reserve(1);
    this.#bytes[this.#length++] = value;
  }

  /** Appends `value` (0 .. 2^32) as an unsigned LEB128 varint. */
  varint(value: number): void {
    this.#reserve(MAX_VARINT_BYTES);
    while (value >= 0x80) {
      this.#bytes[this.#length++] = (value % 0x80) | 0x80;
      value = Math.floor(value / 0x80);
    }
    this.#bytes[this.#length++] = value;
  }

  /** The bytes written so far, borrowed: valid until the next append. */
  view(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }

  /** The bytes written, as a new buffer of exactly `length` bytes that the caller owns. */
  finish(): Uint8Array {
    return this.#bytes.slice(0, this.#length);
  }

  #reserve(extra: number): void {
    if (this.#length + extra <= this.#bytes.length) return;
    let capacity = this.#bytes.length * 2;
    while (capacity < this.#length + extra) capacity *= 2;
    const bigger = new Uint8Array(capacity);
    bigger.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = bigger;
  }
}

/**
 * Reads the varint of `field` at `pos` in `bytes[.., end)`. Refuses truncated, non-minimal (a
 * last byte of 0 after the first) and too large encodings with a {@link BitmapFormatError}.
 *
 * @returns the value and the position after it
 */
export function readVarint(bytes: Uint8Array, pos: number, end: number, field: string): { value: number; next: number } {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < MAX_VARINT_BYTES; i++) {
    if (pos >= end) throw new BitmapFormatError(field, `varint at byte ${pos} is truncated`);
    const b = bytes[pos++]!;
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) {
      if (b === 0 && i > 0) throw new BitmapFormatError(field, `varint ending at byte ${pos - 1} is not minimal`);
      if (value > MAX_VARINT) throw new BitmapFormatError(field, `varint ${value} is larger than ${MAX_VARINT}`);
      return { value, next: pos };
    }
    scale *= 0x80;
  }
  throw new BitmapFormatError(field, `varint ending at byte ${pos - 1} is longer than ${MAX_VARINT_BYTES} bytes`);
}
