/**
 * The internal snapshot table (spec "Snapshots"): `nb_snapshots` variable-length entries,
 * contiguous from `snapshots_offset`.
 *
 * Entry layout: L1 table offset (8), L1 size (4), id length (2), name length (2), date seconds
 * (4), date nanoseconds (4), VM clock nanoseconds (8), VM state size (4), extra data size (4),
 * extra data (vm_state_size_large 8, disk_size 8, icount 8, then unknown fields), id, name,
 * padding to a multiple of 8.
 */
import {
  MAX_L1_TABLE_BYTES,
  MAX_SNAPSHOTS,
  MAX_SNAPSHOT_EXTRA_DATA,
  MAX_SNAPSHOT_STRING,
  MAX_SNAPSHOT_TABLE_BYTES,
  SNAPSHOT_HEADER_SIZE,
  SnapshotExtraField as X,
  TABLE_ENTRY_SIZE,
} from './constants.js';
import {
  SAFE_MAX,
  U32_MAX,
  align8,
  checkInteger,
  decodeUtf8,
  encodeUtf8,
  need,
  readU16,
  readU32,
  readU64,
  readU64Big,
  writeU16,
  writeU32,
  writeU64,
  writeU64Big,
} from './bytes.js';
import { problem, type Direction } from './errors.js';
import type { Qcow2Geometry } from './geometry.js';

/**
 * One internal snapshot. The optional extra data fields are present when the entry's extra
 * data is long enough to hold them completely; a field can only be present when the fields
 * before it are.
 */
export interface SnapshotEntry {
  /** Unique id string (QEMU numbers them "1", "2", ...). */
  id: string;
  /** Name given by the user. */
  name: string;
  /** Cluster-aligned offset of the snapshot's L1 table. */
  l1TableOffset: number;
  /** Entries of the snapshot's L1 table. */
  l1Size: number;
  /** Time of the snapshot, seconds since the Epoch (32-bit). */
  dateSeconds: number;
  /** Sub-second part of the time, nanoseconds. */
  dateNanoseconds: number;
  /** Guest run time until the snapshot, nanoseconds (64-bit). */
  vmClockNanoseconds: bigint;
  /** The 32-bit VM state size field (ignored when `vmStateSizeLarge` is present). */
  vmStateSize32: number;
  /** Extra data bytes 0-7: the 64-bit VM state size. */
  vmStateSizeLarge?: number;
  /** Extra data bytes 8-15: the virtual disk size of the snapshot (version 3 requires it). */
  diskSize?: number;
  /** Extra data bytes 16-23: record/replay instruction count, -1n when icount was disabled. */
  icount?: bigint;
  /** Extra data after the last complete known field, kept as it was. */
  unknownExtraData: Uint8Array;
}

/** A decoded table and how many bytes it took. */
export interface SnapshotTable {
  entries: SnapshotEntry[];
  /** Bytes from `snapshots_offset` to the end of the last entry's padding. */
  byteLength: number;
}

/** The VM state size of a snapshot in bytes (the 64-bit field when present). */
export function snapshotVmStateSize(entry: Pick<SnapshotEntry, 'vmStateSize32' | 'vmStateSizeLarge'>): number {
  return entry.vmStateSizeLarge ?? entry.vmStateSize32;
}

/**
 * The padded length of the entry at `bytes[offset]`, from its fixed 40-byte part alone: lets
 * a reader fetch a table entry by entry. Needs only those 40 bytes.
 */
export function snapshotEntryLength(bytes: Uint8Array, offset: number): number {
  need(bytes, offset, SNAPSHOT_HEADER_SIZE, 'snapshot');
  return align8(SNAPSHOT_HEADER_SIZE + readU32(bytes, offset + 36) + readU16(bytes, offset + 12) + readU16(bytes, offset + 14));
}

/**
 * Decodes `count` snapshot table entries at `bytes[offset]`.
 *
 * Entries of version 3 images without a disk size (which the spec requires) are accepted, as
 * QEMU does; `diskSize` is then undefined and the image's size applies.
 *
 * @param fileSize - when given, every snapshot's L1 table must lie within the file.
 * @throws Qcow2FormatError for entries that overrun the bytes, unaligned or misplaced L1
 *   tables, invalid UTF-8; Qcow2UnsupportedError beyond QEMU's limits (count, extra data,
 *   table size, L1 size).
 */
