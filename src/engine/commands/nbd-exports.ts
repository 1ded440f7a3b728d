/**
 * The engine's NBD server and exports, as QEMU 7.2 has them (blockdev-nbd.c, block/export/):
 * `nbd-server-start`, `nbd-server-stop`, `block-export-add` (type `nbd`: `name`, `description`,
 * `writable`, `bitmaps`, `allocation-depth`), `block-export-del`, `query-block-exports`, and the
 * `BLOCK_EXPORT_DELETED` event.
 *
 * An export serves a backend on its node, so requests from NBD clients go through the node graph
 * like any other: writes are recorded by the enabled bitmaps of the nodes they pass, a
 * copy-before-write filter above the node sees them. Exported bitmaps are marked busy while the
 * export exists, as QEMU does; a read-only export refuses an enabled bitmap.
 */
import type { DirtyBitmap } from '../../bitmap/index.js';
import { InvalidArgumentError } from '../../errors.js';
import { NbdServer } from '../../nbd/server/server.js';
import type { NbdListenAddress } from '../../nbd/server/types.js';
import { qmpAlternate, qmpArray, qmpEnum, qmpStruct, qmpUnion } from '../../qmp/server/schema.js';
import type { Engine } from '../engine.js';
import type { BlockBackend } from '../graph/backend.js';
import type { BlockNode } from '../graph/block-node.js';
import { BlockPermission } from '../graph/permissions.js';
import { checkBitmap, lookupBitmap } from './bitmaps.js';

/** One export. */
interface ExportEntry {
  id: string;
  name: string;
  node: BlockNode;
  backend: BlockBackend;
  bitmaps: DirtyBitmap[];
}

function fail(reason: string): never {
  throw new InvalidArgumentError('run an export command', reason);
}

const socketAddressLegacy = qmpUnion(
  'type',
  { type: qmpEnum(['inet', 'unix', 'vsock', 'fd']) },
  {
    inet: { data: qmpStruct({ host: 'str', port: 'str', '*numeric': 'bool', '*to': 'uint16', '*ipv4': 'bool', '*ipv6': 'bool', '*keep-alive': 'bool', '*mptcp': 'bool' }) },
    unix: { data: qmpStruct({ path: 'str', '*abstract': 'bool', '*tight': 'bool' }) },
    vsock: { data: qmpStruct({ cid: 'str', port: 'str' }) },
    fd: { data: qmpStruct({ str: 'str' }) },
  },
);

const bitmapOrStr = qmpAlternate('BlockDirtyBitmapOrStr', 'str', qmpStruct({ node: 'str', name: 'str' }));

const blockExportOptions = qmpUnion(
  'type',
  {
    type: qmpEnum(['nbd', 'vhost-user-blk', 'fuse', 'vduse-blk']),
    id: 'str',
    '*fixed-iothread': 'bool',
    '*iothread': 'str',
    'node-name': 'str',
    '*writable': 'bool',
    '*writethrough': 'bool',
  },
  {
    nbd: { '*name': 'str', '*description': 'str', '*bitmaps': qmpArray(bitmapOrStr), '*allocation-depth': 'bool' },
  },
);

/** The bitmap `name` on `node` or below it (through filters and backing files), as QEMU looks it up. */
function findBitmapBelow(node: BlockNode, name: string): { node: BlockNode; bitmap: DirtyBitmap } | undefined {
  for (let n: BlockNode | undefined = node; n !== undefined; ) {
    const bitmap = n.bitmaps.get(name);
    if (bitmap !== undefined) return { node: n, bitmap };
    n = (n.child('backing') ?? (n.children.length === 1 || n.driver === 'copy-before-write' ? n.child('file') : undefined))?.node;
  }
  return undefined;
}

