/**
 * A provisional schema of `blockdev-add` for the drivers the engine has: QEMU's `BlockdevOptions`
 * members for them (qapi/block-core.json, QEMU 7.2). To be replaced by the full schema of
 * src/engine/options/.
 */
import { qmpAlternate, qmpEnum, qmpLazy, qmpStruct, qmpUnion, type QmpType, type QmpUnionType } from '../../qmp/server/schema.js';

const common = {
  driver: qmpEnum(['file', 'qcow2', 'raw', 'null-co']),
  '*node-name': 'str',
  '*discard': qmpEnum(['ignore', 'unmap']),
  '*cache': qmpStruct({ '*direct': 'bool', '*no-flush': 'bool' }),
  '*read-only': 'bool',
  '*auto-read-only': 'bool',
  '*force-share': 'bool',
  '*detect-zeroes': qmpEnum(['off', 'on', 'unmap']),
} as const;

const options: QmpType = qmpLazy((): QmpType => blockdevOptions);
const ref = qmpAlternate('BlockdevRef', options, 'str');
const refOrNull = qmpAlternate('BlockdevRefOrNull', options, 'str', 'null');

const blockdevOptions: QmpUnionType = qmpUnion('driver', common, {
  file: { filename: 'str', '*pr-manager': 'str', '*locking': qmpEnum(['on', 'off', 'auto']), '*aio': qmpEnum(['threads', 'native', 'io_uring']), '*aio-max-batch': 'int', '*x-check-cache-dropped': 'bool' },
  qcow2: { file: ref, '*backing': refOrNull, '*lazy-refcounts': 'bool', '*pass-discard-request': 'bool', '*pass-discard-snapshot': 'bool', '*pass-discard-other': 'bool', '*cache-size': 'int', '*l2-cache-size': 'int', '*l2-cache-entry-size': 'int', '*refcount-cache-size': 'int', '*cache-clean-interval': 'int' },
  raw: { file: ref, '*offset': 'int', '*size': 'int' },
  'null-co': { '*size': 'int', '*latency-ns': 'uint64', '*read-zeroes': 'bool' },
});

/** The arguments of `blockdev-add` (QEMU's boxed `BlockdevOptions`). */
export const blockdevAddSchema = blockdevOptions;
