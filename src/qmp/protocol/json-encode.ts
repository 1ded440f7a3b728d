/**
 * JSON text the way QEMU writes it (`qobject/qjson.c` `to_json`): `{"a": 1, "b": [1, 2]}` with a
 * space after `:` and `,`, and pure ASCII — every character outside 0x20..0x7e is a `\uXXXX`
 * escape with upper-case hex (characters beyond the BMP as a surrogate pair). No I/O.
 */
import { InvalidArgumentError } from '../../errors.js';
import { JsonFloat } from './json-parse.js';

/** Deepest nesting the encoder follows before it reports a cycle or runaway value. */
const MAX_ENCODE_DEPTH = 1024;

/**
 * Encodes `value`: `null`, booleans, finite numbers, `bigint` (written exactly), strings,
 * arrays, plain objects (keys in insertion order; members whose value is `undefined` are left
 * out), {@link JsonFloat}, and objects with a `toJSON()` method (like `JSON.stringify`).
 * `undefined` inside an array is written as `null`.
 *
 * @throws InvalidArgumentError for a non-finite number, a function or symbol, or nesting deeper
 *   than 1024 (which includes cycles)
 */
export function encodeQmpJson(value: unknown): string {
  const out: string[] = [];
  write(value, out, 0);
  return out.join('');
}

function write(value: unknown, out: string[], depth: number): void {
  if (depth > MAX_ENCODE_DEPTH) throw new InvalidArgumentError('encode a QMP message', `the value nests deeper than ${MAX_ENCODE_DEPTH} levels (a cycle?)`);
  switch (typeof value) {
    case 'string':
      out.push(quote(value));
      return;
    case 'number':
      if (!Number.isFinite(value)) throw new InvalidArgumentError('encode a QMP message', `${value} is not a finite number`);
      out.push(String(value));
      return;
    case 'bigint':
      out.push(value.toString());
      return;
    case 'boolean':
      out.push(value ? 'true' : 'false');
      return;
    case 'undefined':
      out.push('null');
      return;
    case 'object':
      if (value === null) {
        out.push('null');
        return;
      }
      if (value instanceof JsonFloat) {
        write(value.value, out, depth);
        return;
      }
      if (Array.isArray(value)) {
        out.push('[');
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out.push(', ');
          write(value[i], out, depth + 1);
        }
        out.push(']');
        return;
      }
      if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
        write((value as { toJSON(): unknown }).toJSON(), out, depth + 1);
        return;
      }
      out.push('{');
      {
        let first = true;
        for (const [k, v] of Object.entries(value)) {
          if (v === undefined) continue;
          if (!first) out.push(', ');
          first = false;
          out.push(quote(k), ': ');
          write(v, out, depth + 1);
        }
      }
      out.push('}');
      return;
    default:
      throw new InvalidArgumentError('encode a QMP message', `a ${typeof value} cannot be written as JSON`);
  }
}

const SHORT_ESCAPES: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** A JSON string literal in QEMU's style. */
function quote(s: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[^\x20-\x7e]|["\\]/.test(s)) return `"${s}"`;
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    const code = s.charCodeAt(i);
    const short = SHORT_ESCAPES[ch];
    if (short !== undefined) out += short;
    else if (code < 0x20 || code > 0x7e) out += `\\u${code.toString(16).toUpperCase().padStart(4, '0')}`;
    else out += ch;
  }
  return out + '"';
}
