/**
 * Checks and converts the output of {@link parseKeyval} against a QMP schema the way QEMU 7.2's
 * keyval input visitor does (`qobject_input_visitor_new_keyval`, `qapi/qobject-input-visitor.c`):
 * every scalar arrives as a string and is converted to the declared type, with QEMU's texts.
 *
 * It walks the schema exactly like the QMP checker (`src/qmp/server/validate.ts`: members in
 * declared order, the first problem wins, unexpected members after the declared ones) and differs
 * where QEMU's keyval visitor differs from its QMP one:
 * - `int`/`intN`: `qemu_strtoi64` syntax (`0x1f`, `017`, ` 12`, `-5`), "Parameter 'a.b' expects
 *   integer"; `uintN`/`uint64`: `qemu_strtou64` (`-1` wraps), same text; the width checks that
 *   follow are QEMU's ("Parameter 'to' expects uint16_t", bare name);
 * - `bool`: on/yes/true/y, off/no/false/n, "Parameter 'a.b' expects 'on' or 'off'";
 * - `size`: `qemu_strtosz` (`1k`, `1.5G`, `0x10`), "Parameter 'a.b' expects size";
 * - `number`: `strtod`, "Invalid parameter type for 'a.b', expected: number";
 * - a scalar member given sub-keys (`size.x=1`, `size.0=1`): "Parameters 'size.*' are unexpected";
 * - list elements are named `a.0`, not `a[0]`;
 * - an alternate takes a string in its `str` or enum branch (keyval has no numbers, booleans or
 *   null), an object in its struct branch.
 *
 * No I/O.
 */
import { QmpText } from '../../qmp/protocol/constants.js';
import { isJsonObject } from '../../qmp/protocol/decode.js';
import { type JsonObject } from '../../qmp/protocol/messages.js';
import { type QmpArgsSchema, type QmpMembers, type QmpType, type QmpUnionType } from '../../qmp/server/schema.js';
import { KeyvalError } from './errors.js';
import { parseQemuBool, parseQemuInt64, parseQemuNumber, parseQemuSize, parseQemuUint64 } from './qemu-numbers.js';
import { walkArguments, walkStruct, walkUnion, type SchemaWalker } from '../../qmp/server/schema-walk.js';

/** Ranges and C type names of the fixed-width integers (`qapi-visit-core.c` `visit_type_*N`). */
const SIGNED: Record<string, readonly [bigint, bigint, string]> = {
  int8: [-128n, 127n, 'int8_t'],
  int16: [-32768n, 32767n, 'int16_t'],
  int32: [-(2n ** 31n), 2n ** 31n - 1n, 'int32_t'],
};
const UNSIGNED: Record<string, readonly [bigint, string]> = {
  uint8: [255n, 'uint8_t'],
  uint16: [65535n, 'uint16_t'],
  uint32: [2n ** 32n - 1n, 'uint32_t'],
};

function fail(desc: string): never {
  throw new KeyvalError(desc);
}

/**
 * Checks `args` (from {@link parseKeyval}: strings, objects and arrays) against `schema` and
 * returns it with every scalar converted to its declared type (integers and sizes as `number`,
 * rounded beyond 2^53 as in the QMP checker).
 *
 * @throws KeyvalError with QEMU's text for the first problem
 */
export function visitKeyval(schema: QmpArgsSchema, args: JsonObject): JsonObject {
  return walkArguments(schema, args, walker);
}

const walker: SchemaWalker = { visit, fail };

function visitStruct(members: QmpMembers, obj: JsonObject, prefix: string): JsonObject {
  return walkStruct(members, obj, prefix, walker);
}

function visitUnion(union: QmpUnionType, obj: JsonObject, prefix: string): JsonObject {
  return walkUnion(union, obj, prefix, walker);
}


/**
 * The string a scalar member holds (`qobject_input_get_keyval`): sub-keys where a scalar is
 * expected are "unexpected" parameters.
 */
function scalarText(value: unknown, full: string): string {
  if (typeof value === 'string') return value;
  if (Array.isArray(value) || isJsonObject(value)) fail(`Parameters '${full}.*' are unexpected`);
  return fail(QmpText.invalidType(full, 'string'));
}

