/**
 * The `nbd` driver (QEMU 7.2 block/nbd.c): a node that is an export of an NBD server (QEMU's
 * own, `qemu-nbd`, nbdkit, another engine), over bitback's {@link NbdClient}, so that the engine
 * can read from and write to it — e.g. pull a backup from QEMU's export through the engine.
 *
 * Options (QAPI `BlockdevOptionsNbd`):
 * - `server`: `{type: unix, path}` or `{type: inet, host, port}` (a numeric port). `vsock` and an
 *   abstract unix socket are refused; `fd` fails as in QEMU (the engine has no named fds).
 * - `export`: the export name, default "".
 * - `tls-creds`: refused with QEMU's text for a missing object (the engine has no objects).
 * - `x-dirty-bitmap: "qemu:dirty-bitmap:NAME"`: block status reports that meta context in place
 *   of the allocation, as QEMU's hack does: a dirty area is reported as a hole (unallocated),
 *   a clean one as data (`qemu-img map` then lists dirty areas as `data: false`).
 * - `open-timeout` (seconds): retry connecting until then; 0 (default): one attempt.
 * - `reconnect-delay`: only 0 (the default) — this driver does not reconnect; a lost connection
 *   fails the requests in flight and later ones.
 *
 * A read-only export opens a writable node only with `auto-read-only: true` (the node becomes
 * read-only), else fails as QEMU does ("Could not open image: Permission denied").
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { hasCode, InvalidArgumentError, IoError, NotSupportedError } from '../../errors.js';
import { NbdClient } from '../../nbd/client/index.js';
import { NbdOptionError } from '../../nbd/protocol/errors.js';
import type { NbdAddress, NbdUri } from '../../nbd/protocol/uri.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import { strerror } from '../qemu-errors.js';
import type { BlockDriver } from './driver.js';

/** The default NBD port, which QEMU leaves out of the node's file name. */
const DEFAULT_PORT = '10809';

/** glibc's texts for the errors a connection can fail with, beyond those of {@link strerror}. */
const NET_ERRORS: Record<string, string> = {
  ECONNREFUSED: 'Connection refused',
  ECONNRESET: 'Connection reset by peer',
  ETIMEDOUT: 'Connection timed out',
  EHOSTUNREACH: 'No route to host',
  ENETUNREACH: 'Network is unreachable',
  EADDRNOTAVAIL: 'Cannot assign requested address',
  ENOTSOCK: 'Socket operation on non-socket',
};

/** Time between connection attempts within `open-timeout`, in ms. */
const RETRY_INTERVAL_MS = 100;

function fail(reason: string, cause?: unknown): never {
  throw new InvalidArgumentError('open nbd node', reason, cause === undefined ? undefined : { cause });
}

/** Where to connect, and QEMU's names for it: `where` in errors, `filename` for queries. */
function serverAddress(server: JsonObject, exportName: string): { address: NbdAddress; where: string; filename: string } {
  switch (server.type) {
    case 'unix': {
      const path = String(server.path);
      if (server.abstract === true) throw new NotSupportedError('open nbd node', "bitback's nbd driver does not connect to abstract unix sockets");
      return { address: { transport: 'unix', path }, where: path, filename: `nbd+unix:///${exportName}?socket=${path}` };
    }
    case 'inet': {
      const host = String(server.host);
      const port = String(server.port);
      const number = /^\d+$/.test(port) ? Number(port) : Number.NaN;
      // getaddrinfo() with AI_NUMERICSERV-less hints: QEMU's text for a port that is not a number.
      if (!(number >= 0 && number <= 65535)) fail(`address resolution failed for ${host}:${port}: Servname not supported for ai_socktype`);
      const shown = port === DEFAULT_PORT ? host : `${host}:${port}`;
      return { address: { transport: 'tcp', host, port: number }, where: `${host}:${port}`, filename: `nbd://${shown}/${exportName}` };
    }
    case 'fd':
      fail(`File descriptor named '${String(server.str)}' has not been found`);
    default:
      throw new NotSupportedError('open nbd node', `bitback's nbd driver connects over unix and inet sockets, not '${String(server.type)}'`);
  }
}

