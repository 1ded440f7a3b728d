/**
 * Internal snapshots of qcow2 images, like `qemu-img snapshot -c/-l/-a/-d`, on closed images.
 * See docs/qcow2-snapshots.md.
 */
export {
  SnapshotExistsError,
  applySnapshot,
  createSnapshot,
  deleteSnapshot,
  listSnapshots,
  type CreateSnapshotOptions,
  type Qcow2Snapshot,
} from './snapshots.js';
export { formatSnapshotTable, snapshotInfo } from './listing.js';
