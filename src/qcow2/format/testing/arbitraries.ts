/**
 * fast-check arbitraries of valid qcow2 structures, for the round-trip property tests
 * (`decode(encode(x))` deep-equals `x`). Test-only.
 */
import fc from 'fast-check';
import { makeGeometry, type Qcow2Geometry } from '../geometry.js';
import type { Qcow2Header } from '../header.js';
import type { HeaderExtensions } from '../extensions.js';
import type { L1Entry, L2Entry } from '../l1-l2.js';
import type { BitmapDirectoryEntry } from '../bitmap-directory.js';
import type { BitmapTableEntry } from '../bitmap-table.js';
import type { SnapshotEntry } from '../snapshot-table.js';

const SAFE = Number.MAX_SAFE_INTEGER;
/** Records with Object.prototype, so that deepStrictEqual compares them with decoded values. */
const PLAIN = { noNullPrototype: true } as const;
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const u64big = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });

/** A cluster-aligned offset in `[min clusters, ...)`, below 2^53. */
export function alignedOffset(clusterSize: number, minClusters = 1, maxClusters = Math.floor(SAFE / clusterSize)): fc.Arbitrary<number> {
  return fc.integer({ min: minClusters, max: maxClusters }).map((k) => k * clusterSize);
}

/** Any geometry the spec allows. */
export const geometryArb: fc.Arbitrary<Qcow2Geometry> = fc
  .record({
    version: fc.constantFrom(2, 3),
    clusterBits: fc.integer({ min: 9, max: 21 }),
    refcountOrder: fc.integer({ min: 0, max: 6 }),
    extendedL2: fc.boolean(),
    externalDataFile: fc.boolean(),
  })
  .map((g) =>
    g.version === 2
      ? makeGeometry({ version: 2, clusterBits: g.clusterBits })
      : makeGeometry({ ...g, extendedL2: g.extendedL2 && g.clusterBits >= 14 }),
  );

/** Valid UTF-8 names (whole graphemes, never lone surrogates). */
export function nameArb(maxLength: number): fc.Arbitrary<string> {
  return fc.string({ unit: 'grapheme', minLength: 1, maxLength });
}

/** A header that `encodeHeader` accepts, with cluster bits from `clusterBits`. */
export function headerArbFor(clusterBits: fc.Arbitrary<number>): fc.Arbitrary<Qcow2Header> {
  return fc
  .record({
    version: fc.constantFrom(2, 3),
    clusterBits,
    sizeFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    extraL1: fc.integer({ min: 0, max: 64 }),
    dirty: fc.boolean(),
    corrupt: fc.boolean(),
    externalData: fc.boolean(),
    zstd: fc.boolean(),
    extendedL2: fc.boolean(),
    compatibleFeatures: u64big,
    autoclearFeatures: u64big,
    refcountOrder: fc.integer({ min: 0, max: 6 }),
    extraHeaderWords: fc.integer({ min: -1, max: 4 }), // -1: header_length 104
    trailingSeed: fc.uint8Array({ minLength: 64, maxLength: 64 }),
    backing: fc.boolean(),
    backingFileSize: fc.integer({ min: 0, max: 1023 }),
    backingSlack: fc.double({ min: 0, max: 1, noNaN: true }),
    offsets: fc.array(fc.integer({ min: 1, max: 2 ** 20 }), { minLength: 3, maxLength: 3 }),
    refcountTableClusters: fc.integer({ min: 1, max: 16 }),
    nbSnapshots: fc.integer({ min: 0, max: 65536 }),
    cryptMethod: fc.constant(0),
  })
  .map((r): Qcow2Header => {
    const v3 = r.version === 3;
    const extendedL2 = v3 && r.extendedL2 && r.clusterBits >= 14;
    const geometry = makeGeometry({ clusterBits: r.clusterBits, version: r.version, extendedL2 });
    const clusterSize = geometry.clusterSize;
    const bytesPerL1Entry = clusterSize * geometry.l2Entries;
    const maxL1 = (32 * 1024 * 1024) / 8 - 64;
    const size = Math.min(SAFE, Math.floor(r.sizeFraction * maxL1 * bytesPerL1Entry));
    const l1Size = Math.ceil(size / bytesPerL1Entry) + r.extraL1;
    const headerLength = v3 ? (r.extraHeaderWords < 0 ? 104 : Math.min(112 + 8 * r.extraHeaderWords, clusterSize)) : 72;
    let incompatible = 0n;
    if (v3 && r.dirty) incompatible |= 1n;
    if (v3 && r.corrupt) incompatible |= 2n;
    if (v3 && r.externalData) incompatible |= 4n;
    const zstd = v3 && headerLength > 104 && r.zstd;
    if (zstd) incompatible |= 8n;
    if (extendedL2) incompatible |= 16n;
    const backing = r.backing;
    let autoclear = v3 ? r.autoclearFeatures : 0n;
    // raw external data needs the external data file bit and no backing file
    if ((autoclear & 2n) !== 0n && ((incompatible & 4n) === 0n || backing)) autoclear &= ~2n;
    const backingFileSize = Math.min(r.backingFileSize, clusterSize - headerLength);
    const backingRoom = clusterSize - backingFileSize - headerLength;
    return {
      version: r.version,
      backingFileOffset: backing ? headerLength + Math.floor(r.backingSlack * backingRoom) : 0,
      backingFileSize: backing ? backingFileSize : 0,
      clusterBits: r.clusterBits,
      size,
      cryptMethod: 0,
      l1Size,
      l1TableOffset: r.offsets[0]! * clusterSize,
      refcountTableOffset: r.offsets[1]! * clusterSize,
      refcountTableClusters: Math.min(r.refcountTableClusters, (8 * 1024 * 1024) / clusterSize),
      nbSnapshots: r.nbSnapshots,
      snapshotsOffset: r.nbSnapshots === 0 ? 0 : r.offsets[2]! * clusterSize,
      incompatibleFeatures: incompatible,
      compatibleFeatures: v3 ? r.compatibleFeatures : 0n,
      autoclearFeatures: autoclear,
      refcountOrder: v3 ? r.refcountOrder : 4,
      headerLength,
      compressionType: zstd ? 1 : 0,
      trailingBytes: r.trailingSeed.slice(0, Math.max(0, headerLength - 105)),
    };
  });
}

