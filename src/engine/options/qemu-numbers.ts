/**
 * How QEMU 7.2 reads numbers and booleans written as text in `key=value` options: the conversions
 * of its keyval input visitor (`qapi/qobject-input-visitor.c` `*_keyval`), built on glibc's
 * `strtoll`/`strtoull`/`strtod` and QEMU's `util/cutils.c` (`qemu_strtoi64`, `qemu_strtou64`,
 * `qemu_strtosz`, `qemu_strtod_finite`) and `qapi/qapi-util.c` (`qapi_bool_parse`).
 * Each function returns `undefined` where QEMU rejects the text. Checked against
 * qemu-system-x86_64 and qemu-storage-daemon 7.2.22.
 *
 * No I/O.
 */

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;
const TWO_64 = 2n ** 64n;

/** What `strtoull`-like scanning found: the sign, the digits' value and where they end. */
interface Scanned {
  negative: boolean;
  /** The value of the digits, saturated just above UINT64_MAX (enough to see an overflow). */
  magnitude: bigint;
  /** Index just past the last digit. */
  end: number;
}

/** C's `isspace` in the C locale. */
function isSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r';
}

function digitValue(c: string | undefined): number {
  if (c === undefined) return 99;
  const code = c.charCodeAt(0);
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 97 && code <= 122) return code - 87;
  if (code >= 65 && code <= 90) return code - 55;
  return 99;
}

/**
 * glibc's `strtoull` scan of `text` from its start in `base` (0: `0x` hex, leading `0` octal,
 * else decimal; 16 also takes a `0x` prefix): spaces, a sign, digits. `undefined` when no digit
 * was found (C: "no conversion").
 */
function scan(text: string, base: 0 | 10 | 16): Scanned | undefined {
  let p = 0;
  while (isSpace(text[p])) p++;
  let negative = false;
  if (text[p] === '+' || text[p] === '-') {
    negative = text[p] === '-';
    p++;
  }
  let radix: number = base;
  // "0x" only counts as a prefix when a hex digit follows; else "0" is the number.
  if ((base === 0 || base === 16) && text[p] === '0' && (text[p + 1] === 'x' || text[p + 1] === 'X') && digitValue(text[p + 2]) < 16) {
    p += 2;
    radix = 16;
  } else if (base === 0) {
    radix = text[p] === '0' ? 8 : 10;
  }
  const start = p;
  let magnitude = 0n;
  const big = BigInt(radix);
  while (digitValue(text[p]) < radix) {
    if (magnitude <= UINT64_MAX) magnitude = magnitude * big + BigInt(digitValue(text[p]));
    p++;
  }
  if (p === start) return undefined;
  return { negative, magnitude, end: p };
}

/**
 * QEMU's `int` (int64) from keyval text: `qemu_strtoi64(text, NULL, 0)`: optional leading
 * whitespace and sign, decimal, `0x` hex or `0` octal, nothing after, within int64.
 */
export function parseQemuInt64(text: string): bigint | undefined {
  const r = scan(text, 0);
  if (r === undefined || r.end !== text.length) return undefined;
  const value = r.negative ? -r.magnitude : r.magnitude;
  return value < INT64_MIN || value > INT64_MAX ? undefined : value;
}

/**
 * QEMU's `uint64` from keyval text: `qemu_strtou64(text, NULL, 0)`, the syntax of
 * {@link parseQemuInt64}; a negative value wraps modulo 2^64 as `strtoull` does (`-1` is
 * 2^64 − 1), a magnitude beyond 2^64 − 1 is rejected.
 */
export function parseQemuUint64(text: string): bigint | undefined {
  const r = scan(text, 0);
  if (r === undefined || r.end !== text.length || r.magnitude > UINT64_MAX) return undefined;
  return r.negative && r.magnitude !== 0n ? TWO_64 - r.magnitude : r.magnitude;
}

/** `suffix_mul` of cutils.c with unit 1024: B, K, M, G, T, P, E in either case. */
function suffixMultiplier(c: string | undefined): bigint | undefined {
  switch (c?.toUpperCase()) {
    case 'B':
      return 1n;
    case 'K':
      return 1n << 10n;
    case 'M':
      return 1n << 20n;
    case 'G':
      return 1n << 30n;
    case 'T':
      return 1n << 40n;
    case 'P':
      return 1n << 50n;
    case 'E':
      return 1n << 60n;
    default:
      return undefined;
  }
}

