/**
 * The COPIED flag of the active L1 and L2 entries (QEMU `check_oflag_copied`): it must be set
 * exactly when the stored refcount of the L2 table or data cluster is 1. A repair sets or
 * clears the flag to agree with the (already repaired) refcount. Snapshot tables are not
 * checked: their COPIED flags carry no meaning (spec "Cluster mapping").
 * @internal
 */
import { charge, type CheckContext } from './context.js';
import { hex } from './findings.js';
import { readL2Entry } from './l2-entry.js';
import { isZeroEntry } from './mapping-walk.js';
import { UNREADABLE } from './stored-refcounts.js';
import { offsetBits, word64, writeWord64 } from './words.js';

/**
 * Checks (and with `repair`, fixes in place) the COPIED flags of the active L1 table and of
 * the L2 tables it points to. An L2 table reached through several L1 entries is read once and
 * its mismatches counted once per entry, as QEMU's walk counts them (after a repair the later
 * visits find nothing left).
 */
export async function checkCopiedFlags(ctx: CheckContext, repair: boolean): Promise<void> {
  const { file, header, geometry, stored, findings } = ctx;
  const l1 = await file.readClamped(header.l1TableOffset, header.l1Size * 8, 8);
  charge(ctx, l1.length / 8, 'l1_table');
  const mismatchesOf = new Map<number, number>();
  for (let i = 0; i < Math.floor(l1.length / 8); i++) {
    const [hi, lo] = word64(l1, i * 8);
    const l2Offset = offsetBits(hi, lo);
    if (l2Offset === 0) continue;
    const refcount = await stored.get(Math.floor(l2Offset / geometry.clusterSize));
    if (refcount === UNREADABLE) continue; // reported by the comparison already
    const copied = (hi & 0x80000000) !== 0;
    if ((refcount === 1) !== copied) {
      const entryOffset = header.l1TableOffset + i * 8;
      if (repair) {
        const fixed = new Uint8Array(8);
        writeWord64(fixed, 0, refcount === 1 ? (hi | 0x80000000) >>> 0 : hi & 0x7fffffff, lo);
        await file.write(fixed, entryOffset);
      }
      findings.add({
        kind: 'copied-flag',
        field: `l1[${i}]`,
        offset: entryOffset,
        message: `the L1 entry ${copied ? 'has' : 'lacks'} COPIED but its L2 table at ${hex(l2Offset)} has refcount ${refcount}`,
        ...(repair ? { repaired: true } : {}),
      });
    }
    const earlier = mismatchesOf.get(l2Offset);
    if (earlier !== undefined) {
      if (!repair && earlier > 0) findings.count('corruption', earlier);
      continue;
    }
    mismatchesOf.set(l2Offset, await checkL2(ctx, l2Offset, `l1[${i}]`, repair));
  }
}

/** Checks one L2 table; returns the mismatches found. */
async function checkL2(ctx: CheckContext, l2Offset: number, field: string, repair: boolean): Promise<number> {
  const { file, geometry, stored, findings } = ctx;
  charge(ctx, geometry.l2Entries, field);
  const table = await file.read(l2Offset, geometry.clusterSize);
  let mismatches = 0;
  for (let j = 0; j < geometry.l2Entries; j++) {
    const at = j * geometry.l2EntrySize;
    if (isZeroEntry(table, at, geometry.l2EntrySize)) continue;
    const { view } = readL2Entry(table, j, geometry);
    if (view.type !== 'normal' && view.type !== 'zero-alloc') continue;
    const cluster = Math.floor(view.offset / geometry.clusterSize);
    const refcount = geometry.externalDataFile ? 1 : (stored.peek(cluster) ?? (await stored.get(cluster)));
    if (refcount === UNREADABLE || (refcount === 1) === view.copied) continue;
    mismatches++;
    if (repair) {
      const [hi, lo] = word64(table, at);
      writeWord64(table, at, refcount === 1 ? (hi | 0x80000000) >>> 0 : hi & 0x7fffffff, lo);
    }
    findings.add({
      kind: 'copied-flag',
      field: `${field}.l2[${j}]`,
      offset: l2Offset + at,
      message: `the L2 entry ${view.copied ? 'has' : 'lacks'} COPIED but its cluster at ${hex(view.offset)} has refcount ${refcount}`,
      ...(repair ? { repaired: true } : {}),
    });
  }
  if (repair && mismatches > 0) await file.write(table, l2Offset);
  return mismatches;
}
