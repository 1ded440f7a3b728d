/**
 * NBD URIs (doc/uri.md in NetworkBlockDevice/nbd, as libnbd and QEMU read them):
 *
 *     nbd://HOST[:PORT]/EXPORT          TCP, port 10809 by default
 *     nbds://HOST[:PORT]/EXPORT         the same with TLS required
 *     nbd+unix:///EXPORT?socket=PATH    a Unix socket
 *     nbds+unix:///EXPORT?socket=PATH   a Unix socket with TLS
 *
 * The export name is the path without its first `/`, percent-decoded (`nbd://h/` and `nbd://h`
 * name the default export ""). For TLS, as libnbd reads them: `tls-certificates=DIR` (X.509,
 * QEMU's file layout), `tls-psk-file=FILE`, and the PSK identity as the URI's user
 * (`nbds+unix://alice@/vda?socket=S&tls-psk-file=F`). No I/O.
 */
import { InvalidArgumentError } from '../../errors.js';

/** The default NBD TCP port (IANA). */
export const NBD_DEFAULT_PORT = 10809;

/** Where a server listens. */
export type NbdAddress =
  | { transport: 'tcp'; host: string; port: number }
  | { transport: 'unix'; path: string };

/** A parsed NBD URI. */
export interface NbdUri {
  address: NbdAddress;
  exportName: string;
  /** TLS is required (`nbds`). */
  tls: boolean;
  /** Directory with `ca-cert.pem` and, for client certificates, `client-cert.pem`/`client-key.pem`. */
  tlsCertificates?: string;
  /** PSK file in `username:hexkey` lines (as `psktool` and QEMU write it). */
  tlsPskFile?: string;
  /** The PSK identity (the URI's user, `nbds://alice@host/`); defaults to the file's first identity. */
  tlsUsername?: string;
}

/** True when `text` looks like an NBD URI (any of the schemes bitback knows, or others of the family). */
export function isNbdUri(text: string): boolean {
  return /^nbds?(\+[a-z]+)?:\/\//i.test(text);
}

