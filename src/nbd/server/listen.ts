/**
 * Binding a `net.Server` where the NBD server listens.
 *
 * A Unix socket is created in a fresh private folder (mode 0700) next to the target, given its
 * mode and group there, and only then linked to the target path: nobody can connect before the
 * permissions are right, and an existing file is never replaced (a stale socket, one nobody
 * listens on any more, is removed first). The socket is removed again by `close`. The temporary
 * path is the folder plus 14 bytes: a target near the 107-byte limit of socket paths
 * may fail to bind.
 */
import { connect, type AddressInfo, type Server } from 'node:net';
import { chmod, chown, link, lstat, mkdtemp, readFile, rename, rm, unlink } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { BitbackError, InvalidArgumentError, fromSystemError } from '../../errors.js';
import { type NbdListenAddress, type NbdListening } from './types.js';

/** A bound server and how to stop it listening. */
export interface BoundListener {
  address: NbdListening;
  /** Stops accepting connections and removes the Unix socket (if it is still ours). Idempotent. */
  close(): Promise<void>;
}

/** Binds `server` to `address`. @throws BitbackError (ALREADY_EXISTS, INVALID_ARGUMENT, IO_ERROR) */
export async function bindListener(server: Server, address: NbdListenAddress): Promise<BoundListener> {
  switch (address.transport) {
    case 'unix':
      return bindUnix(server, address.path, address.mode ?? 0o600, address.group);
    case 'tcp':
      return bindTcp(server, address.host ?? '127.0.0.1', address.port);
    default: {
      const never: never = address;
      throw new InvalidArgumentError('listen for NBD clients', `unknown transport in ${JSON.stringify(never)}`);
    }
  }
}

function listenOn(server: Server, options: { path: string } | { host: string; port: number }): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const onError = (e: Error): void => reject(e);
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolvePromise();
    });
  });
}

function closeServer(server: Server): void {
  if (server.listening) server.close();
}

async function bindTcp(server: Server, host: string, port: number): Promise<BoundListener> {
  const action = `listen for NBD clients on ${host}:${port}`;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(action, `port ${port} is not from 0 to 65535`);
  try {
    await listenOn(server, { host, port });
  } catch (e) {
    throw fromSystemError(action, e);
  }
  const bound = server.address() as AddressInfo;
  return {
    address: { transport: 'tcp', host: bound.address, port: bound.port },
    close: async () => closeServer(server),
  };
}

async function bindUnix(server: Server, path: string, mode: number, group: string | number | undefined): Promise<BoundListener> {
  const target = resolve(path);
  const action = `listen for NBD clients on ${target}`;
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777) throw new InvalidArgumentError(action, `mode ${String(mode)} is not a permission mode (0 to 0o777)`);
  const gid = group === undefined ? undefined : await groupId(group, action);
  await removeStaleSocket(target, action);
  let folder: string;
  try {
    folder = await mkdtemp(join(dirname(target), '.nbd-'));
  } catch (e) {
    throw fromSystemError(action, e);
  }
  const temporary = join(folder, 's');
  let identity: { dev: number; ino: number };
  try {
    await listenOn(server, { path: temporary });
    await chmod(temporary, mode);
    if (gid !== undefined) await chown(temporary, -1, gid);
    await publish(temporary, target, action);
    const st = await lstat(target);
    identity = { dev: st.dev, ino: st.ino };
  } catch (e) {
    closeServer(server);
    throw fromSystemError(action, e);
  } finally {
    // The socket stays reachable through the target; the private folder goes.
    await rm(folder, { recursive: true, force: true });
  }
  let closed = false;
  return {
    address: { transport: 'unix', path: target },
    close: async () => {
      if (closed) return;
      closed = true;
      closeServer(server);
      try {
        const st = await lstat(target);
        if (st.dev === identity.dev && st.ino === identity.ino) await unlink(target);
      } catch {
        // already gone
      }
    },
  };
}

/**
 * Gives the socket its public name. A hard link never replaces a path that appeared meanwhile
 * (EEXIST); where the file system has no hard links, a rename does (with that small window).
 */
async function publish(temporary: string, target: string, action: string): Promise<void> {
  try {
    await link(temporary, target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new BitbackError('ALREADY_EXISTS', action, 'the path exists', { cause: e });
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw e;
    await rename(temporary, target);
  }
}

/**
 * Refuses an existing path unless it is a socket nobody listens on (connecting fails with
 * ECONNREFUSED), which is removed.
 */
async function removeStaleSocket(target: string, action: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(target)).isSocket();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw fromSystemError(action, e);
  }
  if (!isSocket) throw new BitbackError('ALREADY_EXISTS', action, 'the path exists and is not a socket');
  const stale = await new Promise<boolean>((resolvePromise) => {
    const probe = connect(target);
    probe.once('connect', () => {
      probe.destroy();
      resolvePromise(false);
    });
    probe.once('error', (e: NodeJS.ErrnoException) => resolvePromise(e.code === 'ECONNREFUSED'));
  });
  if (!stale) throw new BitbackError('ALREADY_EXISTS', action, 'the socket is in use (or cannot be probed)');
  try {
    await unlink(target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw fromSystemError(action, e);
  }
}

/** A group id from a number or a name (looked up in /etc/group). */
async function groupId(group: string | number, action: string): Promise<number> {
  if (typeof group === 'number' || /^\d+$/.test(group)) {
    const gid = Number(group);
    if (!Number.isSafeInteger(gid) || gid < 0) throw new InvalidArgumentError(action, `group ${group} is not a group id`);
    return gid;
  }
  let text: string;
  try {
    text = await readFile('/etc/group', 'utf8');
  } catch (e) {
    throw fromSystemError(action, e);
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new InvalidArgumentError(action, `there is no group named '${group}'`);
}