export function decodeSnapshotTable(bytes: Uint8Array, offset: number, count: number, geometry: Qcow2Geometry, fileSize?: number): SnapshotTable {
  if (count > MAX_SNAPSHOTS) throw problem('decode', 'snapshot_table', `${count} snapshots exceed QEMU's limit of ${MAX_SNAPSHOTS}`, true);
  const entries: SnapshotEntry[] = [];
  let at = offset;
  for (let i = 0; i < count; i++) {
    const field = `snapshot[${i}]`;
    need(bytes, at, SNAPSHOT_HEADER_SIZE, field);
    const idSize = readU16(bytes, at + 12);
    const nameSize = readU16(bytes, at + 14);
    const extraSize = readU32(bytes, at + 36);
    if (extraSize > MAX_SNAPSHOT_EXTRA_DATA) {
      throw problem('decode', `${field}.extra_data_size`, `${extraSize} exceeds QEMU's limit of ${MAX_SNAPSHOT_EXTRA_DATA}`, true);
    }
    const unpadded = SNAPSHOT_HEADER_SIZE + extraSize + idSize + nameSize;
    const length = align8(unpadded);
    if (at + length - offset > MAX_SNAPSHOT_TABLE_BYTES) {
      throw problem('decode', 'snapshot_table', `exceeds QEMU's limit of ${MAX_SNAPSHOT_TABLE_BYTES} bytes`, true);
    }
    // The padding of the last entry may be missing: QEMU writes the table without it, so a table
    // that ends the file ends with the name (regression: qemu-img snapshot -c on a 512 B-cluster image).
    need(bytes, at, i === count - 1 ? unpadded : length, field);
    const extra = bytes.subarray(at + SNAPSHOT_HEADER_SIZE, at + SNAPSHOT_HEADER_SIZE + extraSize);
    const idStart = at + SNAPSHOT_HEADER_SIZE + extraSize;
    const entry: SnapshotEntry = {
      id: decodeUtf8(bytes.subarray(idStart, idStart + idSize), `${field}.id`),
      name: decodeUtf8(bytes.subarray(idStart + idSize, idStart + idSize + nameSize), `${field}.name`),
      l1TableOffset: readU64(bytes, at, `${field}.l1_table_offset`),
      l1Size: readU32(bytes, at + 8),
      dateSeconds: readU32(bytes, at + 16),
      dateNanoseconds: readU32(bytes, at + 20),
      vmClockNanoseconds: readU64Big(bytes, at + 24),
      vmStateSize32: readU32(bytes, at + 32),
      unknownExtraData: new Uint8Array(0),
    };
    let known = 0;
    if (extraSize >= X.VM_STATE_SIZE_LARGE_END) {
      entry.vmStateSizeLarge = readU64(extra, 0, `${field}.vm_state_size_large`);
      known = X.VM_STATE_SIZE_LARGE_END;
    }
    if (extraSize >= X.DISK_SIZE_END) {
      entry.diskSize = readU64(extra, 8, `${field}.disk_size`);
      known = X.DISK_SIZE_END;
    }
    if (extraSize >= X.ICOUNT_END) {
      entry.icount = BigInt.asIntN(64, readU64Big(extra, 16));
      known = X.ICOUNT_END;
    }
    entry.unknownExtraData = extra.slice(known);
    checkEntry('decode', field, entry, geometry, fileSize);
    entries.push(entry);
    at += length;
  }
  return { entries, byteLength: Math.min(at, bytes.length) - offset };
}

/**
 * Encodes snapshot table entries into a new buffer of {@link snapshotTableSize} bytes.
 * Version 3 entries must have a `diskSize` (spec "Snapshots").
 * @throws InvalidArgumentError for entries `decodeSnapshotTable` would refuse.
 */
