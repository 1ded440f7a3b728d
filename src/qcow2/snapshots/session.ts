/**
 * Opening an image for snapshot work, and reading and replacing its snapshot table.
 *
 * Every snapshot operation runs on a closed image: it is opened here (without its backing
 * chain, which snapshots never touch), changed under its exclusive lock through the image's
 * own refcount code (`Qcow2Internals`), and closed again, so that no cache of a guest-facing
 * `Qcow2Image` ever sees the tables change underneath it.
 * @internal
 */
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { type ImageLockOptions } from '../../block/image-lock.js';
import { NotFoundError, ReadOnlyError } from '../../errors.js';
import {
  Qcow2FormatError,
  Qcow2UnsupportedError,
  SNAPSHOT_HEADER_SIZE,
  decodeSnapshotTable,
  encodeSnapshotTable,
  snapshotEntryLength,
  type Qcow2Geometry,
  type SnapshotEntry,
} from '../format/index.js';
import { Qcow2Image, withImagePath, type Qcow2Internals } from '../image/index.js';

/** What an operation works with: the open image's internals and facts read once. */
export interface SnapshotSession {
  /** The image path, for messages. */
  path: string;
  internals: Qcow2Internals;
  g: Qcow2Geometry;
  /** Virtual size in bytes. */
  size: number;
  /** The snapshot table as read (entries in table order). */
  entries: SnapshotEntry[];
  /** Bytes the current table takes from `snapshots_offset` (0 without snapshots). */
  tableBytes: number;
  /** `snapshots_offset` of the header as read. */
  tableOffset: number;
}

/**
 * Opens the image at `path` for `action` (read-only when `readOnly`; `lock`: QEMU's image locks,
 * `forceShare` for read-only sessions only), reads its snapshot table and runs `body` under the
 * image's exclusive lock; closes the image whatever happens. Errors name the image.
 */
export async function withSnapshotSession<T>(path: string, action: string, readOnly: boolean, body: (s: SnapshotSession) => Promise<T>, lock: ImageLockOptions = {}): Promise<T> {
  if (!readOnly) await checkWritable(path, action);
  const image = await Qcow2Image.open(path, { readOnly, backing: 'none', lock });
  let result: T;
  try {
    const internals = image.internals;
    result = await internals.exclusive(async () => {
      const { header } = internals.imageHeader();
      const g = internals.geometry;
      const table = await readSnapshotTable(internals, header.snapshotsOffset, header.nbSnapshots, g);
      return body({ path, internals, g, size: header.size, entries: table.entries, tableBytes: table.byteLength, tableOffset: header.snapshotsOffset });
    });
  } catch (e) {
    await image.close().catch(() => {});
    throw withImagePath(path, e);
  }
  await image.close();
  return result;
}

/** Refuses a file this process may not write, before opening it (a clear `ReadOnlyError`). */
async function checkWritable(path: string, action: string): Promise<void> {
  try {
    await access(path, constants.W_OK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new NotFoundError(action, `${path} does not exist`, { cause: e });
    if (code === 'EACCES' || code === 'EROFS' || code === 'EPERM') throw new ReadOnlyError(action, `${path} is not writable (${code})`, { cause: e });
    throw e;
  }
}

/**
 * Reads `count` entries from `offset` entry by entry (each entry's length comes from its fixed
 * part), so that only the table itself is ever held in memory.
 */
async function readSnapshotTable(internals: Qcow2Internals, offset: number, count: number, g: Qcow2Geometry): Promise<{ entries: SnapshotEntry[]; byteLength: number }> {
  const entries: SnapshotEntry[] = [];
  let at = offset;
  for (let i = 0; i < count; i++) {
    const fixed = await internals.readHost(at, SNAPSHOT_HEADER_SIZE);
    const length = snapshotEntryLength(fixed, 0);
    const bytes = await internals.readHost(at, length);
    try {
      entries.push(decodeSnapshotTable(bytes, 0, 1, g).entries[0]!);
    } catch (e) {
      // Name the entry by its index in the whole table, not in the one-entry table decoded here.
      const field = (f: string): string => f.replace(/^snapshot\[0\]/, `snapshot[${i}]`);
      if (e instanceof Qcow2FormatError) throw new Qcow2FormatError(field(e.field), e.reason, { cause: e });
      if (e instanceof Qcow2UnsupportedError) throw new Qcow2UnsupportedError(field(e.field), e.reason, { cause: e });
      throw e;
    }
    at += length;
  }
  return { entries, byteLength: at - offset };
}

/**
 * Entries as QEMU rewrites them (`qcow2_write_snapshots`): every entry gets the three known
 * extra data fields, filled as QEMU fills them when it reads an older entry (VM state size
 * from the 32-bit field, disk size = the image's, icount -1). Unknown extra data is kept.
 */
function completeEntry(e: SnapshotEntry, size: number): SnapshotEntry {
  return { ...e, vmStateSizeLarge: e.vmStateSizeLarge ?? e.vmStateSize32, diskSize: e.diskSize ?? size, icount: e.icount ?? -1n };
}

/**
 * Replaces the snapshot table with `entries`: the new table is written to newly allocated
 * clusters, synced, then the header points to it (one 12-byte write, synced), and only then is
 * the old table freed. A crash at any point leaves either table in force and at worst leaked
 * clusters. Updates `s` to the new table.
 */
export async function replaceSnapshotTable(s: SnapshotSession, entries: readonly SnapshotEntry[]): Promise<void> {
  const complete = entries.map((e) => completeEntry(e, s.size));
  const cs = s.g.clusterSize;
  let offset = 0;
  let length = 0;
  if (complete.length > 0) {
    const encoded = encodeSnapshotTable(complete, s.g);
    length = unpaddedLength(encoded, complete.length);
    offset = await s.internals.allocateClusters(Math.ceil(length / cs));
    await s.internals.writeHost(offset, encoded.subarray(0, length));
  }
  await s.internals.writeSnapshotTablePointer(complete.length, offset);
  if (s.tableBytes > 0) await s.internals.freeClusters(s.tableOffset, Math.ceil(s.tableBytes / cs));
  s.entries = complete;
  s.tableOffset = offset;
  s.tableBytes = length;
}

/**
 * The length of an encoded table without the padding after its last entry: QEMU writes (and
 * allocates for) the table without it.
 */
function unpaddedLength(encoded: Uint8Array, count: number): number {
  let at = 0;
  for (let i = 0; i < count - 1; i++) at += snapshotEntryLength(encoded, at);
  const view = new DataView(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  return at + SNAPSHOT_HEADER_SIZE + view.getUint32(at + 36) + view.getUint16(at + 12) + view.getUint16(at + 14);
}

/**
 * The snapshot `nameOrId` names, as QEMU finds it (`find_snapshot_by_id_or_name`): an id
 * first, then the first snapshot with that name. Throws `NotFoundError`.
 */
export function findSnapshot(s: SnapshotSession, nameOrId: string, action: string): number {
  let index = s.entries.findIndex((e) => e.id === nameOrId);
  if (index < 0) index = s.entries.findIndex((e) => e.name === nameOrId);
  if (index < 0) throw new NotFoundError(action, `${s.path} has no snapshot with the id or name '${nameOrId}'`);
  return index;
}