/**
 * Visits one value. `full` is the path (`inject-error.0.errno`) used by most texts; `bare` the
 * member name, or null for a list element, used by the enum, fixed-width and alternate texts.
 */
function visit(type: QmpType, value: unknown, full: string, bare: string | null): unknown {
  const bareName = bare ?? 'null';
  if (typeof type === 'string') {
    switch (type) {
      case 'str':
        return scalarText(value, full);
      case 'bool': {
        const b = parseQemuBool(scalarText(value, full));
        if (b === undefined) fail(`Parameter '${full}' expects 'on' or 'off'`);
        return b;
      }
      case 'int':
      case 'int64':
      case 'int8':
      case 'int16':
      case 'int32': {
        const n = parseQemuInt64(scalarText(value, full));
        if (n === undefined) fail(`Parameter '${full}' expects integer`);
        const range = SIGNED[type];
        if (range !== undefined && (n < range[0] || n > range[1])) fail(QmpText.expects(bareName, range[2]));
        return Number(n);
      }
      case 'uint64':
      case 'uint8':
      case 'uint16':
      case 'uint32': {
        const n = parseQemuUint64(scalarText(value, full));
        if (n === undefined) fail(`Parameter '${full}' expects integer`);
        const range = UNSIGNED[type];
        if (range !== undefined && n > range[0]) fail(QmpText.expects(bareName, range[1]));
        return Number(n);
      }
      case 'size': {
        const n = parseQemuSize(scalarText(value, full));
        if (n === undefined) fail(`Parameter '${full}' expects size`);
        return Number(n);
      }
      case 'number': {
        const n = parseQemuNumber(scalarText(value, full));
        if (n === undefined) fail(QmpText.invalidType(full, 'number'));
        return n;
      }
      case 'null':
        // keyval cannot spell null; QEMU's visitor has no keyval variant for it.
        return fail(QmpText.invalidType(full, 'null'));
      case 'any':
        return value;
      case 'object':
        if (!isJsonObject(value)) fail(QmpText.invalidType(full, 'object'));
        return value;
      default: {
        const never: never = type;
        throw new Error(`unknown QMP builtin type ${String(never)}`);
      }
    }
  }
  switch (type.kind) {
    case 'enum': {
      const text = scalarText(value, full);
      if (!type.values.includes(text)) fail(QmpText.badEnumValue(bareName, text));
      return text;
    }
    case 'array':
      if (!Array.isArray(value)) fail(QmpText.invalidType(full, 'array'));
      return value.map((item, i) => visit(type.items, item, `${full}.${i}`, null));
    case 'struct':
      if (!isJsonObject(value)) fail(QmpText.invalidType(full, 'object'));
      return visitStruct(type.members, value, full);
    case 'union':
      if (!isJsonObject(value)) fail(QmpText.invalidType(full, 'object'));
      return visitUnion(type, value, full);
    case 'alternate': {
      const branch = type.branches.find((b) => takes(b, value));
      if (branch === undefined) fail(QmpText.invalidType(bareName, type.name));
      return visit(branch, value, full, bare);
    }
    case 'lazy':
      return visit(type.get(), value, full, bare);
    default: {
      const never: never = type;
      throw new Error(`unknown QMP type ${JSON.stringify(never)}`);
    }
  }
}

/**
 * Whether an alternate branch of type `t` takes `value` in keyval form: QEMU picks the branch by
 * the QType of the value, and keyval only makes strings, objects and lists. A string goes to the
 * `str` or enum branch, never to a number or boolean one.
 */
function takes(t: QmpType, value: unknown): boolean {
  if (typeof t === 'string') {
    if (t === 'any') return true;
    if (typeof value === 'string') return t === 'str';
    if (Array.isArray(value)) return false;
    return t === 'object' && isJsonObject(value);
  }
  switch (t.kind) {
    case 'enum':
      return typeof value === 'string';
    case 'array':
      return Array.isArray(value);
    case 'struct':
    case 'union':
      return isJsonObject(value);
    case 'alternate':
      return t.branches.some((b) => takes(b, value));
    case 'lazy':
      return takes(t.get(), value);
    default: {
      const never: never = t;
      throw new Error(`unknown QMP type ${JSON.stringify(never)}`);
    }
  }
}
