/**
 * Internal snapshots of a qcow2 image (spec "Snapshots"), as `qemu-img snapshot` makes, lists,
 * applies and deletes them: on a closed image, every cluster counted through the image's own
 * refcount code, in an order that a crash at any point leaves at worst leaked clusters and
 * over-cautious COPIED flags (docs/qcow2-snapshots.md).
 */
import { type ImageLockOptions } from '../../block/image-lock.js';
import { BitbackError, InvalidArgumentError, NotSupportedError, type BitbackErrorOptions } from '../../errors.js';
import { MAX_SNAPSHOTS, encodeL1Table, newSnapshotEntry, snapshotVmStateSize, type L1Entry, type SnapshotEntry } from '../format/index.js';
import { addReferences, checkRoomForReferences, clustersOf, dropReferences, readL1, refreshCopiedFlags } from './references.js';
import { findSnapshot, replaceSnapshotTable, withSnapshotSession, type SnapshotSession } from './session.js';

/** One internal snapshot as the image's snapshot table holds it. */
export interface Qcow2Snapshot {
  /** Unique id (QEMU numbers them "1", "2", ...). */
  id: string;
  /** The name given when it was made (QEMU allows duplicates; bitback does not create them). */
  name: string;
  /** When it was made: seconds since the Epoch. */
  dateSeconds: number;
  /** Sub-second part of the date, nanoseconds (QEMU stores microseconds * 1000). */
  dateNanoseconds: number;
  /** Guest run time at the snapshot, nanoseconds (0 for disk-only snapshots). */
  vmClockNanoseconds: bigint;
  /** Bytes of saved VM state (0 for disk-only snapshots). */
  vmStateSize: number;
  /** Virtual disk size at the snapshot, bytes (the image's size when the entry does not say). */
  diskSize: number;
  /** Record/replay instruction count; undefined when icount was off (stored as -1). */
  icount?: bigint;
  /** Byte offset of the snapshot's L1 table in the file. */
  l1TableOffset: number;
  /** Entries of the snapshot's L1 table. */
  l1Size: number;
}

/** Options of {@link createSnapshot}. */
export interface CreateSnapshotOptions {
  /** The id to give it (unique in the image). Default: the next free number, as QEMU assigns. */
  id?: string;
}

/** A snapshot name or id that is already taken (code `ALREADY_EXISTS`). */
export class SnapshotExistsError extends BitbackError {
  constructor(action: string, reason: string, options?: BitbackErrorOptions) {
    super('ALREADY_EXISTS', action, reason, options);
  }
}

/** Longest id and name QEMU keeps (`QEMUSnapshotInfo`: 128 and 256 bytes with the NUL). */
const MAX_ID_BYTES = 127;
const MAX_NAME_BYTES = 255;

/**
 * Lists the internal snapshots of the qcow2 image at `path`, in table order. Opens it
 * read-only, locked as qemu-img snapshot -l locks it: an image that another process writes
 * needs `lock.forceShare` (-U), and is then read only as far as the file is consistent on disk.
 */
export function listSnapshots(path: string, options: { lock?: ImageLockOptions } = {}): Promise<Qcow2Snapshot[]> {
  return withSnapshotSession(path, `list snapshots of ${path}`, true, async (s) => s.entries.map((e) => describe(e, s.size)), options.lock);
}

/**
 * Creates a disk-only internal snapshot `name` of the image at `path` (closed: no other
 * process may have it open), like `qemu-img snapshot -c`: the active L1 table is copied, every
 * cluster it references gains a reference, and a new snapshot table with the entry appended
 * replaces the old one. The entry is QEMU's: next numeric id, date now (microseconds), VM
 * clock 0, VM state 0, disk size = the virtual size, icount 0.
 *
 * Rejects with `SnapshotExistsError` for a taken name or id, `InvalidArgumentError` for an
 * empty or too long name or id, `OutOfRangeError` when a refcount would overflow (always, for
 * an image with data and `refcount_bits=1`; nothing is changed then), `ReadOnlyError` for a
 * file this process cannot write, and the image's open errors.
 */
