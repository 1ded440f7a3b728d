/**
 * A JSON parser for QMP messages that accepts what QEMU's parser accepts and words its errors
 * the way QEMU does (`qobject/json-lexer.c`, `json-parser.c`), so that a bitback server answers
 * bad input with QEMU's texts: single-quoted strings are allowed, duplicate keys are an error,
 * and only `true`, `false`, `null` are keywords.
 *
 * In `preserveNumberKinds` mode it also keeps what QEMU's type checks depend on and a JavaScript
 * number loses: an integer literal beyond 2^53 becomes a `bigint` (exact, as QEMU's int64/uint64),
 * and a number QEMU holds as a double but that looks like an integer (`1.0`, `1e3`, or an integer
 * literal beyond the uint64 range) becomes a {@link JsonFloat}. The server uses this mode; the
 * client reads plain numbers.
 *
 * No I/O.
 */
import { QEMU_MAX_DEPTH } from './constants.js';
import { QmpJsonError } from './errors.js';

/** A number that QEMU holds as a double although its value is integral (`1.0`, `1e3`). */
export class JsonFloat {
  constructor(readonly value: number) {}
}

/** Options of {@link parseQmpJson}. */
export interface ParseQmpJsonOptions {
  /** Keep big integers as `bigint` and integral doubles as {@link JsonFloat}. Default false. */
  preserveNumberKinds?: boolean;
  /** Deepest nesting accepted; deeper input is an error, never a stack overflow. Default 1024. */
  maxDepth?: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const INT64_MIN = -(2n ** 63n);
const UINT64_MAX = 2n ** 64n - 1n;

/**
 * Parses one JSON value from `input` (bytes in UTF-8, or a string). Objects come back as
 * ordinary objects whose keys keep the order of the input (a key `__proto__` is stored as an own
 * property, never as the prototype). Whitespace may surround the value; nothing else may follow.
 *
 * @throws QmpJsonError with QEMU's wording in `detail` (`expecting value`, `duplicate key`, ...)
 */
export function parseQmpJson(input: string | Uint8Array, options: ParseQmpJsonOptions = {}): unknown {
  let text: string;
  if (typeof input === 'string') text = input;
  else {
    try {
      text = utf8.decode(input);
    } catch {
      throw new QmpJsonError('invalid UTF-8 sequence in string', 0);
    }
  }
  const parser = new Parser(text, options.preserveNumberKinds ?? false, options.maxDepth ?? QEMU_MAX_DEPTH);
  const value = parser.value(0);
  parser.skipWhitespace();
  if (!parser.atEnd()) parser.fail('expecting end of input');
  return value;
}

class Parser {
  pos = 0;

  constructor(
    private readonly text: string,
    private readonly preserve: boolean,
    private readonly maxDepth: number,
  ) {}

  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  fail(detail: string, at = this.pos): never {
    throw new QmpJsonError(detail, at);
  }

  skipWhitespace(): void {
    const t = this.text;
    while (this.pos < t.length) {
      const c = t.charCodeAt(this.pos);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return;
      this.pos++;
    }
  }

  value(depth: number): unknown {
    this.skipWhitespace();
    if (this.atEnd()) this.fail('premature EOI');
    const c = this.text[this.pos]!;
    switch (c) {
      case '{':
        return this.object(depth + 1);
      case '[':
        return this.array(depth + 1);
      case '"':
      case "'":
        return this.string();
      case '}':
      case ']':
      case ',':
      case ':':
        return this.fail('expecting value');
      default:
        if (c === '-' || (c >= '0' && c <= '9')) return this.number();
        if (c >= 'a' && c <= 'z') return this.keyword();
        return this.fail(`stray '${c}'`);
    }
  }

  object(depth: number): Record<string, unknown> {
    if (depth > this.maxDepth) this.fail('nesting depth limit exceeded');
    this.pos++; // '{'
    const out: Record<string, unknown> = {};
    this.skipWhitespace();
    if (this.text[this.pos] === '}') {
      this.pos++;
      return out;
    }
    for (;;) {
      this.skipWhitespace();
      const keyAt = this.pos;
      const key = this.value(depth);
      if (typeof key !== 'string') this.fail('key is not a string in object', keyAt);
      this.skipWhitespace();
      if (this.atEnd()) this.fail('premature EOI');
      if (this.text[this.pos] !== ':') this.fail('missing : in object pair');
      this.pos++;
      const value = this.value(depth);
      if (Object.prototype.hasOwnProperty.call(out, key)) this.fail('duplicate key', keyAt);
      Object.defineProperty(out, key, { value, enumerable: true, writable: true, configurable: true });
      this.skipWhitespace();
      if (this.atEnd()) this.fail('premature EOI');
      const sep = this.text[this.pos];
      this.pos++;
      if (sep === '}') return out;
      if (sep !== ',') this.fail('expected separator in dict', this.pos - 1);
    }
  }

