/**
 * The inverse of {@link parseKeyval}: a JSON object of strings written in QEMU's
 * `KEY=VALUE,...` syntax (dotted keys for nested objects, indexes for array elements, `,,` for a
 * comma in a value). Used to print options the way QEMU's command line takes them.
 *
 * No I/O.
 */
import { InvalidArgumentError } from '../../errors.js';
import { isJsonObject } from '../../qmp/protocol/decode.js';
import { type JsonObject } from '../../qmp/protocol/messages.js';

/**
 * Writes `options` as `KEY=VALUE,...`, members in their order, array elements by index. Keys
 * are written as they are: keys that are not QAPI names do not parse back.
 *
 * @throws InvalidArgumentError when a leaf is not a string, or an object or array below the top
 *   is empty (keyval has no way to write those)
 */
export function formatKeyval(options: JsonObject): string {
  const parts: string[] = [];
  walk(options, '', parts);
  return parts.join(',');
}

function walk(value: unknown, path: string, parts: string[]): void {
  const entries: [string, unknown][] = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value as JsonObject);
  if (entries.length === 0 && path !== '') throw new InvalidArgumentError('format key=value options', `'${path}' is empty`);
  for (const [name, child] of entries) {
    const key = path === '' ? name : `${path}.${name}`;
    if (typeof child === 'string') parts.push(`${key}=${child.replaceAll(',', ',,')}`);
    else if (Array.isArray(child) || isJsonObject(child)) walk(child, key, parts);
    else throw new InvalidArgumentError('format key=value options', `'${key}' is not a string`);
  }
}