export async function createSnapshot(path: string, name: string, options: CreateSnapshotOptions = {}): Promise<Qcow2Snapshot> {
  const action = `create snapshot '${name}' of ${path}`;
  checkLabel(action, 'name', name, MAX_NAME_BYTES);
  if (options.id !== undefined) checkLabel(action, 'id', options.id, MAX_ID_BYTES);
  return withSnapshotSession(path, action, false, async (s) => {
    if (s.entries.some((e) => e.name === name)) throw new SnapshotExistsError(action, `${path} already has a snapshot named '${name}'`);
    if (options.id !== undefined && s.entries.some((e) => e.id === options.id)) {
      throw new SnapshotExistsError(action, `${path} already has a snapshot with the id '${options.id}'`);
    }
    if (s.entries.length >= MAX_SNAPSHOTS) throw new NotSupportedError(action, `${path} has ${s.entries.length} snapshots, QEMU's limit`);
    const id = options.id ?? nextId(s.entries);
    const l1 = s.internals.activeL1();
    await checkRoomForReferences(s, l1, action);

    // 1. The copy of the active L1 table, as QEMU writes it (COPIED flags included: they carry
    //    no meaning outside the active table). Unreferenced until the table points to it.
    const cs = s.g.clusterSize;
    const l1Offset = l1.length === 0 ? 0 : await s.internals.allocateClusters(clustersOf(l1.length * 8, cs));
    if (l1.length > 0) await s.internals.writeHost(l1Offset, encodeL1Table(l1, s.g));
    // 2. Every cluster the snapshot will share gains its reference before anything points to it.
    await addReferences(s, l1, true);
    // 3. The new table, then the header; the old table is freed last.
    const now = microsecondsNow();
    const entry: SnapshotEntry = {
      ...newSnapshotEntry({ id, name, l1TableOffset: l1Offset, l1Size: l1.length, diskSize: s.size, timeMs: Math.floor(now / 1000), icount: 0n }),
      dateSeconds: Math.floor(now / 1e6),
      dateNanoseconds: (now % 1e6) * 1000,
    };
    await replaceSnapshotTable(s, [...s.entries, entry]);
    return describe(entry, s.size);
  });
}

/**
 * Reverts the image at `path` (closed) to snapshot `nameOrId` (an id first, then a name, as
 * QEMU looks it up), like `qemu-img snapshot -a`: the snapshot's clusters gain a reference,
 * its L1 table becomes the active one (one write), the old active clusters lose theirs, and
 * COPIED flags are recomputed. The snapshot stays. Persistent bitmaps are left as they are
 * (they do not record the change, as with QEMU).
 *
 * Rejects with `NotFoundError` for an unknown snapshot, `NotSupportedError` when the snapshot's
 * disk size differs from the image's (QEMU refuses it too) or its L1 table maps more than the
 * active one can hold (VM state beyond the disk).
 */
export function applySnapshot(path: string, nameOrId: string): Promise<Qcow2Snapshot> {
  const action = `apply snapshot '${nameOrId}' to ${path}`;
  return withSnapshotSession(path, action, false, async (s) => {
    const entry = s.entries[findSnapshot(s, nameOrId, action)]!;
    const diskSize = entry.diskSize ?? s.size;
    if (diskSize !== s.size) {
      throw new NotSupportedError(action, `the snapshot's disk size ${diskSize} differs from the image's ${s.size} bytes (resize the image back first)`);
    }
    const old = s.internals.activeL1();
    const target = await snapshotL1For(s, entry, old.length, action);
    await checkRoomForReferences(s, target, action);
    await addReferences(s, target, false);
    await s.internals.replaceActiveL1(target.map((e) => ({ l2Offset: e.l2Offset, copied: false })));
    await dropReferences(s, old);
    await refreshCopiedFlags(s);
    return describe(entry, s.size);
  });
}

/**
 * Deletes snapshot `nameOrId` (an id first, then a name) of the image at `path` (closed), like
 * `qemu-img snapshot -d`: the table is rewritten without it first, then everything its L1
 * table referenced loses a reference, its L1 table is freed, and the active COPIED flags are
 * recomputed (clusters it alone shared with the active layer are owned again).
 *
 * Rejects with `NotFoundError` for an unknown snapshot.
 */
