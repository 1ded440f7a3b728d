/**
 * The guest mapping walk (QEMU `check_refcounts_l1` / `check_refcounts_l2`): counts the
 * references of an L1 table, its L2 tables and the clusters they map, and checks every entry.
 *
 * An L2 table reached through several L1 entries (a snapshot shares the active image's
 * tables) is read once and counted with its multiplicity: the counts are what QEMU's walk
 * gives, the work is one read per distinct table. L1 tables are read only as far as the file
 * holds; L2 tables one at a time.
 * @internal
 */
import { Qcow2FormatError, Qcow2UnsupportedError, decodeL1Entry } from '../format/index.js';
import { charge, reference, type CheckContext } from './context.js';
import { hex } from './findings.js';
import { readL2Entry } from './l2-entry.js';
import { Role } from './reference-counts.js';
import { offsetBits, word64 } from './words.js';

/** L2 tables to walk: offset → how many L1 entries point to it, and the first one's name. */
export type L2Tables = Map<number, { times: number; field: string }>;

/**
 * Counts an L1 table of `l1Size` entries at `l1Offset` (`times` references to it), checks its
 * entries and adds the L2 tables they point to into `into`.
 *
 * @param fieldPrefix - names the table in findings: '' for the active one, `snapshot[2].` for a snapshot's.
 */
export async function walkL1(ctx: CheckContext, l1Offset: number, l1Size: number, times: number, fieldPrefix: string, into: L2Tables): Promise<void> {
  if (l1Size === 0) return;
  const field = `${fieldPrefix}l1_table`;
  // QEMU walks what the file holds of a table even when it runs past the end.
  reference(ctx, l1Offset, l1Size * 8, Role.L1, field, times);
  const table = await ctx.file.readClamped(l1Offset, l1Size * 8, 8);
  const entries = Math.floor(table.length / 8);
  charge(ctx, entries, field);
  for (let i = 0; i < entries; i++) {
    const [hi, lo] = word64(table, i * 8);
    if (hi === 0 && lo === 0) continue;
    const entryField = `${fieldPrefix}l1[${i}]`;
    let l2Offset: number;
    try {
      l2Offset = decodeL1Entry(table, i, ctx.geometry).l2Offset;
    } catch (e) {
      if (!(e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError)) throw e;
      if ((hi & 0x7f000000) !== 0 || (lo & 0x1ff) !== 0) {
        ctx.findings.add({ kind: 'invalid-entry', field: entryField, offset: l1Offset + i * 8, message: `L1 entry 0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')} has reserved bits set` }, times);
      }
      l2Offset = offsetBits(hi, lo);
    }
    // An entry with flags but no offset makes QEMU take the header for the L2 table; so do we.
    const seen = into.get(l2Offset);
    if (seen === undefined) into.set(l2Offset, { times, field: entryField });
    else seen.times += times;
  }
}

/**
 * Counts and walks each L2 table of `tables`. With `fragmentation`, the allocation statistics
 * are collected (QEMU does it for the active L1 table only).
 */
export async function walkL2Tables(ctx: CheckContext, tables: L2Tables, fragmentation: boolean): Promise<void> {
  const { clusterSize } = ctx.geometry;
  for (const [l2Offset, { times, field }] of tables) {
    const inFile = reference(ctx, l2Offset, clusterSize, Role.L2, field, times);
    if (l2Offset % clusterSize !== 0) {
      ctx.findings.add({ kind: 'unaligned', field, offset: l2Offset, message: `L2 table offset ${hex(l2Offset)} is not aligned to the cluster size ${clusterSize}` }, times);
    }
    if (inFile) await walkL2(ctx, l2Offset, times, field, fragmentation); // past the end, it reads as zeroes
  }
}

async function walkL2(ctx: CheckContext, l2Offset: number, times: number, field: string, fragmentation: boolean): Promise<void> {
  const { geometry, findings, fragmentation: frag } = ctx;
  charge(ctx, geometry.l2Entries, field);
  const table = await ctx.file.read(l2Offset, geometry.clusterSize);
  let nextContiguous = 0;
  for (let i = 0; i < geometry.l2Entries; i++) {
    const at = i * geometry.l2EntrySize;
    if (isZeroEntry(table, at, geometry.l2EntrySize)) continue;
    const { view, problems } = readL2Entry(table, i, geometry);
    const entryField = `${field}.l2[${i}]`;
    for (const p of problems) findings.add({ kind: p.kind, field: entryField, offset: l2Offset + at, message: p.message }, times);
    switch (view.type) {
      case 'compressed':
        reference(ctx, view.offset, view.length, Role.COMPRESSED, entryField, times);
        if (fragmentation) {
          // Compressed clusters count as fragmented: they are read by whole sectors (qemu-img).
          frag.allocated += times;
          frag.compressed += times;
          frag.fragmented += times;
        }
        break;
      case 'normal':
      case 'zero-alloc':
        if (fragmentation) {
          frag.allocated += times;
          if (nextContiguous !== 0 && view.offset !== nextContiguous) frag.fragmented += times;
          nextContiguous = view.offset + geometry.clusterSize;
        }
        if (!geometry.externalDataFile) reference(ctx, view.offset, geometry.clusterSize, Role.DATA, entryField, times);
        break;
      case 'unallocated':
      case 'zero-plain':
      case 'skip':
        break;
      default: {
        const never: never = view;
        return never;
      }
    }
  }
}

/** True when the `size` bytes of an entry are all zero (an unallocated cluster). */
export function isZeroEntry(table: Uint8Array, at: number, size: number): boolean {
  for (let k = 0; k < size; k++) if (table[at + k] !== 0) return false;
  return true;
}
