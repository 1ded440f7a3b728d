import { test } from 'node:test';
import assert from 'node:assert/strict';
import { duplexPair } from '../../util/duplex-pair.js';
import { serverWithQemuSchemas } from './testing/qemu-server.js';
import { QEMU_ERROR_CASES, type QemuErrorCase } from './testing/qemu-cases.js';
import { RawMonitor } from './testing/raw-monitor.js';

function expected(c: QemuErrorCase): unknown {
  const error = { error: { class: c.class, desc: c.desc } };
  return c.id === undefined ? error : { ...error, id: c.id };
}

test('the server answers bad input exactly as QEMU 7.2 did', async () => {
  const server = serverWithQemuSchemas();
  const [a, b] = duplexPair();
  server.handleConnection(b);
  const negotiated = new RawMonitor(a);
  await negotiated.negotiate();
  for (const c of QEMU_ERROR_CASES) {
    let peer = negotiated;
    if (c.beforeNegotiation === true) {
      const [x, y] = duplexPair();
      server.handleConnection(y);
      peer = new RawMonitor(x);
      await peer.next();
    }
    assert.deepEqual(await peer.ask(c.input), expected(c), c.input);
    if (peer !== negotiated) peer.close();
  }
  await server.close();
});
