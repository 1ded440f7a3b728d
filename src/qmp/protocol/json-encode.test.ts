import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeQmpJson } from './json-encode.js';
import { JsonFloat, parseQmpJson } from './json-parse.js';

test('encodeQmpJson() writes JSON the way QEMU does', () => {
  // Spacing and escapes as in QEMU 7.2's replies ({"return": {}, "id": 7}; "\u00E9").
  assert.equal(encodeQmpJson({ return: {}, id: 7 }), '{"return": {}, "id": 7}');
  assert.equal(encodeQmpJson({ a: [1, 2, []], b: null, c: true }), '{"a": [1, 2, []], "b": null, "c": true}');
  assert.equal(encodeQmpJson('query-é'), '"query-\\u00E9"');
  assert.equal(encodeQmpJson('a/bA\u00e9😀\u007f'), '"a/bA\\u00E9\\uD83D\\uDE00\\u007F"');
  assert.equal(encodeQmpJson('"\\\b\f\n\r\t\u0001'), '"\\"\\\\\\b\\f\\n\\r\\t\\u0001"');
});

test('encodeQmpJson() writes bigint exactly and JsonFloat as its number', () => {
  assert.equal(encodeQmpJson({ id: 18446744073709551615n }), '{"id": 18446744073709551615}');
  assert.equal(encodeQmpJson(new JsonFloat(1500)), '1500');
});

test('encodeQmpJson() leaves out undefined members and calls toJSON', () => {
  assert.equal(encodeQmpJson({ a: undefined, b: 1 }), '{"b": 1}');
  assert.equal(encodeQmpJson([undefined]), '[null]');
  assert.equal(encodeQmpJson({ d: { toJSON: () => 'x' } }), '{"d": "x"}');
});

test('encodeQmpJson() refuses values that are not JSON', () => {
  assert.throws(() => encodeQmpJson(Number.NaN), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => encodeQmpJson({ f: () => 1 }), { code: 'INVALID_ARGUMENT' });
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.throws(() => encodeQmpJson(cycle), { code: 'INVALID_ARGUMENT' });
});

test('parseQmpJson(encodeQmpJson(x)) is x for any JSON value (-0 reads back as 0, as with JSON.stringify)', () => {
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      const text = encodeQmpJson(value);
      assert.match(text, /^[\x20-\x7e]*$/, 'the encoding is printable ASCII');
      const expected: unknown = JSON.parse(JSON.stringify(value));
      assert.deepEqual(parseQmpJson(text), expected);
      assert.deepEqual(JSON.parse(text), expected);
    }),
    { numRuns: 500 },
  );
});
