/**
 * Test-only: TLS credentials made on the spot — an X.509 CA and server certificate in QEMU's
 * directory layout (made with `openssl`), and a PSK file with a random key.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Writes `ca-cert.pem`, `server-cert.pem` and `server-key.pem` into `dir` (which must exist): a
 * P-256 CA and a server certificate for `localhost` and 127.0.0.1 it signed, valid two days.
 */
export async function makeX509Directory(dir: string): Promise<void> {
  const at = (name: string): string => join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run('openssl', ['req', '-x509', ...ec, '-keyout', at('ca-key.pem'), '-out', at('ca-cert.pem'), '-days', '2', '-subj', '/CN=bitback test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  await run('openssl', ['req', ...ec, '-keyout', at('server-key.pem'), '-out', at('server.csr'), '-subj', '/CN=localhost']);
  await writeFile(at('server.ext'), 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n');
  await run('openssl', ['x509', '-req', '-in', at('server.csr'), '-CA', at('ca-cert.pem'), '-CAkey', at('ca-key.pem'), '-CAcreateserial',
    '-out', at('server-cert.pem'), '-days', '2', '-extfile', at('server.ext')]);
}

/** Writes a PSK file (`identity:hexkey`) with a random 32-byte key; returns the key. */
export async function makePskFile(path: string, identity = 'bitback'): Promise<Uint8Array> {
  const key = randomBytes(32);
  await writeFile(path, `${identity}:${key.toString('hex')}\n`, { mode: 0o600 });
  return key;
}
