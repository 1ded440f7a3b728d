/**
 * The expected contents of a device under test, for comparing what it reads back.
 */
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';

/**
 * A byte-exact model of a disk. Bytes that a `trim` left undetermined (the device may keep them
 * or zero them) are marked: a read may return either their old value or zero.
 */
export class DiskModel {
  readonly bytes: Uint8Array;
  readonly #maybeZero: Uint8Array;

  /** A model of `size` zero bytes, or a copy of `content`. */
  constructor(size: number, content?: Uint8Array) {
    this.bytes = content === undefined ? new Uint8Array(size) : content.slice();
    this.#maybeZero = new Uint8Array(size);
  }

  /** Records a write of `data` at `offset` (copied). */
  write(offset: number, data: Uint8Array): void {
    this.bytes.set(data, offset);
    this.#maybeZero.fill(0, offset, offset + data.length);
  }

  /** Records a zero-write. */
  zero(offset: number, length: number): void {
    this.bytes.fill(0, offset, offset + length);
    this.#maybeZero.fill(0, offset, offset + length);
  }

  /** Records a trim: the range reads as zero when `zeroes`, otherwise as old data or zero. */
  trim(offset: number, length: number, zeroes: boolean): void {
    if (zeroes) this.zero(offset, length);
    else this.#maybeZero.fill(1, offset, offset + length);
  }

  /** True when `actual`, read at `offset`, agrees with the model byte by byte. */
  agrees(offset: number, actual: Uint8Array): boolean {
    if (Buffer.compare(actual, this.bytes.subarray(offset, offset + actual.length)) === 0) return true;
    return this.#firstMismatch(offset, actual) === -1;
  }

  /** Fails the test, naming the first differing byte, when `actual` disagrees with the model. */
  check(offset: number, actual: Uint8Array, what: string): void {
    if (Buffer.compare(actual, this.bytes.subarray(offset, offset + actual.length)) === 0) return;
    const i = this.#firstMismatch(offset, actual);
    if (i === -1) return;
    assert.fail(
      `${what}: byte ${offset + i} reads 0x${actual[i]!.toString(16)}, ` +
        `expected 0x${this.bytes[offset + i]!.toString(16)}${this.#maybeZero[offset + i] === 1 ? ' or 0' : ''}`,
    );
  }

  #firstMismatch(offset: number, actual: Uint8Array): number {
    for (let i = 0; i < actual.length; i++) {
      const expected = this.bytes[offset + i];
      if (actual[i] !== expected && !(actual[i] === 0 && this.#maybeZero[offset + i] === 1)) return i;
    }
    return -1;
  }
}
