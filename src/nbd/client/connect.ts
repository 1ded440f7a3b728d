/**
 * Opening the byte stream to an NBD server: a Unix or TCP socket, a deadline for connecting and
 * negotiating, the TLS upgrade after NBD_OPT_STARTTLS, and loading the credentials an `nbds` URI
 * names.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { type Duplex } from 'node:stream';
import { type TLSSocket } from 'node:tls';
import { BitbackError, InvalidArgumentError, IoError, fromSystemError } from '../../errors.js';
import { formatNbdUri, parseNbdUri, type NbdAddress, type NbdUri } from '../protocol/uri.js';
import { type TlsCredentials } from '../tls.js';
import { type SocketInput } from './socket-input.js';

/** A parsed target: the URI given as text or as a value. */
export function resolveTarget(target: string | NbdUri): NbdUri {
  return typeof target === 'string' ? parseNbdUri(target) : target;
}

/** Names an address in messages: `unix:/run/x.sock` or `127.0.0.1:10809`. */
export function describeAddress(address: NbdAddress): string {
  return address.transport === 'unix' ? `unix:${address.path}` : `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/**
 * The TLS credentials for `uri`: `given` when set, else those its `tls-certificates` or
 * `tls-psk-file` parameter names; undefined for a plain URI without `given`.
 *
 * @throws InvalidArgumentError for an `nbds` URI without credentials (saying what to add)
 */
export async function credentialsFor(uri: NbdUri, given: TlsCredentials | undefined): Promise<TlsCredentials | undefined> {
  if (given !== undefined) return given;
  if (!uri.tls) return undefined;
  // node:tls and the credential loaders are loaded when a URI asks for TLS, not on every start.
  const { loadPskCredentials, loadX509Credentials } = await import('../tls.js');
  if (uri.tlsCertificates !== undefined) return loadX509Credentials(uri.tlsCertificates, 'client');
  if (uri.tlsPskFile !== undefined) return loadPskCredentials(uri.tlsPskFile, uri.tlsUsername);
  throw new InvalidArgumentError(
    `connect to ${formatNbdUri(uri)}`,
    'TLS is required but no credentials were given: add tls-certificates=DIR (X.509, QEMU layout) or tls-psk-file=FILE to the URI',
  );
}

/**
 * Opens a socket to `address`: returns it at once (so that a deadline can destroy it) and a
 * promise that resolves once it is connected, or rejects with an `IoError` carrying the system
 * errno (ECONNREFUSED, ENOENT...). With `input`, the socket reads into the buffers its consumers
 * choose (see socket-input.ts) and emits no 'data' events; never for a socket TLS will wrap.
 */
export function openSocket(address: NbdAddress, action: string, input?: SocketInput): { socket: Socket; connected: Promise<Socket> } {
  const onread = input === undefined ? {} : { onread: input.onread };
  const socket = address.transport === 'unix' ? netConnect({ path: address.path, ...onread }) : netConnect({ host: address.host, port: address.port, ...onread });
  const connected = new Promise<Socket>((resolve, reject) => {
    const onError = (e: Error): void => {
      socket.destroy();
      reject(fromSystemError(action, e));
    };
    socket.once('error', onError);
    socket.once('close', () => reject(new IoError(action, 'the connection closed before it was established', 'ECONNRESET', { retryable: true })));
    socket.once('connect', () => {
      socket.off('error', onError);
      if (address.transport === 'tcp') socket.setNoDelay(true);
      resolve(socket);
    });
  });
  return { socket, connected };
}

/**
 * Wraps the plain `socket` in TLS (after the server's ACK to NBD_OPT_STARTTLS, with nothing left
 * unread). The server name is checked against the certificate for TCP addresses only (QEMU's
 * convention for Unix sockets).
 */
export async function upgradeToTls(socket: Socket, credentials: TlsCredentials, address: NbdAddress, action: string): Promise<TLSSocket> {
  // The TLS socket reports failures; keep the raw socket from raising an unhandled 'error'.
  socket.on('error', () => {});
  try {
    const { startClientTls } = await import('../tls.js');
    return await startClientTls(socket, credentials, address.transport === 'tcp' ? address.host : undefined);
  } catch (e) {
    socket.destroy();
    if (e instanceof BitbackError) throw e;
    throw fromSystemError(action, e);
  }
}

/** Runs `body` with a deadline: past `timeoutMs`, every stream it opened is destroyed and the call rejects with ETIMEDOUT. */
export async function withDeadline<T>(action: string, timeoutMs: number, body: (onStream: (stream: Duplex) => void) => Promise<T>): Promise<T> {
  const streams: Duplex[] = [];
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      for (const stream of streams) stream.destroy();
      reject(new IoError(action, `no answer within ${timeoutMs} ms`, 'ETIMEDOUT', { retryable: true }));
    }, timeoutMs);
  });
  const work = body((stream) => streams.push(stream));
  try {
    return await Promise.race([work, expired]);
  } catch (e) {
    for (const stream of streams) stream.destroy();
    work.catch(() => undefined);
    throw e;
  } finally {
    clearTimeout(timer);
  }
}
