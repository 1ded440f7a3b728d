/**
 * Fleecing: the copy-before-write filter's machinery (block-copy, the filter device and its
 * snapshot API), and putting a filter above a node by code for a backup job. The drivers
 * `copy-before-write` and `snapshot-access` are in ../drivers/.
 */
export { appendCopyBeforeWrite, copyBeforeWriteOf, dropCopyBeforeWrite, type AppendedFilter } from './append.js';
export { BlockCopyState, copyClusterSize, copyFailureSide, DEFAULT_COPY_CLUSTER_SIZE, type BlockCopyInit, type BlockCopyProgress, type CopyCallOptions } from './block-copy.js';
export { CopyBeforeWriteFilter, type CopyBeforeWriteInit, type OnCbwError, type SetTimer } from './copy-before-write-filter.js';
export { RequestList, type RangeRequest } from './request-list.js';
export { snapshotProviderOf, type SnapshotProvider } from './snapshot-provider.js';
