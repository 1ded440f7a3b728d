/**
 * The internal snapshot table as the check reads it (QEMU `qcow2_check_read_snapshot_table`):
 * entry by entry, each decoded by the format codec, so that one bad entry is a finding and
 * the others are still checked. Memory: one entry at a time, plus each snapshot's L1 location.
 * @internal
 */
import {
  MAX_L1_TABLE_BYTES,
  MAX_SNAPSHOT_EXTRA_DATA,
  MAX_SNAPSHOT_TABLE_BYTES,
  Qcow2FormatError,
  Qcow2UnsupportedError,
  SNAPSHOT_HEADER_SIZE,
  V3_MIN_SNAPSHOT_EXTRA_DATA,
  decodeSnapshotTable,
  snapshotEntryLength,
} from '../format/index.js';
import type { CheckContext } from './context.js';
import { hex } from './findings.js';
import { word64 } from './words.js';

/** Where a snapshot's L1 table is. */
export interface SnapshotL1 {
  /** Index in the snapshot table. */
  index: number;
  l1TableOffset: number;
  l1Size: number;
}

/** The snapshots worth walking, and the bytes the table takes (without its final padding). */
export interface SnapshotTableReading {
  snapshots: SnapshotL1[];
  byteLength: number;
}

/** Reads and checks the snapshot table the header points to. */
export async function readSnapshotTable(ctx: Pick<CheckContext, 'file' | 'header' | 'geometry' | 'findings'>): Promise<SnapshotTableReading> {
  const { file, header, geometry, findings } = ctx;
  const start = header.snapshotsOffset;
  const snapshots: SnapshotL1[] = [];
  const reader = new WindowReader(file);
  let at = start;
  let end = start;
  for (let i = 0; i < header.nbSnapshots; i++) {
    const field = `snapshot[${i}]`;
    const fixed = await reader.read(at, SNAPSHOT_HEADER_SIZE);
    const length = snapshotEntryLength(fixed, 0);
    const extraSize = readU32(fixed, 36);
    const unpadded = SNAPSHOT_HEADER_SIZE + extraSize + readU16(fixed, 12) + readU16(fixed, 14);
    if (at + unpadded > file.size) {
      findings.add({
        kind: 'snapshot',
        field,
        offset: at,
        message: `nb_snapshots is ${header.nbSnapshots} but entry ${i} at ${hex(at)} runs past the end of the ${file.size}-byte file`,
      });
      break;
    }
    if (at + unpadded - start > MAX_SNAPSHOT_TABLE_BYTES) {
      findings.add({ kind: 'snapshot', field, offset: at, message: `the snapshot table exceeds QEMU's limit of ${MAX_SNAPSHOT_TABLE_BYTES} bytes at entry ${i}` });
      break;
    }
    end = at + unpadded;
    if (extraSize > MAX_SNAPSHOT_EXTRA_DATA) {
      findings.add({ kind: 'snapshot', field: `${field}.extra_data_size`, offset: at, message: `${extraSize} bytes of extra data exceed QEMU's limit of ${MAX_SNAPSHOT_EXTRA_DATA}` });
      addIfUsable(ctx, snapshots, i, fixed);
    } else {
      const bytes = await reader.read(at, length);
      try {
        const entry = decodeSnapshotTable(bytes, 0, 1, geometry).entries[0]!;
        snapshots.push({ index: i, l1TableOffset: entry.l1TableOffset, l1Size: entry.l1Size });
      } catch (e) {
        if (!(e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError)) throw e;
        findings.add({ kind: 'snapshot', field: e.field.replace(/^snapshot\[0\]/, field), offset: at, message: e.reason });
        addIfUsable(ctx, snapshots, i, fixed);
      }
      if (header.version >= 3 && extraSize < V3_MIN_SNAPSHOT_EXTRA_DATA) {
        findings.add({ kind: 'snapshot', field: `${field}.extra_data_size`, offset: at, message: `the entry is incomplete: ${extraSize} bytes of extra data, a version 3 image needs ${V3_MIN_SNAPSHOT_EXTRA_DATA}` });
      }
    }
    at += length;
  }
  return { snapshots, byteLength: end - start };
}

/**
 * After the codec refused an entry for something else than its L1 table, QEMU still walks the
 * L1 table when its offset is aligned and its size within limits; so does the check.
 */
function addIfUsable(ctx: Pick<CheckContext, 'geometry'>, snapshots: SnapshotL1[], index: number, fixed: Uint8Array): void {
  const [hi, lo] = word64(fixed, 0);
  const l1TableOffset = hi * 0x1_0000_0000 + lo;
  const l1Size = readU32(fixed, 8);
  if (l1TableOffset % ctx.geometry.clusterSize !== 0 || l1Size * 8 > MAX_L1_TABLE_BYTES || !Number.isSafeInteger(l1TableOffset)) return;
  snapshots.push({ index, l1TableOffset, l1Size });
}

/** Serves small reads of a table from a window of the file, so that an entry costs no read. */
class WindowReader {
  private start = 0;
  private bytes: Uint8Array = new Uint8Array(0);

  constructor(private readonly file: CheckContext['file']) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < this.start || offset + length > this.start + this.bytes.length) {
      this.start = offset;
      this.bytes = await this.file.read(offset, Math.max(length, WINDOW_BYTES));
    }
    return this.bytes.subarray(offset - this.start, offset - this.start + length);
  }
}

/** Bytes read at once from the snapshot table. */
const WINDOW_BYTES = 64 * 1024;

function readU32(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

function readU16(bytes: Uint8Array, at: number): number {
  return (bytes[at]! << 8) | bytes[at + 1]!;
}
