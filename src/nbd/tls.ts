/**
 * TLS for NBD (proto.md "TLS support"): credentials in QEMU's layouts and the upgrade of a plain
 * socket after NBD_OPT_STARTTLS, for the server and the client.
 *
 * - X.509: a directory as QEMU's `tls-creds-x509` reads it: `ca-cert.pem`, `server-cert.pem`,
 *   `server-key.pem`, and for client certificates `client-cert.pem`, `client-key.pem`.
 * - PSK: a file of `identity:hexkey` lines, as `psktool` writes and QEMU's `tls-creds-psk` and
 *   libnbd's `tls-psk-file` read. Node.js speaks TLS-PSK up to TLS 1.2 only, so a PSK session is
 *   TLS 1.2 with a PSK cipher suite.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { type Socket } from 'node:net';
import { InvalidArgumentError, fromSystemError } from '../errors.js';
import { NbdProtocolError } from './protocol/errors.js';

/** Cipher suites offered for PSK sessions (TLS 1.2; GnuTLS peers accept these). */
const PSK_CIPHERS = 'ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-AES128-GCM-SHA256';

/** TLS credentials of a server or a client. */
export type TlsCredentials =
  | {
      kind: 'x509';
      /** PEM of the CA that signed the peer's certificate (verifies the peer). */
      ca?: Uint8Array;
      /** PEM certificate and key of this endpoint (required for a server). */
      cert?: Uint8Array;
      key?: Uint8Array;
      /** Server only: require and verify a client certificate (QEMU's `verify-peer`). */
      verifyPeer?: boolean;
    }
  | {
      kind: 'psk';
      /** Keys by identity (a server accepts any of them; a client uses `identity`). */
      keys: Map<string, Uint8Array>;
      /** Client only: the identity to present; default the first in the file. */
      identity?: string;
    };

/**
 * Reads X.509 credentials from a directory in QEMU's layout. For `server`, the server
 * certificate and key are required and the CA is used to verify clients when `verifyPeer`; for
 * `client`, the CA is required and a client certificate is used when present.
 *
 * @throws InvalidArgumentError naming the missing file; IoError for other read failures
 */
export async function loadX509Credentials(dir: string, endpoint: 'server' | 'client', verifyPeer = false): Promise<TlsCredentials> {
  const action = `load TLS credentials from ${dir}`;
  const read = async (name: string, required: boolean): Promise<Uint8Array | undefined> => {
    try {
      return await readFile(join(dir, name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        if (required) throw new InvalidArgumentError(action, `${name} is missing`);
        return undefined;
      }
      throw fromSystemError(action, e);
    }
  };
  if (endpoint === 'server') {
    const cert = await read('server-cert.pem', true);
    const key = await read('server-key.pem', true);
    const ca = await read('ca-cert.pem', verifyPeer);
    return { kind: 'x509', ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}), verifyPeer };
  }
  const ca = await read('ca-cert.pem', true);
  const cert = await read('client-cert.pem', false);
  const key = await read('client-key.pem', cert !== undefined);
  return { kind: 'x509', ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
}

/**
 * Reads a PSK file (`identity:hexkey` per line). `identity` picks the client identity.
 *
 * @throws InvalidArgumentError for an empty file, a malformed line or an unknown identity
 */
export async function loadPskCredentials(path: string, identity?: string): Promise<TlsCredentials> {
  const action = `load TLS PSK file ${path}`;
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw fromSystemError(action, e);
  }
  const keys = parsePskFile(text, action);
  if (identity !== undefined && !keys.has(identity)) throw new InvalidArgumentError(action, `it has no key for identity '${identity}'`);
  return { kind: 'psk', keys, identity: identity ?? [...keys.keys()][0]! };
}

