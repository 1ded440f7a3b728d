/**
 * QEMU's `KEY=VALUE,...` option syntax, parsed as QEMU 7.2's `util/keyval.c` does (the parser behind
 * `-blockdev`, `qemu-storage-daemon --blockdev` and friends), with QEMU's error texts.
 *
 * Grammar (from keyval.c):
 *
 *     key-vals     = [ key-val { ',' key-val } [ ',' ] ]
 *     key-val      = key '=' val
 *     key          = key-fragment { '.' key-fragment }
 *     val          = { [^,] | ',,' }          (',,' stands for one ',')
 *     key-vals-ik  = val-no-key [ ',' key-vals ]  (with an implied key; val-no-key = [^=,]+)
 *
 * The result is a JSON object whose leaves are all strings: a dotted key builds nested objects
 * (`file.driver=file` → `{file: {driver: 'file'}}`), and an object whose keys are all decimal
 * numbers becomes an array (`a.0=x,a.1=y` → `{a: ['x', 'y']}`). A key fragment is a QAPI name
 * (a letter, then letters, digits, `-`, `_`; or a downstream `__RFQDN_` prefix) or, after the
 * first fragment, a run of digits; it is at most 127 characters long. When the same key comes
 * twice, the last value wins. A lone `help` or `?` asks for help, which `-blockdev` does not offer.
 *
 * No I/O.
 */
import { type JsonObject } from '../../qmp/protocol/messages.js';
import { KeyvalError } from './errors.js';

/** Options of {@link parseKeyval}. */
export interface KeyvalOptions {
  /**
   * The key a first parameter without `=` stands for (`-blockdev` uses `driver`, so
   * `qcow2,file=x` means `driver=qcow2,file=x`). Such a value ends at the first `,` or `=` and
   * cannot escape commas. Default: none.
   */
  impliedKey?: string;
}

/** keyval.c keeps fragments in `char key_in_cur[128]`: 127 characters at most. */
const MAX_FRAGMENT_LENGTH = 127;

/** keyval.c caps list indexes at `INT_MAX`. */
const INT_MAX = 2 ** 31 - 1;

/** An object under construction: values are strings or nested objects (lists come later). */
type Tree = Map<string, Tree | string>;

function fail(desc: string): never {
  throw new KeyvalError(desc);
}

/**
 * Parses `text` in QEMU's `KEY=VALUE,...` syntax into a JSON object of strings, nested objects
 * and arrays (see the module comment for the rules).
 *
 * Where QEMU's result depends on the order of its hash tables (several problems in one string,
 * or two spellings of one list index such as `a.1` and `a.01`), bitback goes by input order.
 *
 * @throws KeyvalError with QEMU's text: `Invalid parameter 'a..b'`, `Expected '=' after parameter
 *   'a'`, `Parameter 'x' is too long`, `Parameters 'a.*' used inconsistently`, `Parameter 'a.0'
 *   missing`, `Help is not available for this option`
 */
export function parseKeyval(text: string, options: KeyvalOptions = {}): JsonObject {
  const root: Tree = new Map();
  let impliedKey = options.impliedKey;
  let help = false;
  let pos = 0;
  while (pos < text.length) {
    const step = parseOne(root, text, pos, impliedKey);
    help ||= step.help;
    pos = step.next;
    impliedKey = undefined;
  }
  if (help) fail('Help is not available for this option');
  return listify(root, []) as JsonObject;
}

/** Length of the run of characters from `pos` up to the next `=` or `,` (C's `strcspn`). */
function keyLength(text: string, pos: number): number {
  let end = pos;
  while (end < text.length && text[end] !== '=' && text[end] !== ',') end++;
  return end - pos;
}

/** keyval.c `starts_with_help_option`: 1 for `?`, 4 for a `help` prefix, else 0. */
function helpLength(text: string, pos: number): number {
  if (text[pos] === '?') return 1;
  return text.startsWith('help', pos) ? 4 : 0;
}

/** Parses one parameter starting at `pos`; returns where the next one starts. */
function parseOne(root: Tree, text: string, pos: number, impliedKey: string | undefined): { next: number; help: boolean } {
  const len = keyLength(text, pos);
  let implied: string | undefined;
  if (len > 0 && text[pos + len] !== '=') {
    if (helpLength(text, pos) === len) return { next: skipComma(text, pos + len), help: true };
    implied = impliedKey;
  }
  // The key being parsed: the implied one, or text[pos, pos + len).
  const key = implied ?? text;
  const keyStart = implied !== undefined ? 0 : pos;
  const keyEnd = implied !== undefined ? key.length : pos + len;
  const wholeKey = key.slice(keyStart, keyEnd);

  let cur = root;
  let fragment = '';
  let s = keyStart;
  for (;;) {
    const first = s === keyStart;
    const length = !first && isDigit(key[s]) ? digitRunLength(key, s) : qapiNameLength(key, s);
    if (length === 0 || (s + length < keyEnd && key[s + length] !== '.')) fail(`Invalid parameter '${wholeKey}'`);
    if (length > MAX_FRAGMENT_LENGTH) {
      const partial = !first || s + length !== keyEnd;
      fail(`Parameter${partial ? ' fragment' : ''} '${key.slice(s, s + length)}' is too long`);
    }
    if (!first) cur = putObject(cur, fragment, key.slice(keyStart, s - 1));
    fragment = key.slice(s, s + length);
    s += length;
    if (key[s] !== '.') break;
    s++;
  }

  let value: string;
  let next: number;
  if (implied !== undefined) {
    value = text.slice(pos, pos + len);
    next = skipComma(text, pos + len);
  } else {
    if (text[s] !== '=') fail(`Expected '=' after parameter '${text.slice(keyStart, s)}'`);
    ({ value, next } = readValue(text, s + 1));
  }
  putString(cur, fragment, value, wholeKey);
  return { next, help: false };
}