export function encodeSnapshotTable(entries: readonly SnapshotEntry[], geometry: Qcow2Geometry): Uint8Array {
  if (entries.length > MAX_SNAPSHOTS) throw problem('encode', 'snapshot_table', `${entries.length} snapshots exceed QEMU's limit of ${MAX_SNAPSHOTS}`);
  const encoded = entries.map((e, i) => {
    const field = `snapshot[${i}]`;
    checkEntry('encode', field, e, geometry);
    if (geometry.version >= 3 && e.diskSize === undefined) throw problem('encode', `${field}.diskSize`, 'is required in a version 3 image');
    const id = encodeUtf8(e.id);
    const name = encodeUtf8(e.name);
    if (id.length > MAX_SNAPSHOT_STRING || name.length > MAX_SNAPSHOT_STRING) {
      throw problem('encode', field, `id and name must each fit in ${MAX_SNAPSHOT_STRING} bytes`);
    }
    return { id, name, extra: encodeExtraData(field, e) };
  });
  const out = new Uint8Array(encoded.reduce((sum, x) => sum + align8(SNAPSHOT_HEADER_SIZE + x.extra.length + x.id.length + x.name.length), 0));
  if (out.length > MAX_SNAPSHOT_TABLE_BYTES) throw problem('encode', 'snapshot_table', `${out.length} bytes exceed QEMU's limit of ${MAX_SNAPSHOT_TABLE_BYTES}`);
  let at = 0;
  entries.forEach((e, i) => {
    const { id, name, extra } = encoded[i]!;
    writeU64(out, at, e.l1TableOffset);
    writeU32(out, at + 8, e.l1Size);
    writeU16(out, at + 12, id.length);
    writeU16(out, at + 14, name.length);
    writeU32(out, at + 16, e.dateSeconds);
    writeU32(out, at + 20, e.dateNanoseconds);
    writeU64Big(out, at + 24, e.vmClockNanoseconds);
    writeU32(out, at + 32, e.vmStateSize32);
    writeU32(out, at + 36, extra.length);
    out.set(extra, at + SNAPSHOT_HEADER_SIZE);
    out.set(id, at + SNAPSHOT_HEADER_SIZE + extra.length);
    out.set(name, at + SNAPSHOT_HEADER_SIZE + extra.length + id.length);
    at += align8(SNAPSHOT_HEADER_SIZE + extra.length + id.length + name.length);
  });
  return out;
}

/** Size in bytes of the encoded table of `entries`. */
export function snapshotTableSize(entries: readonly SnapshotEntry[]): number {
  return entries.reduce((sum, e) => {
    const extra = extraDataLength(e);
    return sum + align8(SNAPSHOT_HEADER_SIZE + extra + encodeUtf8(e.id).length + encodeUtf8(e.name).length);
  }, 0);
}

/** The fields of {@link newSnapshotEntry}. */
export interface NewSnapshotFields {
  id: string;
  name: string;
  l1TableOffset: number;
  l1Size: number;
  /** Virtual disk size at the time of the snapshot. */
  diskSize: number;
  /** Time of the snapshot in milliseconds since the Epoch (as `Date.now()`). */
  timeMs: number;
  /** Default 0n. */
  vmClockNanoseconds?: bigint;
  /** Default 0 (no VM state). */
  vmStateSize?: number;
  /** Default -1n (icount disabled). */
  icount?: bigint;
}

/** A snapshot entry with all three known extra data fields, as QEMU writes them. */
export function newSnapshotEntry(f: NewSnapshotFields): SnapshotEntry {
  const vmStateSize = f.vmStateSize ?? 0;
  const seconds = Math.floor(f.timeMs / 1000);
  return {
    id: f.id,
    name: f.name,
    l1TableOffset: f.l1TableOffset,
    l1Size: f.l1Size,
    dateSeconds: seconds,
    dateNanoseconds: Math.min(999_999_999, Math.floor((f.timeMs - seconds * 1000) * 1e6)),
    vmClockNanoseconds: f.vmClockNanoseconds ?? 0n,
    vmStateSize32: vmStateSize > U32_MAX ? 0 : vmStateSize,
    vmStateSizeLarge: vmStateSize,
    diskSize: f.diskSize,
    icount: f.icount ?? -1n,
    unknownExtraData: new Uint8Array(0),
  };
}

