/**
 * QMP `transaction` as QEMU 7.2 runs it (blockdev.c `qmp_transaction`): inside one drained
 * section every action is prepared in order; if one fails, the prepared ones are aborted in
 * reverse order and its error is the reply, so nothing changed anywhere; otherwise all commit
 * in order, then all clean up. With `completion-mode: grouped` the jobs that the actions start
 * succeed or fail together (only job actions allow it, as in QEMU).
 *
 * The bitmap actions are here; job and snapshot modules add theirs with {@link Transactions.define}.
 */
import { DirtyBitmap } from '../../bitmap/index.js';
import { InvalidArgumentError } from '../../errors.js';
import { qmpArray, qmpEnum, qmpStruct, qmpUnion, type QmpMembers } from '../../qmp/server/schema.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import type { Engine } from '../engine.js';
import { addBitmap, bitmapAddSchema, bitmapMergeSchema, bitmapSchema, checkBitmap, checkMerge, lookupBitmap, type BitmapAddArgs, type BitmapSource } from './bitmaps.js';

/** One prepared action: what to do when the whole transaction commits or aborts. */
export interface PreparedAction {
  commit?(): void | Promise<void>;
  abort?(): void | Promise<void>;
  clean?(): void | Promise<void>;
}

/** What a job action is told about the transaction it belongs to. */
export interface TransactionContext {
  /** `grouped`: jobs started by the actions complete or fail together. */
  completionMode: 'individual' | 'grouped';
  /** Shared by the actions of one transaction (a job module keeps its job group here). */
  shared: Map<string, unknown>;
}

/** How an action type prepares. Throwing means the transaction fails with that error. */
export type ActionPreparer = (data: JsonObject, context: TransactionContext) => Promise<PreparedAction>;

/** QEMU 7.2's `TransactionActionKind` values, in its order. */
const ACTION_TYPES = [
  'abort',
  'block-dirty-bitmap-add',
  'block-dirty-bitmap-remove',
  'block-dirty-bitmap-clear',
  'block-dirty-bitmap-enable',
  'block-dirty-bitmap-disable',
  'block-dirty-bitmap-merge',
  'blockdev-backup',
  'blockdev-snapshot',
  'blockdev-snapshot-internal-sync',
  'blockdev-snapshot-sync',
  'drive-backup',
] as const;

interface ActionType {
  prepare: ActionPreparer;
  /** Allowed with `completion-mode: grouped` (job actions). */
  grouped: boolean;
}

/** The action types of the engine's `transaction`. */
export interface Transactions {
  /** Defines (or replaces) action `type` with the members of its `data`. */
  define(type: (typeof ACTION_TYPES)[number], data: QmpMembers, prepare: ActionPreparer, options?: { grouped?: boolean }): void;
}

function fail(reason: string): never {
  throw new InvalidArgumentError('run a transaction', reason);
}

/** Registers `transaction` with the bitmap actions; returns the registry for other action types. */
export function registerTransaction(engine: Engine): Transactions {
  const types = new Map<string, ActionType>();
  // Every type QEMU's schema has is accepted; those the engine lacks fail in prepare.
  const branches: Record<string, QmpMembers> = Object.fromEntries(ACTION_TYPES.map((t) => [t, { data: 'object' }]));
  const registry: Transactions = {
    define(type, data, prepare, options = {}) {
      branches[type] = { data: qmpStruct(data) };
      types.set(type, { prepare, grouped: options.grouped ?? false });
    },
  };
  const action = qmpUnion('type', { type: qmpEnum(ACTION_TYPES) }, branches);

  engine.register(
    'transaction',
    async (args) => {
      const completionMode = args.properties?.['completion-mode'] ?? 'individual';
      const actions = args.actions as Array<{ type: string; data: JsonObject }>;
      // QEMU refuses actions that cannot join a group before preparing anything.
      if (completionMode === 'grouped') {
        for (const a of actions) {
          if (types.get(a.type)?.grouped !== true) fail(`Action '${a.type}' does not support Transaction property completion-mode = grouped`);
        }
      }
      const context: TransactionContext = { completionMode, shared: new Map() };
      await engine.graph.drained(async () => {
        const prepared: PreparedAction[] = [];
        try {
          for (const a of actions) {
            const type = types.get(a.type);
            if (type === undefined) fail(`bitback's engine does not support the transaction action '${a.type}'`);
            prepared.push(await type.prepare(a.data, context));
          }
        } catch (e) {
          for (const p of prepared.reverse()) await p.abort?.();
          for (const p of prepared) await p.clean?.();
          throw e;
        }
        for (const p of prepared) await p.commit?.();
        for (const p of prepared) await p.clean?.();
      });
    },
    {
      actions: qmpArray(action),
      '*properties': qmpStruct({ '*completion-mode': qmpEnum(['individual', 'grouped']) }),
    },
  );

  defineBitmapActions(engine, registry);
  registry.define('abort', {}, async () => fail('Transaction aborted using Abort action'));
  return registry;
}

/** Restores `bitmap`'s bits from `backup` (same granularity). */
function restore(bitmap: DirtyBitmap, backup: DirtyBitmap): void {
  bitmap.clear();
  bitmap.merge(backup);
}

function defineBitmapActions(engine: Engine, registry: Transactions): void {
  registry.define('block-dirty-bitmap-add', bitmapAddSchema, async (data) => {
    const args = data as unknown as BitmapAddArgs;
    const bitmap = await addBitmap(engine, args);
    const node = engine.graph.require(args.node);
    return {
      abort: async () => {
        bitmap.setBusy(false);
        await node.bitmaps.remove(args.name);
      },
    };
  });
  registry.define('block-dirty-bitmap-remove', bitmapSchema, async (data) => {
    const { node, bitmap } = lookupBitmap(engine, data.node as string, data.name as string);
    if (bitmap.busy) fail(`Bitmap '${String(data.name)}' is currently in use by another operation and cannot be used`);
    if (node.readOnly && bitmap.persistent) fail(`Bitmap '${String(data.name)}' is readonly and cannot be modified`);
    // Held busy until commit, so that no other action of the transaction can use it.
    bitmap.setBusy(true);
    return {
      commit: async () => {
        bitmap.setBusy(false);
        await node.bitmaps.remove(data.name as string);
      },
      abort: () => bitmap.setBusy(false),
    };
  });
  registry.define('block-dirty-bitmap-clear', bitmapSchema, async (data) => {
    const { node, bitmap } = lookupBitmap(engine, data.node as string, data.name as string);
    checkBitmap(node, bitmap, false);
    const backup = bitmap.copy();
    bitmap.clear();
    return { abort: () => restore(bitmap, backup) };
  });
  for (const [type, enable] of [['block-dirty-bitmap-enable', true], ['block-dirty-bitmap-disable', false]] as const) {
    registry.define(type, bitmapSchema, async (data) => {
      const { node, bitmap } = lookupBitmap(engine, data.node as string, data.name as string);
      checkBitmap(node, bitmap, true);
      const was = bitmap.enabled;
      if (enable) bitmap.enable();
      else bitmap.disable();
      return { abort: () => (was ? bitmap.enable() : bitmap.disable()) };
    });
  }
  registry.define('block-dirty-bitmap-merge', bitmapMergeSchema, async (data) => {
    const { target, sources } = checkMerge(engine, data.node as string, data.target as string, data.bitmaps as BitmapSource[]);
    const backup = target.copy();
    for (const source of sources) target.merge(source);
    return { abort: () => restore(target, backup) };
  });
}
