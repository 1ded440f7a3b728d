/**
 * The command language of `bitback io`, a subset of qemu-io's:
 *
 * ```
 * read    [-P PATTERN] [-v] [-q] OFFSET LENGTH
 * write   [-P PATTERN | -z [-u]] [-f] [-q] OFFSET LENGTH
 * discard [-q] OFFSET LENGTH                              (alias: trim)
 * flush
 * map                                                     (allocation, like qemu-io's map)
 * length
 * ```
 * Sizes take qemu-io's suffixes (`1M`, `64k`, `0x1000`); a pattern is a byte (`0x5a`, `90`).
 * `write` without `-P` writes the pattern 0xcd, as qemu-io does.
 *
 * Parsing is pure: {@link parseIoCommand} turns one command line into a typed value or throws an
 * `InvalidArgumentError` that says what is wrong.
 */
import { InvalidArgumentError } from '../../errors.js';
import { parseSize } from './size.js';

/** qemu-io's default write pattern (`write` without `-P`). */
export const DEFAULT_WRITE_PATTERN = 0xcd;

/** A parsed `bitback io` command. */
export type IoCommand =
  | { kind: 'read'; offset: number; length: number; pattern?: number; dump: boolean; quiet: boolean }
  | {
      kind: 'write';
      offset: number;
      length: number;
      pattern: number;
      zero: boolean;
      mayTrim: boolean;
      fua: boolean;
      quiet: boolean;
    }
  | { kind: 'discard'; offset: number; length: number; quiet: boolean }
  | { kind: 'flush' }
  | { kind: 'map' }
  | { kind: 'length' };

/**
 * Splits a command line into words. Double and single quotes group words; there are no escapes
 * beyond that (qemu-io's own parser is as simple).
 */
export function splitWords(line: string): string[] {
  const words: string[] = [];
  let current = '';
  let quote: '"' | "'" | undefined;
  let inWord = false;
  for (const ch of line) {
    if (quote !== undefined) {
      if (ch === quote) quote = undefined;
      else current += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(current);
      current = '';
      inWord = false;
    } else {
      current += ch;
      inWord = true;
    }
  }
  if (quote !== undefined) {
    throw new InvalidArgumentError(`parse io command '${line}'`, `unterminated ${quote} quote`);
  }
  if (inWord) words.push(current);
  return words;
}

/** Parses a pattern byte: `0x5a`, `90`, `0`. */
export function parsePattern(text: string, action: string): number {
  const value = /^0[xX][0-9a-fA-F]+$/.test(text)
    ? Number.parseInt(text, 16)
    : /^\d+$/.test(text)
      ? Number.parseInt(text, 10)
      : Number.NaN;
  if (!Number.isInteger(value) || value < 0 || value > 255) {
    throw new InvalidArgumentError(action, `pattern '${text}' is not a byte value (0..255 or 0x00..0xff)`);
  }
  return value;
}

interface Flags {
  /** Flags seen, e.g. { P: '0x5a', z: true }. */
  values: Map<string, string | true>;
  /** The words left after the flags. */
  rest: string[];
}

/** Reads leading `-X` flags; `withValue` lists those that take an argument. */
function readFlags(words: string[], allowed: string, withValue: string, action: string): Flags {
  const values = new Map<string, string | true>();
  let i = 0;
  while (i < words.length) {
    const word = words[i] as string;
    if (!/^-[A-Za-z]/.test(word)) break;
    for (let j = 1; j < word.length; j++) {
      const flag = word[j] as string;
      if (!allowed.includes(flag)) {
        throw new InvalidArgumentError(action, `unknown option -${flag} (allowed: ${[...allowed].map((f) => `-${f}`).join(' ')})`);
      }
      if (withValue.includes(flag)) {
        const inline = word.slice(j + 1);
        if (inline !== '') {
          values.set(flag, inline);
        } else {
          i++;
          if (i >= words.length) throw new InvalidArgumentError(action, `option -${flag} needs a value`);
          values.set(flag, words[i] as string);
        }
        break;
      }
      values.set(flag, true);
    }
    i++;
  }
  return { values, rest: words.slice(i) };
}

function offsetAndLength(rest: string[], action: string): { offset: number; length: number } {
  if (rest.length !== 2) {
    throw new InvalidArgumentError(action, `expected OFFSET LENGTH, got ${rest.length} argument(s)`);
  }
  return { offset: parseSize(rest[0] as string, 'offset'), length: parseSize(rest[1] as string, 'length') };
}

/** Parses one command line. Throws `InvalidArgumentError` naming the command and the problem. */
export function parseIoCommand(line: string): IoCommand {
  const action = `parse io command '${line.trim()}'`;
  const words = splitWords(line);
  if (words.length === 0) throw new InvalidArgumentError(action, 'the command is empty');
  const [name, ...args] = words as [string, ...string[]];
  switch (name) {
    case 'read': {
      const { values, rest } = readFlags(args, 'Pvq', 'P', action);
      const range = offsetAndLength(rest, action);
      const pattern = values.get('P');
      return {
        kind: 'read',
        ...range,
        ...(pattern !== undefined ? { pattern: parsePattern(pattern as string, action) } : {}),
        dump: values.has('v'),
        quiet: values.has('q'),
      };
    }
    case 'write': {
      const { values, rest } = readFlags(args, 'Pzufq', 'P', action);
      const range = offsetAndLength(rest, action);
      const zero = values.has('z');
      if (zero && values.has('P')) throw new InvalidArgumentError(action, '-z and -P cannot be combined');
      if (values.has('u') && !zero) throw new InvalidArgumentError(action, '-u (allow unmap) requires -z');
      const pattern = values.get('P');
      return {
        kind: 'write',
        ...range,
        pattern: pattern !== undefined ? parsePattern(pattern as string, action) : DEFAULT_WRITE_PATTERN,
        zero,
        mayTrim: values.has('u'),
        fua: values.has('f'),
        quiet: values.has('q'),
      };
    }
    case 'discard':
    case 'trim': {
      const { values, rest } = readFlags(args, 'q', '', action);
      return { kind: 'discard', ...offsetAndLength(rest, action), quiet: values.has('q') };
    }
    case 'flush':
    case 'map':
    case 'length': {
      if (args.length !== 0) throw new InvalidArgumentError(action, `${name} takes no arguments`);
      return { kind: name };
    }
    default:
      throw new InvalidArgumentError(
        action,
        `unknown command '${name}' (known: read, write, discard, trim, flush, map, length)`,
      );
  }
}