/** Registers the NBD server and export commands on `engine`. */
export function registerNbdCommands(engine: Engine): void {
  let server: NbdServer | undefined;
  const exports = new Map<string, ExportEntry>();

  const removeExport = async (entry: ExportEntry): Promise<void> => {
    exports.delete(entry.id);
    await server?.removeExport(entry.name).catch(() => undefined);
    for (const b of entry.bitmaps) b.setBusy(false);
    await engine.graph.detachBackend(entry.backend);
    engine.emit('BLOCK_EXPORT_DELETED', { id: entry.id });
  };

  const stopServer = async (): Promise<void> => {
    for (const entry of [...exports.values()]) await removeExport(entry);
    const s = server;
    server = undefined;
    await s?.close();
  };
  engine.onClose(stopServer);

  engine.register(
    'nbd-server-start',
    async (args) => {
      if (server !== undefined) fail('NBD server already running');
      if (args['tls-creds'] !== undefined) fail(`No TLS credentials with id '${args['tls-creds']}'`);
      let address: NbdListenAddress;
      const addr = args.addr;
      if (addr.type === 'unix') address = { transport: 'unix', path: addr.data.path };
      else if (addr.type === 'inet') {
        const port = Number.parseInt(addr.data.port, 10);
        if (!(port >= 0 && port <= 65535)) fail(`Unable to parse port '${addr.data.port}'`);
        address = { transport: 'tcp', host: addr.data.host, port };
      } else fail(`bitback's engine listens on unix and inet addresses only, not ${addr.type}`);
      const s = new NbdServer();
      try {
        await s.listen(address);
      } catch (e) {
        await s.close();
        throw e;
      }
      server = s;
    },
    { addr: socketAddressLegacy, '*tls-creds': 'str', '*tls-authz': 'str', '*max-connections': 'uint32' },
  );

  engine.register(
    'nbd-server-stop',
    async () => {
      if (server === undefined) fail('NBD server not running');
      await stopServer();
    },
    {},
  );

  engine.register(
    'block-export-add',
    async (args) => {
      if (args.type !== 'nbd') fail(`bitback's engine exports over NBD only, not ${args.type}`);
      if (exports.has(args.id)) fail(`Block export id '${args.id}' is already in use`);
      const node = engine.graph.get(args['node-name']);
      if (node === undefined) fail(`Cannot find device='' nor node-name='${args['node-name']}'`);
      const writable = args.writable ?? false;
      if (writable && node.readOnly) fail(`Cannot export read-only node as writable`);
      // As QEMU's blk_exp_add: the export's backend takes its permissions (a conflict with another
      // user of the node is the error) before the NBD server's own checks.
      const { CONSISTENT_READ, WRITE } = BlockPermission;
      const backend = engine.graph.attachBackend(`export '${args.id}'`, node, { perm: CONSISTENT_READ | (writable ? WRITE : 0) });
      let name: string;
      const bitmaps: DirtyBitmap[] = [];
      try {
        if (server === undefined) fail('NBD server not running');
        name = args.name ?? args['node-name'];
        if ([...exports.values()].some((e) => e.name === name)) fail(`NBD server already has export named '${name}'`);
        if (Buffer.byteLength(name) > 4096) fail(`export name '${name.slice(0, 64)}...' too long`);
        for (const ref of args.bitmaps ?? []) {
          const found = typeof ref === 'string' ? findBitmapBelow(node, ref) : lookupBitmap(engine, ref.node, ref.name);
          if (found === undefined) fail(`Bitmap '${ref as string}' is not found`);
          checkBitmap(found.node, found.bitmap, true);
          const bitmapName = found.bitmap.name ?? '';
          if (!writable && found.bitmap.enabled) fail(`Enabled bitmap '${bitmapName}' incompatible with readonly export`);
          if (bitmaps.includes(found.bitmap)) fail(`Bitmap '${bitmapName}' is currently in use by another operation and cannot be used`);
          bitmaps.push(found.bitmap);
        }
        server.addExport({
          name,
          ...(args.description !== undefined ? { description: args.description } : {}),
          device: backend,
          bitmaps,
          readOnly: !writable,
          allocationDepth: args['allocation-depth'] ?? false,
        });
      } catch (e) {
        await engine.graph.detachBackend(backend);
        throw e;
      }
      for (const b of bitmaps) b.setBusy(true);
      exports.set(args.id, { id: args.id, name, node, backend, bitmaps });
    },
    blockExportOptions,
  );

  engine.register(
    'block-export-del',
    async (args) => {
      const entry = exports.get(args.id);
      if (entry === undefined) fail(`Export '${args.id}' is not found`);
      await removeExport(entry);
    },
    { id: 'str', '*mode': qmpEnum(['safe', 'hard']) },
  );

  engine.register(
    'query-block-exports',
    () => [...exports.values()].map((e) => ({ type: 'nbd', id: e.id, 'node-name': e.backend.node.name, 'shutting-down': false })),
    {},
  );
}