/**
 * QEMU's `size` from keyval text (`qemu_strtosz`): a decimal number, optionally with a fraction,
 * and an optional suffix B/K/M/G/T/P/E (powers of 1024, either case); or `0x` hex without a
 * fraction (QEMU 7.2 still takes a suffix after hex, with a deprecation warning). A fraction needs
 * a suffix other than B (`1.5k` = 1536, rounded half up; `1.5` is rejected), an exponent is
 * rejected, no sign but `+`, no trailing characters, at most 2^64 − 1.
 */
export function parseQemuSize(text: string): bigint | undefined {
  const decimal = scan(text, 10);
  if (decimal === undefined || decimal.magnitude > UINT64_MAX) return undefined;
  if (text.slice(0, decimal.end).includes('-')) return undefined;
  let value = decimal.magnitude;
  let end = decimal.end;
  let fraction = 0n; // 64-bit fixed point: fraction / 2^64
  if (value === 0n && (text[end] === 'x' || text[end] === 'X')) {
    const hex = scan(text, 16);
    if (hex === undefined || hex.magnitude > UINT64_MAX) return undefined;
    value = hex.magnitude;
    end = hex.end;
    if (text[end] === '.') return undefined;
  } else if (text[end] === '.') {
    // strtod from the '.': digits and an optional exponent (which QEMU then rejects).
    const m = /^\.[0-9]+(?:[eE][+-]?[0-9]+)?/.exec(text.slice(end));
    if (m === null) end++; // "5.k": a bare '.' is skipped
    else {
      if (/[eE]/.test(m[0])) return undefined;
      // A fraction that strtod rounds up to 1.0 overflows QEMU's (uint64_t) cast; x86-64 QEMU
      // gets 0 there ("1.9999999999999999999k" is 1024).
      const scaled = Math.trunc(Number(m[0]) * 2 ** 64);
      fraction = scaled >= 2 ** 64 ? 0n : BigInt(scaled);
      end += m[0].length;
    }
  }
  let multiplier = suffixMultiplier(text[end]);
  if (multiplier === undefined) multiplier = 1n;
  else end++;
  if (end !== text.length) return undefined;
  if (multiplier === 1n) return fraction === 0n ? value : undefined;
  const scaledFraction = fraction * multiplier;
  const total = value * multiplier + (scaledFraction >> 64n) + (((scaledFraction & UINT64_MAX) >> 63n) & 1n);
  return total > UINT64_MAX ? undefined : total;
}

/** QEMU's `bool` from keyval text (`qapi_bool_parse`): on/yes/true/y and off/no/false/n, exactly. */
export function parseQemuBool(text: string): boolean | undefined {
  switch (text) {
    case 'on':
    case 'yes':
    case 'true':
    case 'y':
      return true;
    case 'off':
    case 'no':
    case 'false':
    case 'n':
      return false;
    default:
      return undefined;
  }
}

const DECIMAL_FLOAT = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$/;
const HEX_FLOAT = /^([+-]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?[0-9]+))?$/;

/**
 * QEMU's `number` from keyval text (`qemu_strtod_finite(text, NULL)`): what `strtod` reads
 * (leading whitespace, decimal or `0x` hex floating point) with nothing after it; infinities, NaN,
 * overflow and underflow are rejected. Not checked against QEMU: no `-blockdev` option has this type.
 */
export function parseQemuNumber(text: string): number | undefined {
  let p = 0;
  while (isSpace(text[p])) p++;
  const body = text.slice(p);
  let value: number;
  let nonZeroDigits: boolean;
  const hex = HEX_FLOAT.exec(body);
  if (hex !== null && (hex[2]! + (hex[3] ?? '')).length > 0) {
    const digits = hex[2]! + (hex[3] ?? '');
    value = (Number.parseInt(digits, 16) || 0) * 2 ** (Number(hex[4] ?? '0') - 4 * (hex[3] ?? '').length);
    if (hex[1] === '-') value = -value;
    nonZeroDigits = /[1-9a-fA-F]/.test(digits);
  } else if (DECIMAL_FLOAT.test(body)) {
    value = Number(body);
    nonZeroDigits = /[1-9]/.test(body.replace(/[eE].*$/, ''));
  } else {
    return undefined;
  }
  if (!Number.isFinite(value)) return undefined; // overflow: ERANGE
  if (nonZeroDigits && Math.abs(value) < 2.2250738585072014e-308) return undefined; // underflow: ERANGE
  return value;
}
