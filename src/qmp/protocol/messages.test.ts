import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { commandId, decodeCommand, decodeServerMessage } from './decode.js';
import { encodeCommand, encodeError, encodeEvent, encodeGreeting, encodeReturn, encodeServerMessage } from './encode.js';
import { QmpError, QmpProtocolError } from './errors.js';
import { parseQmpJson } from './json-parse.js';
import { type JsonObject, type QmpServerMessage } from './messages.js';
import { QmpSplitter } from './splitter.js';
import { framesEverySplit } from './testing/split.js';

const text = (b: Uint8Array): string => new TextDecoder().decode(b);

test('the encoders write what QEMU 7.2 writes, ending in \\r\\n', () => {
  // Byte-for-byte what qemu-system-x86_64 7.2.22 sent (its package text aside).
  assert.equal(
    text(encodeGreeting({ version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'Debian 1:7.2+dfsg-7+deb12u18+b3' }, capabilities: ['oob'] })),
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n',
  );
  assert.equal(text(encodeReturn({})), '{"return": {}}\r\n');
  assert.equal(text(encodeReturn({}, [1, { a: null }])), '{"return": {}, "id": [1, {"a": null}]}\r\n');
  assert.equal(text(encodeReturn({}, null)), '{"return": {}, "id": null}\r\n');
  assert.equal(
    text(encodeError({ class: 'GenericError', desc: "Parameter 'node' is missing" })),
    '{"error": {"class": "GenericError", "desc": "Parameter \'node\' is missing"}}\r\n',
  );
  assert.equal(
    text(encodeEvent({ event: 'STOP', timestamp: { seconds: 1795326133, microseconds: 954959 } })),
    '{"timestamp": {"seconds": 1795326133, "microseconds": 954959}, "event": "STOP"}\r\n',
  );
  assert.equal(text(encodeCommand({ execute: 'query-version', id: 1 })), '{"execute": "query-version", "id": 1}\r\n');
  assert.equal(text(encodeCommand({ execute: 'x', arguments: { a: 1 }, oob: true })), '{"exec-oob": "x", "arguments": {"a": 1}}\r\n');
});

const jsonObject = fc.dictionary(fc.string(), fc.jsonValue()) as fc.Arbitrary<JsonObject>;
const id = fc.option(fc.jsonValue(), { nil: undefined });
const nat = fc.nat({ max: 2 ** 31 });
const serverMessage: fc.Arbitrary<QmpServerMessage> = fc.oneof(
  fc.record({
    type: fc.constant('greeting' as const),
    greeting: fc.record({
      version: fc.record({ qemu: fc.record({ major: nat, minor: nat, micro: nat }), package: fc.string() }),
      capabilities: fc.array(fc.string()),
    }),
  }),
  fc.record({ type: fc.constant('return' as const), value: fc.jsonValue(), id }, { requiredKeys: ['type', 'value'] }),
  fc.record({ type: fc.constant('error' as const), error: fc.record({ class: fc.string(), desc: fc.string() }), id }, { requiredKeys: ['type', 'error'] }),
  fc.record({
    type: fc.constant('event' as const),
    event: fc.record({ event: fc.string(), data: jsonObject, timestamp: fc.record({ seconds: nat, microseconds: fc.nat({ max: 999999 }) }) }, { requiredKeys: ['event', 'timestamp'] }),
  }),
);

/** Values as JSON can carry them (-0 becomes 0). */
const normal = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;

test('decodeServerMessage(parse(encodeServerMessage(m))) is m for any server message', () => {
  fc.assert(
    fc.property(serverMessage, (m) => {
      const bytes = encodeServerMessage(m);
      const frames = new QmpSplitter({ maxMessageBytes: 1 << 24 }).feed(bytes);
      assert.equal(frames.length, 1);
      assert.ok(frames[0]!.type === 'message');
      assert.deepEqual(decodeServerMessage(parseQmpJson(frames[0]!.bytes)), normal(m));
    }),
    { numRuns: 500 },
  );
});

test('decodeCommand(parse(encodeCommand(c))) is c for any command', () => {
  const command = fc.record({ execute: fc.string(), arguments: jsonObject, id, oob: fc.constant(true) }, { requiredKeys: ['execute'] });
  fc.assert(
    fc.property(command, (c) => {
      assert.deepEqual(decodeCommand(parseQmpJson(encodeCommand(c)), { allowOob: true }), normal(c));
    }),
    { numRuns: 500 },
  );
});