  array(depth: number): unknown[] {
    if (depth > this.maxDepth) this.fail('nesting depth limit exceeded');
    this.pos++; // '['
    const out: unknown[] = [];
    this.skipWhitespace();
    if (this.text[this.pos] === ']') {
      this.pos++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth));
      this.skipWhitespace();
      if (this.atEnd()) this.fail('premature EOI');
      const sep = this.text[this.pos];
      this.pos++;
      if (sep === ']') return out;
      if (sep !== ',') this.fail('expected separator in list', this.pos - 1);
    }
  }

  string(): string {
    const t = this.text;
    const start = this.pos;
    const quote = t[this.pos++]!;
    let out = '';
    let runStart = this.pos;
    for (;;) {
      if (this.pos >= t.length) this.fail('premature EOI');
      const c = t.charCodeAt(this.pos);
      if (c < 0x20) this.fail(`stray '${t.slice(start, this.pos + 1)}'`, start);
      const ch = t[this.pos]!;
      if (ch === quote) {
        out += t.slice(runStart, this.pos);
        this.pos++;
        return out;
      }
      if (ch !== '\\') {
        this.pos++;
        continue;
      }
      out += t.slice(runStart, this.pos);
      const escapeAt = this.pos;
      const e = t[this.pos + 1];
      this.pos += 2;
      switch (e) {
        case '"':
        case "'":
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u':
          out += this.unicodeEscape(escapeAt);
          break;
        case undefined:
          this.fail('premature EOI');
          break;
        default:
          this.fail('invalid escape sequence in string', escapeAt);
      }
      runStart = this.pos;
    }
  }

  /** `\uXXXX` at `at` (pos is after the `u`); a surrogate must pair with a second escape. */
  unicodeEscape(at: number): string {
    const hi = this.hex4(at);
    if (hi >= 0xdc00 && hi <= 0xdfff) this.fail(`${this.text.slice(at, at + 6)} is not a valid Unicode character`, at);
    if (hi < 0xd800 || hi > 0xdbff) return String.fromCharCode(hi);
    if (this.text[this.pos] === '\\' && this.text[this.pos + 1] === 'u') {
      const loAt = this.pos;
      this.pos += 2;
      const lo = this.hex4(loAt);
      if (lo >= 0xdc00 && lo <= 0xdfff) return String.fromCharCode(hi, lo);
    }
    return this.fail(`${this.text.slice(at, at + 6)} is not a valid Unicode character`, at);
  }

  hex4(at: number): number {
    const digits = this.text.slice(this.pos, this.pos + 4);
    // QEMU words a bad hex digit like a bad code point (json-parser.c cvt4hex/parse_string).
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) this.fail(`${this.text.slice(at, at + 6)} is not a valid Unicode character`, at);
    this.pos += 4;
    return parseInt(digits, 16);
  }

  number(): unknown {
    const m = /^-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/.exec(this.text.slice(this.pos, this.pos + 400));
    const start = this.pos;
    if (m === null) this.fail(`stray '${this.text.slice(start, start + 2)}'`);
    const literal = m[0];
    this.pos += literal.length;
    // QEMU's lexer takes a digit or letter glued to a number as part of a bad token ("01", "1x").
    const next = this.text[this.pos];
    if (next !== undefined && /[0-9a-zA-Z.]/.test(next)) this.fail(`stray '${this.text.slice(start, this.pos + 1)}'`, start);
    const isFloat = m[1] !== undefined || m[2] !== undefined;
    const n = Number(literal);
    if (!Number.isFinite(n)) this.fail(`number out of range '${literal}'`, start);
    if (!this.preserve) return n;
    if (isFloat) return Number.isInteger(n) ? new JsonFloat(n) : n;
    if (Number.isSafeInteger(n)) return n;
    const big = BigInt(literal);
    // QEMU: int64 if it fits, else uint64 if it fits, else double (json-parser.c parse_literal).
    return big >= INT64_MIN && big <= UINT64_MAX ? big : new JsonFloat(n);
  }

  keyword(): unknown {
    const m = /^[a-z]+/.exec(this.text.slice(this.pos, this.pos + 64))!;
    const word = m[0];
    const start = this.pos;
    this.pos += word.length;
    if (word === 'true') return true;
    if (word === 'false') return false;
    if (word === 'null') return null;
    return this.fail(`invalid keyword '${word}'`, start);
  }
}
