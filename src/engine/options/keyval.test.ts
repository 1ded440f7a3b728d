import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { type JsonObject } from '../../qmp/protocol/messages.js';
import { KeyvalError } from './errors.js';
import { formatKeyval } from './keyval-format.js';
import { parseKeyval, type KeyvalOptions } from './keyval.js';

function descOf(text: string, options?: KeyvalOptions): string {
  try {
    parseKeyval(text, options);
  } catch (e) {
    assert.ok(e instanceof KeyvalError, String(e));
    assert.equal(e.code, 'INVALID_ARGUMENT');
    return e.desc;
  }
  assert.fail(`${JSON.stringify(text)} parsed`);
}

test('parseKeyval() builds nested objects from dotted keys and arrays from indexes', () => {
  assert.deepEqual(parseKeyval('driver=qcow2,node-name=disk0,file.driver=file,file.filename=/x.qcow2'), {
    driver: 'qcow2',
    'node-name': 'disk0',
    file: { driver: 'file', filename: '/x.qcow2' },
  });
  assert.deepEqual(parseKeyval('a.1.x=b,a.0=a,a.1.y.0=c'), { a: ['a', { x: 'b', y: ['c'] }] });
  assert.deepEqual(parseKeyval('a.10=k,a.9=j,a.8=i,a.7=h,a.6=g,a.5=f,a.4=e,a.3=d,a.2=c,a.1=b,a.0=a').a, [...'abcdefghijk']);
});

test('parseKeyval() keeps every value a string, with ,, for a comma and the last value winning', () => {
  assert.deepEqual(parseKeyval('a=1,b=,c=x=y,d=,,,e=on'), { a: '1', b: '', c: 'x=y', d: ',', e: 'on' });
  assert.deepEqual(parseKeyval('f=/a,,b,,,,c'), { f: '/a,b,,c' });
  assert.deepEqual(parseKeyval('a=1,a=2,'), { a: '2' });
  assert.deepEqual(parseKeyval(''), {});
});

test('parseKeyval() takes a first value without key as the implied key', () => {
  const implied = { impliedKey: 'driver' };
  assert.deepEqual(parseKeyval('qcow2,file=x', implied), { driver: 'qcow2', file: 'x' });
  assert.deepEqual(parseKeyval('qcow2', implied), { driver: 'qcow2' });
  // Only the first parameter, and its value cannot escape commas.
  assert.equal(descOf('a=1,qcow2', implied), "Expected '=' after parameter 'qcow2'");
  assert.equal(descOf('qcow2,,x', implied), "Invalid parameter ''");
  assert.equal(descOf('qcow2'), "Expected '=' after parameter 'qcow2'");
});

test('parseKeyval() accepts QAPI names and downstream __RFQDN_ prefixes as keys, nothing else', () => {
  assert.deepEqual(parseKeyval('a_b-c9=1,__com.redhat_x=2,___y=3,B=4'), { 'a_b-c9': '1', '__com.redhat_x': '2', ___y: '3', B: '4' });
  for (const key of ['_a', '__a.b', '9a', 'a b', 'é', 'a.é', 'a.0b', 'a..b', '.a', 'a.', '__proto__'])
    assert.equal(descOf(`${key}=1`), `Invalid parameter '${key}'`, key);
  assert.equal(descOf('=1'), "Invalid parameter ''");
});

test('parseKeyval() limits key fragments to 127 characters', () => {
  const a127 = 'a'.repeat(127);
  const a128 = 'a'.repeat(128);
  assert.deepEqual(Object.keys(parseKeyval(`${a127}.${a127}=1`)), [a127]);
  assert.equal(descOf(`${a128}=1`), `Parameter '${a128}' is too long`);
  assert.equal(descOf(`x.${a128}=1`), `Parameter fragment '${a128}' is too long`);
  assert.equal(descOf(`${a128}.x=1`), `Parameter fragment '${a128}' is too long`);
  assert.equal(descOf(`x.${'1'.repeat(128)}=1`), `Parameter fragment '${'1'.repeat(128)}' is too long`);
});

