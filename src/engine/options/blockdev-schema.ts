/**
 * The QMP schema of `BlockdevOptions` (the arguments of `blockdev-add` and of `-blockdev`) for the
 * block drivers the engine supports, as QEMU 7.2 declares them in `qapi/block-core.json`: member
 * names and order, optionality, the flat union on `driver`, and the `BlockdevRef` alternates of
 * child references. Integer widths are the C types QEMU's visitor uses, read from its errors
 * (`max-transfer` is int32, `cbw-timeout` uint32, `server.to` uint16, `latency-ns` uint64).
 * Compared with `query-qmp-schema` of qemu-system-x86_64 7.2.22 (Debian) by
 * `test/e2e/blockdev-spec-qemu.test.ts`, including its build-dependent members (`drop-cache`,
 * `aio: io_uring`, `mptcp`, `abstract`).
 *
 * `driver` only lists the supported drivers, as a QEMU built without the others would: any other
 * driver is refused with QEMU's "Parameter 'driver' does not accept value 'vmdk'".
 */
import {
  qmpAlternate,
  qmpArray,
  qmpEnum,
  qmpLazy,
  qmpStruct,
  qmpUnion,
  type QmpMembers,
  type QmpType,
  type QmpValueOf,
} from '../../qmp/server/schema.js';

/** The block drivers the engine supports (QEMU's `BlockdevDriver` values). */
export const BLOCKDEV_DRIVERS = ['blkdebug', 'copy-before-write', 'file', 'snapshot-access', 'nbd', 'null-co', 'qcow2', 'raw'] as const;

/** A supported block driver name. */
export type BlockdevDriver = (typeof BLOCKDEV_DRIVERS)[number];

/**
 * Stands for `BlockdevOptions` inside the schema's static type: a schema value cannot name its
 * own TypeScript type, so child references are typed with this marker and {@link WithChildren}
 * puts the real type in its place.
 */
declare const childMarker: unique symbol;
interface ChildOptions {
  readonly [childMarker]: true;
}

/** `BlockdevRef`: a nested node definition or the name of an existing node. */
const blockdevRef = qmpAlternate(
  'BlockdevRef',
  qmpLazy<ChildOptions>((): QmpType => blockdevOptions),
  'str',
);

/** `BlockdevRefOrNull`: as `BlockdevRef`, or null for "no node" (e.g. no backing file). */
const blockdevRefOrNull = qmpAlternate(
  'BlockdevRefOrNull',
  qmpLazy<ChildOptions>((): QmpType => blockdevOptions),
  'str',
  'null',
);

/** `BlkdebugEvent`: the points of the block layer where blkdebug rules can fire. */
export const BLKDEBUG_EVENTS = [
  'l1_update',
  'l1_grow_alloc_table',
  'l1_grow_write_table',
  'l1_grow_activate_table',
  'l2_load',
  'l2_update',
  'l2_update_compressed',
  'l2_alloc_cow_read',
  'l2_alloc_write',
  'read_aio',
  'read_backing_aio',
  'read_compressed',
  'write_aio',
  'write_compressed',
  'vmstate_load',
  'vmstate_save',
  'cow_read',
  'cow_write',
  'reftable_load',
  'reftable_grow',
  'reftable_update',
  'refblock_load',
  'refblock_update',
  'refblock_update_part',
  'refblock_alloc',
  'refblock_alloc_hookup',
  'refblock_alloc_write',
  'refblock_alloc_write_blocks',
  'refblock_alloc_write_table',
  'refblock_alloc_switch_table',
  'cluster_alloc',
  'cluster_alloc_bytes',
  'cluster_free',
  'flush_to_os',
  'flush_to_disk',
  'pwritev_rmw_head',
  'pwritev_rmw_after_head',
  'pwritev_rmw_tail',
  'pwritev_rmw_after_tail',
  'pwritev',
  'pwritev_zero',
  'pwritev_done',
  'empty_image_prepare',
  'l1_shrink_write_table',
  'l1_shrink_free_l2_clusters',
  'cor_write',
  'cluster_alloc_space',
  'none',
] as const;

const blkdebugEvent = qmpEnum(BLKDEBUG_EVENTS);

/** `BlockPermission`. */
const blockPermission = qmpEnum(['consistent-read', 'write', 'write-unchanged', 'resize']);

/** `BlkdebugInjectErrorOptions`: one error-injection rule. */
const blkdebugInjectError = qmpStruct({
  event: blkdebugEvent,
  '*state': 'int',
  '*iotype': qmpEnum(['read', 'write', 'write-zeroes', 'discard', 'flush', 'block-status']),
  '*errno': 'int',
  '*sector': 'int',
  '*once': 'bool',
  '*immediately': 'bool',
});

/** `BlkdebugSetStateOptions`: one state-transition rule. */
const blkdebugSetState = qmpStruct({ event: blkdebugEvent, '*state': 'int', new_state: 'int' });

/** `SocketAddress` (flat union on `type`). */
const socketAddress = qmpUnion(
  'type',
  { type: qmpEnum(['inet', 'unix', 'vsock', 'fd']) },
  {
    inet: {
      host: 'str',
      port: 'str',
      '*numeric': 'bool',
      '*to': 'uint16',
      '*ipv4': 'bool',
      '*ipv6': 'bool',
      '*keep-alive': 'bool',
      '*mptcp': 'bool',
    },
    unix: { path: 'str', '*abstract': 'bool', '*tight': 'bool' },
    vsock: { cid: 'str', port: 'str' },
    fd: { str: 'str' },
  },
);

/** `Qcow2OverlapCheckMode`. */
const qcow2OverlapCheckMode = qmpEnum(['none', 'constant', 'cached', 'all']);