/** Parses an NBD URI; anything malformed or unsupported is an `InvalidArgumentError` saying what. */
export function parseNbdUri(text: string): NbdUri {
  const action = `parse NBD URI '${text}'`;
  const scheme = /^([a-z+]+):\/\//i.exec(text)?.[1]?.toLowerCase();
  if (scheme === undefined) throw new InvalidArgumentError(action, 'it does not start with nbd://, nbds://, nbd+unix:// or nbds+unix://');
  const tls = scheme.startsWith('nbds');
  const transport = scheme === 'nbd' || scheme === 'nbds' ? 'tcp' : scheme === 'nbd+unix' || scheme === 'nbds+unix' ? 'unix' : undefined;
  if (transport === undefined) throw new InvalidArgumentError(action, `the scheme '${scheme}' is not supported (use nbd, nbds, nbd+unix or nbds+unix)`);
  // The user part (the TLS PSK identity) is taken out first: WHATWG URLs refuse it without a host.
  const userMatch = /^[a-z+]+:\/\/([^@/?#]*)@/i.exec(text);
  let user: string | undefined;
  if (userMatch !== null) {
    if (userMatch[1]!.includes(':')) throw new InvalidArgumentError(action, 'passwords are not part of NBD URIs (use tls-psk-file)');
    try {
      user = decodeURIComponent(userMatch[1]!);
    } catch {
      throw new InvalidArgumentError(action, 'the user name has a bad percent-escape');
    }
    if (!tls) throw new InvalidArgumentError(action, `a user name (the TLS PSK identity) needs an nbds:// or nbds+unix:// URI`);
  }
  let url: URL;
  try {
    url = new URL(userMatch === null ? text : text.replace(`${userMatch[1]!}@`, ''));
  } catch {
    throw new InvalidArgumentError(action, 'it is not a valid URI');
  }
  if (url.hash !== '') throw new InvalidArgumentError(action, 'NBD URIs have no fragment');
  let exportName: string;
  try {
    // From the text, not url.pathname: WHATWG URLs drop '.' and '..' segments, which are export names here.
    const rawPath = /^[a-z+]+:\/\/[^/?#]*([^?#]*)/i.exec(text)?.[1] ?? '';
    exportName = decodeURIComponent(rawPath.replace(/^\//, ''));
  } catch {
    throw new InvalidArgumentError(action, 'the export name has a bad percent-escape');
  }
  if (exportName.includes('\0')) throw new InvalidArgumentError(action, 'the export name contains a NUL character');
  const params = parseQuery(url.search, action);
  const known = new Set(['socket', 'tls-certificates', 'tls-psk-file']);
  for (const key of params.keys()) {
    if (!known.has(key)) throw new InvalidArgumentError(action, `the query parameter '${key}' is not supported (known: ${[...known].join(', ')})`);
  }
  let address: NbdAddress;
  if (transport === 'unix') {
    if (url.host !== '') throw new InvalidArgumentError(action, `a Unix-socket URI has no host (write ${scheme}:///EXPORT?socket=PATH)`);
    const path = params.get('socket');
    if (path === undefined || path === '') throw new InvalidArgumentError(action, 'a Unix-socket URI needs ?socket=PATH');
    address = { transport: 'unix', path };
  } else {
    if (params.has('socket')) throw new InvalidArgumentError(action, `?socket= belongs to ${tls ? 'nbds+unix' : 'nbd+unix'}:// URIs`);
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    if (host === '') throw new InvalidArgumentError(action, 'a TCP URI needs a host');
    const port = url.port === '' ? NBD_DEFAULT_PORT : Number(url.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidArgumentError(action, `port ${url.port} is not between 1 and 65535`);
    address = { transport: 'tcp', host, port };
  }
  const uri: NbdUri = { address, exportName, tls };
  const certs = params.get('tls-certificates') ?? null;
  const psk = params.get('tls-psk-file') ?? null;

  if (certs !== null) uri.tlsCertificates = certs;
  if (psk !== null) uri.tlsPskFile = psk;
  if (user !== undefined) uri.tlsUsername = user;
  if (!tls && (certs !== null || psk !== null)) throw new InvalidArgumentError(action, `TLS parameters need an nbds:// or nbds+unix:// URI`);
  if (certs !== null && psk !== null) throw new InvalidArgumentError(action, 'give tls-certificates or tls-psk-file, not both');
  return uri;
}

/** Formats an NBD URI that {@link parseNbdUri} reads back to the same value. */
export function formatNbdUri(uri: NbdUri): string {
  const path = `/${encodeURIComponent(uri.exportName)}`;
  const params = new Map<string, string>();
  let base: string;
  const user = uri.tlsUsername === undefined ? '' : `${encodeURIComponent(uri.tlsUsername)}@`;
  if (uri.address.transport === 'unix') {
    base = `${uri.tls ? 'nbds' : 'nbd'}+unix://${user}${path}`;
    params.set('socket', uri.address.path);
  } else {
    const host = uri.address.host.includes(':') ? `[${uri.address.host}]` : uri.address.host;
    const port = uri.address.port === NBD_DEFAULT_PORT ? '' : `:${uri.address.port}`;
    base = `${uri.tls ? 'nbds' : 'nbd'}://${user}${host}${port}${path}`;
  }
  if (uri.tlsCertificates !== undefined) params.set('tls-certificates', uri.tlsCertificates);
  if (uri.tlsPskFile !== undefined) params.set('tls-psk-file', uri.tlsPskFile);
  const query = [...params].map(([k, v]) => `${k}=${encodeURIComponent(v).replace(/%2F/g, '/')}`).join('&');
  return query === '' ? base : `${base}?${query}`;
}

/** Query parameters, percent-decoded; unlike URLSearchParams, `+` stays a plus (socket paths may hold one). */
function parseQuery(search: string, action: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const part of search.replace(/^\?/, '').split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    let value: string;
    try {
      value = decodeURIComponent(eq < 0 ? '' : part.slice(eq + 1));
    } catch {
      throw new InvalidArgumentError(action, `the query parameter '${key}' has a bad percent-escape`);
    }
    if (params.has(key)) throw new InvalidArgumentError(action, `the query parameter '${key}' is given twice`);
    params.set(key, value);
  }
  return params;
}
