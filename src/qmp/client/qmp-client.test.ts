import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Duplex } from 'node:stream';
import { ClosedError, IoError } from '../../errors.js';
import { encodeError, encodeEvent, encodeGreeting, encodeQmpMessage, encodeReturn } from '../protocol/encode.js';
import { QmpError, QmpProtocolError } from '../protocol/errors.js';
import { parseQmpJson } from '../protocol/json-parse.js';
import { type QmpCommand, type QmpEvent } from '../protocol/messages.js';
import { QmpSplitter } from '../protocol/splitter.js';
import { QmpServer } from '../server/qmp-server.js';
import { duplexPair } from '../../util/duplex-pair.js';
import { connectInProcess } from './in-process.js';
import { QmpClient } from './qmp-client.js';

const GREETING = encodeGreeting({ version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: ['oob'] });

/** A scripted server end: reads commands, the test writes whatever it likes. */
class FakeServer {
  readonly commands: QmpCommand[] = [];
  #waiters: (() => void)[] = [];

  constructor(readonly stream: Duplex) {
    const splitter = new QmpSplitter();
    stream.on('data', (chunk: Buffer) => {
      for (const f of splitter.feed(chunk)) if (f.type === 'message') this.commands.push(parseQmpJson(f.bytes) as QmpCommand);
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  /** Waits until `n` commands arrived. */
  async received(n: number): Promise<QmpCommand[]> {
    while (this.commands.length < n) await new Promise<void>((resolve) => this.#waiters.push(resolve));
    return this.commands;
  }

  write(bytes: Uint8Array | string): void {
    this.stream.write(bytes);
  }
}

/** A client opened against a fake server that greets and accepts negotiation. */
async function fakeSession(options: Parameters<typeof QmpClient.open>[1] = {}): Promise<{ client: QmpClient; server: FakeServer }> {
  const [a, b] = duplexPair();
  const server = new FakeServer(b);
  server.write(GREETING);
  const opening = QmpClient.open(a, options);
  const [negotiation] = await server.received(1);
  assert.equal(negotiation!.execute, 'qmp_capabilities');
  server.write(encodeReturn({}, negotiation!.id));
  return { client: await opening, server };
}

const event = (name: string, data?: Record<string, unknown>): QmpEvent =>
  data === undefined ? { event: name, timestamp: { seconds: 1, microseconds: 2 } } : { event: name, data, timestamp: { seconds: 1, microseconds: 2 } };

test('QmpClient reads the greeting and negotiates', async () => {
  const { client, server } = await fakeSession({ enable: ['oob'] });
  assert.deepEqual(client.greeting, { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: ['oob'] });
  assert.deepEqual(server.commands[0], { execute: 'qmp_capabilities', arguments: { enable: ['oob'] }, id: server.commands[0]!.id });
  await client.close();
});

test('QmpClient matches replies to commands by id, in any order', async () => {
  const { client, server } = await fakeSession();
  const first = client.execute('query-version');
  const second = client.execute('query-block', { flat: true });
  const [, c1, c2] = await server.received(3);
  assert.deepEqual(c2!.arguments, { flat: true });
  assert.notEqual(c1!.id, c2!.id);
  server.write(encodeReturn('second', c2!.id));
  server.write(encodeReturn('first', c1!.id));
  assert.equal(await first, 'first');
  assert.equal(await second, 'second');
  await client.close();
});

test('QmpClient rejects an error reply with QmpError naming the command', async () => {
  const server = new QmpServer();
  const client = await connectInProcess(server);
  await assert.rejects(client.execute('blockdev-del', { 'node-name': 'x' }), (e: unknown) => {
    assert.ok(e instanceof QmpError);
    assert.equal(e.errorClass, 'CommandNotFound');
    assert.equal(e.desc, 'The command blockdev-del has not been found');
    assert.equal(e.command, 'blockdev-del');
    assert.equal(e.message, 'Cannot run QMP command blockdev-del: CommandNotFound: The command blockdev-del has not been found');
    return true;
  });
  assert.deepEqual(await client.execute('query-version'), server.version);
  await client.close();
  await server.close();
});

test('QmpClient delivers events to listeners and iterators', async () => {
  const { client, server } = await fakeSession();
  const heard: string[] = [];
  const stop = client.onEvent((e) => heard.push(e.event));
  const iterator = client.events();
  server.write(encodeEvent(event('STOP')));
  server.write(encodeEvent(event('RESUME', { x: 1 })));
  assert.deepEqual((await iterator.next()).value, event('STOP'));
  assert.deepEqual((await iterator.next()).value, event('RESUME', { x: 1 }));
  assert.deepEqual(heard, ['STOP', 'RESUME']);
  stop();
  server.write(encodeEvent(event('SHUTDOWN')));
  assert.equal((await iterator.next()).value.event, 'SHUTDOWN');
  assert.deepEqual(heard, ['STOP', 'RESUME']);
  await client.close();
  assert.deepEqual(await iterator.next(), { value: undefined, done: true });
});

test('an event iterator that falls too far behind fails with BUSY', async () => {
  const { client, server } = await fakeSession();
  const iterator = client.events({ maxBuffered: 2 });
  const arrived = new Promise<void>((resolve) => {
    let n = 0;
    client.onEvent(() => ++n === 3 && resolve());
  });
  for (let i = 0; i < 3; i++) server.write(encodeEvent(event(`E${i}`)));
  await arrived;
  assert.equal((await iterator.next()).value.event, 'E0');
  assert.equal((await iterator.next()).value.event, 'E1');
  await assert.rejects(iterator.next(), { code: 'BUSY' });
  assert.deepEqual(await iterator.next(), { value: undefined, done: true });
  await client.close();
});

test('waitForEvent() finds an event that arrived before the call, and consumes it', async () => {
  const { client, server } = await fakeSession();
  server.write(encodeEvent(event('JOB_STATUS_CHANGE', { id: 'j1', status: 'running' })));
  server.write(encodeEvent(event('JOB_STATUS_CHANGE', { id: 'j1', status: 'concluded' })));
  const ping = client.execute('ping');
  const [, c] = await server.received(2);
  server.write(encodeReturn({}, c!.id));
  await ping; // both events have arrived now
  const concluded = await client.waitForEvent('JOB_STATUS_CHANGE', (e) => e.data?.status === 'concluded');
  assert.equal(concluded.data?.status, 'concluded');
  assert.equal((await client.waitForEvent('JOB_STATUS_CHANGE')).data?.status, 'running');
  // Both consumed: the next wait needs a new event.
  const next = client.waitForEvent('JOB_STATUS_CHANGE');
  server.write(encodeEvent(event('JOB_STATUS_CHANGE', { id: 'j1', status: 'null' })));
  assert.equal((await next).data?.status, 'null');
  assert.deepEqual(client.recentEvents, []);
  await client.close();
});

test('waitForEvent() can ignore history and times out with a retryable IoError', async () => {
  const { client, server } = await fakeSession();
  server.write(encodeEvent(event('STOP')));
  const ping = client.execute('ping');
  server.write(encodeReturn({}, (await server.received(2))[1]!.id));
  await ping;
  assert.equal(client.recentEvents.length, 1);
  await assert.rejects(client.waitForEvent('STOP', undefined, { timeoutMs: 1, includeHistory: false }), (e: unknown) => {
    assert.ok(e instanceof IoError);
    assert.equal(e.errno, 'ETIMEDOUT');
    return true;
  });
  client.clearEvents();
  assert.deepEqual(client.recentEvents, []);
  await client.close();
});

test('the event history keeps only the newest events', async () => {
  const { client, server } = await fakeSession({ eventHistory: 3 });
  for (let i = 0; i < 5; i++) server.write(encodeEvent(event(`E${i}`)));
  const ping = client.execute('ping');
  server.write(encodeReturn({}, (await server.received(2))[1]!.id));
  await ping;
  assert.deepEqual(client.recentEvents.map((e) => e.event), ['E2', 'E3', 'E4']);
  await client.close();
});

test('a dropped connection rejects pending commands and waits with a retryable IoError', async () => {
  const { client, server } = await fakeSession();
  const pending = client.execute('blockdev-backup', { device: 'd' });
  const waiting = client.waitForEvent('BLOCK_JOB_COMPLETED', undefined, { timeoutMs: 0 });
  await server.received(2);
  server.stream.destroy();
  for (const p of [pending, waiting]) {
    await assert.rejects(p, (e: unknown) => {
      assert.ok(e instanceof IoError);
      assert.equal(e.errno, 'ECONNRESET');
      assert.equal(e.retryable, true);
      return true;
    });
  }
  await client.closed;
  assert.equal(client.isOpen, false);
  await assert.rejects(client.execute('query-version'), { code: 'IO_ERROR', retryable: true });
});

test('a server that closes the monitor is a dropped connection', async () => {
  const server = new QmpServer();
  const client = await connectInProcess(server);
  await server.close();
  await client.closed;
  await assert.rejects(client.execute('query-version'), (e: unknown) => e instanceof IoError && e.retryable);
});

test('close() rejects pending commands with ClosedError', async () => {
  const { client } = await fakeSession();
  const pending = client.execute('query-version');
  await client.close();
  await assert.rejects(pending, (e: unknown) => e instanceof ClosedError && !e.retryable);
  await client.close(); // idempotent
});

test('a command without a reply in time fails with ETIMEDOUT and its late reply is ignored', async () => {
  const { client, server } = await fakeSession();
  const slow = client.execute('query-version', undefined, { timeoutMs: 1 });
  const [, c] = await server.received(2);
  await assert.rejects(slow, (e: unknown) => e instanceof IoError && e.errno === 'ETIMEDOUT' && e.message.includes('query-version'));
  server.write(encodeReturn('late', c!.id));
  const next = client.execute('query-commands');
  const [, , c2] = await server.received(3);
  server.write(encodeReturn('on time', c2!.id));
  assert.equal(await next, 'on time');
  await client.close();
});

test('a peer that breaks the protocol fails the session with QmpProtocolError', async () => {
  for (const junk of ['{"return": oops}', 'garbage', '{"neither": 1}', '{"error": {"class": 1}}']) {
    const { client, server } = await fakeSession();
    const pending = client.execute('query-version');
    await server.received(2);
    server.write(junk);
    await assert.rejects(pending, (e: unknown) => e instanceof QmpProtocolError && e.code === 'PROTOCOL', junk);
    await client.closed;
  }
});

test('QmpClient.open() fails when no greeting comes, or a non-greeting comes first', async () => {
  const [a] = duplexPair();
  await assert.rejects(QmpClient.open(a, { timeoutMs: 1 }), (e: unknown) => e instanceof IoError && e.errno === 'ETIMEDOUT');
  assert.ok(a.destroyed);
  const [c, d] = duplexPair();
  d.write(encodeQmpMessage({ return: {} }));
  await assert.rejects(QmpClient.open(c), QmpProtocolError);
  const [e, f] = duplexPair();
  f.write(GREETING);
  const opening = QmpClient.open(e);
  f.once('data', () => f.write(encodeError({ class: 'GenericError', desc: 'no' }, 1)));
  await assert.rejects(opening, (x: unknown) => x instanceof QmpError && x.command === 'qmp_capabilities');
});

test('QmpClient.connect() reaches a server on a Unix socket and reports a missing one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-qmp-'));
  try {
    const server = new QmpServer();
    const { path } = await server.listen({ path: join(dir, 'qmp.sock') });
    const client = await QmpClient.connect(path, { timeoutMs: 10_000 });
    assert.equal(client.greeting.version.package, server.version.package);
    const event = client.waitForEvent('HELLO');
    server.emit('HELLO', { to: 'you' });
    assert.deepEqual((await event).data, { to: 'you' });
    await client.close();
    await server.close();
    await assert.rejects(QmpClient.connect(join(dir, 'missing.sock')), (e: unknown) => e instanceof IoError && e.errno === 'ENOENT' && e.message.includes('missing.sock'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