test('parseKeyval() reports keys used both as a value and as an object', () => {
  assert.equal(descOf('a=1,a.b=2'), "Parameters 'a.*' used inconsistently");
  assert.equal(descOf('a.b=2,a=1'), "Parameters 'a.*' used inconsistently");
  assert.equal(descOf('a.b.c=1,a.b=2'), "Parameters 'a.b.*' used inconsistently");
  assert.equal(descOf('x.a.0=1,x.a.y=2'), "Parameters 'x.a.*' used inconsistently");
});

test('parseKeyval() needs list indexes without gaps', () => {
  assert.equal(descOf('a.1=x'), "Parameter 'a.0' missing");
  assert.equal(descOf('a.0=x,a.2=y'), "Parameter 'a.1' missing");
  assert.equal(descOf('a.5=x'), "Parameter 'a.0' missing");
  assert.equal(descOf('a.b.0=1,a.b.2=1'), "Parameter 'a.b.1' missing");
  assert.equal(descOf('a.0=x,a.99999999999999999999=y'), "Parameter 'a.1' missing");
  // Leading zeros name the same index as QEMU's strtoul reads it.
  assert.deepEqual(parseKeyval('a.00=x,a.001=y'), { a: ['x', 'y'] });
});

test('parseKeyval() refuses help, after every syntax error but before list problems', () => {
  for (const text of ['help', '?', 'a=1,help', 'a=1,?,b=2', 'help,a.1=x']) assert.equal(descOf(text), 'Help is not available for this option', text);
  assert.equal(descOf('help,a..b=1'), "Invalid parameter 'a..b'");
  assert.deepEqual(parseKeyval('help=1'), { help: '1' });
  assert.equal(descOf('a=1,helpx'), "Expected '=' after parameter 'helpx'");
  assert.equal(descOf('a=1,?x'), "Invalid parameter '?x'");
});

test('parseKeyval() accepts a trailing comma but no empty parameter', () => {
  assert.deepEqual(parseKeyval('a=1,'), { a: '1' });
  assert.equal(descOf(','), "Invalid parameter ''");
  assert.deepEqual(parseKeyval('a=1,,,b=2'), { a: '1,', b: '2' });
  assert.equal(descOf('a'), "Expected '=' after parameter 'a'");
  assert.equal(descOf('a=1,b'), "Expected '=' after parameter 'b'");
});

/** JSON objects of strings that keyval can write: QAPI-name keys, no empty objects or arrays below the top. */
const name = fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9_-]{0,11}$/);
const { tree } = fc.letrec((tie) => ({
  tree: fc.dictionary(name, tie('node'), { minKeys: 0, maxKeys: 4, noNullPrototype: true }),
  node: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.string({ unit: fc.constantFrom('a', ',', '=', '.', ' ', 'é', '0', '\\', "'", '"') }),
    fc.string(),
    fc.dictionary(name, tie('node'), { minKeys: 1, maxKeys: 3, noNullPrototype: true }),
    fc.array(tie('node'), { minLength: 1, maxLength: 12 }),
  ),
}));

test('parseKeyval() reads back what formatKeyval() writes (property)', () => {
  fc.assert(
    fc.property(tree, (options) => {
      assert.deepEqual(parseKeyval(formatKeyval(options as JsonObject)), options);
    }),
    { numRuns: 500 },
  );
});

test('parseKeyval() fails only with a KeyvalError, whatever the text (property)', () => {
  const text = fc.string({ unit: fc.constantFrom('a', 'b', '0', '1', '.', ',', '=', '?', '_', 'h', 'e', 'l', 'p', '-', 'é'), maxLength: 30 });
  fc.assert(
    fc.property(text, fc.boolean(), (t, implied) => {
      try {
        const result = parseKeyval(t, implied ? { impliedKey: 'driver' } : {});
        assert.equal(typeof result, 'object');
      } catch (e) {
        assert.ok(e instanceof KeyvalError, String(e));
      }
    }),
    { numRuns: 2000 },
  );
});