test('a stream of replies and events decodes the same at every byte cut', () => {
  const stream = [
    encodeGreeting({ version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'bitback' }, capabilities: ['oob'] }),
    encodeEvent({ event: 'JOB_STATUS_CHANGE', data: { id: 'j"}{', status: 'created' }, timestamp: { seconds: 1, microseconds: 2 } }),
    encodeReturn({ qemu: { micro: 0 } }, 'id-é'),
    encodeError({ class: 'GenericError', desc: "Bitmap 'b0' {busy}" }, 3),
  ];
  const all = new Uint8Array(stream.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of stream) {
    all.set(b, at);
    at += b.length;
  }
  const frames = framesEverySplit(all);
  const decoded = frames.map((f) => (f.type === 'message' ? decodeServerMessage(parseQmpJson(f.bytes)) : f.error));
  assert.deepEqual(
    decoded.map((m) => (m instanceof Error ? 'error' : m.type)),
    ['greeting', 'event', 'return', 'error'],
  );
  assert.deepEqual(decoded[2], { type: 'return', value: { qemu: { micro: 0 } }, id: 'id-é' });
});

test('decodeServerMessage() rejects values that are no server message', () => {
  for (const value of [
    [],
    'x',
    { foo: 1 },
    { QMP: { version: { qemu: { major: 7, minor: 2 }, package: '' }, capabilities: [] } },
    { QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: '' }, capabilities: [1] } },
    { error: { class: 'GenericError' } },
    { event: 'STOP' },
    { event: 'STOP', timestamp: { seconds: -1, microseconds: 0 } },
    { event: 'STOP', timestamp: { seconds: 1, microseconds: 0 }, data: [] },
  ]) {
    assert.throws(() => decodeServerMessage(value), (e: unknown) => e instanceof QmpProtocolError && e.code === 'PROTOCOL', JSON.stringify(value));
  }
});

test('decodeServerMessage() ignores members it does not know', () => {
  assert.deepEqual(decodeServerMessage({ return: 1, id: 2, future: true }), { type: 'return', value: 1, id: 2 });
});

/** The desc a server answers for a command value. */
function commandError(value: unknown, allowOob = false): string {
  try {
    decodeCommand(value, { allowOob });
  } catch (e) {
    assert.ok(e instanceof QmpError);
    assert.equal(e.errorClass, 'GenericError');
    return e.desc;
  }
  assert.fail(`${JSON.stringify(value)} decoded`);
}

test('decodeCommand() words bad commands as QEMU 7.2 does', () => {
  // Each text is what qemu-system-x86_64 7.2 answered for the same input.
  assert.equal(commandError([1, 2]), 'QMP input must be a JSON object');
  assert.equal(commandError({ execute: 1 }), "QMP input member 'execute' must be a string");
  assert.equal(commandError({ exec: 'x' }), "QMP input member 'exec' is unexpected");
  assert.equal(commandError({ execute: 'query-version', foo: 1 }), "QMP input member 'foo' is unexpected");
  assert.equal(commandError({ execute: 'query-version', control: {} }), "QMP input member 'control' is unexpected");
  assert.equal(commandError({ execute: 'x', arguments: [1] }), "QMP input member 'arguments' must be an object");
  assert.equal(commandError({ execute: 'x', arguments: null }), "QMP input member 'arguments' must be an object");
  assert.equal(commandError({ id: 5 }), "QMP input lacks member 'execute'");
  assert.equal(commandError({ 'exec-oob': 'query-version' }), "QMP input member 'exec-oob' is unexpected");
  assert.equal(commandError({ execute: 'query-version', 'exec-oob': 'query-version' }, true), "QMP input member 'execute' clashes with 'exec-oob'");
});

test('commandId() finds the id of anything shaped like a command', () => {
  assert.equal(commandId({ id: 5 }), 5);
  assert.equal(commandId({ id: null }), null);
  assert.equal(commandId({ execute: 'x' }), undefined);
  assert.equal(commandId([{ id: 1 }]), undefined);
});

test('QmpError carries class, desc and command, with a code by class', () => {
  const e = new QmpError('DeviceNotFound', "Device 'x' not found", { command: 'block-job-cancel' });
  assert.equal(e.message, "Cannot run QMP command block-job-cancel: DeviceNotFound: Device 'x' not found");
  assert.equal(e.code, 'NOT_FOUND');
  assert.equal(new QmpError('CommandNotFound', 'x').code, 'NOT_SUPPORTED');
  assert.equal(new QmpError('GenericError', 'x').code, 'INVALID_ARGUMENT');
  assert.equal(new QmpError('GenericError', 'x', { code: 'BUSY' }).code, 'BUSY');
  assert.equal(e.retryable, false);
});
