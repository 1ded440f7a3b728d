import { test } from 'node:test';
import assert from 'node:assert/strict';
import { JsonFloat, parseQmpJson } from './json-parse.js';
import { QmpJsonError } from './errors.js';

/** The `desc` a server answers for `input` (QEMU 7.2's text, checked against qemu-system-x86_64). */
function descOf(input: string | Uint8Array): string {
  try {
    parseQmpJson(input);
  } catch (e) {
    assert.ok(e instanceof QmpJsonError);
    assert.equal(e.code, 'PROTOCOL');
    return e.desc;
  }
  assert.fail(`${String(input)} parsed`);
}

test('parseQmpJson() reads what JSON.parse reads', () => {
  for (const text of ['{}', '[]', '{"a":[1,-2.5,1e3,true,false,null,"x"],"b":{"c":{}}}', ' \t\r\n{"k" : "v" } ', '"\\u00e9\\n\\t\\/"', '-0', '0.1']) {
    assert.deepEqual(parseQmpJson(text), JSON.parse(text), text);
  }
});

test('parseQmpJson() accepts single-quoted strings, as QEMU does', () => {
  assert.deepEqual(parseQmpJson("{'execute':'query-version','s':'a\"b\\'c'}"), { execute: 'query-version', s: 'a"b\'c' });
});

test('parseQmpJson() decodes escapes and surrogate pairs', () => {
  assert.equal(parseQmpJson('"\\ud83d\\ude00 \\u0041\\u0000"'), '😀 A\u0000');
  assert.equal(parseQmpJson(new TextEncoder().encode('"Grüße"')), 'Grüße');
});

test('parseQmpJson() keeps __proto__ as an ordinary key', () => {
  const value = parseQmpJson('{"__proto__":{"polluted":true}}') as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.deepEqual(Object.keys(value), ['__proto__']);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test('parseQmpJson() words syntax errors as QEMU 7.2 does', () => {
  // Each text below is what qemu-system-x86_64 7.2 answered for the same input.
  assert.equal(descOf('{"execute": }'), 'JSON parse error, expecting value');
  assert.equal(descOf('{"a":1,}'), 'JSON parse error, expecting value');
  assert.equal(descOf('{"execute" "query-version"}'), 'JSON parse error, missing : in object pair');
  assert.equal(descOf('{"execute":"a", "execute":"b"}'), 'JSON parse error, duplicate key');
  assert.equal(descOf('{"execute":"q\\x"}'), 'JSON parse error, invalid escape sequence in string');
  assert.equal(descOf('{"execute":"query-\\ud800"}'), 'JSON parse error, \\ud800 is not a valid Unicode character');
  assert.equal(descOf('{"execute": garbage}'), "JSON parse error, invalid keyword 'garbage'");
  assert.equal(descOf('{"id": 01}'), "JSON parse error, stray '01'");
  assert.equal(descOf('{"id": %d}'), "JSON parse error, stray '%'");
  assert.equal(descOf('{"id":"a\tb"}'), 'JSON parse error, stray \'"a\t\'');
  assert.equal(descOf('{"id":"\\u12x4"}'), 'JSON parse error, \\u12x4 is not a valid Unicode character');
  assert.equal(descOf('{"id":"\\ude00"}'), 'JSON parse error, \\ude00 is not a valid Unicode character');
  assert.equal(descOf('{"id":"\\ud800\\u0041"}'), 'JSON parse error, \\ud800 is not a valid Unicode character');
  assert.equal(descOf('{1:2}'), 'JSON parse error, key is not a string in object');
  assert.equal(descOf('{"a":1 "b":2}'), 'JSON parse error, expected separator in dict');
  assert.equal(descOf('{"id":[1 2]}'), 'JSON parse error, expected separator in list');
  assert.equal(descOf('{"a":]'), 'JSON parse error, expecting value');
  assert.equal(descOf('{"id":tru}'), "JSON parse error, invalid keyword 'tru'");
});

test('parseQmpJson() words other syntax errors in QEMU style', () => {
  assert.equal(descOf('{"a":'), 'JSON parse error, premature EOI');
  assert.equal(descOf('{} {}'), 'JSON parse error, expecting end of input');
  assert.equal(descOf('{"n":1e400}'), "JSON parse error, number out of range '1e400'");
  assert.equal(descOf(new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x7d])), 'JSON parse error, invalid UTF-8 sequence in string');
});

test('parseQmpJson() stops at its depth limit instead of overflowing the stack', () => {
  assert.equal(descOf('['.repeat(2000) + ']'.repeat(2000)), 'JSON parse error, nesting depth limit exceeded');
  assert.deepEqual(parseQmpJson('[[1]]', { maxDepth: 2 }), [[1]]);
  assert.throws(() => parseQmpJson('[[[1]]]', { maxDepth: 2 }), QmpJsonError);
});

test('parseQmpJson() with preserveNumberKinds keeps what QEMU tells apart', () => {
  const p = (text: string): unknown => parseQmpJson(text, { preserveNumberKinds: true });
  assert.equal(p('42'), 42);
  assert.equal(p('1.5'), 1.5);
  assert.deepEqual(p('1.0'), new JsonFloat(1));
  assert.deepEqual(p('1e3'), new JsonFloat(1000));
  assert.equal(p('18446744073709551615'), 18446744073709551615n);
  assert.equal(p('-9223372036854775808'), -9223372036854775808n);
  // Past uint64 QEMU holds a double.
  assert.deepEqual(p('18446744073709551616'), new JsonFloat(18446744073709551616));
  // Without the option, plain numbers.
  assert.equal(parseQmpJson('18446744073709551615'), 18446744073709551615);
  assert.equal(parseQmpJson('1.0'), 1);
});