function extraDataLength(e: SnapshotEntry): number {
  const known = e.icount !== undefined ? X.ICOUNT_END : e.diskSize !== undefined ? X.DISK_SIZE_END : e.vmStateSizeLarge !== undefined ? X.VM_STATE_SIZE_LARGE_END : 0;
  return known + e.unknownExtraData.length;
}

function encodeExtraData(field: string, e: SnapshotEntry): Uint8Array {
  const present = [e.vmStateSizeLarge !== undefined, e.diskSize !== undefined, e.icount !== undefined];
  const known = present.indexOf(false) === -1 ? 3 : present.indexOf(false);
  if (present.slice(known).some((p) => p)) {
    throw problem('encode', `${field}.extra_data`, 'vmStateSizeLarge, diskSize and icount can only be given in order (a field needs the ones before it)');
  }
  if (known < 3 && e.unknownExtraData.length >= 8) {
    throw problem('encode', `${field}.unknownExtraData`, 'would be read back as a known field: give the known fields first');
  }
  const out = new Uint8Array(extraDataLength(e));
  if (out.length > MAX_SNAPSHOT_EXTRA_DATA) throw problem('encode', `${field}.extra_data`, `${out.length} bytes exceed QEMU's limit of ${MAX_SNAPSHOT_EXTRA_DATA}`);
  if (e.vmStateSizeLarge !== undefined) writeU64(out, 0, e.vmStateSizeLarge);
  if (e.diskSize !== undefined) writeU64(out, 8, e.diskSize);
  if (e.icount !== undefined) writeU64Big(out, 16, BigInt.asUintN(64, e.icount));
  out.set(e.unknownExtraData, known * 8);
  return out;
}

function checkEntry(direction: Direction, field: string, e: SnapshotEntry, geometry: Qcow2Geometry, fileSize?: number): void {
  if (direction === 'encode') {
    checkInteger(direction, `${field}.l1TableOffset`, e.l1TableOffset, 0, SAFE_MAX);
    checkInteger(direction, `${field}.l1Size`, e.l1Size, 0, U32_MAX);
    checkInteger(direction, `${field}.dateSeconds`, e.dateSeconds, 0, U32_MAX);
    checkInteger(direction, `${field}.dateNanoseconds`, e.dateNanoseconds, 0, U32_MAX);
    checkInteger(direction, `${field}.vmStateSize32`, e.vmStateSize32, 0, U32_MAX);
    if (e.vmStateSizeLarge !== undefined) checkInteger(direction, `${field}.vmStateSizeLarge`, e.vmStateSizeLarge, 0, SAFE_MAX);
    if (e.diskSize !== undefined) checkInteger(direction, `${field}.diskSize`, e.diskSize, 0, SAFE_MAX);
    if (e.vmClockNanoseconds < 0n || e.vmClockNanoseconds > 0xffffffffffffffffn) {
      throw problem(direction, `${field}.vmClockNanoseconds`, `${e.vmClockNanoseconds} is not a 64-bit unsigned value`);
    }
    if (e.icount !== undefined && (e.icount < -(2n ** 63n) || e.icount >= 2n ** 63n)) {
      throw problem(direction, `${field}.icount`, `${e.icount} is not a 64-bit signed value`);
    }
  }
  const l1Field = `${field}.l1_table_offset`;
  if (e.l1TableOffset % geometry.clusterSize !== 0) {
    throw problem(direction, l1Field, `${e.l1TableOffset} is not aligned to the cluster size ${geometry.clusterSize}`);
  }
  if (e.l1Size * TABLE_ENTRY_SIZE > MAX_L1_TABLE_BYTES) {
    throw problem(direction, `${field}.l1_size`, `${e.l1Size} entries exceed QEMU's 32 MiB L1 table limit`, true);
  }
  if (e.l1Size > 0 && e.l1TableOffset === 0) throw problem(direction, l1Field, 'is 0: the table would overlap the header');
  if (fileSize !== undefined && e.l1TableOffset + e.l1Size * TABLE_ENTRY_SIZE > fileSize) {
    throw problem(direction, l1Field, `the L1 table at ${e.l1TableOffset} (${e.l1Size} entries) runs past the end of the ${fileSize}-byte file`);
  }
}
