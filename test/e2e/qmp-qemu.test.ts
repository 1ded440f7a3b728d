/**
 * bitback's QMP layer against a real QEMU (`qemu-system-x86_64 -M none`): the client drives
 * QEMU (greeting, commands, error classes, events), and the same bad input sent to QEMU and to
 * bitback's server (with QEMU's schemas registered) gets the same reply.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, QmpError, connectInProcess, type QmpEvent } from '../../src/qmp/index.js';
import { duplexPair } from '../../src/util/duplex-pair.js';
import { type QmpServer } from '../../src/qmp/server/index.js';
import { QEMU_ERROR_CASES } from '../../src/qmp/server/testing/qemu-cases.js';
import { serverWithQemuSchemas } from '../../src/qmp/server/testing/qemu-server.js';
import { RawMonitor } from '../../src/qmp/server/testing/raw-monitor.js';
import { needPeers } from '../helpers/peers.js';
import { startQemu, type QemuInstance } from '../helpers/qemu.js';

const skip = needPeers('qemu-system-x86_64');

let qemu: QemuInstance | undefined;
let clientSocket = '';
let rawSocket = '';
let ours: QmpServer | undefined;

before(async () => {
  if (skip !== false) return;
  const dir = await mkdtemp(join(tmpdir(), 'bitback-qmp-e2e-'));
  clientSocket = join(dir, 'client.sock');
  rawSocket = join(dir, 'raw.sock');
  // startQemu adds DIR/qmp.sock for its own helper client; two more monitors are ours.
  qemu = await startQemu(
    ['-M', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${clientSocket},server=on,wait=off`, '-qmp', `unix:${rawSocket},server=on,wait=off`],
    { dir },
  );
  ours = serverWithQemuSchemas();
});

after(async () => {
  await ours?.close();
  await qemu?.kill(); // stops QEMU by pid and removes the folder with the sockets
});

test('QmpClient reads the greeting of QEMU and runs query-version', { skip }, async () => {
  const client = await QmpClient.connect(clientSocket, { timeoutMs: 30_000 });
  try {
    assert.equal(client.greeting.version.qemu.major >= 7, true);
    assert.deepEqual(client.greeting.capabilities, ['oob']);
    const version = await client.execute<{ qemu: { major: number; minor: number; micro: number }; package: string }>('query-version');
    assert.deepEqual(version, client.greeting.version);
    const commands = await client.execute<{ name: string }[]>('query-commands');
    assert.ok(commands.some((c) => c.name === 'blockdev-add'));
  } finally {
    await client.close();
  }
});

test('QmpClient gets QEMU errors as QmpError with class and desc', { skip }, async () => {
  const client = await QmpClient.connect(clientSocket);
  try {
    await assert.rejects(client.execute('blockdev-del', { 'node-name': 'bitback-missing' }), (e: unknown) => {
      assert.ok(e instanceof QmpError);
      assert.equal(e.errorClass, 'GenericError');
      assert.equal(e.desc, "Failed to find node with node-name='bitback-missing'");
      assert.equal(e.command, 'blockdev-del');
      return true;
    });
    await assert.rejects(client.execute('bitback-no-such-command'), { errorClass: 'CommandNotFound', desc: 'The command bitback-no-such-command has not been found' });
    // Nodes come and go; the session stays usable after errors.
    await client.execute('blockdev-add', { driver: 'null-co', 'node-name': 'bitback-null', size: 1 << 20 });
    const nodes = await client.execute<{ 'node-name': string }[]>('query-named-block-nodes');
    assert.ok(nodes.some((n) => n['node-name'] === 'bitback-null'));
    await client.execute('blockdev-del', { 'node-name': 'bitback-null' });
  } finally {
    await client.close();
  }
});

test('QmpClient receives QEMU events: stop and cont give STOP and RESUME', { skip }, async () => {
  const client = await QmpClient.connect(clientSocket);
  try {
    const heard: QmpEvent[] = [];
    client.onEvent((e) => heard.push(e));
    await client.execute('stop');
    // QEMU sends STOP before the reply of stop: the wait finds it in the history.
    const stop = await client.waitForEvent('STOP', undefined, { timeoutMs: 30_000 });
    assert.equal(stop.data, undefined);
    assert.ok(stop.timestamp.seconds > 0 && stop.timestamp.microseconds < 1e6);
    const resumed = client.waitForEvent('RESUME', undefined, { timeoutMs: 30_000 });
    await client.execute('cont');
    await resumed;
    assert.deepEqual(
      heard.map((e) => e.event),
      ['STOP', 'RESUME'],
    );
  } finally {
    await client.close();
  }
});

test('a QEMU event and a bitback event have the same members', { skip }, async () => {
  const raw = await RawMonitor.connect(rawSocket);
  await raw.negotiate();
  raw.send('{"execute":"stop"}');
  const theirs = (await raw.next()) as Record<string, unknown>;
  assert.equal(theirs.event, 'STOP');
  await raw.nextReply();
  await raw.ask('{"execute":"cont"}');
  raw.close();
  await raw.ended;

  const [a, b] = duplexPair();
  ours!.handleConnection(b);
  const mine = new RawMonitor(a);
  await mine.negotiate();
  ours!.emit('STOP');
  const event = (await mine.next()) as Record<string, unknown>;
  assert.deepEqual(Object.keys(event).sort(), Object.keys(theirs).sort());
  assert.deepEqual(Object.keys(event.timestamp as object).sort(), Object.keys(theirs.timestamp as object).sort());
  mine.close();
});

test('bitback greets with the same shape as QEMU', { skip }, async () => {
  const raw = await RawMonitor.connect(rawSocket);
  const theirs = (await raw.next()) as { QMP: { version: { qemu: object }; capabilities: unknown } };
  raw.close();
  await raw.ended;
  const [a, b] = duplexPair();
  ours!.handleConnection(b);
  const mine = new RawMonitor(a);
  const greeting = (await mine.next()) as typeof theirs;
  mine.close();
  assert.deepEqual(Object.keys(greeting.QMP.version.qemu), Object.keys(theirs.QMP.version.qemu));
  assert.deepEqual(Object.keys(greeting.QMP.version).sort(), Object.keys(theirs.QMP.version).sort());
  assert.deepEqual(greeting.QMP.capabilities, theirs.QMP.capabilities);
});

test('QEMU and bitback answer the same bad input with the same class and desc', { skip }, async () => {
  const differences: string[] = [];
  const compare = async (q: RawMonitor, m: RawMonitor, c: (typeof QEMU_ERROR_CASES)[number]): Promise<void> => {
    const qemuReply = await q.ask(c.input);
    const ourReply = await m.ask(c.input);
    const recorded = c.id === undefined ? { error: { class: c.class, desc: c.desc } } : { error: { class: c.class, desc: c.desc }, id: c.id };
    try {
      assert.deepEqual(ourReply, qemuReply);
      assert.deepEqual(qemuReply, recorded, 'QEMU still answers as recorded');
    } catch {
      differences.push(`${c.input}\n  QEMU:    ${JSON.stringify(qemuReply)}\n  bitback: ${JSON.stringify(ourReply)}`);
    }
  };
  const ourMonitor = (): RawMonitor => {
    const [x, y] = duplexPair();
    ours!.handleConnection(y);
    return new RawMonitor(x);
  };
  // QEMU serves one client at a time per QMP socket: one connection after the other.
  for (const c of QEMU_ERROR_CASES.filter((x) => x.beforeNegotiation === true)) {
    const q = await RawMonitor.connect(rawSocket);
    const m = ourMonitor();
    await q.next();
    await m.next();
    await compare(q, m, c);
    q.close();
    m.close();
    await q.ended;
  }
  const q = await RawMonitor.connect(rawSocket);
  const m = ourMonitor();
  await q.negotiate();
  await m.negotiate();
  for (const c of QEMU_ERROR_CASES.filter((x) => x.beforeNegotiation !== true)) await compare(q, m, c);
  q.close();
  m.close();
  await q.ended;
  assert.deepEqual(differences, [], `replies differ:\n${differences.join('\n')}`);
  assert.ok(QEMU_ERROR_CASES.length > 80);
});

test('junk between messages: QEMU and bitback give the same first reply', { skip }, async () => {
  for (const junk of ['}', ']']) {
    const q = await RawMonitor.connect(rawSocket);
    await q.negotiate();
    const [x, y] = duplexPair();
    ours!.handleConnection(y);
    const m = new RawMonitor(x);
    await m.negotiate();
    const theirs = await q.ask(junk);
    const mine = await m.ask(junk);
    assert.deepEqual(mine, theirs, junk);
    // bitback then closes that monitor (QEMU tries to resynchronise); the server goes on.
    await m.ended;
    q.close();
    await q.ended;
  }
  const client = await connectInProcess(ours!);
  assert.ok(Array.isArray(await client.execute('query-commands')));
  await client.close();
});