/** A header that `encodeHeader` accepts, any cluster size. */
export const headerArb: fc.Arbitrary<Qcow2Header> = headerArbFor(fc.integer({ min: 9, max: 21 }));

/** Header extensions `encodeHeaderExtensions` accepts, for cluster bits 16. */
export const extensionsArb: fc.Arbitrary<HeaderExtensions> = fc
  .record(
    {
      backingFormat: fc.string({ unit: 'grapheme-ascii', minLength: 0, maxLength: 15 }),
      featureNames: fc.array(
        fc.record(
          {
            type: fc.integer({ min: 0, max: 2 }),
            bit: fc.integer({ min: 0, max: 63 }),
            name: fc.string({ unit: 'grapheme-ascii', maxLength: 46 }).filter((s) => !s.includes('\0')),
          },
          PLAIN,
        ),
        { maxLength: 8 },
      ),
      bitmaps: fc.record({
        nbBitmaps: fc.integer({ min: 1, max: 65535 }),
        directoryPad: fc.integer({ min: 0, max: 1000 }),
        bitmapDirectoryOffset: alignedOffset(65536, 1, 2 ** 30),
      }),
      externalDataFile: nameArb(40),
      unknown: fc.array(
        fc.record(
          {
            type: u32.filter((t) => ![0, 0xe2792aca, 0x6803f857, 0x23852875, 0x0537be77, 0x44415441].includes(t)),
            data: fc.uint8Array({ maxLength: 40 }),
          },
          PLAIN,
        ),
        { minLength: 1, maxLength: 3 },
      ),
    },
    { requiredKeys: [] },
  )
  .map((r): HeaderExtensions => {
    const out: HeaderExtensions = {};
    if (r.backingFormat !== undefined) out.backingFormat = r.backingFormat;
    if (r.externalDataFile !== undefined) out.externalDataFile = r.externalDataFile;
    if (r.featureNames !== undefined) out.featureNames = r.featureNames;
    if (r.bitmaps !== undefined) {
      out.bitmaps = {
        nbBitmaps: r.bitmaps.nbBitmaps,
        bitmapDirectorySize: (r.bitmaps.nbBitmaps + r.bitmaps.directoryPad) * 32,
        bitmapDirectoryOffset: r.bitmaps.bitmapDirectoryOffset,
      };
    }
    if (r.unknown !== undefined) out.unknown = r.unknown;
    return out;
  });

/** L1 entries for a geometry. */
export function l1EntryArb(g: Qcow2Geometry): fc.Arbitrary<L1Entry> {
  return fc.record({ l2Offset: fc.oneof(fc.constant(0), alignedOffset(g.clusterSize)), copied: fc.boolean() }, PLAIN);
}

const disjointMasks = fc.tuple(u32, u32).map(([a, z]) => ({ allocated: (a & ~z) >>> 0, zero: z >>> 0 }));

