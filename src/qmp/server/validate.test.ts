import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QmpError } from '../protocol/errors.js';
import { parseQmpJson } from '../protocol/json-parse.js';
import { type JsonObject } from '../protocol/messages.js';
import { qmpAlternate, qmpArray, qmpEnum, qmpLazy, qmpStruct, qmpUnion, type QmpArgsOf, type QmpArgsSchema, type QmpType } from './schema.js';
import { validateArguments } from './validate.js';
import { blockdevOptions } from './testing/qemu-schemas.js';

/** Validates the JSON text `args` as the server would parse it. */
function check(schema: QmpArgsSchema, args: string): JsonObject {
  return validateArguments(schema, parseQmpJson(args, { preserveNumberKinds: true }) as JsonObject);
}

function descOf(schema: QmpArgsSchema, args: string): string {
  try {
    check(schema, args);
  } catch (e) {
    assert.ok(e instanceof QmpError, String(e));
    assert.equal(e.errorClass, 'GenericError');
    return e.desc;
  }
  assert.fail(`${args} passed`);
}

test('validateArguments() returns the declared members with plain numbers and leaves absent options out', () => {
  const schema = { node: 'str', '*granularity': 'uint32', '*persistent': 'bool', '*n': 'number', '*big': 'uint64' } as const;
  assert.deepEqual(check(schema, '{"node":"a"}'), { node: 'a' });
  assert.deepEqual(check(schema, '{"persistent":false,"node":"a","granularity":65536,"n":1.0,"big":18446744073709551615}'), {
    node: 'a',
    granularity: 65536,
    persistent: false,
    n: 1,
    big: 18446744073709551615,
  });
});

test('validateArguments() wraps negative values of unsigned types as QEMU does', () => {
  // QEMU accepts a negative int64 for uint64 "for backward compatibility" (qobject-input-visitor.c).
  assert.deepEqual(check({ size: 'size' }, '{"size":-1}'), { size: 2 ** 64 - 1 });
  assert.equal(descOf({ n: 'uint8' }, '{"n":-1}'), "Parameter 'n' expects uint8_t");
  assert.equal(descOf({ n: 'uint16' }, '{"n":65536}'), "Parameter 'n' expects uint16_t");
  assert.deepEqual(check({ n: 'uint16' }, '{"n":65535}'), { n: 65535 });
});

test('validateArguments() checks signed widths after the int64 check', () => {
  assert.equal(descOf({ n: 'int8' }, '{"n":128}'), "Parameter 'n' expects int8_t");
  assert.equal(descOf({ n: 'int32' }, '{"n":-2147483649}'), "Parameter 'n' expects int32_t");
  assert.equal(descOf({ n: 'int32' }, '{"n":"1"}'), "Invalid parameter type for 'n', expected: integer");
  assert.equal(descOf({ n: 'int' }, '{"n":9223372036854775808}'), "Invalid parameter type for 'n', expected: integer");
  assert.deepEqual(check({ n: 'int' }, '{"n":-9223372036854775808}'), { n: -9223372036854775808 });
  assert.equal(descOf({ a: qmpArray('int16') }, '{"a":[1,40000]}'), "Parameter 'null' expects int16_t");
});

test('validateArguments() words number, null, object and any like QEMU', () => {
  assert.equal(descOf({ x: 'number' }, '{"x":"1"}'), "Invalid parameter type for 'x', expected: number");
  assert.deepEqual(check({ x: 'number' }, '{"x":12345678901234567890}'), { x: 12345678901234567890 });
  assert.equal(descOf({ x: 'null' }, '{"x":0}'), "Invalid parameter type for 'x', expected: null");
  assert.equal(descOf({ x: 'object' }, '{"x":[]}'), "Invalid parameter type for 'x', expected: object");
  assert.deepEqual(check({ x: 'object', y: 'any' }, '{"x":{"a":1.0},"y":[2.0,{"b":18446744073709551615}]}'), {
    x: { a: 1 },
    y: [2, { b: 18446744073709551615 }],
  });
});

test('validateArguments() picks an alternate branch by the JSON kind of the value', () => {
  const alt = qmpAlternate('StrOrIntOrNull', 'str', 'int', 'null');
  assert.deepEqual(check({ v: alt }, '{"v":"a"}'), { v: 'a' });
  assert.deepEqual(check({ v: alt }, '{"v":3}'), { v: 3 });
  assert.deepEqual(check({ v: alt }, '{"v":null}'), { v: null });
  // A float reaches the int branch and fails there, as in QEMU.
  assert.equal(descOf({ v: alt }, '{"v":1.5}'), "Invalid parameter type for 'v', expected: integer");
  assert.equal(descOf({ v: alt }, '{"v":true}'), "Invalid parameter type for 'v', expected: StrOrIntOrNull");
  assert.equal(descOf({ s: qmpStruct({ v: alt }) }, '{"s":{"v":[]}}'), "Invalid parameter type for 'v', expected: StrOrIntOrNull");
});

test('validateArguments() follows unions and lazy (recursive) types', () => {
  assert.deepEqual(check(blockdevOptions, '{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"},"backing":null,"node-name":"d0"}'), {
    driver: 'qcow2',
    'node-name': 'd0',
    file: { driver: 'file', filename: 'a.qcow2' },
    backing: null,
  });
  const list: QmpType = qmpStruct({ value: 'int', '*next': qmpLazy((): QmpType => list) });
  assert.equal(descOf({ l: list }, '{"l":{"value":1,"next":{"value":2,"next":{"value":"x"}}}}'), "Invalid parameter type for 'l.next.next.value', expected: integer");
  // A discriminator value without a branch adds no members.
  const u = qmpUnion('t', { t: qmpEnum(['a', 'b']) }, { a: { x: 'int' } });
  assert.deepEqual(check(u, '{"t":"b"}'), { t: 'b' });
  assert.equal(descOf(u, '{"t":"b","x":1}'), "Parameter 'x' is unexpected");
  assert.equal(descOf(u, '{"t":"a"}'), "Parameter 'x' is missing");
});

test('validateArguments() reports members in declared order, then unexpected ones', () => {
  const schema = { a: 'str', b: 'int' } as const;
  assert.equal(descOf(schema, '{"zz":1,"b":"x"}'), "Parameter 'a' is missing");
  assert.equal(descOf(schema, '{"b":"x","a":1}'), "Invalid parameter type for 'a', expected: string");
  assert.equal(descOf(schema, '{"b":1,"a":"x","c":1}'), "Parameter 'c' is unexpected");
  assert.equal(descOf({ s: qmpStruct({}) }, '{"s":{"q":1}}'), "Parameter 's.q' is unexpected");
});

test('the handler argument type follows from the schema', () => {
  const schema = { node: 'str', '*granularity': 'uint32', mode: qmpEnum(['a', 'b']), list: qmpArray(qmpStruct({ x: 'bool' })) } as const;
  const args: QmpArgsOf<typeof schema> = { node: 'n', mode: 'a', list: [{ x: true }] };
  const node: string = args.node;
  const granularity: number | undefined = args.granularity;
  // @ts-expect-error -- 'c' is not a value of the enum
  const bad: QmpArgsOf<typeof schema> = { node: 'n', mode: 'c', list: [] };
  assert.ok(node === 'n' && granularity === undefined && bad !== undefined);
});
