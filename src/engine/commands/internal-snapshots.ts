/**
 * Internal qcow2 snapshots of a node in use, as QEMU 7.2 takes them (blockdev.c):
 * `blockdev-snapshot-internal-sync` and `blockdev-snapshot-delete-internal-sync`, with QEMU's
 * checks and texts. bitback changes snapshot tables on closed images only, so the node's image
 * is closed (bitmaps stored), changed and reopened inside a drained section: no request sees the
 * image meanwhile. A node with a bitmap in use (exported, frozen by a job) is refused, since
 * reopening gives it new bitmap objects.
 */
import { InvalidArgumentError } from '../../errors.js';
import { createSnapshot, deleteSnapshot, listSnapshots, type Qcow2Snapshot } from '../../qcow2/snapshots/index.js';
import type { Engine } from '../engine.js';
import type { BlockNode } from '../graph/block-node.js';
import type { Transactions } from './transaction.js';

function fail(reason: string): never {
  throw new InvalidArgumentError('run an internal snapshot command', reason);
}

/** QEMU's `qmp_get_root_bs`: a node no other node uses. */
function rootNode(engine: Engine, device: string): BlockNode {
  const node = engine.graph.get(device);
  if (node === undefined) fail(`Cannot find device='${device}' nor node-name='${device}'`);
  if ([...node.parents].some((e) => e.parent.isNode)) fail('Need a root block node');
  return node;
}

/** Checks shared by both commands: a writable qcow2 node whose bitmaps are free. */
function checkSnapshottable(node: BlockNode, device: string): void {
  if (node.readOnly) fail(`Device '${device}' is read only`);
  if (node.driver !== 'qcow2') fail(`Block format '${node.driver}' used by device '${device}' does not support internal snapshots`);
  const busy = node.bitmaps.bitmaps.find((b) => b.busy);
  if (busy !== undefined) fail(`bitback's engine cannot change the snapshots of '${device}' while its bitmap '${busy.name ?? ''}' is in use`);
}

/** QEMU's `SnapshotInfo` of a snapshot. */
function snapshotInfo(s: Qcow2Snapshot): Record<string, unknown> {
  const clock = s.vmClockNanoseconds;
  return {
    id: s.id,
    name: s.name,
    'vm-state-size': s.vmStateSize,
    'date-sec': s.dateSeconds,
    'date-nsec': s.dateNanoseconds,
    'vm-clock-sec': Number(clock / 1_000_000_000n),
    'vm-clock-nsec': Number(clock % 1_000_000_000n),
    ...(s.icount !== undefined ? { icount: Number(s.icount) } : {}),
  };
}

/** Checks of `blockdev-snapshot-internal-sync` in QEMU's order; returns the node. */
async function prepareCreate(engine: Engine, device: string, name: string): Promise<BlockNode> {
  const node = rootNode(engine, device);
  checkSnapshottable(node, device);
  if (name === '') fail('Name is empty');
  // The node has the image open for writing: read its table beside it, as qemu-img snapshot -U -l.
  if ((await listSnapshots(node.filename, { lock: { forceShare: true } })).some((s) => s.name === name)) fail(`Snapshot with name '${name}' already exists on device '${device}'`);
  return node;
}

/** Registers the internal snapshot commands and the transaction action. */
export function registerInternalSnapshotCommands(engine: Engine, transactions: Transactions): void {
  const create = (node: BlockNode, name: string): Promise<Qcow2Snapshot> => node.reopenAround(() => createSnapshot(node.filename, name));
  engine.register(
    'blockdev-snapshot-internal-sync',
    async (args) => {
      const node = await prepareCreate(engine, args.device, args.name);
      await engine.graph.drained(() => create(node, args.name));
    },
    { device: 'str', name: 'str' },
  );
  transactions.define('blockdev-snapshot-internal-sync', { device: 'str', name: 'str' }, async (data) => {
    const device = data.device as string;
    const name = data.name as string;
    const node = await prepareCreate(engine, device, name);
    // Taken at prepare (the transaction is drained), undone by deleting it on abort, as QEMU.
    const made = await create(node, name);
    return { abort: async () => void (await node.reopenAround(() => deleteSnapshot(node.filename, made.id))) };
  });
  engine.register(
    'blockdev-snapshot-delete-internal-sync',
    async (args) => {
      const node = rootNode(engine, args.device);
      checkSnapshottable(node, args.device);
      if (args.id === undefined && args.name === undefined) fail('Name or id must be provided');
      const found = (await listSnapshots(node.filename, { lock: { forceShare: true } })).find((s) => (args.id === undefined || s.id === args.id) && (args.name === undefined || s.name === args.name));
      if (found === undefined) fail(`Snapshot with id '${args.id ?? 'null'}' and name '${args.name ?? 'null'}' does not exist on device '${args.device}'`);
      const deleted = await engine.graph.drained(() => node.reopenAround(() => deleteSnapshot(node.filename, found.id)));
      return snapshotInfo(deleted);
    },
    { device: 'str', '*id': 'str', '*name': 'str' },
  );
}
