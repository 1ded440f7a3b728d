/**
 * `checkQcow2`: qemu-img check for qcow2 images, natively. Reads the image's metadata through
 * the format codecs, read-only unless asked to repair, with memory bounded by the file's
 * cluster count (a few bytes per cluster) and one L2 table or refcount block at a time.
 */
import { HeaderOffset, IncompatibleFeature, decodeHeader, decodeImageHeader, geometryOf, type Qcow2ImageHeader } from '../format/index.js';
import { type ImageLockOptions } from '../../block/image-lock.js';
import { InvalidArgumentError } from '../../errors.js';
import { compareRefcounts, type FixMode } from './compare.js';
import { reference, workBudget, type CheckContext } from './context.js';
import { checkCopiedFlags } from './copied-flags.js';
import { Qcow2CheckError, Qcow2RepairRefusedError, inImage } from './errors.js';
import { DEFAULT_MAX_FINDINGS, Findings } from './findings.js';
import { ImageFile } from './image-file.js';
import { referenceBitmaps } from './bitmaps.js';
import { walkL1, walkL2Tables, type L2Tables } from './mapping-walk.js';
import { referenceRefcountBlocks } from './refcount-blocks.js';
import { ReferenceCounts, Role } from './reference-counts.js';
import type { Qcow2CheckResult } from './result.js';
import { readSnapshotTable } from './snapshots.js';
import { StoredRefcounts } from './stored-refcounts.js';

/** Options of {@link checkQcow2}. */
export interface Qcow2CheckOptions {
  /**
   * Repair in place (the image must not be in use):
   * - `'leaks'`: set the refcount of leaked clusters to what is referenced (qemu-img check -r
   *   leaks); also fixes COPIED flags when nothing else is wrong.
   * - `'all'`: also raise refcounts that are too small and fix every COPIED flag. Refused,
   *   before anything is written, when the image has other corruptions.
   * Both refuse (with `Qcow2RepairRefusedError`) when the refcount structures themselves are
   * broken, which needs a rebuild (`qemu-img check -r all`). The file length never changes.
   */
  repair?: 'leaks' | 'all';
  /** Detailed findings to keep (the counters count them all). Default 1000. */
  maxFindings?: number;
  /** Image locks (src/block/image-lock.ts): `forceShare` is qemu-img check's -U (no repair). */
  lock?: ImageLockOptions;
}

/** Most clusters a checked file may have (QEMU refuses more than INT_MAX, 2^31 - 1). */
const MAX_FILE_CLUSTERS = 2 ** 31;
/** Bytes read to decode the header: its fields and the feature name table its errors quote. */
const MAX_FIRST_CLUSTER = 2 * 1024 * 1024;

/**
 * Checks the qcow2 image at `path` as `qemu-img check` does and returns what it found. With
 * `repair`, fixes what the mode allows, makes it durable (fdatasync), checks again and returns
 * the second check with the `*-fixed` counts of the repair, as qemu-img reports it.
 *
 * @throws Qcow2CheckError (naming the image and the field) when the image cannot be checked:
 *   a header the codecs refuse (`CORRUPT`, or `NOT_SUPPORTED` for encryption, unknown
 *   incompatible features, more than 2^31 clusters); IoError when the file cannot be read;
 *   Qcow2RepairRefusedError when a repair is refused (nothing was written);
 *   InvalidArgumentError for bad options.
 */
