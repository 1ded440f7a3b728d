import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import {
  NBD_CMD_READ,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TLS_REQD,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
} from '../protocol/index.js';
import { concat } from '../protocol/testing/split.js';
import { loadPskCredentials, loadX509Credentials, type TlsCredentials } from '../tls.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { readReplyData } from './testing/replies.js';
import { makePskFile, makeX509Directory } from './testing/tls-credentials.js';

const content = new Uint8Array(1 << 20).fill(0x2b);

async function readsOverTls(t: TestServer, credentials: TlsCredentials): Promise<void> {
  const c = await t.connect();
  await c.hello();
  await c.startTls(credentials);
  assert.equal((await c.option(NBD_OPT_LIST)).at(-1)!.type, NBD_REP_ACK);
  assert.equal((await c.option(NBD_OPT_STARTTLS))[0]!.type, NBD_REP_ERR_INVALID, 'STARTTLS twice is invalid');
  await c.negotiate({ structured: true });
  assert.deepEqual(readReplyData(await c.call({ type: NBD_CMD_READ, offset: 4096, length: 65536 }), 4096, 65536).data, content.subarray(0, 65536));
}

describe('NbdServer with TLS', () => {
  let dir: string;
  let serverX509: TlsCredentials;
  let clientX509: TlsCredentials;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-tls-'));
    await makeX509Directory(dir);
    serverX509 = await loadX509Credentials(dir, 'server');
    clientX509 = await loadX509Credentials(dir, 'client');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('a TLS-required server refuses a plain client and serves it after STARTTLS with X.509', async () => {
    const t = await startTestServer([{ name: '', device: MemoryBlockDevice.fromBytes(content) }], { tls: serverX509 });
    try {
      const plain = await t.connect();
      await plain.hello();
      for (const [option, data] of [[NBD_OPT_LIST, undefined], [NBD_OPT_INFO, encodeInfoRequest({ name: '', infos: [] })], [NBD_OPT_GO, encodeInfoRequest({ name: '', infos: [] })], [0x77, undefined]] as const) {
        const replies = await plain.option(option, data);
        assert.deepEqual(replies.map((r) => r.type), [NBD_REP_ERR_TLS_REQD], `option ${option}`);
      }
      const exportName = await t.connect();
      await exportName.hello();
      exportName.send(encodeOptionRequest(NBD_OPT_EXPORT_NAME));
      await exportName.closed;
      await readsOverTls(t, clientX509);
    } finally {
      await t.close();
    }
  });

  test('PSK credentials work, and a wrong key fails the handshake without harming the server', async () => {
    const file = join(dir, 'keys.psk');
    await makePskFile(file);
    const t = await startTestServer([{ name: '', device: MemoryBlockDevice.fromBytes(content) }], { tls: await loadPskCredentials(file) });
    try {
      await readsOverTls(t, await loadPskCredentials(file));
      const wrong = await t.connect();
      await wrong.hello();
      await assert.rejects(wrong.startTls({ kind: 'psk', keys: new Map([['bitback', randomBytes(32)]]), identity: 'bitback' }));
      await readsOverTls(t, await loadPskCredentials(file));
    } finally {
      await t.close();
    }
  });

  test('with optional TLS, options before STARTTLS work and are forgotten after it', async () => {
    const t = await startTestServer([{ name: '', device: MemoryBlockDevice.fromBytes(content) }], { tls: serverX509, tlsRequired: false });
    try {
      const c = await t.connect();
      await c.hello();
      assert.equal((await c.option(NBD_OPT_LIST)).at(-1)!.type, NBD_REP_ACK);
      assert.equal((await c.option(NBD_OPT_STRUCTURED_REPLY)).at(-1)!.type, NBD_REP_ACK);
      await c.startTls(clientX509);
      const replies = await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: '', queries: ['base:allocation'] }));
      assert.equal(replies[0]!.type, NBD_REP_ERR_INVALID, 'structured replies were forgotten');
      await readsOverTls(t, clientX509);
    } finally {
      await t.close();
    }
  });

  test('bytes sent behind NBD_OPT_STARTTLS before its reply end the connection', async () => {
    const t = await startTestServer([{ name: '', device: MemoryBlockDevice.fromBytes(content) }], { tls: serverX509 });
    try {
      const c = await t.connect();
      await c.hello();
      // One write, so that the server reads both in one chunk.
      c.send(concat(encodeOptionRequest(NBD_OPT_STARTTLS), new Uint8Array([22, 3, 1, 0, 5])));
      await c.closed;
      assert.ok(t.errors.some((e) => /after NBD_OPT_STARTTLS/.test(e)), t.errors.join('\n'));
      await readsOverTls(t, clientX509);
    } finally {
      await t.close();
    }
  });
});
