/**
 * What the check found: counters named and counted as `qemu-img check` counts them, plus a
 * capped list of detailed findings.
 */

/**
 * The kinds of finding. How each one is counted (`severity`):
 * - `leak`: stored refcount > 0 but nothing references the cluster (a leak).
 * - `refcount-too-large`: stored refcount > references > 0; counted as a leak, as qemu-img does.
 * - `refcount-too-small`: stored refcount < references (a corruption: freeing would lose data).
 * - `refcount-overflow`: more references than the refcount width can count.
 * - `copied-flag`: an L1/L2 entry whose COPIED flag disagrees with "refcount is exactly 1".
 * - `past-eof`: a structure or cluster that lies one cluster or more past the end of the file.
 * - `unaligned`: an offset that must be cluster-aligned is not.
 * - `invalid-entry`: a table entry that breaks the spec (reserved bits, bad subcluster bitmap,
 *   COPIED on a compressed cluster...).
 * - `refcount-block`: a refcount table entry or block that is unusable (outside the image,
 *   unaligned, referenced more than once).
 * - `overlap`: one cluster used as two different kinds of structure (an L2 table that is also
 *   a data cluster...). qemu-img sees these only through the refcounts; they are counted as
 *   corruptions here.
 * - `snapshot`: the snapshot table or an entry of it is malformed.
 * - `bitmap`: the bitmap directory or a bitmap table is malformed.
 * - `check-error`: a refcount could not be read (counted in `check-errors`).
 */
export type Qcow2FindingKind =
  | 'leak'
  | 'refcount-too-large'
  | 'refcount-too-small'
  | 'refcount-overflow'
  | 'copied-flag'
  | 'past-eof'
  | 'unaligned'
  | 'invalid-entry'
  | 'refcount-block'
  | 'overlap'
  | 'snapshot'
  | 'bitmap'
  | 'check-error';

/** Which counter a finding adds to. */
export type Qcow2FindingSeverity = 'leak' | 'corruption' | 'check-error';

/** One problem found in the image. */
export interface Qcow2CheckFinding {
  kind: Qcow2FindingKind;
  severity: Qcow2FindingSeverity;
  /**
   * The structure, named like the spec names it: `l1[3]`, `l1[0].l2[17]` (entry 17 of the L2
   * table of active L1 entry 0), `snapshot[1].l1[0]`, `refcount_table[2]`, `refcount[12]` (the
   * refcount of host cluster 12), `bitmap_directory`.
   */
  field: string;
  /** Host cluster index the finding is about, when there is one. */
  cluster?: number;
  /** Byte offset in the file the finding is about, when there is one. */
  offset?: number;
  /** What is wrong, in words. */
  message: string;
  /** True when a repair fixed it. */
  repaired?: boolean;
}

/** Default number of detailed findings kept; the counters keep counting past it. */
export const DEFAULT_MAX_FINDINGS = 1000;

/** The counters of one check pass. */
export interface CheckCounters {
  corruptions: number;
  leaks: number;
  checkErrors: number;
  corruptionsFixed: number;
  leaksFixed: number;
}

/**
 * Collects findings: every one is counted (`times` at once for a structure reached through
 * several paths), at most `max` are kept in the list.
 * @internal
 */
export class Findings {
  readonly list: Qcow2CheckFinding[] = [];
  omitted = 0;
  readonly counters: CheckCounters = { corruptions: 0, leaks: 0, checkErrors: 0, corruptionsFixed: 0, leaksFixed: 0 };

  constructor(private readonly max: number) {}

  /** Records a finding and counts it `times` times (default once). */
  add(finding: Omit<Qcow2CheckFinding, 'severity'> & { severity?: Qcow2FindingSeverity }, times = 1): void {
    const severity = finding.severity ?? severityOf(finding.kind);
    if (finding.repaired === true) {
      if (severity === 'leak') this.counters.leaksFixed += times;
      else this.counters.corruptionsFixed += times;
    } else if (severity === 'leak') this.counters.leaks += times;
    else if (severity === 'corruption') this.counters.corruptions += times;
    else this.counters.checkErrors += times;
    this.keep({ ...finding, severity });
  }

  /** Counts without keeping a detailed finding (the first of a series was kept already). */
  count(severity: Qcow2FindingSeverity, times = 1): void {
    if (severity === 'leak') this.counters.leaks += times;
    else if (severity === 'corruption') this.counters.corruptions += times;
    else this.counters.checkErrors += times;
  }

  private keep(finding: Qcow2CheckFinding): void {
    if (this.list.length < this.max) this.list.push(finding);
    else this.omitted++;
  }
}

/** The counter each kind adds to. */
export function severityOf(kind: Qcow2FindingKind): Qcow2FindingSeverity {
  switch (kind) {
    case 'leak':
    case 'refcount-too-large':
      return 'leak';
    case 'check-error':
      return 'check-error';
    case 'refcount-too-small':
    case 'refcount-overflow':
    case 'copied-flag':
    case 'past-eof':
    case 'unaligned':
    case 'invalid-entry':
    case 'refcount-block':
    case 'overlap':
    case 'snapshot':
    case 'bitmap':
      return 'corruption';
    default: {
      const never: never = kind;
      return never;
    }
  }
}

/** `0x...` for messages. */
export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}