export function deleteSnapshot(path: string, nameOrId: string): Promise<Qcow2Snapshot> {
  const action = `delete snapshot '${nameOrId}' of ${path}`;
  return withSnapshotSession(path, action, false, async (s) => {
    const index = findSnapshot(s, nameOrId, action);
    const entry = s.entries[index]!;
    checkSnapshotL1(s, entry, action);
    const l1 = await readL1(s, entry.l1TableOffset, entry.l1Size);
    await replaceSnapshotTable(s, s.entries.filter((_, i) => i !== index));
    await dropReferences(s, l1);
    if (entry.l1Size > 0) await s.internals.freeClusters(entry.l1TableOffset, clustersOf(entry.l1Size * 8, s.g.clusterSize));
    await refreshCopiedFlags(s);
    return describe(entry, s.size);
  });
}

// ---------------------------------------------------------------------------------------------

function describe(e: SnapshotEntry, imageSize: number): Qcow2Snapshot {
  const snapshot: Qcow2Snapshot = {
    id: e.id,
    name: e.name,
    dateSeconds: e.dateSeconds,
    dateNanoseconds: e.dateNanoseconds,
    vmClockNanoseconds: e.vmClockNanoseconds,
    vmStateSize: snapshotVmStateSize(e),
    diskSize: e.diskSize ?? imageSize,
    l1TableOffset: e.l1TableOffset,
    l1Size: e.l1Size,
  };
  if (e.icount !== undefined && e.icount >= 0n) snapshot.icount = e.icount;
  return snapshot;
}

function checkLabel(action: string, what: string, value: string, maxBytes: number): void {
  if (typeof value !== 'string' || value.length === 0) throw new InvalidArgumentError(action, `the snapshot ${what} is empty`);
  if (new TextEncoder().encode(value).length > maxBytes) throw new InvalidArgumentError(action, `the snapshot ${what} is longer than ${maxBytes} bytes (QEMU's limit)`);
  if (value.includes('\0')) throw new InvalidArgumentError(action, `the snapshot ${what} contains a NUL character`);
}

/** QEMU's `find_new_snapshot_id`: one more than the largest id read as a number (strtoul). */
function nextId(entries: readonly SnapshotEntry[]): string {
  let max = 0;
  for (const e of entries) {
    const n = Number.parseInt(e.id.trimStart(), 10);
    if (Number.isSafeInteger(n) && n > max) max = n;
  }
  return String(max + 1);
}

/** Now, in whole microseconds since the Epoch (QEMU's precision for snapshot dates). */
function microsecondsNow(): number {
  return Math.floor((performance.timeOrigin + performance.now()) * 1000);
}

/** Refuses a snapshot L1 table that lies on the header or the active L1 table (a corrupt entry). */
function checkSnapshotL1(s: SnapshotSession, entry: SnapshotEntry, action: string): void {
  if (entry.l1Size === 0) return;
  const active = s.internals.imageHeader().header;
  const end = entry.l1TableOffset + entry.l1Size * 8;
  const activeEnd = active.l1TableOffset + active.l1Size * 8;
  if (entry.l1TableOffset < s.g.clusterSize || (entry.l1TableOffset < activeEnd && active.l1TableOffset < end)) {
    throw new BitbackError('CORRUPT', action, `snapshot '${entry.name}' has its L1 table at ${entry.l1TableOffset}, on the header or the active L1 table`);
  }
}

/** The snapshot's L1 table fitted to the active table's `size` entries (padded with zeroes). */
async function snapshotL1For(s: SnapshotSession, entry: SnapshotEntry, size: number, action: string): Promise<L1Entry[]> {
  checkSnapshotL1(s, entry, action);
  const l1 = await readL1(s, entry.l1TableOffset, entry.l1Size);
  if (l1.slice(size).some((e) => e.l2Offset !== 0)) {
    throw new NotSupportedError(action, `the snapshot's L1 table maps ${entry.l1Size} entries, more than the image's ${size} (VM state or a larger disk)`);
  }
  const fitted = l1.slice(0, size);
  while (fitted.length < size) fitted.push({ l2Offset: 0, copied: false });
  return fitted;
}