/** Connects, retrying refused or missing sockets until `deadline` (ms since the epoch). */
async function connect(uri: NbdUri, contexts: string[], readOnly: boolean, deadline: number): Promise<NbdClient> {
  for (;;) {
    try {
      return await NbdClient.connect(uri, { contexts, readOnly });
    } catch (e) {
      const retry = e instanceof IoError && (e.errno === 'ECONNREFUSED' || e.errno === 'ENOENT') && Date.now() + RETRY_INTERVAL_MS < deadline;
      if (!retry) throw e;
      await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
    }
  }
}

/** QEMU's error for a failed connection or negotiation. */
function openError(e: unknown, where: string, bitmapContext: string | undefined): never {
  if (e instanceof NbdOptionError && e.code === 'NOT_FOUND') fail('Requested export not available', e);
  if (bitmapContext !== undefined && hasCode(e, 'NOT_FOUND')) fail('Could not open image: Invalid argument', e);
  if (e instanceof IoError) fail(`Failed to connect to '${where}': ${NET_ERRORS[e.errno] ?? strerror(e.errno)}`, e);
  throw e;
}

export const nbdDriver: BlockDriver = {
  name: 'nbd',
  async open(options, context) {
    const exportName = typeof options.export === 'string' ? options.export : '';
    // QEMU looks up the TLS credentials before it resolves the address.
    const tlsCreds = options['tls-creds'];
    if (typeof tlsCreds === 'string') fail(`No TLS credentials with id '${tlsCreds}'`);
    const { address, where, filename } = serverAddress(options.server as JsonObject, exportName);
    const reconnectDelay = typeof options['reconnect-delay'] === 'number' ? options['reconnect-delay'] : 0;
    if (reconnectDelay !== 0) throw new NotSupportedError('open nbd node', "bitback's nbd driver does not reconnect: reconnect-delay must be 0");
    const openTimeout = typeof options['open-timeout'] === 'number' ? options['open-timeout'] : 0;
    const bitmapContext = typeof options['x-dirty-bitmap'] === 'string' ? options['x-dirty-bitmap'] : undefined;
    let client: NbdClient;
    try {
      const uri: NbdUri = { address, exportName, tls: false };
      client = await connect(uri, bitmapContext === undefined ? [] : [bitmapContext], context.readOnly, Date.now() + openTimeout * 1000);
    } catch (e) {
      openError(e, where, bitmapContext);
    }
    if (client.capabilities.readOnly && !context.readOnly) {
      if (options['auto-read-only'] === true) {
        context.node.makeReadOnly();
      } else {
        await client.close();
        fail('Could not open image: Permission denied');
      }
    }
    const device: BlockDevice = bitmapContext === undefined ? client : new DirtyBitmapAsAllocation(client, bitmapContext);
    return { device, filename };
  },
};

/**
 * QEMU's `x-dirty-bitmap` view of an export: block status from the bitmap's meta context, whose
 * "dirty" bit is read as the "hole" bit of `base:allocation` (block/nbd.c reads whichever one
 * context it negotiated the same way). Everything else goes to the client.
 */
class DirtyBitmapAsAllocation implements BlockDevice {
  readonly #client: NbdClient;
  readonly #context: string;

  constructor(client: NbdClient, context: string) {
    this.#client = client;
    this.#context = context;
  }

  get size(): number {
    return this.#client.size;
  }

  get capabilities(): BlockCapabilities {
    return { ...this.#client.capabilities, canBlockStatus: true };
  }

  get blockSize(): BlockSizeConstraints {
    return this.#client.blockSize;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#client.read(offset, length);
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.#client.write(offset, data, options);
  }

  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    return this.#client.writeZeroes(offset, length, options);
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.#client.trim(offset, length, options);
  }

  flush(): Promise<void> {
    return this.#client.flush();
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const extents = await this.#client.contextStatus(this.#context, offset, length);
    // Bit 0 (NBD_STATE_DIRTY) lands on the hole bit, bit 1 on the zero bit, as in QEMU.
    return extents.map((e) => ({ offset: e.offset, length: e.length, flags: e.flags & 0b11 }));
  }

  close(): Promise<void> {
    return this.#client.close();
  }
}
