/**
 * Test-only: an NbdServer listening on a Unix socket in a fresh temporary folder, with raw
 * clients to talk to it and the connection-level errors it reported.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NbdServer } from '../server.js';
import { type NbdExport, type NbdServerOptions } from '../types.js';
import { RawClient } from './raw-client.js';

/** A running test server. */
export interface TestServer {
  server: NbdServer;
  /** The socket path. */
  path: string;
  /** What `onError` received: `context: message`. */
  errors: string[];
  /** A raw client connected to the server (closed by {@link close}). */
  connect(): Promise<RawClient>;
  /** Closes the clients, the server and removes the folder. */
  close(): Promise<void>;
}

/** Starts a server with `exports`; `options.onError` is replaced by the collector. */
export async function startTestServer(exports: NbdExport[], options: NbdServerOptions = {}): Promise<TestServer> {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-server-'));
  const errors: string[] = [];
  const server = new NbdServer({ ...options, onError: (e, context) => errors.push(`${context}: ${e instanceof Error ? e.message : String(e)}`) });
  for (const e of exports) server.addExport(e);
  const path = join(dir, 'nbd.sock');
  await server.listen({ transport: 'unix', path });
  const clients: RawClient[] = [];
  return {
    server,
    path,
    errors,
    connect: async () => {
      const client = await RawClient.connect(path);
      clients.push(client);
      return client;
    },
    close: async () => {
      for (const c of clients) c.close();
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
