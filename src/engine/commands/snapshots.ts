/**
 * External snapshots as QEMU 7.2 takes them (blockdev.c): `blockdev-snapshot-sync` creates a
 * qcow2 overlay whose backing file is the node's image and puts it in the node's place;
 * `blockdev-snapshot` does the same with an overlay node added beforehand with `backing: null`.
 * In both the overlay takes over every parent of the node, the node becomes the overlay's
 * read-only backing, and the node's bitmaps stay on the node (they stop seeing new writes, as in
 * QEMU). Both are also transaction actions.
 *
 * As in QEMU, an overlay made by `blockdev-snapshot-sync` that nothing uses (a node without
 * parents, as on `-M none` without an export) is dropped at once: only its file remains.
 */
import { access } from 'node:fs/promises';
import { InvalidArgumentError } from '../../errors.js';
import { createQcow2 } from '../../qcow2/create.js';
import { qmpEnum, type QmpMembers } from '../../qmp/server/schema.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import type { Engine } from '../engine.js';
import type { BlockNode } from '../graph/block-node.js';
import { couldNotOpen } from '../qemu-errors.js';
import type { PreparedAction, Transactions } from './transaction.js';

const snapshotSyncSchema = {
  '*device': 'str',
  '*node-name': 'str',
  'snapshot-file': 'str',
  '*snapshot-node-name': 'str',
  '*format': 'str',
  '*mode': qmpEnum(['existing', 'absolute-paths']),
} as const satisfies QmpMembers;

const snapshotSchema = { node: 'str', overlay: 'str' } as const satisfies QmpMembers;

function fail(reason: string): never {
  throw new InvalidArgumentError('take an external snapshot', reason);
}

/** `bdrv_lookup_bs(device, node_name)`: the engine has no devices, so only node names are found. */
function lookup(engine: Engine, device: string | undefined, nodeName: string | undefined): BlockNode {
  const node = nodeName === undefined ? undefined : engine.graph.get(nodeName);
  if (node === undefined) fail(`Cannot find device='${device ?? ''}' nor node-name='${nodeName ?? ''}'`);
  return node;
}

/** QEMU's op blocker: a node that is some node's backing file cannot be snapshotted again. */
function checkNotBacking(node: BlockNode): void {
  const edge = [...node.parents].find((e) => e.role === 'backing');
  if (edge !== undefined) fail(`Node '${node.name}' is busy: node is used as backing hd of '${edge.parent.parentName}'`);
}

/** Puts `overlay` in `base`'s place with `base` as its backing (QEMU's `bdrv_append`). */
function append(engine: Engine, base: BlockNode, overlay: BlockNode): void {
  engine.graph.replace(base, overlay);
  base.makeReadOnly();
}

/** The overlay's node after `blockdev-snapshot-sync`'s checks and the file's creation. */
async function prepareSync(engine: Engine, args: JsonObject): Promise<PreparedAction> {
  const base = lookup(engine, args.device as string | undefined, args['node-name'] as string | undefined);
  checkNotBacking(base);
  const name = args['snapshot-node-name'] as string | undefined;
  if (name === undefined) fail('New overlay node-name missing');
  if (engine.graph.get(name) !== undefined) fail('New overlay node-name already in use');
  const format = (args.format as string | undefined) ?? 'qcow2';
  if (format !== 'qcow2') fail(format === 'raw' ? "Backing file not supported for file format 'raw'" : `bitback's engine makes qcow2 overlays only, not '${format}'`);
  const file = args['snapshot-file'] as string;
  if ((args.mode ?? 'absolute-paths') === 'absolute-paths') {
    await createQcow2(file, { size: base.size, backingFile: base.filename, backingFormat: base.driver === 'qcow2' ? 'qcow2' : 'raw' }).catch((e: unknown) => {
      throw couldNotOpen(file, e);
    });
  } else {
    await access(file).catch((e: unknown) => {
      throw couldNotOpen(file, e);
    });
  }
  // Not owned by the monitor, as in QEMU: it lives as long as something uses it.
  const overlay = await engine.addNode({ driver: 'qcow2', 'node-name': name, file: { driver: 'file', filename: file }, backing: base.name }, undefined, { monitorOwned: false });
  return {
    commit: async () => {
      append(engine, base, overlay);
      if (overlay.parents.size === 0) await engine.graph.remove(overlay);
    },
    abort: () => engine.graph.remove(overlay),
  };
}

/** `blockdev-snapshot`'s checks; the overlay takes its backing at commit. */
async function prepareSnapshot(engine: Engine, args: JsonObject): Promise<PreparedAction> {
  const base = lookup(engine, args.node as string, args.node as string);
  checkNotBacking(base);
  const overlay = lookup(engine, args.overlay as string, args.overlay as string);
  if ([...overlay.parents].some((e) => !e.parent.isNode)) fail('The overlay is already in use');
  const slot = overlay.backingSlot;
  if (slot === undefined) fail(overlay.driver === 'qcow2' ? 'The overlay already has a backing image' : 'The overlay does not support backing images');
  if (slot.target !== undefined) fail('The overlay already has a backing image');
  if (overlay === base) fail("Making 'x' a backing child of itself would create a loop".replace('x', base.name));
  return {
    commit: () => {
      const edge = overlay.attachChild('backing', base);
      slot.set(edge);
      append(engine, base, overlay);
    },
  };
}

/** Registers the external snapshot commands and their transaction actions. */
export function registerSnapshotCommands(engine: Engine, transactions: Transactions): void {
  const run = async (prepared: PreparedAction): Promise<void> => {
    await engine.graph.drained(async () => {
      await prepared.commit?.();
      await prepared.clean?.();
    });
  };
  engine.register('blockdev-snapshot-sync', async (args) => run(await prepareSync(engine, args)), snapshotSyncSchema);
  engine.register('blockdev-snapshot', async (args) => run(await prepareSnapshot(engine, args)), snapshotSchema);
  transactions.define('blockdev-snapshot-sync', snapshotSyncSchema, (data) => prepareSync(engine, data));
  transactions.define('blockdev-snapshot', snapshotSchema, (data) => prepareSnapshot(engine, data));
}
