/**
 * Checks command arguments against a schema the way QEMU 7.2's QObject input visitor does
 * (`qapi/qobject-input-visitor.c`, `qapi/qapi-visit-core.c`), with the same texts:
 * - members are visited in declared order; the first problem wins; unexpected members are
 *   reported after all declared ones ("Parameter 'foo' is unexpected");
 * - paths are full (`actions[0].data.name`) in "is missing", "is unexpected", "Invalid parameter
 *   type" and "expects uint64", but bare (the member name, or `null` for an array element) in
 *   the enum text and the range texts of fixed-width integers ("expects uint32_t") and alternates;
 * - `int` accepts integers in int64 range, `uint64`/`size` also accept negative int64 values
 *   (QEMU wraps them, "for backward compatibility"), floats are never integers (`1.0` fails).
 * One difference is known: with several unexpected members QEMU names whichever comes first in
 * its hash table, bitback the first in input order.
 *
 * Input is a value from `parseQmpJson(..., {preserveNumberKinds: true})`; plain JSON values work
 * too. The result is a fresh value with every number a plain `number` (a `bigint` beyond 2^53
 * is rounded; the range checks use the exact value).
 */
import { QmpText } from '../protocol/constants.js';
import { QmpError } from '../protocol/errors.js';
import { JsonFloat } from '../protocol/json-parse.js';
import { isJsonObject } from '../protocol/decode.js';
import { type JsonObject } from '../protocol/messages.js';
import { type QmpArgsSchema, type QmpMembers, type QmpType, type QmpUnionType } from './schema.js';
import { walkArguments, walkStruct, walkUnion, type SchemaWalker } from './schema-walk.js';

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

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
  throw new QmpError('GenericError', desc);
}

/**
 * Checks `args` (the `arguments` object of a command, `{}` when absent) against `schema` and
 * returns the arguments as the handler should get them.
 *
 * @throws QmpError class GenericError with QEMU's text for the first problem
 */
export function validateArguments(schema: QmpArgsSchema, args: JsonObject): JsonObject {
  return walkArguments(schema, args, walker);
}

const walker: SchemaWalker = { visit, fail };

function visitStruct(members: QmpMembers, obj: JsonObject, prefix: string): JsonObject {
  return walkStruct(members, obj, prefix, walker);
}

function visitUnion(union: QmpUnionType, obj: JsonObject, prefix: string): JsonObject {
  return walkUnion(union, obj, prefix, walker);
}


/** The exact integer in `value`, or undefined when QEMU would not see an integer. */
function exactInteger(value: unknown): bigint | undefined {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value);
  return undefined;
}

/**
 * Visits one value. `full` is the path used by most texts; `bare` is the member name, or null
 * for an array element, used by the enum, fixed-width and alternate texts.
 */
function visit(type: QmpType, value: unknown, full: string, bare: string | null): unknown {
  const bareName = bare ?? 'null';
  if (typeof type === 'string') {
    switch (type) {
      case 'str':
        if (typeof value !== 'string') fail(QmpText.invalidType(full, 'string'));
        return value;
      case 'bool':
        if (typeof value !== 'boolean') fail(QmpText.invalidType(full, 'boolean'));
        return value;
      case 'null':
        if (value !== null) fail(QmpText.invalidType(full, 'null'));
        return null;
      case 'int':
      case 'int64':
      case 'int8':
      case 'int16':
      case 'int32': {
        const n = exactInteger(value);
        if (n === undefined || n < INT64_MIN || n > INT64_MAX) fail(QmpText.invalidType(full, 'integer'));
        const range = SIGNED[type];
        if (range !== undefined && (n < range[0] || n > range[1])) fail(QmpText.expects(bareName, range[2]));
        return Number(n);
      }
      case 'uint64':
      case 'size':
      case 'uint8':
      case 'uint16':
      case 'uint32': {
        let n = exactInteger(value);
        if (n === undefined || n < INT64_MIN || n > UINT64_MAX) fail(QmpText.expects(full, 'uint64'));
        if (n < 0n) n += 2n ** 64n;
        const range = UNSIGNED[type];
        if (range !== undefined && n > range[0]) fail(QmpText.expects(bareName, range[1]));
        return Number(n);
      }
      case 'number':
        if (typeof value === 'number') return value;
        if (typeof value === 'bigint') return Number(value);
        if (value instanceof JsonFloat) return value.value;
        return fail(QmpText.invalidType(full, 'number'));
      case 'any':
        return plain(value);
      case 'object':
        if (!isJsonObject(value)) fail(QmpText.invalidType(full, 'object'));
        return plain(value);
      default: {
        const never: never = type;
        throw new Error(`unknown QMP builtin type ${String(never)}`);
      }
    }
  }
  switch (type.kind) {
    case 'enum':
      if (typeof value !== 'string') fail(QmpText.invalidType(full, 'string'));
      if (!type.values.includes(value)) fail(QmpText.badEnumValue(bareName, value));
      return value;
    case 'array':
      if (!Array.isArray(value)) fail(QmpText.invalidType(full, 'array'));
      return value.map((item, i) => visit(type.items, item, `${full}[${i}]`, null));
    case 'struct':
      if (!isJsonObject(value)) fail(QmpText.invalidType(full, 'object'));
      return visitStruct(type.members, value, full);
    case 'union':
      if (!isJsonObject(value)) fail(QmpText.invalidType(full, 'object'));
      return visitUnion(type, value, full);
    case 'alternate': {
      const kind = jsonKind(value);
      const branch = type.branches.find((b) => accepts(b, kind));
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

type JsonKind = 'string' | 'number' | 'boolean' | 'null' | 'object' | 'array';

function jsonKind(value: unknown): JsonKind {
  if (value === null) return 'null';
  if (typeof value === 'string') return 'string';
  if (typeof value === 'boolean') return 'boolean';
  if (typeof value === 'number' || typeof value === 'bigint' || value instanceof JsonFloat) return 'number';
  if (Array.isArray(value)) return 'array';
  return 'object';
}

/** Whether an alternate branch of type `t` takes a JSON value of `kind` (QEMU: by QType). */
function accepts(t: QmpType, kind: JsonKind): boolean {
  if (typeof t !== 'string') {
    switch (t.kind) {
      case 'enum':
        return kind === 'string';
      case 'array':
        return kind === 'array';
      case 'struct':
      case 'union':
        return kind === 'object';
      case 'alternate':
        return t.branches.some((b) => accepts(b, kind));
      case 'lazy':
        return accepts(t.get(), kind);
      default: {
        const never: never = t;
        throw new Error(`unknown QMP type ${JSON.stringify(never)}`);
      }
    }
  }
  switch (t) {
    case 'str':
      return kind === 'string';
    case 'bool':
      return kind === 'boolean';
    case 'null':
      return kind === 'null';
    case 'object':
      return kind === 'object';
    case 'any':
      return true;
    default:
      return kind === 'number';
  }
}

/** A deep copy of a parsed value with every number a plain `number`. */
export function plain(value: unknown): unknown {
  if (typeof value === 'bigint') return Number(value);
  if (value instanceof JsonFloat) return value.value;
  if (Array.isArray(value)) return value.map(plain);
  if (isJsonObject(value)) {
    const out: JsonObject = {};
    for (const [k, v] of Object.entries(value)) Object.defineProperty(out, k, { value: plain(v), enumerable: true, writable: true, configurable: true });
    return out;
  }
  return value;
}
