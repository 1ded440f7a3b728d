/**
 * The refcounts the image should have, computed by walking its metadata: one counter per host
 * cluster of the file (a typed array as wide as the image's refcounts, so that it saturates
 * where the stored refcount would), plus the kind of structure each cluster was first used as,
 * to find clusters used as two different things.
 * @internal
 */

/** What a host cluster is used as. */
export const Role = {
  NONE: 0,
  HEADER: 1,
  L1: 2,
  L2: 3,
  DATA: 4,
  COMPRESSED: 5,
  REFCOUNT_TABLE: 6,
  REFCOUNT_BLOCK: 7,
  SNAPSHOT_TABLE: 8,
  BITMAP_DIRECTORY: 9,
  BITMAP_TABLE: 10,
  BITMAP_DATA: 11,
  /** An overlap was reported for this cluster already. */
  OVERLAP_REPORTED: 255,
} as const;
/** One of the {@link Role} values. */
export type Role = (typeof Role)[keyof typeof Role];

const ROLE_NAMES: Record<number, string> = {
  [Role.HEADER]: 'the header',
  [Role.L1]: 'an L1 table',
  [Role.L2]: 'an L2 table',
  [Role.DATA]: 'a data cluster',
  [Role.COMPRESSED]: 'compressed data',
  [Role.REFCOUNT_TABLE]: 'the refcount table',
  [Role.REFCOUNT_BLOCK]: 'a refcount block',
  [Role.SNAPSHOT_TABLE]: 'the snapshot table',
  [Role.BITMAP_DIRECTORY]: 'the bitmap directory',
  [Role.BITMAP_TABLE]: 'a bitmap table',
  [Role.BITMAP_DATA]: 'bitmap data',
};

/** "an L2 table", "a data cluster"... */
export function roleName(role: Role): string {
  return ROLE_NAMES[role] ?? 'metadata';
}

/** What {@link ReferenceCounts.add} saw. */
export interface AddOutcome {
  /** References that did not fit under the refcount maximum. */
  overflow: number;
  /** The role the cluster already had when it differs from the new one (first time only). */
  overlapWith?: Role;
}

/** The computed refcounts of clusters `0 .. capacity - 1`. */
export class ReferenceCounts {
  private readonly counts: Uint8Array | Uint16Array | Uint32Array;
  private readonly roles: Uint8Array;
  /** The largest count: the image's refcount maximum, or 2^32 - 1 for wider refcounts. */
  readonly max: number;
  /** One past the highest cluster referenced so far (0 when none). */
  extent = 0;

  /**
   * @param capacity - clusters to count (the file's clusters plus one: QEMU accepts references
   *   up to one cluster past the end of the file).
   * @param refcountOrder - log2 of the image's refcount width.
   * @throws RangeError when the arrays cannot be allocated.
   */
  constructor(readonly capacity: number, refcountOrder: number) {
    const bits = 2 ** refcountOrder;
    if (bits <= 8) this.counts = new Uint8Array(capacity);
    else if (bits === 16) this.counts = new Uint16Array(capacity);
    else this.counts = new Uint32Array(capacity);
    this.max = Math.min(2 ** bits - 1, 0xffffffff);
    this.roles = new Uint8Array(capacity);
  }

  /** The computed refcount of `cluster` (0 past the capacity). */
  get(cluster: number): number {
    return cluster < this.capacity ? this.counts[cluster]! : 0;
  }

  /**
   * Adds `times` references to `cluster` (< capacity), used as `role`. Counts saturate at
   * {@link max}; the references beyond are returned as `overflow`.
   */
  add(cluster: number, times: number, role: Role): AddOutcome {
    if (cluster + 1 > this.extent) this.extent = cluster + 1;
    const before = this.counts[cluster]!;
    const after = Math.min(this.max, before + times);
    this.counts[cluster] = after;
    const outcome: AddOutcome = { overflow: before + times - after };
    const had = this.roles[cluster]!;
    if (had === Role.NONE) this.roles[cluster] = role;
    else if (had !== role && had !== Role.OVERLAP_REPORTED) {
      this.roles[cluster] = Role.OVERLAP_REPORTED;
      outcome.overlapWith = had as Role;
    }
    return outcome;
  }
}
