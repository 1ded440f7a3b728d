import { InvalidArgumentError } from '../../errors.js';

/** Binary multipliers of the size suffixes qemu-io accepts (case-insensitive), in bytes. */
const SUFFIXES: Record<string, number> = {
  b: 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  e: 2 ** 60,
};

/**
 * Parses a byte count the way qemu-io does: a decimal or `0x` hexadecimal integer, optionally
 * followed by one of the suffixes B, K, M, G, T, P, E (powers of 1024, case-insensitive). A decimal
 * fraction is allowed with a suffix when the result is a whole number of bytes (`1.5K` = 1536).
 *
 * @returns the size in bytes, a non-negative safe integer
 * @throws InvalidArgumentError when the text is not such a size or exceeds 2^53 - 1
 */
export function parseSize(text: string, what = 'size'): number {
  const action = `parse ${what} '${text}'`;
  const m = /^\s*(0[xX][0-9a-fA-F]+|\d+(?:\.\d+)?|\.\d+)\s*([bBkKmMgGtTpPeE]?)\s*$/.exec(text);
  if (m === null) {
    throw new InvalidArgumentError(action, 'expected a number with an optional suffix B, K, M, G, T, P or E');
  }
  const [, digits, suffix] = m as unknown as [string, string, string];
  const hex = /^0[xX]/.test(digits);
  if (hex && suffix !== '') {
    // qemu_strtosz reads 0x1K ambiguously; refuse rather than guess.
    throw new InvalidArgumentError(action, 'a hexadecimal size takes no suffix');
  }
  const multiplier = SUFFIXES[suffix.toLowerCase() || 'b'] as number;
  const fractional = digits.includes('.');
  if (fractional && suffix === '') {
    throw new InvalidArgumentError(action, 'a fractional size needs a suffix');
  }
  const value = hex ? Number.parseInt(digits, 16) * multiplier : Number(digits) * multiplier;
  if (!Number.isFinite(value) || !Number.isSafeInteger(Math.round(value)) || value > Number.MAX_SAFE_INTEGER) {
    throw new InvalidArgumentError(action, `the value exceeds the largest supported size ${Number.MAX_SAFE_INTEGER}`);
  }
  if (!Number.isInteger(value)) {
    throw new InvalidArgumentError(action, `${value} is not a whole number of bytes`);
  }
  return value;
}

/**
 * Formats a byte count as qemu-io prints it: `64 KiB`, `1.5 MiB`, `512 bytes`.
 */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
  // Trailing zeros of a fraction only: 960 stays 960, 1.50 becomes 1.5.
  return `${text.includes('.') ? text.replace(/\.?0+$/, '') : text} ${units[unit]}`;
}

/**
 * Formats a byte count as qemu-io's own output does (`cvtstr`): three decimals, `.000`
 * dropped, ties rounded to even as glibc's printf does: `64 KiB`, `1.500 KiB`, `1.062 MiB`.
 */
export function formatIoSize(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let unit = 0;
  let value = bytes;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const scaled = value * 1000;
  let text = value.toFixed(3);
  if (!Number.isInteger(scaled) && Number.isInteger(scaled * 2)) {
    const floor = Math.floor(scaled);
    text = ((floor % 2 === 0 ? floor : floor + 1) / 1000).toFixed(3);
  }
  return `${text.endsWith('.000') ? text.slice(0, -4) : text} ${units[unit]}`;
}
