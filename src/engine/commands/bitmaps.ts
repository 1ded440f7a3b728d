/**
 * The dirty bitmap commands of QEMU 7.2 (block/monitor/bitmap-qmp-cmds.c): `block-dirty-bitmap-add`,
 * `-remove`, `-clear`, `-enable`, `-disable`, `-merge` and `x-debug-block-dirty-bitmap-sha256`,
 * with QEMU's checks, in QEMU's order, and QEMU's texts. The checks and changes are exported
 * as functions so that `transaction` runs exactly the same steps.
 */
import { DirtyBitmap, MAX_NAME_BYTES, sha256Qemu } from '../../bitmap/index.js';
import { BitbackError, InvalidArgumentError, NotFoundError } from '../../errors.js';
import { qmpAlternate, qmpArray, qmpStruct } from '../../qmp/server/schema.js';
import type { Engine } from '../engine.js';
import type { BlockNode } from '../graph/block-node.js';
import { Qcow2NodeBitmaps } from '../graph/node-bitmaps.js';

/** Arguments of `block-dirty-bitmap-add`. */
export interface BitmapAddArgs {
  node: string;
  name: string;
  granularity?: number;
  persistent?: boolean;
  disabled?: boolean;
}

/** A merge source: a bitmap of the target's node by name, or `{node, name}`. */
export type BitmapSource = string | { node: string; name: string };

/** Schemas (qapi/block-core.json). */
export const bitmapAddSchema = { node: 'str', name: 'str', '*granularity': 'uint32', '*persistent': 'bool', '*disabled': 'bool' } as const;
export const bitmapSchema = { node: 'str', name: 'str' } as const;
export const bitmapMergeSchema = {
  node: 'str',
  target: 'str',
  bitmaps: qmpArray(qmpAlternate('BlockDirtyBitmapOrStr', 'str', qmpStruct({ node: 'str', name: 'str' }))),
} as const;

function fail(reason: string): never {
  throw new InvalidArgumentError('run a bitmap command', reason);
}

/** The node for `block-dirty-bitmap-add` (bdrv_lookup_bs wording). */
function lookupNode(engine: Engine, name: string): BlockNode {
  const node = engine.graph.get(name);
  if (node === undefined) fail(`Cannot find device='${name}' nor node-name='${name}'`);
  return node;
}

/** A bitmap as `block_dirty_bitmap_lookup` finds it, with its node. */
export function lookupBitmap(engine: Engine, nodeName: string, name: string): { node: BlockNode; bitmap: DirtyBitmap } {
  const node = engine.graph.get(nodeName);
  if (node === undefined) fail(`Node '${nodeName}' not found`);
  const bitmap = node.bitmaps.get(name);
  if (bitmap === undefined) fail(`Dirty bitmap '${name}' not found`);
  return { node, bitmap };
}

/**
 * `bdrv_dirty_bitmap_check`: busy, then read-only (unless `allowReadOnly`), then inconsistent.
 */
export function checkBitmap(node: BlockNode, bitmap: DirtyBitmap, allowReadOnly: boolean): void {
  const name = bitmap.name ?? '';
  if (bitmap.busy) fail(`Bitmap '${name}' is currently in use by another operation and cannot be used`);
  if (!allowReadOnly && node.readOnly) fail(`Bitmap '${name}' is readonly and cannot be modified`);
  if (bitmap.inconsistent) fail(`Bitmap '${name}' is inconsistent and cannot be used`);
}

/** Checks the arguments of an add; returns the node and granularity to use. */
export function checkAdd(engine: Engine, args: BitmapAddArgs): { node: BlockNode; granularity: number } {
  if (args.name === '') fail('Bitmap name cannot be empty');
  const node = lookupNode(engine, args.node);
  const granularity = args.granularity ?? node.bitmaps.defaultGranularity;
  if (granularity < 512 || (granularity & (granularity - 1)) !== 0) fail('Granularity must be power of 2 and at least 512');
  if (args.persistent === true) {
    if (!(node.bitmaps instanceof Qcow2NodeBitmaps)) {
      if (node.driver === 'qcow2') fail(`Can't make bitmap '${args.name}' persistent in '${node.name}': Cannot store dirty bitmaps in qcow2 v2 files`);
      fail(`Can't store persistent bitmaps to ${node.name}: Operation not supported`);
    }
    if (node.readOnly) fail(`Can't make bitmap '${args.name}' persistent in '${node.name}': Cannot store dirty bitmaps in a read-only image`);
  }
  if (node.bitmaps.get(args.name) !== undefined) fail(`Bitmap already exists: ${args.name}`);
  if (Buffer.byteLength(args.name) > MAX_NAME_BYTES) fail(`Bitmap name too long: ${args.name}`);
  return { node, granularity };
}

