/**
 * One L2 entry as the check needs it: what QEMU would make of it (`qcow2_get_cluster_type`)
 * and what is wrong with it. A well-formed entry is decoded by the format codec; one the codec
 * refuses is looked at bit by bit, the way QEMU's `check_refcounts_l2` does, so that the check
 * keeps counting (and counts like qemu-img) instead of stopping at the first bad entry.
 * @internal
 */
import { Qcow2FormatError, Qcow2UnsupportedError, compressedByteRange, decodeL2Entry, type Qcow2Geometry } from '../format/index.js';
import type { Qcow2FindingKind } from './findings.js';
import { offsetBits, word64, word64Big } from './words.js';

/** What an L2 entry maps its guest cluster to. */
export type L2View =
  | { type: 'unallocated' | 'zero-plain' }
  /** A host cluster (`zero-alloc`: preallocated, reads as zero). `offset` may be unaligned. */
  | { type: 'normal' | 'zero-alloc'; offset: number; copied: boolean }
  /** Compressed data: the bytes `[offset, offset + length)` of the file. */
  | { type: 'compressed'; offset: number; length: number }
  /** Malformed in a way that makes QEMU skip it (counted, not followed). */
  | { type: 'skip' };

/** A problem of one entry. */
export interface L2Problem {
  kind: Qcow2FindingKind;
  message: string;
}

/** An entry and its problems. */
export interface L2Reading {
  view: L2View;
  problems: L2Problem[];
}

const NO_PROBLEMS: L2Problem[] = [];

/** Reads entry `index` of the L2 table `table` (one cluster). */
export function readL2Entry(table: Uint8Array, index: number, geometry: Qcow2Geometry): L2Reading {
  try {
    const entry = decodeL2Entry(table, index, geometry);
    switch (entry.kind) {
      case 'unallocated':
        return { view: { type: 'unallocated' }, problems: NO_PROBLEMS };
      case 'zero':
        return {
          view: entry.hostOffset === 0 ? { type: 'zero-plain' } : { type: 'zero-alloc', offset: entry.hostOffset, copied: entry.copied },
          problems: NO_PROBLEMS,
        };
      case 'normal':
        return { view: { type: 'normal', offset: entry.hostOffset, copied: entry.copied }, problems: NO_PROBLEMS };
      case 'compressed': {
        const range = compressedByteRange(entry);
        return { view: { type: 'compressed', offset: range.offset, length: range.length }, problems: NO_PROBLEMS };
      }
      default: {
        const never: never = entry;
        return never;
      }
    }
  } catch (e) {
    if (!(e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError)) throw e;
    return salvage(table, index, geometry);
  }
}

/** QEMU's reading of an entry the codec refused (`check_refcounts_l2`). */
function salvage(table: Uint8Array, index: number, geometry: Qcow2Geometry): L2Reading {
  const at = index * geometry.l2EntrySize;
  const [hi, lo] = word64(table, at);
  const [zeroMask, allocMask] = geometry.extendedL2 ? word64(table, at + 8) : [0, 0];
  const copied = (hi & 0x80000000) !== 0;
  const problems: L2Problem[] = [];

  if ((hi & 0x40000000) !== 0) {
    if (copied) problems.push({ kind: 'invalid-entry', message: 'COPIED is set on a compressed cluster' });
    if (geometry.externalDataFile) {
      problems.push({ kind: 'invalid-entry', message: 'a compressed cluster in an image with an external data file' });
      return { view: { type: 'skip' }, problems };
    }
    if (zeroMask !== 0 || allocMask !== 0) {
      problems.push({ kind: 'invalid-entry', message: 'a compressed cluster has a non-zero subcluster bitmap' });
      return { view: { type: 'skip' }, problems };
    }
    const raw = word64Big(table, at);
    const shift = BigInt(geometry.compressedOffsetBits);
    const offset = Number(raw & ((1n << shift) - 1n));
    const sectors = Number((raw >> shift) & ((1n << BigInt(geometry.compressedSectorBits)) - 1n)) + 1;
    return { view: { type: 'compressed', offset, length: sectors * 512 - (offset % 512) }, problems };
  }

  if ((hi & 0x3f000000) !== 0 || (lo & 0x1fe) !== 0) {
    problems.push({ kind: 'invalid-entry', message: `0x${hex32(hi)}${hex32(lo)} has reserved bits set` });
  }
  const offset = offsetBits(hi, lo);
  let view: L2View;
  if ((lo & 1) !== 0 && !geometry.extendedL2) {
    view = offset === 0 ? { type: 'zero-plain' } : { type: 'zero-alloc', offset, copied };
  } else if (offset === 0 && !(geometry.externalDataFile && copied)) {
    view = { type: 'unallocated' };
    if (allocMask !== 0) problems.push({ kind: 'invalid-entry', message: 'an unallocated cluster has allocated subclusters' });
    return { view, problems };
  } else {
    view = { type: 'normal', offset, copied };
  }
  if ((zeroMask & allocMask) !== 0) {
    problems.push({ kind: 'invalid-entry', message: 'subclusters are marked both allocated and zero' });
  }
  if (offset % geometry.clusterSize !== 0) {
    const what = view.type === 'zero-alloc' || (geometry.extendedL2 && allocMask === 0) ? 'preallocated' : 'data';
    problems.push({ kind: 'unaligned', message: `${what} cluster offset 0x${offset.toString(16)} is not aligned to the cluster size` });
  }
  return { view, problems };
}

function hex32(n: number): string {
  return n.toString(16).padStart(8, '0');
}