/** L2 entries `writeL2Entry` accepts for a geometry. */
export function l2EntryArb(g: Qcow2Geometry): fc.Arbitrary<L2Entry> {
  const kinds: fc.Arbitrary<L2Entry>[] = [
    g.extendedL2
      ? u32.map((zero): L2Entry => ({ kind: 'unallocated', subclusters: { allocated: 0, zero } }))
      : fc.constant<L2Entry>({ kind: 'unallocated' }),
    fc
      .record({ hostOffset: alignedOffset(g.clusterSize), copied: fc.boolean(), masks: disjointMasks })
      .map(({ hostOffset, copied, masks }): L2Entry =>
        g.extendedL2 ? { kind: 'normal', hostOffset, copied, subclusters: masks } : { kind: 'normal', hostOffset, copied },
      ),
  ];
  if (g.zeroFlag) {
    kinds.push(fc.record({ kind: fc.constant('zero' as const), hostOffset: fc.oneof(fc.constant(0), alignedOffset(g.clusterSize)), copied: fc.boolean() }, PLAIN));
  }
  if (g.externalDataFile) {
    kinds.push(
      disjointMasks.map((masks): L2Entry =>
        g.extendedL2 ? { kind: 'normal', hostOffset: 0, copied: true, subclusters: masks } : { kind: 'normal', hostOffset: 0, copied: true },
      ),
    );
  } else {
    const maxOffset = Math.min(2 ** g.compressedOffsetBits, 2 ** 56, SAFE + 1) - 1;
    kinds.push(
      fc.record(
        {
          kind: fc.constant('compressed' as const),
          hostOffset: fc.integer({ min: g.clusterSize, max: maxOffset }),
          additionalSectors: fc.integer({ min: 0, max: 2 ** g.compressedSectorBits - 1 }),
        },
        PLAIN,
      ),
    );
  }
  return fc.oneof(...kinds);
}

/** Bitmap table entries for a geometry. */
export function bitmapTableEntryArb(g: Qcow2Geometry): fc.Arbitrary<BitmapTableEntry> {
  return fc.oneof(
    fc.constant<BitmapTableEntry>({ kind: 'zeroes' }),
    fc.constant<BitmapTableEntry>({ kind: 'ones' }),
    alignedOffset(g.clusterSize).map((hostOffset): BitmapTableEntry => ({ kind: 'data', hostOffset })),
  );
}

/** A bitmap directory for a geometry and virtual size: 1..6 entries with unique names. */
export function bitmapDirectoryArb(g: Qcow2Geometry, virtualSize: number): fc.Arbitrary<BitmapDirectoryEntry[]> {
  const entry = fc
    .record({
      name: nameArb(30),
      bitmapTableOffset: alignedOffset(g.clusterSize, 1, 2 ** 20),
      granularityBits: fc.integer({ min: 9, max: 31 }),
      extraTables: fc.integer({ min: 0, max: 3 }),
      inUse: fc.boolean(),
      auto: fc.boolean(),
      extraDataCompatible: fc.boolean(),
      extraData: fc.uint8Array({ maxLength: 20 }),
    })
    .map((r): BitmapDirectoryEntry => {
      const needed = Math.ceil(Math.ceil(Math.ceil(virtualSize / 2 ** r.granularityBits) / 8) / g.clusterSize);
      return {
        name: r.name,
        bitmapTableOffset: r.bitmapTableOffset,
        bitmapTableSize: Math.max(1, needed + r.extraTables),
        granularityBits: r.granularityBits,
        inUse: r.inUse,
        auto: r.auto,
        extraDataCompatible: r.extraDataCompatible || r.extraData.length > 0,
        extraData: r.extraData,
      };
    });
  return fc.uniqueArray(entry, { minLength: 1, maxLength: 6, selector: (e) => e.name });
}

/** Snapshot entries for a geometry (version 3 entries always carry a disk size). */
export function snapshotEntryArb(g: Qcow2Geometry): fc.Arbitrary<SnapshotEntry> {
  return fc
    .record({
      id: fc.string({ unit: 'grapheme', maxLength: 8 }),
      name: fc.string({ unit: 'grapheme', maxLength: 20 }),
      l1TableOffset: alignedOffset(g.clusterSize, 1, 2 ** 20),
      l1Size: fc.integer({ min: 0, max: 4096 }),
      dateSeconds: u32,
      dateNanoseconds: u32,
      vmClockNanoseconds: u64big,
      vmStateSize32: u32,
      known: fc.integer({ min: g.version >= 3 ? 2 : 0, max: 3 }),
      vmStateSizeLarge: fc.integer({ min: 0, max: SAFE }),
      diskSize: fc.integer({ min: 0, max: SAFE }),
      icount: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      unknown: fc.uint8Array({ maxLength: 40 }),
    })
    .map((r): SnapshotEntry => {
      const e: SnapshotEntry = {
        id: r.id,
        name: r.name,
        l1TableOffset: r.l1TableOffset,
        l1Size: r.l1Size,
        dateSeconds: r.dateSeconds,
        dateNanoseconds: r.dateNanoseconds,
        vmClockNanoseconds: r.vmClockNanoseconds,
        vmStateSize32: r.vmStateSize32,
        // Unknown extra data past an absent field would read back as that field.
        unknownExtraData: r.known === 3 ? r.unknown : r.unknown.slice(0, 7),
      };
      if (r.known >= 1) e.vmStateSizeLarge = r.vmStateSizeLarge;
      if (r.known >= 2) e.diskSize = r.diskSize;
      if (r.known >= 3) e.icount = r.icount;
      return e;
    });
}
