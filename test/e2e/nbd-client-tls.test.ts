/**
 * bitback's NBD client over TLS against qemu-nbd: X.509 (a CA, a server and a client
 * certificate made by openssl here; qemu-nbd verifies the client) and PSK (GnuTLS on the server
 * side, OpenSSL's TLS 1.2 PSK suites on ours), both over `nbds+unix` URIs; and a plain client
 * refused with a clear error.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { NbdClient, describeExport } from '../../src/nbd/client/index.js';
import { NBD_REP_ERR_TLS_REQD } from '../../src/nbd/protocol/constants.js';
import { hasCode } from '../../src/errors.js';
import { NbdOptionError } from '../../src/nbd/protocol/errors.js';
import { startQemuNbd, type NbdServerProcess } from '../helpers/nbd-peers.js';
import { needPeers, which } from '../helpers/peers.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;
const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1'];

/**
 * Writes a CA, a server certificate (in `server/`, QEMU's layout) and a client certificate (in
 * `client/`), each directory with the CA's certificate.
 */
async function makeCertificates(dir: string): Promise<{ server: string; client: string }> {
  const server = join(dir, 'server');
  const client = join(dir, 'client');
  await mkdir(server);
  await mkdir(client);
  const ca = join(dir, 'ca-cert.pem');
  const caKey = join(dir, 'ca-key.pem');
  // EC keys: quick to make on a slow machine, and GnuTLS (qemu-nbd) and OpenSSL (Node) both speak ECDSA.
  await run('openssl', ['req', '-x509', ...KEY, '-nodes', '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=bitback test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  const sign = async (name: string, folder: string, usage: string): Promise<void> => {
    const csr = join(dir, `${name}.csr`);
    const ext = join(dir, `${name}.ext`);
    await run('openssl', ['req', ...KEY, '-nodes', '-keyout', join(folder, `${name}-key.pem`), '-out', csr, '-subj', `/CN=${name}`]);
    await writeFile(ext, `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=${usage}\nsubjectAltName=DNS:localhost\n`);
    await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-CAcreateserial', '-out', join(folder, `${name}-cert.pem`), '-days', '2', '-extfile', ext]);
  };
  await sign('server', server, 'serverAuth');
  await sign('client', client, 'clientAuth');
  await copyFile(ca, join(server, 'ca-cert.pem'));
  await copyFile(ca, join(client, 'ca-cert.pem'));
  return { server, client };
}

const skip = needPeers('qemu-img', 'qemu-io', 'qemu-nbd') || (which('openssl') === undefined ? 'openssl is not installed' : false);

describe('NbdClient over TLS with qemu-nbd', { skip }, () => {
  let dir: string;
  let image: string;
  const servers: NbdServerProcess[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-tls-'));
    image = join(dir, 'disk.qcow2');
    await run('qemu-img', ['create', '-q', '-f', 'qcow2', image, '8M']);
    await run('qemu-io', ['-c', 'write -P 0x6b 1M 64k', image]);
  });

  after(async () => {
    for (const s of servers) await s.stop();
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  test('X.509: the client verifies the server, presents its certificate, and reads', async () => {
    const certs = await makeCertificates(dir);
    const server = await startQemuNbd(image, ['-r', '-f', 'qcow2', '--object', `tls-creds-x509,id=tls0,dir=${certs.server},endpoint=server,verify-peer=on`, '--tls-creds', 'tls0']);
    servers.push(server);
    const uri = `nbds+unix:///?socket=${server.socket}&tls-certificates=${certs.client}`;
    const client = await NbdClient.connect(uri);
    try {
      assert.equal(client.tls, true);
      assert.equal(client.size, 8 * MiB);
      assert.deepEqual(await client.read(MiB - 1, 3), new Uint8Array([0, 0x6b, 0x6b]));
      assert.ok((await client.blockStatus(0, client.size)).length > 1);
    } finally {
      await client.close();
    }
    const info = await describeExport(uri);
    assert.equal(info.tls, true);
    assert.equal(info.size, 8 * MiB);
    await assert.rejects(NbdClient.connect(server.uri()), (e: unknown) =>
      e instanceof NbdOptionError && e.replyType === NBD_REP_ERR_TLS_REQD && /requires TLS/.test(e.message));
    // A CA that did not sign the server's certificate: the handshake fails, typed.
    const other = await makeCertificates(await mkdtemp(join(dir, 'other-')));
    await assert.rejects(NbdClient.connect(`nbds+unix:///?socket=${server.socket}&tls-certificates=${other.client}`), (e: unknown) =>
      hasCode(e, 'PROTOCOL') && /TLS handshake failed/.test(e.message));
  });

  test('PSK: the client connects with a key file and an identity (the URI user), and reads', async () => {
    const pskDir = join(dir, 'psk');
    await mkdir(pskDir);
    const key = 'a1'.repeat(32);
    await writeFile(join(pskDir, 'keys.psk'), `alice:${key}\n`);
    const server = await startQemuNbd(image, ['-r', '-f', 'qcow2', '--object', `tls-creds-psk,id=tls0,dir=${pskDir},endpoint=server`, '--tls-creds', 'tls0']);
    servers.push(server);
    const clientFile = join(dir, 'client.psk');
    await writeFile(clientFile, `bob:${'00'.repeat(32)}\nalice:${key}\n`);
    const client = await NbdClient.connect(`nbds+unix://alice@/?socket=${server.socket}&tls-psk-file=${clientFile}`);
    try {
      assert.equal(client.tls, true);
      assert.deepEqual(await client.read(MiB + 65535, 2), new Uint8Array([0x6b, 0]));
    } finally {
      await client.close();
    }
    await assert.rejects(NbdClient.connect(`nbds+unix://bob@/?socket=${server.socket}&tls-psk-file=${clientFile}`), (e: unknown) =>
      hasCode(e, 'PROTOCOL') && /TLS handshake failed/.test(e.message));
  });
});
