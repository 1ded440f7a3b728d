/**
 * Test-only: argument schemas of a few QEMU 7.2 commands, copied from its QAPI schema
 * (`qapi/block-core.json`, `qapi/transaction.json`, `qapi/block-export.json`, `qapi/misc.json`),
 * trimmed to what the tests need (fewer block drivers and transaction actions). Integer widths
 * are the C types QEMU's visitor uses (`granularity` is uint32, `max-connections` uint32).
 * Used to check that the dispatcher answers exactly as QEMU does.
 */
import { qmpAlternate, qmpArray, qmpEnum, qmpLazy, qmpStruct, qmpUnion, type QmpMembers, type QmpType } from '../schema.js';

/** `BlockDirtyBitmapAdd`. */
export const blockDirtyBitmapAdd = {
  node: 'str',
  name: 'str',
  '*granularity': 'uint32',
  '*persistent': 'bool',
  '*disabled': 'bool',
} as const satisfies QmpMembers;

/** `BlockDirtyBitmap` (remove, clear, enable, disable). */
export const blockDirtyBitmap = { node: 'str', name: 'str' } as const satisfies QmpMembers;

/** `BlockDirtyBitmapOrStr`. */
export const blockDirtyBitmapOrStr = qmpAlternate('BlockDirtyBitmapOrStr', 'str', qmpStruct(blockDirtyBitmap));

/** `BlockDirtyBitmapMerge`. */
export const blockDirtyBitmapMerge = { node: 'str', target: 'str', bitmaps: qmpArray(blockDirtyBitmapOrStr) } as const satisfies QmpMembers;

/** `BlockdevOnError`. */
const blockdevOnError = qmpEnum(['report', 'ignore', 'enospc', 'stop', 'auto']);

/** `BlockdevBackup` (`BackupCommon` + target), members in QEMU's order. */
export const blockdevBackup = {
  '*job-id': 'str',
  device: 'str',
  sync: qmpEnum(['top', 'full', 'none', 'incremental', 'bitmap']),
  '*speed': 'int',
  '*bitmap': 'str',
  '*bitmap-mode': qmpEnum(['on-success', 'never', 'always']),
  '*compress': 'bool',
  '*on-source-error': blockdevOnError,
  '*on-target-error': blockdevOnError,
  '*auto-finalize': 'bool',
  '*auto-dismiss': 'bool',
  '*filter-node-name': 'str',
  '*x-perf': qmpStruct({ '*use-copy-range': 'bool', '*max-workers': 'int', '*max-chunk': 'int64' }),
  target: 'str',
} as const satisfies QmpMembers;

/** `TransactionAction` (some actions; every action kind of 7.2 in the enum). */
export const transactionAction = qmpUnion(
  'type',
  {
    type: qmpEnum([
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
    ]),
  },
  {
    abort: { data: qmpStruct({}) },
    'block-dirty-bitmap-add': { data: qmpStruct(blockDirtyBitmapAdd) },
    'block-dirty-bitmap-remove': { data: qmpStruct(blockDirtyBitmap) },
    'block-dirty-bitmap-disable': { data: qmpStruct(blockDirtyBitmap) },
    'block-dirty-bitmap-merge': { data: qmpStruct(blockDirtyBitmapMerge) },
    'blockdev-backup': { data: qmpStruct(blockdevBackup) },
  },
);

/** `transaction`. */
export const transaction = {
  actions: qmpArray(transactionAction),
  '*properties': qmpStruct({ '*completion-mode': qmpEnum(['individual', 'grouped']) }),
} as const satisfies QmpMembers;

/** `BlockdevRef`: a nested node definition or a node name. */
const blockdevRef: QmpType = qmpAlternate(
  'BlockdevRef',
  qmpLazy((): QmpType => blockdevOptions),
  'str',
);

/** `BlockdevOptions` with the drivers `file`, `null-co`, `qcow2`, `raw`. */
export const blockdevOptions = qmpUnion(
  'driver',
  {
    driver: qmpEnum(['file', 'null-co', 'qcow2', 'raw']),
    '*node-name': 'str',
    '*discard': qmpEnum(['ignore', 'unmap']),
    '*cache': qmpStruct({ '*direct': 'bool', '*no-flush': 'bool' }),
    '*read-only': 'bool',
    '*auto-read-only': 'bool',
    '*force-share': 'bool',
    '*detect-zeroes': qmpEnum(['off', 'on', 'unmap']),
  },
  {
    file: { filename: 'str', '*aio': qmpEnum(['threads', 'native', 'io_uring']) },
    'null-co': { '*size': 'int', '*latency-ns': 'uint64', '*read-zeroes': 'bool' },
    qcow2: { file: blockdevRef, '*backing': qmpAlternate('BlockdevRefOrNull', qmpLazy((): QmpType => blockdevOptions), 'str', 'null') },
    raw: { file: blockdevRef, '*offset': 'int', '*size': 'int' },
  },
);

/** `human-monitor-command`. */
export const humanMonitorCommand = { 'command-line': 'str', '*cpu-index': 'int' } as const satisfies QmpMembers;

/** `block-latency-histogram-set` (boundaries are uint64 lists). */
export const blockLatencyHistogramSet = {
  id: 'str',
  '*boundaries': qmpArray('uint64'),
  '*boundaries-read': qmpArray('uint64'),
  '*boundaries-write': qmpArray('uint64'),
  '*boundaries-flush': qmpArray('uint64'),
} as const satisfies QmpMembers;

/** `nbd-server-start` (`SocketAddressLegacy` with the unix and fd branches). */
export const nbdServerStart = {
  addr: qmpUnion(
    'type',
    { type: qmpEnum(['inet', 'unix', 'vsock', 'fd']) },
    {
      unix: { data: qmpStruct({ path: 'str', '*abstract': 'bool', '*tight': 'bool' }) },
      fd: { data: qmpStruct({ str: 'str' }) },
    },
  ),
  '*tls-creds': 'str',
  '*tls-authz': 'str',
  '*max-connections': 'uint32',
} as const satisfies QmpMembers;

/** `blockdev-del`. */
export const blockdevDel = { 'node-name': 'str' } as const satisfies QmpMembers;

/** Every schema above by command name (`blockdev-add` takes its union as arguments). */
export const QEMU_COMMAND_SCHEMAS = {
  'block-dirty-bitmap-add': blockDirtyBitmapAdd,
  'block-dirty-bitmap-remove': blockDirtyBitmap,
  'block-dirty-bitmap-merge': blockDirtyBitmapMerge,
  'blockdev-backup': blockdevBackup,
  transaction,
  'blockdev-add': blockdevOptions,
  'blockdev-del': blockdevDel,
  'human-monitor-command': humanMonitorCommand,
  'block-latency-histogram-set': blockLatencyHistogramSet,
  'nbd-server-start': nbdServerStart,
} as const;