function skipComma(text: string, pos: number): number {
  return text[pos] === ',' ? pos + 1 : pos;
}

/** Reads a value from `pos` to the next single `,` (`,,` is a literal comma). */
function readValue(text: string, pos: number): { value: string; next: number } {
  const parts: string[] = [];
  let s = pos;
  for (;;) {
    const comma = text.indexOf(',', s);
    if (comma < 0) {
      parts.push(text.slice(s));
      return { value: parts.join(''), next: text.length };
    }
    parts.push(text.slice(s, comma));
    if (text[comma + 1] !== ',') return { value: parts.join(''), next: comma + 1 };
    parts.push(',');
    s = comma + 2;
  }
}

/** `cur[name]` as an object, created when absent; a string there is a conflict. */
function putObject(cur: Tree, name: string, keySoFar: string): Tree {
  const old = cur.get(name);
  if (old === undefined) {
    const fresh: Tree = new Map();
    cur.set(name, fresh);
    return fresh;
  }
  if (typeof old === 'string') fail(`Parameters '${keySoFar}.*' used inconsistently`);
  return old;
}

/** Sets `cur[name]` to `value`, replacing an earlier string; an object there is a conflict. */
function putString(cur: Tree, name: string, value: string, wholeKey: string): void {
  if (typeof cur.get(name) === 'object') fail(`Parameters '${wholeKey}.*' used inconsistently`);
  cur.set(name, value);
}

function isDigit(c: string | undefined): boolean {
  return c !== undefined && c >= '0' && c <= '9';
}

function isAlpha(c: string | undefined): boolean {
  return c !== undefined && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
}

function isAlnum(c: string | undefined): boolean {
  return isAlpha(c) || isDigit(c);
}

function digitRunLength(s: string, pos: number): number {
  let end = pos;
  while (isDigit(s[end])) end++;
  return end - pos;
}

/**
 * Length of the QAPI name at `pos`, or 0 (`util/qapi-util.c` `parse_qapi_name`, not requiring
 * the name to end the string): an optional downstream prefix `__RFQDN_` (letters, digits, `-`,
 * `.`), then a letter and any letters, digits, `-`, `_`. ASCII only, as QEMU in the C locale.
 */
function qapiNameLength(s: string, pos: number): number {
  let p = pos;
  if (s[p] === '_') {
    p++;
    if (s[p] !== '_') return 0;
    p++;
    while (isAlnum(s[p]) || s[p] === '-' || s[p] === '.') p++;
    if (s[p] !== '_') return 0;
    p++;
  }
  if (!isAlpha(s[p])) return 0;
  p++;
  while (isAlnum(s[p]) || s[p] === '-' || s[p] === '_') p++;
  return p - pos;
}

/** keyval.c `key_to_index` of a whole fragment of digits, capped at INT_MAX. */
function indexOf(fragment: string): number {
  const digits = fragment.replace(/^0+(?=.)/, '');
  return digits.length > 10 ? INT_MAX : Math.min(Number(digits), INT_MAX);
}

/**
 * Turns the tree into JSON: objects whose keys are all list indexes become arrays (keyval.c
 * `keyval_listify`). Children are converted first, so their problems are reported first.
 * `path` is the list of fragments leading to `tree`, for the error texts.
 */
function listify(tree: Tree, path: readonly string[]): JsonObject | unknown[] {
  let hasIndex = false;
  let hasMember = false;
  const converted: [string, unknown][] = [];
  for (const [name, value] of tree) {
    if (isDigit(name[0])) hasIndex = true;
    else hasMember = true;
    converted.push([name, typeof value === 'string' ? value : listify(value, [...path, name])]);
  }
  const prefix = path.map((p) => `${p}.`).join('');
  if (hasIndex && hasMember) fail(`Parameters '${prefix}*' used inconsistently`);
  if (!hasIndex) {
    const out: JsonObject = {};
    for (const [name, value] of converted) Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
    return out;
  }
  // As keyval.c: one slot per key plus a sentinel; an index past the slots leaves a gap that
  // is reported as the first missing element.
  const slots: unknown[] = new Array<unknown>(converted.length + 1).fill(undefined);
  let maxIndex = -1;
  for (const [name, value] of converted) {
    const index = indexOf(name);
    maxIndex = Math.max(maxIndex, index);
    if (index < converted.length) slots[index] = value;
  }
  const list: unknown[] = [];
  for (let i = 0; i < Math.min(slots.length, maxIndex + 1); i++) {
    if (slots[i] === undefined) fail(`Parameter '${prefix}${i}' missing`);
    list.push(slots[i]);
  }
  return list;
}
