/**
 * The checks of `blockdev-backup` (and its transaction action) in QEMU 7.2's order and words
 * (blockdev.c `do_backup_common`, block/backup.c `backup_job_create`), turning the arguments
 * into a {@link BackupPlan}. Checks that need the job or the filter node (job id, filter
 * name, speed) happen when those are made, as in QEMU.
 */
import type { DirtyBitmap } from '../../bitmap/index.js';
import { InvalidArgumentError } from '../../errors.js';
import { qmpEnum, qmpStruct, type QmpMembers } from '../../qmp/server/schema.js';
import type { BlockNode } from '../graph/block-node.js';
import type { NodeGraph } from '../graph/node-graph.js';
import type { BlockdevOnError } from '../jobs/index.js';

/** QEMU's `MirrorSyncMode` as backup takes it (`incremental` becomes `bitmap`). */
export type BackupSync = 'full' | 'top' | 'none' | 'bitmap';
/** QEMU's `BitmapSyncMode`. */
export type BitmapSyncMode = 'on-success' | 'never' | 'always';

/** The arguments of `blockdev-backup` (qapi `BlockdevBackup`). */
export const blockdevBackupSchema = {
  '*job-id': 'str',
  device: 'str',
  target: 'str',
  sync: qmpEnum(['top', 'full', 'none', 'incremental', 'bitmap']),
  '*speed': 'int',
  '*bitmap': 'str',
  '*bitmap-mode': qmpEnum(['on-success', 'never', 'always']),
  '*compress': 'bool',
  '*on-source-error': qmpEnum(['report', 'ignore', 'enospc', 'stop', 'auto']),
  '*on-target-error': qmpEnum(['report', 'ignore', 'enospc', 'stop', 'auto']),
  '*auto-finalize': 'bool',
  '*auto-dismiss': 'bool',
  '*filter-node-name': 'str',
  '*x-perf': qmpStruct({ '*use-copy-range': 'bool', '*max-workers': 'int', '*max-chunk': 'int64' }),
} as const satisfies QmpMembers;

/** The arguments as the handler receives them. */
export interface BlockdevBackupArgs {
  'job-id'?: string;
  device: string;
  target: string;
  sync: 'top' | 'full' | 'none' | 'incremental' | 'bitmap';
  speed?: number;
  bitmap?: string;
  'bitmap-mode'?: BitmapSyncMode;
  compress?: boolean;
  'on-source-error'?: BlockdevOnError;
  'on-target-error'?: BlockdevOnError;
  'auto-finalize'?: boolean;
  'auto-dismiss'?: boolean;
  'filter-node-name'?: string;
  'x-perf'?: { 'use-copy-range'?: boolean; 'max-workers'?: number; 'max-chunk'?: number };
}

/** What a checked `blockdev-backup` does. */
export interface BackupPlan {
  /** The job id as given (`''` when absent: QEMU then fails on it as "Invalid job ID ''"). */
  jobId: string;
  source: BlockNode;
  target: BlockNode;
  sync: BackupSync;
  bitmap: DirtyBitmap | undefined;
  bitmapMode: BitmapSyncMode | undefined;
  speed: number;
  compress: boolean;
  onSourceError: BlockdevOnError;
  onTargetError: BlockdevOnError;
  autoFinalize: boolean;
  autoDismiss: boolean;
  filterNodeName: string | undefined;
  maxWorkers: number;
  /** Largest copy task in bytes; 0: block-copy's default. */
  maxChunk: number;
}

function fail(reason: string): never {
  throw new InvalidArgumentError('start a backup', reason);
}

function lookup(graph: NodeGraph, name: string): BlockNode {
  const node = graph.get(name);
  if (node === undefined) fail(`Cannot find device='${name}' nor node-name='${name}'`);
  return node;
}

/**
 * Checks the arguments up to where QEMU creates the job.
 * @throws InvalidArgumentError with QEMU's text for the first problem
 */
export function planBackup(graph: NodeGraph, args: BlockdevBackupArgs, blockers: ReadonlyMap<BlockNode, string> = new Map()): BackupPlan {
  const source = lookup(graph, args.device);
  const target = lookup(graph, args.target);
  let sync = args.sync;
  let bitmapMode = args['bitmap-mode'];
  let bitmap: DirtyBitmap | undefined;
  if (args.bitmap !== undefined) {
    bitmap = source.bitmaps.get(args.bitmap);
    if (bitmap === undefined) fail(`Bitmap '${args.bitmap}' could not be found`);
    if (bitmapMode === undefined) {
      if (sync === 'incremental') bitmapMode = 'on-success';
      else fail('Bitmap sync mode must be given when providing a bitmap');
    }
    if (sync === 'none') fail("sync mode 'none' does not produce meaningful bitmap outputs");
    if (bitmapMode === 'never' && sync !== 'bitmap') fail(`Bitmap sync mode 'never' has no meaningful effect when combined with sync mode '${sync}'`);
  }
  if (args.bitmap === undefined && args['bitmap-mode'] !== undefined) fail('Cannot specify bitmap sync mode without a bitmap');
  const maxWorkers = args['x-perf']?.['max-workers'] ?? 64;
  const maxChunk = args['x-perf']?.['max-chunk'] ?? 0;
  if ((sync === 'bitmap' || sync === 'incremental') && args.bitmap === undefined) fail(`must provide a valid bitmap name for '${sync}' sync mode`);
  if (sync === 'incremental') {
    if (args['bitmap-mode'] !== undefined && args['bitmap-mode'] !== 'on-success') fail("Bitmap sync mode must be 'on-success' when using sync mode 'incremental'");
    sync = 'bitmap';
    bitmapMode = 'on-success';
  }
  if (source === target) fail('Source and target cannot be the same');
  for (const node of [source, target]) {
    const reason = blockers.get(node);
    if (reason !== undefined) fail(`Node '${node.name}' is busy: ${reason}`);
  }
  if (args.compress === true && target.driver !== 'qcow2') fail(`Compression is not supported for this drive ${target.name}`);
  if (maxWorkers < 1 || maxWorkers > 0x7fffffff) fail('max-workers must be between 1 and 2147483647');
  if (maxChunk < 0) fail('max-chunk must be zero (which means no limit) or positive');
  if (bitmap !== undefined && bitmapMode !== 'never') {
    const name = bitmap.name ?? '';
    if (bitmap.busy) fail(`Bitmap '${name}' is currently in use by another operation and cannot be used`);
    if (source.readOnly) fail(`Bitmap '${name}' is readonly and cannot be modified`);
    if (bitmap.inconsistent) fail(`Bitmap '${name}' is inconsistent and cannot be used`);
  }
  if (bitmap?.busy === true) fail(`Bitmap '${bitmap.name ?? ''}' is currently in use by another operation and cannot be used`);
  if (target.size !== source.size) fail('Source and target image have different sizes');
  return {
    jobId: args['job-id'] ?? '',
    source,
    target,
    sync,
    bitmap,
    bitmapMode,
    speed: args.speed ?? 0,
    compress: args.compress ?? false,
    onSourceError: args['on-source-error'] ?? 'report',
    onTargetError: args['on-target-error'] ?? 'report',
    autoFinalize: args['auto-finalize'] ?? true,
    autoDismiss: args['auto-dismiss'] ?? true,
    filterNodeName: args['filter-node-name'],
    maxWorkers,
    maxChunk,
  };
}
