import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QmpSplitter } from './splitter.js';
import { QmpFramingError } from './errors.js';
import { bytes, framesEverySplit, texts } from './testing/split.js';

test('QmpSplitter yields each object of a stream, whatever the chunking', () => {
  const messages = [
    '{"execute": "qmp_capabilities"}',
    '{"execute":"query-version","id":{"nested":[1,{"a":[]}]}}',
    '{"return": {}, "id": 7}',
  ];
  const frames = framesEverySplit(bytes(messages.join('\r\n') + '\r\n'));
  assert.deepEqual(texts(frames), messages);
  assert.equal(frames.length, 3);
});

test('QmpSplitter needs no separator between objects, as QEMU does', () => {
  const frames = framesEverySplit(bytes('{"a":1}{"b":2}  \t\n{"c":3}'));
  assert.deepEqual(texts(frames), ['{"a":1}', '{"b":2}', '{"c":3}']);
});

test('QmpSplitter ignores braces, brackets and quotes inside strings', () => {
  const messages = [
    '{"execute":"x","arguments":{"s":"}}]]{{["}}',
    '{"s":"a \\" } still in the string"}',
    '{"s":"backslash at the end \\\\"}',
    "{'single':'quotes with } and \" inside','esc':'\\''}",
    '{"s":"\' is not a quote here }"}',
    '{"u":"é ✓ 😀 \\u00e9 \\ud83d\\ude00"}',
  ];
  const frames = framesEverySplit(bytes(messages.join('')));
  assert.deepEqual(texts(frames), messages);
});

test('QmpSplitter keeps multi-byte UTF-8 characters whole across cuts', () => {
  const message = '{"name":"Grüße 😀"}';
  const frames = framesEverySplit(bytes(message));
  assert.deepEqual(texts(frames), [message]);
});

test('QmpSplitter ends a message at a mismatched closer and leaves it to the parser', () => {
  const frames = framesEverySplit(bytes('{"a":]{"b":1}'));
  assert.deepEqual(texts(frames), ['{"a":]', '{"b":1}']);
});

test('QmpSplitter reports a stray byte between messages and ignores everything after it', () => {
  const frames = framesEverySplit(bytes('{"a":1} garbage {"b":2}'));
  assert.deepEqual(texts(frames), ['{"a":1}']);
  const last = frames.at(-1)!;
  assert.equal(last.type, 'error');
  assert.ok(last.type === 'error' && last.error instanceof QmpFramingError);
  assert.equal(last.error.problem, 'junk');
  assert.equal(last.error.code, 'PROTOCOL');
  assert.equal(last.error.desc, "JSON parse error, stray 'g'");
});

test('QmpSplitter words junk between messages like QEMU where QEMU has one text', () => {
  const descOf = (input: string | Uint8Array): string => {
    const frames = new QmpSplitter().feed(typeof input === 'string' ? bytes(input) : input);
    const last = frames.at(-1)!;
    assert.equal(last.type, 'error');
    return last.type === 'error' ? last.error.desc : '';
  };
  assert.equal(descOf('}'), 'JSON parse error, expecting value');
  assert.equal(descOf(']'), 'JSON parse error, expecting value');
  assert.equal(descOf('[1,2]'), 'QMP input must be a JSON object');
  assert.equal(descOf('"str"'), 'QMP input must be a JSON object');
  assert.equal(descOf('1'), 'QMP input must be a JSON object');
  assert.equal(descOf('null'), 'QMP input must be a JSON object');
  assert.equal(descOf('%'), "JSON parse error, stray '%'");
  assert.equal(descOf(new Uint8Array([0xff])), "JSON parse error, stray '\\xff'");
});

test('QmpSplitter rejects a message past the size limit without holding more than the limit', () => {
  const limit = 64;
  const ok = `{"s":"${'a'.repeat(limit - 8)}"}`;
  assert.equal(ok.length, limit);
  assert.deepEqual(texts(framesEverySplit(bytes(ok), { maxMessageBytes: limit })), [ok]);

  const tooBig = `{"s":"${'a'.repeat(limit - 7)}"}`;
  const frames = framesEverySplit(bytes(`{"first":1}${tooBig}{"never":1}`), { maxMessageBytes: limit });
  assert.deepEqual(texts(frames), ['{"first":1}']);
  const last = frames.at(-1)!;
  assert.ok(last.type === 'error' && last.error.problem === 'size');
  assert.equal(last.error.desc, 'JSON token size limit exceeded');

  // A huge input in small chunks: the splitter never buffers past the limit.
  const s = new QmpSplitter({ maxMessageBytes: 1024 });
  assert.deepEqual(s.feed(bytes('{"s":"')), []);
  let peak = 0;
  let error: unknown;
  const chunk = bytes('x'.repeat(100));
  for (let i = 0; i < 1000 && error === undefined; i++) {
    for (const f of s.feed(chunk)) if (f.type === 'error') error = f.error;
    peak = Math.max(peak, s.bufferedBytes);
  }
  assert.ok(error instanceof QmpFramingError);
  assert.ok(peak <= 1024, `buffered ${peak} bytes`);
  assert.equal(s.bufferedBytes, 0);
  assert.ok(s.failed);
  assert.deepEqual(s.feed(bytes('{"a":1}')), [], 'a failed splitter ignores input');
});

test('QmpSplitter rejects nesting past the depth limit at once', () => {
  const ok = '{"a":[[{"b":[]}]]}'; // depth 5
  assert.deepEqual(texts(framesEverySplit(bytes(ok), { maxDepth: 5 })), [ok]);
  const frames = framesEverySplit(bytes('{"x":1}{"a":[[[[[[1]]]]]]}'), { maxDepth: 5 });
  assert.deepEqual(texts(frames), ['{"x":1}']);
  const last = frames.at(-1)!;
  assert.ok(last.type === 'error' && last.error.problem === 'depth');
  assert.equal(last.error.desc, 'JSON nesting depth limit exceeded');
  // Depth counts brackets inside strings not at all.
  assert.deepEqual(texts(framesEverySplit(bytes('{"a":"[[[[[[[[[[{{{{{{"}'), { maxDepth: 1 })), ['{"a":"[[[[[[[[[[{{{{{{"}']);
});

test('QmpSplitter says whether it is between messages', () => {
  const s = new QmpSplitter();
  assert.ok(s.idle);
  s.feed(bytes('{"a":'));
  assert.ok(!s.idle);
  assert.equal(s.bufferedBytes, 5);
  s.feed(bytes('1}  '));
  assert.ok(s.idle);
});

test('QmpSplitter refuses limits that make no sense', () => {
  assert.throws(() => new QmpSplitter({ maxMessageBytes: 1 }), { code: 'INVALID_ARGUMENT' });
  assert.throws(() => new QmpSplitter({ maxDepth: 0 }), { code: 'INVALID_ARGUMENT' });
});