/** `Qcow2OverlapChecks`: a mode, or a template plus one switch per metadata structure. */
const qcow2OverlapChecks = qmpAlternate(
  'Qcow2OverlapChecks',
  qmpStruct({
    '*template': qcow2OverlapCheckMode,
    '*main-header': 'bool',
    '*active-l1': 'bool',
    '*active-l2': 'bool',
    '*refcount-table': 'bool',
    '*refcount-block': 'bool',
    '*snapshot-table': 'bool',
    '*inactive-l1': 'bool',
    '*inactive-l2': 'bool',
    '*bitmap-directory': 'bool',
  }),
  qcow2OverlapCheckMode,
);

/** `BlockdevQcow2Encryption` (flat union on `format`). */
const blockdevQcow2Encryption = qmpUnion(
  'format',
  { format: qmpEnum(['aes', 'luks']) },
  { aes: { '*key-secret': 'str' }, luks: { '*key-secret': 'str' } },
);

/** Members every driver has (`BlockdevOptions` base), in QEMU's order. */
const commonMembers = {
  driver: qmpEnum(BLOCKDEV_DRIVERS),
  '*node-name': 'str',
  '*discard': qmpEnum(['ignore', 'unmap']),
  '*cache': qmpStruct({ '*direct': 'bool', '*no-flush': 'bool' }),
  '*read-only': 'bool',
  '*auto-read-only': 'bool',
  '*force-share': 'bool',
  '*detect-zeroes': qmpEnum(['off', 'on', 'unmap']),
} as const satisfies QmpMembers;

/** The driver-specific members, in QEMU's order (base struct members first). */
const driverMembers = {
  blkdebug: {
    image: blockdevRef,
    '*config': 'str',
    '*align': 'int',
    '*max-transfer': 'int32',
    '*opt-write-zero': 'int32',
    '*max-write-zero': 'int32',
    '*opt-discard': 'int32',
    '*max-discard': 'int32',
    '*inject-error': qmpArray(blkdebugInjectError),
    '*set-state': qmpArray(blkdebugSetState),
    '*take-child-perms': qmpArray(blockPermission),
    '*unshare-child-perms': qmpArray(blockPermission),
  },
  'copy-before-write': {
    file: blockdevRef,
    target: blockdevRef,
    '*bitmap': qmpStruct({ node: 'str', name: 'str' }),
    '*on-cbw-error': qmpEnum(['break-guest-write', 'break-snapshot']),
    '*cbw-timeout': 'uint32',
  },
  file: {
    filename: 'str',
    '*pr-manager': 'str',
    '*locking': qmpEnum(['auto', 'on', 'off']),
    '*aio': qmpEnum(['threads', 'native', 'io_uring']),
    '*aio-max-batch': 'int',
    '*drop-cache': 'bool',
    '*x-check-cache-dropped': 'bool',
  },
  'snapshot-access': { file: blockdevRef },
  nbd: {
    server: socketAddress,
    '*export': 'str',
    '*tls-creds': 'str',
    '*tls-hostname': 'str',
    '*x-dirty-bitmap': 'str',
    '*reconnect-delay': 'uint32',
    '*open-timeout': 'uint32',
  },
  'null-co': { '*size': 'int', '*latency-ns': 'uint64', '*read-zeroes': 'bool' },
  qcow2: {
    file: blockdevRef,
    '*backing': blockdevRefOrNull,
    '*lazy-refcounts': 'bool',
    '*pass-discard-request': 'bool',
    '*pass-discard-snapshot': 'bool',
    '*pass-discard-other': 'bool',
    '*overlap-check': qcow2OverlapChecks,
    '*cache-size': 'int',
    '*l2-cache-size': 'int',
    '*l2-cache-entry-size': 'int',
    '*refcount-cache-size': 'int',
    '*cache-clean-interval': 'int',
    '*encrypt': blockdevQcow2Encryption,
    '*data-file': blockdevRef,
  },
  raw: { file: blockdevRef, '*offset': 'int', '*size': 'int' },
} as const satisfies { readonly [D in BlockdevDriver]: QmpMembers };

/**
 * `BlockdevOptions`: the schema of `blockdev-add`'s arguments and of a `--blockdev` value.
 * `server.register('blockdev-add', handler, blockdevOptions)` gives the handler a
 * {@link BlockdevOptions}.
 */
export const blockdevOptions = qmpUnion('driver', commonMembers, driverMembers);

/** The schema of `blockdev-add` (QEMU declares it boxed: its arguments are a `BlockdevOptions`). */
export const blockdevAddSchema = blockdevOptions;

/** `T` with every {@link ChildOptions} marker replaced by `BlockdevOptions`. */
type WithChildren<T> = T extends ChildOptions
  ? BlockdevOptions
  : T extends readonly (infer E)[]
    ? WithChildren<E>[]
    : T extends object
      ? { [K in keyof T]: WithChildren<T[K]> }
      : T;

/**
 * A checked `BlockdevOptions` value: a union discriminated by `driver`, child references
 * (`file`, `backing`, `image`, `target`, `data-file`) as nested options or node names.
 */
export type BlockdevOptions = WithChildren<QmpValueOf<typeof blockdevOptions>>;

/** The options of one driver: `BlockdevOptionsOf<'qcow2'>` has `file`, `backing`, ... */
export type BlockdevOptionsOf<D extends BlockdevDriver> = Extract<BlockdevOptions, { driver: D }>;

/** `BlockdevRef`: a nested definition or a node name. */
export type BlockdevRef = BlockdevOptions | string;

/** `BlockdevRefOrNull`: a nested definition, a node name, or null. */
export type BlockdevRefOrNull = BlockdevOptions | string | null;
