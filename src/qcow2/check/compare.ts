/**
 * Compares the stored refcount of every cluster with the computed one (QEMU
 * `compare_refcounts`) and, for a repair, writes the computed value where the mode allows.
 *
 * As qemu-img counts them: stored > computed is a leak (whether or not anything references
 * the cluster), stored < computed a corruption; a stored 0 that should not be 0 means the
 * refcount structures must be rebuilt. Reads one refcount block at a time.
 * @internal
 */
import type { CheckContext } from './context.js';
import { hex } from './findings.js';

/** What a comparison may fix: nothing, leaks only, or leaks and too-small refcounts. */
export type FixMode = 'none' | 'leaks' | 'all';

/**
 * Compares clusters `0 .. max(file clusters, referenced clusters) - 1`.
 * @returns the highest cluster with a stored or computed refcount (0 when none).
 */
export async function compareRefcounts(ctx: CheckContext, fix: FixMode): Promise<number> {
  const { stored, refs, findings, geometry } = ctx;
  const extent = Math.max(ctx.fileClusters, refs.extent);
  const perBlock = geometry.refcountBlockEntries;
  let highest = 0;
  for (let blockIndex = 0; blockIndex * perBlock < extent; blockIndex++) {
    const start = blockIndex * perBlock;
    const end = Math.min(extent, start + perBlock);
    const slot = stored.slot(blockIndex);
    if (slot.kind === 'unaligned') {
      // QEMU fails to read each of these refcounts (and counts each as a check error).
      findings.add({
        kind: 'check-error',
        field: `refcount_table[${blockIndex}]`,
        cluster: start,
        message: `cannot read the refcounts of clusters ${start}..${end - 1}: their block offset ${hex(slot.offset)} is not cluster aligned`,
      });
      findings.count('check-error', end - start - 1);
      continue;
    }
    const block = slot.kind === 'block' ? await stored.block(blockIndex) : undefined;
    for (let cluster = start; cluster < end; cluster++) {
      const storedCount = block === undefined ? 0 : stored.readIn(block, cluster - start);
      const computed = refs.get(cluster);
      if (storedCount > 0 || computed > 0) highest = cluster;
      if (storedCount === computed) continue;
      if (storedCount === 0) ctx.rebuild = true;
      const offset = cluster * geometry.clusterSize;
      const field = `refcount[${cluster}]`;
      if (storedCount > computed) {
        const repaired = fix !== 'none';
        if (repaired) await stored.set(cluster, computed);
        findings.add({
          kind: computed === 0 ? 'leak' : 'refcount-too-large',
          field,
          cluster,
          offset,
          message: `cluster ${cluster} has refcount ${storedCount} but ${computed} references`,
          ...(repaired ? { repaired } : {}),
        });
      } else {
        const repaired = fix === 'all' && storedCount !== 0;
        if (repaired) await stored.set(cluster, computed);
        findings.add({
          kind: 'refcount-too-small',
          field,
          cluster,
          offset,
          message: `cluster ${cluster} has refcount ${storedCount} but ${computed} references`,
          ...(repaired ? { repaired } : {}),
        });
      }
    }
  }
  return highest;
}