/** Parses the text of a PSK file. */
export function parsePskFile(text: string, action = 'parse TLS PSK file'): Map<string, Uint8Array> {
  const keys = new Map<string, Uint8Array>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.lastIndexOf(':');
    const id = line.slice(0, colon);
    const hex = line.slice(colon + 1);
    if (colon <= 0 || !/^([0-9a-fA-F]{2})+$/.test(hex)) throw new InvalidArgumentError(action, `line ${i + 1} is not 'identity:hexkey'`);
    keys.set(id, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new InvalidArgumentError(action, 'it holds no key');
  return keys;
}

/**
 * Resolves on `event`: 'secure' for a server-side socket, 'secureConnect' for a client (a client
 * socket emits 'secure' before the server's certificate is verified; only 'secureConnect' says
 * it was).
 */
function waitSecure(socket: tls.TLSSocket, action: string, event: 'secure' | 'secureConnect'): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error): void => {
      socket.destroy();
      reject(new NbdProtocolError(action, `the TLS handshake failed: ${e.message}`, { cause: e }));
    };
    socket.once('error', onError);
    socket.once(event, () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/**
 * Server side: wraps `socket` (already past NBD_OPT_STARTTLS's ACK, with nothing unread) in
 * TLS and resolves when the handshake is done. On failure the socket is destroyed.
 */
export function startServerTls(socket: Socket, credentials: TlsCredentials): Promise<tls.TLSSocket> {
  // Node.js honours `pskCallback` on a server-side TLSSocket; its type definitions omit it.
  const options: tls.TLSSocketOptions & { pskCallback?: (socket: tls.TLSSocket, identity: string) => Buffer | null } = { isServer: true };
  if (credentials.kind === 'x509') {
    const context = tls.createSecureContext({
      ...(credentials.cert ? { cert: Buffer.from(credentials.cert) } : {}),
      ...(credentials.key ? { key: Buffer.from(credentials.key) } : {}),
      ...(credentials.ca ? { ca: Buffer.from(credentials.ca) } : {}),
      minVersion: 'TLSv1.2',
    });
    options.secureContext = context;
    if (credentials.verifyPeer === true) {
      options.requestCert = true;
      options.rejectUnauthorized = true;
    }
  } else {
    const keys = credentials.keys;
    options.secureContext = tls.createSecureContext({ ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' });
    options.pskCallback = (_socket: tls.TLSSocket, identity: string) => {
      const key = keys.get(identity);
      return key === undefined ? null : Buffer.from(key);
    };
  }
  const secure = new tls.TLSSocket(socket, options);
  return waitSecure(secure, 'start TLS with an NBD client', 'secure');
}

/**
 * Client side: wraps `socket` in TLS after the server's ACK to NBD_OPT_STARTTLS. `servername` is
 * the host name checked against the server certificate (for X.509 over a Unix socket, QEMU's
 * convention is to skip the name check: pass undefined).
 */
export function startClientTls(socket: Socket, credentials: TlsCredentials, servername?: string): Promise<tls.TLSSocket> {
  let options: tls.ConnectionOptions;
  if (credentials.kind === 'x509') {
    options = {
      socket,
      minVersion: 'TLSv1.2',
      ...(credentials.ca ? { ca: Buffer.from(credentials.ca) } : {}),
      ...(credentials.cert ? { cert: Buffer.from(credentials.cert) } : {}),
      ...(credentials.key ? { key: Buffer.from(credentials.key) } : {}),
      rejectUnauthorized: true,
      ...(servername !== undefined && servername !== '' ? { servername } : { checkServerIdentity: () => undefined }),
    };
  } else {
    const identity = credentials.identity ?? [...credentials.keys.keys()][0]!;
    const key = credentials.keys.get(identity);
    if (key === undefined) throw new InvalidArgumentError('start TLS', `no PSK for identity '${identity}'`);
    options = {
      socket,
      ciphers: PSK_CIPHERS,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      checkServerIdentity: () => undefined,
      pskCallback: () => ({ psk: Buffer.from(key), identity }),
    };
  }
  return waitSecure(tls.connect(options), 'start TLS with the NBD server', 'secureConnect');
}
