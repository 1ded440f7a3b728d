/**
 * The refcount structures themselves (QEMU `check_refblocks`): every refcount table entry
 * must be free of reserved bits, aligned, inside the image, and its block referenced exactly
 * once. Problems here mean the refcounts cannot be fixed in place (QEMU rebuilds them).
 * @internal
 */
import { reference, type CheckContext } from './context.js';
import { hex } from './findings.js';
import { Role } from './reference-counts.js';

/** Checks and counts every refcount block. Call after every other reference is counted. */
export function referenceRefcountBlocks(ctx: CheckContext): void {
  const { stored, geometry, findings, refs } = ctx;
  const { clusterSize } = geometry;
  const entries = Math.min(stored.tableEntries, Math.floor(stored.table.length / 8));
  for (let i = 0; i < entries; i++) {
    const [hi, lo] = stored.rawEntry(i);
    if (hi === 0 && lo === 0) continue;
    const field = `refcount_table[${i}]`;
    if ((lo & 0x1ff) !== 0) {
      findings.add({ kind: 'refcount-block', field, offset: ctx.header.refcountTableOffset + i * 8, message: `refcount table entry ${i} has reserved bits set` });
      ctx.rebuild = true;
      continue;
    }
    const offset = hi * 0x1_0000_0000 + lo;
    if (offset % clusterSize !== 0) {
      findings.add({ kind: 'refcount-block', field, offset, message: `refcount block ${i} at ${hex(offset)} is not cluster aligned` });
      ctx.rebuild = true;
      continue;
    }
    const cluster = Math.floor(offset / clusterSize);
    if (cluster >= Math.max(ctx.fileClusters, refs.extent)) {
      findings.add({ kind: 'refcount-block', field, offset, message: `refcount block ${i} at ${hex(offset)} is outside the image` });
      continue;
    }
    reference(ctx, offset, clusterSize, Role.REFCOUNT_BLOCK, field);
    const count = refs.get(cluster);
    if (count !== 1) {
      findings.add({ kind: 'refcount-block', field, cluster, offset, message: `refcount block ${i} at ${hex(offset)} is referenced ${count} times` });
      ctx.rebuild = true;
    }
  }
}