export async function checkQcow2(path: string, options: Qcow2CheckOptions = {}): Promise<Qcow2CheckResult> {
  const repair = options.repair;
  if (repair !== undefined && repair !== 'leaks' && repair !== 'all') {
    throw new InvalidArgumentError(`check qcow2 image ${path}`, `repair mode '${String(repair)}' is not 'leaks' or 'all'`);
  }
  const maxFindings = options.maxFindings ?? DEFAULT_MAX_FINDINGS;
  if (!Number.isSafeInteger(maxFindings) || maxFindings < 0) {
    throw new InvalidArgumentError(`check qcow2 image ${path}`, `maxFindings ${maxFindings} is not a non-negative integer`);
  }
  const file = await ImageFile.open(path, repair !== undefined, options.lock);
  try {
    if (repair === undefined) return (await runPass(file, 'none', maxFindings)).result;
    const fixing = await runPass(file, repair, maxFindings);
    const counters = fixing.findings.counters;
    if (counters.corruptions === 0 && counters.checkErrors === 0) await markClean(file, fixing.image);
    await file.sync();
    if (counters.leaksFixed === 0 && counters.corruptionsFixed === 0) return fixing.result;
    const recheck = await runPass(file, 'none', maxFindings);
    const repaired = fixing.findings.list.filter((f) => f.repaired === true);
    const findings = [...repaired, ...recheck.result.findings].slice(0, maxFindings);
    const omitted = repaired.length + recheck.result.findings.length - findings.length + recheck.result['findings-omitted'];
    return {
      ...recheck.result,
      'leaks-fixed': counters.leaksFixed,
      'corruptions-fixed': counters.corruptionsFixed,
      findings,
      'findings-omitted': omitted,
    };
  } finally {
    await file.close();
  }
}

/** One pass over the image: count, compare, check COPIED flags; fix what `fix` allows. */
async function runPass(file: ImageFile, fix: FixMode, maxFindings: number): Promise<{ result: Qcow2CheckResult; findings: Findings; image: Qcow2ImageHeader }> {
  const findings = new Findings(maxFindings);
  const image = await readImageHeader(file);
  const { header, extensions } = image;
  const geometry = geometryOf(header);
  const { clusterSize } = geometry;
  const fileClusters = Math.ceil(file.size / clusterSize);
  if (fileClusters > MAX_FILE_CLUSTERS) {
    throw new Qcow2CheckError('NOT_SUPPORTED', file.path, 'file', `${file.size} bytes are ${fileClusters} clusters, more than the 2^31 a check can count`);
  }
  let refs: ReferenceCounts;
  try {
    refs = new ReferenceCounts(fileClusters + 1, header.refcountOrder);
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    throw new Qcow2CheckError('NOT_SUPPORTED', file.path, 'file', `cannot allocate the refcounts of ${fileClusters} clusters`, { cause: e });
  }
  const stored = await StoredRefcounts.load(file, header, geometry);
  const ctx: CheckContext = {
    file,
    header,
    extensions,
    geometry,
    fileClusters,
    refs,
    stored,
    findings,
    fragmentation: { allocated: 0, fragmented: 0, compressed: 0 },
    rebuild: false,
    workLeft: workBudget(file.size),
  };

  const snapshotTable = await readSnapshotTable(ctx);
  reference(ctx, 0, clusterSize, Role.HEADER, 'header');
  const active: L2Tables = new Map();
  await walkL1(ctx, header.l1TableOffset, header.l1Size, 1, '', active);
  await walkL2Tables(ctx, active, true);
  if (geometry.externalDataFile && header.nbSnapshots > 0) {
    findings.add({ kind: 'snapshot', field: 'header.nb_snapshots', message: `${header.nbSnapshots} snapshots in an image with an external data file` });
  }
  await walkSnapshots(ctx, snapshotTable.snapshots);
  reference(ctx, header.snapshotsOffset, snapshotTable.byteLength, Role.SNAPSHOT_TABLE, 'snapshot_table');
  reference(ctx, header.refcountTableOffset, header.refcountTableClusters * clusterSize, Role.REFCOUNT_TABLE, 'refcount_table');
  await referenceBitmaps(ctx);
  referenceRefcountBlocks(ctx);

  let highest: number;
  if (fix === 'none') {
    highest = await compareRefcounts(ctx, 'none');
  } else {
    refuseUnrepairable(ctx, fix, await dryCompare(ctx));
    highest = await compareRefcounts(ctx, fix);
    await stored.flush();
  }
  const c = findings.counters;
  const repairCopied = fix === 'all' || (fix === 'leaks' && c.checkErrors === 0 && c.corruptions === 0 && c.leaks === 0);
  await checkCopiedFlags(ctx, repairCopied);

  const sectors = Math.floor(header.size / 512);
  const result: Qcow2CheckResult = {
    filename: file.path,
    format: 'qcow2',
    'check-errors': c.checkErrors,
    'image-end-offset': (highest + 1) * clusterSize,
    'total-clusters': Math.ceil((sectors * 512) / clusterSize),
    'allocated-clusters': ctx.fragmentation.allocated,
    'fragmented-clusters': ctx.fragmentation.fragmented,
    'compressed-clusters': ctx.fragmentation.compressed,
    leaks: c.leaks,
    corruptions: c.corruptions,
    'leaks-fixed': c.leaksFixed,
    'corruptions-fixed': c.corruptionsFixed,
    findings: findings.list,
    'findings-omitted': findings.omitted,
  };
  return { result, findings, image };
}

