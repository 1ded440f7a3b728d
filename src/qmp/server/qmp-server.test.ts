import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BitbackError, NotFoundError } from '../../errors.js';
import { duplexPair } from '../../util/duplex-pair.js';
import { QmpError } from '../protocol/errors.js';
import { QmpServer, type QmpServerOptions } from './qmp-server.js';
import { RawMonitor } from './testing/raw-monitor.js';

/** A raw peer connected in-process to `server`. */
function peer(server: QmpServer): RawMonitor {
  const [a, b] = duplexPair();
  server.handleConnection(b);
  return new RawMonitor(a);
}

/** A promise with its resolve function, for handlers the test releases. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

test('QmpServer greets like QEMU 7.2 with the version it was given', async () => {
  const server = new QmpServer({ qemuVersion: { major: 7, minor: 2, micro: 22 }, package: 'bitback test' });
  const p = peer(server);
  assert.deepEqual(await p.next(), {
    QMP: { version: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'bitback test' }, capabilities: ['oob'] },
  });
  assert.deepEqual(await p.ask('{"execute":"qmp_capabilities"}'), { return: {} });
  assert.deepEqual(await p.ask('{"execute":"query-version","id":1}'), { return: { qemu: { micro: 22, minor: 2, major: 7 }, package: 'bitback test' }, id: 1 });
  await server.close();
});

test('QmpServer reports bitback and its version in the greeting by default', async () => {
  const server = new QmpServer();
  assert.match(server.version.package, /^bitback \d+\.\d+\.\d+/);
  assert.deepEqual(server.version.qemu, { micro: 0, minor: 2, major: 7 });
  await server.close();
});

test('query-commands lists the built-in and the registered commands', async () => {
  const server = new QmpServer();
  server.register('x-one', () => 1, {});
  const p = peer(server);
  await p.negotiate();
  assert.deepEqual(await p.ask('{"execute":"query-commands"}'), {
    return: [{ name: 'qmp_capabilities' }, { name: 'query-commands' }, { name: 'query-version' }, { name: 'x-one' }],
  });
  await server.close();
});

test('QmpServer echoes any id verbatim, big integers exactly', async () => {
  const server = new QmpServer();
  const p = peer(server);
  await p.negotiate();
  for (const id of ['"s"', '0', '-7', 'null', 'true', '[1,{"a":["b"]}]', '{"x":{"y":null}}', '18446744073709551615', '1.25']) {
    p.send(`{"execute":"query-commands","id":${id}}`);
    const reply = (await p.nextReply()) as { id: unknown };
    assert.deepEqual(reply.id, JSON.parse(id), id);
  }
  // Exactness of big ids on the wire, read as text.
  const [a, b] = duplexPair();
  server.handleConnection(b);
  let text = '';
  a.on('data', (chunk: Buffer) => (text += chunk.toString()));
  a.write('{"execute":"qmp_capabilities","id":18446744073709551615}');
  await new Promise<void>((resolve) => a.on('data', () => text.includes('18446744073709551615') && resolve()));
  assert.match(text, /\{"return": \{\}, "id": 18446744073709551615\}\r\n$/);
  a.destroy();
  await server.close();
});

test('a handler gets checked arguments and its return value is the reply; undefined becomes {}', async () => {
  const server = new QmpServer();
  const seen: unknown[] = [];
  server.register(
    'x-add',
    (args, ctx) => {
      seen.push({ args, command: ctx.command });
      return args.granularity === undefined ? undefined : { doubled: args.granularity * 2 };
    },
    { node: 'str', '*granularity': 'uint32' },
  );
  const p = peer(server);
  await p.negotiate();
  assert.deepEqual(await p.ask('{"execute":"x-add","arguments":{"node":"n"}}'), { return: {} });
  assert.deepEqual(await p.ask('{"execute":"x-add","arguments":{"node":"n","granularity":65536}}'), { return: { doubled: 131072 } });
  assert.deepEqual(seen, [
    { args: { node: 'n' }, command: 'x-add' },
    { args: { node: 'n', granularity: 65536 }, command: 'x-add' },
  ]);
  await server.close();
});

test('handler failures become error replies; unexpected ones are reported to onError', async () => {
  const reported: unknown[] = [];
  const server = new QmpServer({ onError: (error, info) => reported.push({ message: (error as Error).message, ...info }) });
  server.register('x-qmp-error', () => Promise.reject(new QmpError('DeviceNotFound', "Device 'x' not found")), {});
  server.register(
    'x-bitback-error',
    () => {
      throw new NotFoundError("open bitmap 'b0'", 'there is no such bitmap');
    },
    {},
  );
  server.register(
    'x-bug',
    () => {
      throw new TypeError('oops');
    },
    {},
  );
  server.register('x-nan', () => ({ value: Number.NaN }), {});
  const p = peer(server);
  await p.negotiate();
  assert.deepEqual(await p.ask('{"execute":"x-qmp-error","id":1}'), { error: { class: 'DeviceNotFound', desc: "Device 'x' not found" }, id: 1 });
  assert.deepEqual(await p.ask('{"execute":"x-bitback-error"}'), {
    error: { class: 'GenericError', desc: "Cannot open bitmap 'b0': there is no such bitmap" },
  });
  assert.deepEqual(await p.ask('{"execute":"x-bug","id":2}'), { error: { class: 'GenericError', desc: 'internal error' }, id: 2 });
  assert.deepEqual(await p.ask('{"execute":"x-nan"}'), { error: { class: 'GenericError', desc: 'internal error' } });
  assert.deepEqual(reported.length, 2);
  assert.deepEqual(reported[0], { message: 'oops', monitorId: 1, command: 'x-bug' });
  assert.equal((reported[1] as { command: string }).command, 'x-nan');
  // The monitor goes on.
  assert.deepEqual(await p.ask('{"execute":"query-commands","id":3}').then((r) => (r as { id: number }).id), 3);
  await server.close();
});

test('one monitor runs one command at a time and replies in order; monitors run side by side', async () => {
  const server = new QmpServer();
  const gates = new Map<string, ReturnType<typeof gate>>();
  const started: string[] = [];
  let running = 0;
  let maxRunning = 0;
  server.register(
    'x-wait',
    async ({ tag }) => {
      started.push(tag);
      running++;
      maxRunning = Math.max(maxRunning, running);
      await gates.get(tag)!.promise;
      running--;
      return tag;
    },
    { tag: 'str' },
  );
  for (const tag of ['a1', 'a2', 'a3', 'b1']) gates.set(tag, gate());
  const a = peer(server);
  const b = peer(server);
  await a.negotiate();
  await b.negotiate();
  // Three commands in one write, with no separators.
  a.send('{"execute":"x-wait","arguments":{"tag":"a1"}}{"execute":"x-wait","arguments":{"tag":"a2"}}{"execute":"x-wait","arguments":{"tag":"a3"}}');
  b.send('{"execute":"x-wait","arguments":{"tag":"b1"}}');
  await new Promise<void>((resolve) => {
    const poll = (): void => (started.length === 2 ? resolve() : void setImmediate(poll));
    poll();
  });
  assert.deepEqual(started.sort(), ['a1', 'b1'], 'a2 waits for a1; b1 runs beside a1');
  // Release in reverse order: replies still come in the order of the commands.
  gates.get('a3')!.open();
  gates.get('a2')!.open();
  gates.get('b1')!.open();
  assert.deepEqual(await b.nextReply(), { return: 'b1' });
  gates.get('a1')!.open();
  assert.deepEqual(await a.nextReply(), { return: 'a1' });
  assert.deepEqual(await a.nextReply(), { return: 'a2' });
  assert.deepEqual(await a.nextReply(), { return: 'a3' });
  assert.equal(maxRunning, 2);
  await server.close();
});

test('a monitor with more commands queued than QEMU queues answers them all, in order', async () => {
  const server = new QmpServer();
  const hold = gate();
  let ran = 0;
  server.register(
    'x-step',
    async ({ n }) => {
      if (n === 0) await hold.promise;
      ran++;
      return n;
    },
    { n: 'int' },
  );
  const p = peer(server);
  await p.negotiate();
  const count = 40; // more than QMP_REQUEST_QUEUE_MAX: reading pauses and resumes
  for (let n = 0; n < count; n++) p.send(`{"execute":"x-step","arguments":{"n":${n}}}`);
  await new Promise((r) => setImmediate(r));
  assert.equal(ran, 0, 'the first command holds the others');
  hold.open();
  for (let n = 0; n < count; n++) assert.deepEqual(await p.nextReply(), { return: n });
  assert.equal(ran, count);
  await server.close();
});

test('emit() sends an event with a timestamp to every negotiated monitor only', async () => {
  const server = new QmpServer();
  const a = peer(server);
  const b = peer(server);
  const early = peer(server);
  await a.negotiate();
  await b.negotiate();
  await early.next(); // greeting only: not negotiated
  const before = Date.now();
  const sent = server.emit('BLOCK_JOB_COMPLETED', { device: 'j0', len: 1, offset: 1, speed: 0, type: 'backup' });
  server.emit('STOP');
  for (const p of [a, b]) {
    const event = (await p.next()) as { event: string; data: unknown; timestamp: { seconds: number; microseconds: number } };
    assert.deepEqual(event, { timestamp: sent.timestamp, event: 'BLOCK_JOB_COMPLETED', data: sent.data });
    assert.ok(Number.isInteger(event.timestamp.microseconds) && event.timestamp.microseconds < 1e6);
    assert.ok(Math.abs(event.timestamp.seconds - Math.floor(before / 1000)) <= 1);
    const stop = await p.next();
    assert.deepEqual(Object.keys(stop as object), ['timestamp', 'event'], 'no data member when there is no data');
  }
  // The monitor that did not negotiate got nothing: its next message is its own reply.
  assert.deepEqual(await early.ask('{"execute":"qmp_capabilities"}'), { return: {} });
  await server.close();
});

test('an event emitted while a command runs arrives before that command reply', async () => {
  const server = new QmpServer();
  server.register(
    'stop',
    () => {
      server.emit('STOP');
    },
    {},
  );
  const p = peer(server);
  await p.negotiate();
  p.send('{"execute":"stop","id":1}');
  assert.equal((await p.next() as { event: string }).event, 'STOP');
  assert.deepEqual(await p.next(), { return: {}, id: 1 });
  await server.close();
});

test('malformed JSON inside an object gets an error reply and the monitor goes on', async () => {
  const server = new QmpServer();
  const p = peer(server);
  await p.negotiate();
  p.send('{"execute": }{"execute":"query-commands","id":2}');
  assert.deepEqual(await p.nextReply(), { error: { class: 'GenericError', desc: 'JSON parse error, expecting value' } });
  assert.equal((await p.nextReply() as { id: number }).id, 2);
  await server.close();
});

async function fatalCase(options: QmpServerOptions, input: string, desc: string): Promise<void> {
  const server = new QmpServer(options);
  const bad = peer(server);
  const good = peer(server);
  await bad.negotiate();
  await good.negotiate();
  bad.send(`{"execute":"query-commands","id":1}${input}{"execute":"query-commands","id":3}`);
  assert.equal((await bad.nextReply() as { id: number }).id, 1, 'commands before the bad input are answered');
  assert.deepEqual(await bad.nextReply(), { error: { class: 'GenericError', desc } });
  assert.equal(await bad.next(), undefined, 'then the monitor closes');
  await bad.ended;
  assert.equal(server.monitorCount, 1);
  // The server and its other monitors go on.
  assert.equal((await good.ask('{"execute":"query-commands","id":9}') as { id: number }).id, 9);
  await server.close();
}

test('junk between messages gets one error reply and closes only that monitor', async () => {
  await fatalCase({}, ' garbage ', "JSON parse error, stray 'g'");
});

test('an oversized message gets one error reply and closes only that monitor', async () => {
  await fatalCase({ maxMessageBytes: 200 }, `{"execute":"x","id":"${'a'.repeat(300)}"}`, 'JSON token size limit exceeded');
});

test('a message nested too deeply gets one error reply and closes only that monitor', async () => {
  await fatalCase({ maxDepth: 8 }, `{"execute":"x","id":${'['.repeat(10)}${']'.repeat(10)}}`, 'JSON nesting depth limit exceeded');
});

test('exec-oob needs the oob capability and no command supports it', async () => {
  const server = new QmpServer();
  const p = peer(server);
  await p.next();
  assert.deepEqual(await p.ask('{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}'), { return: {} });
  assert.deepEqual(await p.ask('{"exec-oob":"query-version","id":1}'), { id: 1, error: { class: 'GenericError', desc: 'The command query-version does not support OOB' } });
  assert.deepEqual(await p.ask('{"exec-oob":"nope","id":1}'), { id: 1, error: { class: 'CommandNotFound', desc: 'The command nope has not been found' } });
  await server.close();

  const plain = new QmpServer({ capabilities: [] });
  const q = peer(plain);
  assert.deepEqual((await q.next() as { QMP: { capabilities: string[] } }).QMP.capabilities, []);
  assert.deepEqual(await q.ask('{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}'), {
    error: { class: 'GenericError', desc: "Capability 'oob' not available" },
  });
  await plain.close();
});

test('a client that ends its side after sending still gets its replies', async () => {
  const server = new QmpServer();
  const p = peer(server);
  await p.negotiate();
  p.send('{"execute":"query-commands","id":1}{"execute":"query-version","id":2}');
  p.end();
  assert.equal((await p.nextReply() as { id: number }).id, 1);
  assert.equal((await p.nextReply() as { id: number }).id, 2);
  await p.ended;
  await server.close();
});

test('QmpServer listens on a Unix socket with mode 0600 and serves several clients', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-qmp-'));
  try {
    const server = new QmpServer();
    const { path } = await server.listen({ path: join(dir, 'qmp.sock') });
    assert.equal(path, join(dir, 'qmp.sock'));
    const st = await stat(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    const a = await RawMonitor.connect(path);
    const b = await RawMonitor.connect(path);
    await a.negotiate();
    await b.negotiate();
    assert.equal(server.monitorCount, 2);
    server.emit('X');
    assert.equal((await a.next() as { event: string }).event, 'X');
    assert.equal((await b.next() as { event: string }).event, 'X');
    await server.close();
    await a.ended;
    await b.ended;
    await assert.rejects(stat(path), { code: 'ENOENT' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('QmpServer.listen() refuses a path that is not a stale socket', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-qmp-'));
  try {
    const file = join(dir, 'file');
    await writeFile(file, 'x');
    const server = new QmpServer();
    await assert.rejects(server.listen({ path: file }), (e: unknown) => e instanceof BitbackError && e.code === 'ALREADY_EXISTS' && e.message.includes('QMP'));
    const { path } = await server.listen({ path: join(dir, 's') });
    const other = new QmpServer();
    await assert.rejects(other.listen({ path }), { code: 'ALREADY_EXISTS' });
    await server.close();
    await other.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a monitor with more than maxUnsentBytes waiting to be sent is dropped', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-qmp-'));
  try {
    const server = new QmpServer({ maxUnsentBytes: 64 << 10 });
    const { path } = await server.listen({ path: join(dir, 's') });
    const p = await RawMonitor.connect(path);
    await p.negotiate();
    // Events emitted in one go cannot reach the socket before the loop turns: they pile up.
    const data = { blob: 'x'.repeat(4096) };
    for (let i = 0; i < 4096 && server.monitorCount > 0; i++) server.emit('FLOOD', data);
    assert.equal(server.monitorCount, 0, 'the monitor was closed');
    await p.ended;
    await server.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('handleConnection() after close() drops the stream at once', async () => {
  const server = new QmpServer();
  await server.close();
  const [a, b] = duplexPair();
  const monitor = server.handleConnection(b);
  await monitor.closed;
  assert.ok(a.destroyed);
});
