/**
 * Big-endian field access for the NBD codecs. No I/O. 64-bit fields are JavaScript numbers
 * when they fit in 2^53 (every offset and size bitback handles); larger values are a typed error
 * naming the field, never a silent rounding.
 */
import { NbdProtocolError } from './errors.js';

const TEXT_DECODER = new TextDecoder('utf-8', { fatal: true });
const TEXT_ENCODER = new TextEncoder();

/** A read cursor over one complete message. Every read checks that the bytes are there. */
export class WireReader {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #what: string;
  #at: number;

  /** `what` names the message in errors ("NBD_OPT_GO request"). */
  constructor(bytes: Uint8Array, what: string, offset = 0) {
    this.#bytes = bytes;
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.#what = what;
    this.#at = offset;
  }

  /** Bytes not read yet. */
  get remaining(): number {
    return this.#bytes.length - this.#at;
  }

  /** Current position. */
  get position(): number {
    return this.#at;
  }

  #need(n: number, field: string): void {
    if (this.remaining < n) {
      throw new NbdProtocolError(`decode ${this.#what}`, `${field} needs ${n} bytes but only ${this.remaining} remain`);
    }
  }

  u16(field: string): number {
    this.#need(2, field);
    const v = this.#view.getUint16(this.#at);
    this.#at += 2;
    return v;
  }

  u32(field: string): number {
    this.#need(4, field);
    const v = this.#view.getUint32(this.#at);
    this.#at += 4;
    return v;
  }

  /** A 64-bit field that must fit in a JavaScript number. */
  u64(field: string): number {
    this.#need(8, field);
    const hi = this.#view.getUint32(this.#at);
    const lo = this.#view.getUint32(this.#at + 4);
    this.#at += 8;
    if (hi > 0x1fffff) {
      throw new NbdProtocolError(`decode ${this.#what}`, `${field} 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is beyond 2^53`);
    }
    return hi * 0x100000000 + lo;
  }

  /** A 64-bit field kept exact (magic numbers, cookies). */
  u64Big(field: string): bigint {
    this.#need(8, field);
    const v = this.#view.getBigUint64(this.#at);
    this.#at += 8;
    return v;
  }

  /** `n` bytes (a view into the message, not a copy). */
  bytes(n: number, field: string): Uint8Array {
    this.#need(n, field);
    const v = this.#bytes.subarray(this.#at, this.#at + n);
    this.#at += n;
    return v;
  }

  /** A UTF-8 string of `n` bytes; invalid UTF-8 or NUL is a protocol error. */
  string(n: number, field: string, limit: number): string {
    if (n > limit) throw new NbdProtocolError(`decode ${this.#what}`, `${field} is ${n} bytes long, more than the limit of ${limit}`);
    const raw = this.bytes(n, field);
    let text: string;
    try {
      text = TEXT_DECODER.decode(raw);
    } catch {
      throw new NbdProtocolError(`decode ${this.#what}`, `${field} is not valid UTF-8`);
    }
    if (text.includes('\0')) throw new NbdProtocolError(`decode ${this.#what}`, `${field} contains a NUL character`);
    return text;
  }

  /** The rest of the message. */
  rest(): Uint8Array {
    return this.bytes(this.remaining, 'rest');
  }

  /** Fails unless every byte was consumed. */
  end(): void {
    if (this.remaining !== 0) {
      throw new NbdProtocolError(`decode ${this.#what}`, `${this.remaining} unexpected trailing bytes`);
    }
  }
}

/** Builds one message. Grows as needed; `finish` returns exactly the bytes written. */
export class WireWriter {
  #bytes: Uint8Array;
  #view: DataView;
  #at = 0;

  constructor(capacity = 64) {
    this.#bytes = new Uint8Array(capacity);
    this.#view = new DataView(this.#bytes.buffer);
  }

  #room(n: number): void {
    if (this.#at + n <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.max(this.#bytes.length * 2, this.#at + n));
    grown.set(this.#bytes.subarray(0, this.#at));
    this.#bytes = grown;
    this.#view = new DataView(grown.buffer);
  }

  u16(v: number): this {
    this.#room(2);
    this.#view.setUint16(this.#at, v);
    this.#at += 2;
    return this;
  }

  u32(v: number): this {
    this.#room(4);
    this.#view.setUint32(this.#at, v >>> 0);
    this.#at += 4;
    return this;
  }

  /** A non-negative integer up to 2^53. */
  u64(v: number): this {
    this.#room(8);
    this.#view.setUint32(this.#at, Math.floor(v / 0x100000000));
    this.#view.setUint32(this.#at + 4, v >>> 0);
    this.#at += 8;
    return this;
  }

  u64Big(v: bigint): this {
    this.#room(8);
    this.#view.setBigUint64(this.#at, v);
    this.#at += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.#room(b.length);
    this.#bytes.set(b, this.#at);
    this.#at += b.length;
    return this;
  }

  zeroes(n: number): this {
    this.#room(n);
    this.#bytes.fill(0, this.#at, this.#at + n);
    this.#at += n;
    return this;
  }

  /** A string's UTF-8 bytes, without a length. */
  string(s: string): this {
    return this.bytes(TEXT_ENCODER.encode(s));
  }

  /** A string preceded by its 32-bit byte length. */
  string32(s: string): this {
    const b = TEXT_ENCODER.encode(s);
    return this.u32(b.length).bytes(b);
  }

  get length(): number {
    return this.#at;
  }

  finish(): Uint8Array {
    return this.#bytes.subarray(0, this.#at);
  }
}

/** UTF-8 byte length of a string. */
export function utf8Length(s: string): number {
  return TEXT_ENCODER.encode(s).length;
}
