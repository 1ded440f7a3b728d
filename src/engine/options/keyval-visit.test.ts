import { test } from 'node:test';
import assert from 'node:assert/strict';
import { qmpAlternate, qmpArray, qmpEnum, qmpStruct, type QmpArgsSchema } from '../../qmp/server/schema.js';
import { KeyvalError } from './errors.js';
import { visitKeyval } from './keyval-visit.js';
import { parseKeyval } from './keyval.js';

function check(schema: QmpArgsSchema, text: string): unknown {
  return visitKeyval(schema, parseKeyval(text));
}

function descOf(schema: QmpArgsSchema, text: string): string {
  try {
    check(schema, text);
  } catch (e) {
    assert.ok(e instanceof KeyvalError, String(e));
    return e.desc;
  }
  assert.fail(`${text} passed`);
}

test('visitKeyval() converts sizes with suffixes and words failures as QEMU does', () => {
  // Texts of qemu-storage-daemon 7.2 --object memory-backend-ram,size=... (a keyval visitor).
  assert.deepEqual(check({ size: 'size' }, 'size=1.5k'), { size: 1536 });
  assert.equal(descOf({ size: 'size' }, 'size=1x'), "Parameter 'size' expects size");
  assert.equal(descOf({ size: 'size' }, 'size=-1'), "Parameter 'size' expects size");
  assert.equal(descOf({ s: qmpStruct({ size: 'size' }) }, 's.size=1.5'), "Parameter 's.size' expects size");
});

test('visitKeyval() checks fixed widths after the 64-bit conversion, naming the bare member', () => {
  assert.deepEqual(check({ a: qmpArray('uint8') }, 'a.0=255,a.1=0x0'), { a: [255, 0] });
  assert.equal(descOf({ a: qmpArray('uint8') }, 'a.0=256'), "Parameter 'null' expects uint8_t");
  assert.equal(descOf({ s: qmpStruct({ n: 'int16' }) }, 's.n=-32769'), "Parameter 'n' expects int16_t");
  assert.equal(descOf({ s: qmpStruct({ n: 'int16' }) }, 's.n=x'), "Parameter 's.n' expects integer");
});

test('visitKeyval() reads numbers with strtod and takes any value as is', () => {
  assert.deepEqual(check({ x: 'number', y: 'any', z: 'object' }, 'x=2.5e1,y.0=a,z.b=c'), { x: 25, y: ['a'], z: { b: 'c' } });
  assert.equal(descOf({ x: 'number' }, 'x=abc'), "Invalid parameter type for 'x', expected: number");
  assert.equal(descOf({ z: 'object' }, 'z=abc'), "Invalid parameter type for 'z', expected: object");
});

test('visitKeyval() sends strings to the string or enum branch of an alternate, never to null', () => {
  const alt = qmpAlternate('StrOrNull', 'str', 'null');
  assert.deepEqual(check({ v: alt }, 'v=null'), { v: 'null' });
  const noString = qmpAlternate('IntOrNull', 'int', 'null');
  assert.equal(descOf({ v: noString }, 'v=1'), "Invalid parameter type for 'v', expected: IntOrNull");
  const modes = qmpAlternate('Modes', qmpStruct({ '*x': 'bool' }), qmpEnum(['a', 'b']));
  assert.deepEqual(check({ v: modes }, 'v=a'), { v: 'a' });
  assert.deepEqual(check({ v: modes }, 'v.x=on'), { v: { x: true } });
  assert.equal(descOf({ v: modes }, 'v.0=a'), "Invalid parameter type for 'v', expected: Modes");
  assert.equal(descOf({ v: 'null' }, 'v='), "Invalid parameter type for 'v', expected: null");
});
