/**
 * The state of one check pass, shared by the walks: the image's header and geometry, the
 * computed and stored refcounts, the findings and the allocation statistics.
 * @internal
 */
import type { HeaderExtensions, Qcow2Geometry, Qcow2Header } from '../format/index.js';
import { Qcow2CheckError } from './errors.js';
import { Findings, hex } from './findings.js';
import type { ImageFile } from './image-file.js';
import { ReferenceCounts, roleName, type Role } from './reference-counts.js';
import type { StoredRefcounts } from './stored-refcounts.js';

/** Allocation statistics of the active L1 table (qemu-img's `BlockFragInfo`). */
export interface FragmentationInfo {
  allocated: number;
  fragmented: number;
  compressed: number;
}

/** Everything a pass knows and collects. */
export interface CheckContext {
  readonly file: ImageFile;
  readonly header: Qcow2Header;
  readonly extensions: HeaderExtensions;
  readonly geometry: Qcow2Geometry;
  /** Clusters the file holds (its size rounded up to whole clusters). */
  readonly fileClusters: number;
  readonly refs: ReferenceCounts;
  readonly stored: StoredRefcounts;
  readonly findings: Findings;
  readonly fragmentation: FragmentationInfo;
  /** Set when the refcount structures cannot be fixed in place (QEMU would rebuild them). */
  rebuild: boolean;
  /** Table entries the pass may still read (see {@link workBudget}). */
  workLeft: number;
}

/**
 * How many table entries a pass may read for a file of `fileSize` bytes: 16 times what the
 * file can hold, plus 2^20. A consistent image needs at most about 4 times (every L2 table
 * walked for the active image and for the snapshots, every L1 and bitmap table once); only
 * tables that overlap or are listed many times need more, and walking those could take
 * practically forever (QEMU walks them anyway).
 */
export function workBudget(fileSize: number): number {
  return 16 * Math.ceil(fileSize / 8) + 2 ** 20;
}

/**
 * Accounts for reading `entries` table entries of `field`; throws a `Qcow2CheckError`
 * (NOT_SUPPORTED) naming the image and the field once the pass's budget is spent.
 */
export function charge(ctx: CheckContext, entries: number, field: string): void {
  ctx.workLeft -= entries;
  if (ctx.workLeft < 0) {
    throw new Qcow2CheckError(
      'NOT_SUPPORTED',
      ctx.file.path,
      field,
      `the tables reference more entries than ${workBudget(ctx.file.size)}, 16 times what the ${ctx.file.size}-byte file holds: overlapping or repeated tables are not walked`,
    );
  }
}

/**
 * Counts `times` references to the clusters that hold `[offset, offset + size)`, used as
 * `role` (QEMU `qcow2_inc_refcounts_imrt`). A range that ends one cluster or more past the end
 * of the file is a `past-eof` corruption and is not counted (returns false). Overflowing and
 * overlapping references are reported.
 */
export function reference(ctx: CheckContext, offset: number, size: number, role: Role, field: string, times = 1): boolean {
  if (size <= 0) return true;
  const { clusterSize } = ctx.geometry;
  const fileSize = ctx.file.size;
  if (offset + size - fileSize >= clusterSize) {
    ctx.findings.add(
      {
        kind: 'past-eof',
        field,
        offset,
        message: `${roleName(role)} at ${hex(offset)} (${size} bytes) lies one cluster or more past the end of the ${fileSize}-byte file`,
      },
      times,
    );
    return false;
  }
  const first = Math.floor(offset / clusterSize);
  const last = Math.floor((offset + size - 1) / clusterSize);
  for (let cluster = first; cluster <= last; cluster++) {
    const outcome = ctx.refs.add(cluster, times, role);
    if (outcome.overflow > 0) {
      ctx.findings.add(
        {
          kind: 'refcount-overflow',
          field,
          cluster,
          offset: cluster * clusterSize,
          message: `cluster ${cluster} has more references than ${ctx.geometry.refcountBits}-bit refcounts can count`,
        },
        outcome.overflow,
      );
    }
    if (outcome.overlapWith !== undefined) {
      ctx.findings.add({
        kind: 'overlap',
        field,
        cluster,
        offset: cluster * clusterSize,
        message: `cluster ${cluster} is used as ${roleName(role)} and as ${roleName(outcome.overlapWith)}`,
      });
    }
  }
  return true;
}