/** Adds a bitmap after {@link checkAdd}. */
export async function addBitmap(engine: Engine, args: BitmapAddArgs): Promise<DirtyBitmap> {
  const { node, granularity } = checkAdd(engine, args);
  try {
    return await node.bitmaps.add(args.name, { granularity, persistent: args.persistent ?? false, disabled: args.disabled ?? false });
  } catch (e) {
    if (e instanceof BitbackError && args.persistent === true && !(e instanceof NotFoundError)) {
      fail(`Can't make bitmap '${args.name}' persistent in '${node.name}': ${e.reason}`);
    }
    throw e;
  }
}

/** Resolves merge sources and checks them and the target; returns what to merge. */
export function checkMerge(engine: Engine, nodeName: string, target: string, sources: readonly BitmapSource[]): { node: BlockNode; target: DirtyBitmap; sources: DirtyBitmap[] } {
  const found = lookupBitmap(engine, nodeName, target);
  checkBitmap(found.node, found.bitmap, false);
  const resolved: DirtyBitmap[] = [];
  for (const source of sources) {
    const { node, bitmap } = typeof source === 'string' ? lookupBitmap(engine, nodeName, source) : lookupBitmap(engine, source.node, source.name);
    checkBitmap(node, bitmap, true);
    if (bitmap.size !== found.bitmap.size) {
      fail(`Bitmaps are of different sizes (destination size is ${found.bitmap.size}, source size is ${bitmap.size}) and can't be merged`);
    }
    resolved.push(bitmap);
  }
  return { node: found.node, target: found.bitmap, sources: resolved };
}

/** Registers the bitmap commands on `engine`. */
export function registerBitmapCommands(engine: Engine): void {
  engine.register('block-dirty-bitmap-add', async (args) => void (await addBitmap(engine, args)), bitmapAddSchema);
  engine.register(
    'block-dirty-bitmap-remove',
    async (args) => {
      const { node, bitmap } = lookupBitmap(engine, args.node, args.name);
      // Removal allows an inconsistent bitmap (that is how one gets rid of it).
      if (bitmap.busy) fail(`Bitmap '${args.name}' is currently in use by another operation and cannot be used`);
      if (node.readOnly && bitmap.persistent) fail(`Bitmap '${args.name}' is readonly and cannot be modified`);
      await node.bitmaps.remove(args.name);
    },
    bitmapSchema,
  );
  engine.register(
    'block-dirty-bitmap-clear',
    async (args) => {
      const { node, bitmap } = lookupBitmap(engine, args.node, args.name);
      checkBitmap(node, bitmap, false);
      await node.bitmaps.clear(args.name);
    },
    bitmapSchema,
  );
  for (const [command, enable] of [['block-dirty-bitmap-enable', true], ['block-dirty-bitmap-disable', false]] as const) {
    engine.register(
      command,
      async (args) => {
        const { node, bitmap } = lookupBitmap(engine, args.node, args.name);
        checkBitmap(node, bitmap, true);
        await (enable ? node.bitmaps.enable(args.name) : node.bitmaps.disable(args.name));
      },
      bitmapSchema,
    );
  }
  engine.register(
    'block-dirty-bitmap-merge',
    async (args) => {
      const { node, target, sources } = checkMerge(engine, args.node, args.target, args.bitmaps);
      // All sources are merged into a copy first: the target changes only if every merge works.
      const merged = target.copy();
      for (const source of sources) merged.merge(source);
      await node.bitmaps.merge(args.target, merged);
    },
    bitmapMergeSchema,
  );
  engine.register(
    'x-debug-block-dirty-bitmap-sha256',
    (args) => {
      const { bitmap } = lookupBitmap(engine, args.node, args.name);
      return { sha256: sha256Qemu(bitmap) };
    },
    bitmapSchema,
  );
}