/** Snapshots' L1 tables (the same table listed twice is read once) and their L2 tables. */
async function walkSnapshots(ctx: CheckContext, snapshots: ReadonlyArray<{ index: number; l1TableOffset: number; l1Size: number }>): Promise<void> {
  const l1Tables = new Map<string, { offset: number; size: number; index: number; times: number }>();
  for (const s of snapshots) {
    const key = `${s.l1TableOffset}:${s.l1Size}`;
    const seen = l1Tables.get(key);
    if (seen === undefined) l1Tables.set(key, { offset: s.l1TableOffset, size: s.l1Size, index: s.index, times: 1 });
    else seen.times++;
  }
  const l2Tables: L2Tables = new Map();
  for (const t of l1Tables.values()) await walkL1(ctx, t.offset, t.size, t.times, `snapshot[${t.index}].`, l2Tables);
  await walkL2Tables(ctx, l2Tables, false);
}

/** A comparison that changes nothing and whose findings are dropped: what would a repair face? */
async function dryCompare(ctx: CheckContext): Promise<Findings> {
  const scratch = new Findings(0);
  const dry: CheckContext = { ...ctx, findings: scratch };
  await compareRefcounts(dry, 'none');
  ctx.rebuild ||= dry.rebuild;
  return scratch;
}

/** Throws before anything is written when `fix` cannot repair the image. */
function refuseUnrepairable(ctx: CheckContext, fix: FixMode, compared: Findings): void {
  const path = ctx.file.path;
  if (ctx.rebuild) {
    throw new Qcow2RepairRefusedError(
      path,
      'the refcount structures are broken (a refcount block is missing, misplaced or shared, or a used cluster has refcount 0) and must be rebuilt, which bitback does not do; use qemu-img check -r all',
    );
  }
  const c = ctx.findings.counters;
  if (fix === 'all' && (c.corruptions > 0 || c.checkErrors > 0 || compared.counters.checkErrors > 0)) {
    const kinds = [...new Set(ctx.findings.list.map((f) => f.kind))].join(', ');
    throw new Qcow2RepairRefusedError(
      path,
      `${c.corruptions} corruption(s) (${kinds || 'see the check'}) are not of a kind bitback repairs (only refcounts and COPIED flags); use qemu-img check -r all`,
    );
  }
}

/**
 * Decodes the first cluster; errors name the image. The header itself must be in the file; past
 * the end of a shorter file the extension area reads as zeroes, as QEMU reads it.
 */
async function readImageHeader(file: ImageFile): Promise<Qcow2ImageHeader> {
  try {
    const header = decodeHeader(await file.readClamped(0, MAX_FIRST_CLUSTER));
    return decodeImageHeader(await file.read(0, 2 ** header.clusterBits));
  } catch (e) {
    throw inImage(file.path, e);
  }
}

/**
 * After a repair that left no corruption, clears the dirty and corrupt bits (qemu-img check -r
 * marks the image clean and consistent the same way).
 */
async function markClean(file: ImageFile, image: Qcow2ImageHeader): Promise<void> {
  const { header } = image;
  const bits = IncompatibleFeature.DIRTY | IncompatibleFeature.CORRUPT;
  if (header.version < 3 || (header.incompatibleFeatures & bits) === 0n) return;
  const value = header.incompatibleFeatures & ~bits;
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, value);
  await file.write(bytes, HeaderOffset.INCOMPATIBLE_FEATURES);
}

