/**
 * The corrupt-image corpus: small images from a builder, each damaged in one way, given to
 * checkQcow2 and to the format codecs. Each must end in a finding of the expected kind or a
 * typed error naming the image and the field: never a crash, a hang, or a buffer larger than
 * the file (or one cluster, or the 64 KiB read window) however large a size field claims.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ErrorCode } from '../../errors.js';
import { Qcow2CheckError } from './errors.js';
import type { Qcow2FindingKind } from './findings.js';
import { readStatistics } from './image-file.js';
import { concat, snapshotEntryBytes, snapshotExtra } from '../format/testing/builder.js';
import { buildImage, withInteger, type BuiltImage } from './testing/image-builder.js';
import { checkTyped, decodeAllTyped } from './testing/outcome.js';

const GiB = 2 ** 30;
const COPIED = 1n << 63n;

/** Header field offsets (spec "Header"). */
const H = { magic: 0, version: 4, clusterBits: 20, size: 24, l1Size: 36, l1Offset: 40, refcountTableOffset: 48, refcountTableClusters: 56, nbSnapshots: 60, snapshotsOffset: 64, incompatible: 72, refcountOrder: 96 };

interface CorpusCase {
  name: string;
  bytes: () => Uint8Array;
  /** The check must throw this code about a field matching `field`... */
  error?: { code: ErrorCode; field: RegExp };
  /** ...or report a finding of this kind. */
  finding?: Qcow2FindingKind;
}

const plain = (): BuiltImage => buildImage();
const snap = (): BuiltImage => buildImage({ snapshot: true });
const bitmap = (): BuiltImage => buildImage({ bitmap: true });
const u64 = (b: Uint8Array, at: number, v: bigint | number): Uint8Array => withInteger(b, at, 8, v);
const u32 = (b: Uint8Array, at: number, v: number): Uint8Array => withInteger(b, at, 4, v);
/** The bitmaps extension data starts after the 112-byte header and the 8-byte extension header. */
const BITMAPS_EXT = 112 + 8;

/**
 * Hundreds of snapshots whose L1 tables overlap, each running to the end of a 256 KiB file:
 * walking them all would read ~30 times what the file holds.
 */
function overlappingSnapshotTables(): Uint8Array {
  const cs = 512;
  const fileSize = 512 * cs;
  const base = buildImage({ clusterBits: 9 }).bytes;
  const tableOffset = Math.ceil(base.length / cs) * cs;
  const entries: Uint8Array[] = [];
  for (let cluster = 128; cluster < 512; cluster++) {
    entries.push(snapshotEntryBytes({ id: String(cluster), l1TableOffset: cluster * cs, l1Size: (fileSize - cluster * cs) / 8, extra: snapshotExtra(0n, 1n << 20n, -1n) }));
  }
  const out = new Uint8Array(fileSize);
  out.set(base);
  out.set(concat(...entries), tableOffset);
  return u64(u32(out, H.nbSnapshots, entries.length), H.snapshotsOffset, tableOffset);
}

const CORPUS: CorpusCase[] = [
  { name: 'an empty file', bytes: () => new Uint8Array(0), error: { code: 'CORRUPT', field: /^header\.magic$/ } },
  { name: 'a header truncated at 50 bytes', bytes: () => plain().bytes.subarray(0, 50), error: { code: 'CORRUPT', field: /^header$/ } },
  { name: 'a file that ends inside the bitmaps extension', bytes: () => bitmap().bytes.subarray(0, 124), error: { code: 'CORRUPT', field: /^header_extension\[0\]\.bitmap_directory_size$/ } },
  { name: 'a file that ends inside its first cluster', bytes: () => plain().bytes.subarray(0, 200), finding: 'past-eof' },
  { name: 'an extension whose length runs past the first cluster', bytes: () => u32(bitmap().bytes, 116, 5000), error: { code: 'CORRUPT', field: /^header_extension\[0\]$/ } },
  { name: 'a bad magic', bytes: () => u32(plain().bytes, H.magic, 0x514649fa), error: { code: 'CORRUPT', field: /^header\.magic$/ } },
  { name: 'version 4', bytes: () => u32(plain().bytes, H.version, 4), error: { code: 'NOT_SUPPORTED', field: /^header\.version$/ } },
  { name: 'an unknown incompatible feature bit', bytes: () => u64(plain().bytes, H.incompatible, 1n << 5n), error: { code: 'NOT_SUPPORTED', field: /^header\.incompatible_features$/ } },
  { name: 'cluster_bits 8', bytes: () => u32(plain().bytes, H.clusterBits, 8), error: { code: 'CORRUPT', field: /^header\.cluster_bits$/ } },
  { name: 'cluster_bits 22', bytes: () => u32(plain().bytes, H.clusterBits, 22), error: { code: 'NOT_SUPPORTED', field: /^header\.cluster_bits$/ } },
  { name: 'refcount_order 7', bytes: () => u32(plain().bytes, H.refcountOrder, 7), error: { code: 'CORRUPT', field: /^header\.refcount_order$/ } },
  { name: 'a virtual size of 2^62 bytes', bytes: () => u64(plain().bytes, H.size, 1n << 62n), error: { code: 'NOT_SUPPORTED', field: /^header\.size$/ } },
  { name: 'a virtual size that needs an L1 table beyond 32 MiB', bytes: () => u64(plain().bytes, H.size, 2n ** 50n), error: { code: 'NOT_SUPPORTED', field: /^header\.size$/ } },
  { name: 'an L1 table past the end of the file', bytes: () => u64(plain().bytes, H.l1Offset, GiB), finding: 'past-eof' },
  { name: 'an unaligned L1 table offset', bytes: () => u64(plain().bytes, H.l1Offset, plain().layout.l1 + 512), error: { code: 'CORRUPT', field: /^header\.l1_table_offset$/ } },
  { name: 'an L1 table of 4 million entries in a small file', bytes: () => u32(plain().bytes, H.l1Size, 4 * 1024 * 1024), finding: 'past-eof' },
  { name: 'an L2 table past the end of the file', bytes: () => u64(plain().bytes, plain().layout.l1, BigInt(GiB) | COPIED), finding: 'past-eof' },
  { name: 'an unaligned L2 table offset', bytes: () => u64(plain().bytes, plain().layout.l1, BigInt(plain().layout.l2 + 512) | COPIED), finding: 'unaligned' },
  { name: 'an L1 entry with reserved bits', bytes: () => u64(plain().bytes, plain().layout.l1, BigInt(plain().layout.l2) | COPIED | 1n), finding: 'invalid-entry' },
  { name: 'a data cluster past the end of the file', bytes: () => u64(plain().bytes, plain().layout.l2, BigInt(GiB) | COPIED), finding: 'past-eof' },
  { name: 'an unaligned data cluster', bytes: () => u64(plain().bytes, plain().layout.l2, BigInt(plain().layout.data[0] + 512) | COPIED), finding: 'unaligned' },
  { name: 'an L2 entry with reserved bits', bytes: () => u64(plain().bytes, plain().layout.l2, BigInt(plain().layout.data[0]) | COPIED | 2n), finding: 'invalid-entry' },
  { name: 'COPIED on a compressed cluster', bytes: () => u64(plain().bytes, plain().layout.l2 + 16, (1n << 62n) | COPIED | BigInt(plain().layout.compressed + 100)), finding: 'invalid-entry' },
  { name: 'compressed data past the end of the file', bytes: () => u64(plain().bytes, plain().layout.l2 + 16, (1n << 62n) | BigInt(GiB)), finding: 'past-eof' },
  { name: 'a refcount table past the end of the file', bytes: () => u64(plain().bytes, H.refcountTableOffset, GiB), finding: 'past-eof' },
  { name: 'a refcount table of 8 MiB in a small file', bytes: () => u32(plain().bytes, H.refcountTableClusters, 2048), finding: 'past-eof' },
  { name: 'an unaligned refcount table offset', bytes: () => u64(plain().bytes, H.refcountTableOffset, 4096 + 512), error: { code: 'CORRUPT', field: /^header\.refcount_table_offset$/ } },
  { name: 'a refcount block past the end of the file', bytes: () => u64(plain().bytes, plain().layout.refcountTable, GiB), finding: 'refcount-block' },
  { name: 'an unaligned refcount block', bytes: () => u64(plain().bytes, plain().layout.refcountTable, plain().layout.refcountBlock + 512), finding: 'refcount-block' },
  { name: 'a refcount table entry with reserved bits', bytes: () => u64(plain().bytes, plain().layout.refcountTable, plain().layout.refcountBlock + 1), finding: 'refcount-block' },
  { name: 'a missing refcount block', bytes: () => u64(plain().bytes, plain().layout.refcountTable, 0), finding: 'refcount-too-small' },
  { name: 'overlapping metadata: a data cluster that is the L1 table', bytes: () => u64(plain().bytes, plain().layout.l2 + 8, BigInt(plain().layout.l1) | COPIED), finding: 'overlap' },
  { name: 'overlapping metadata: an L2 table that is the refcount block', bytes: () => u64(plain().bytes, plain().layout.l1, BigInt(plain().layout.refcountBlock) | COPIED), finding: 'overlap' },
  { name: 'a refcount overflow (1-bit refcounts, shared clusters)', bytes: () => buildImage({ snapshot: true, refcountOrder: 0 }).bytes, finding: 'refcount-overflow' },
  { name: 'a snapshot table that claims 65536 snapshots', bytes: () => u32(snap().bytes, H.nbSnapshots, 65536), finding: 'snapshot' },
  { name: "nb_snapshots beyond QEMU's limit", bytes: () => u32(snap().bytes, H.nbSnapshots, 70000), error: { code: 'NOT_SUPPORTED', field: /^header\.nb_snapshots$/ } },
  { name: 'a snapshot table past the end of the file', bytes: () => u64(snap().bytes, H.snapshotsOffset, GiB), finding: 'snapshot' },
  { name: 'a snapshot entry with 4 GiB of extra data', bytes: () => u32(snap().bytes, snap().layout.snapshotTable! + 36, 0xffffffff), finding: 'snapshot' },
  { name: 'a snapshot entry with 1 MiB of extra data', bytes: () => u32(snap().bytes, snap().layout.snapshotTable! + 36, 1 << 20), finding: 'snapshot' },
  { name: 'an unaligned snapshot L1 table', bytes: () => u64(snap().bytes, snap().layout.snapshotTable!, snap().layout.snapshotL1! + 8), finding: 'snapshot' },
  { name: 'a snapshot L1 table past the end of the file', bytes: () => u64(snap().bytes, snap().layout.snapshotTable!, GiB), finding: 'past-eof' },
  { name: 'a snapshot L1 table of 4 million entries', bytes: () => u32(snap().bytes, snap().layout.snapshotTable! + 8, 4 * 1024 * 1024), finding: 'past-eof' },
  { name: 'a bitmaps extension that claims two bitmaps in a one-entry directory', bytes: () => u32(bitmap().bytes, BITMAPS_EXT, 2), error: { code: 'CORRUPT', field: /bitmap_directory_size$/ } },
  { name: 'a bitmap directory size larger than its entries', bytes: () => u64(bitmap().bytes, BITMAPS_EXT + 8, 64), finding: 'bitmap' },
  { name: "a bitmap directory beyond QEMU's size limit", bytes: () => u64(bitmap().bytes, BITMAPS_EXT + 8, 1 << 26), error: { code: 'NOT_SUPPORTED', field: /bitmap_directory_size$/ } },
  { name: 'a bitmap directory past the end of the file', bytes: () => u64(bitmap().bytes, BITMAPS_EXT + 16, GiB), finding: 'past-eof' },
  { name: 'a bitmap table that lies about its size', bytes: () => u32(bitmap().bytes, bitmap().layout.bitmapDirectory! + 8, 1_000_000), finding: 'bitmap' },
  { name: 'a bitmap table past the end of the file', bytes: () => u64(bitmap().bytes, bitmap().layout.bitmapDirectory!, GiB), finding: 'past-eof' },
  { name: 'a bitmap table entry with reserved bits', bytes: () => u64(bitmap().bytes, bitmap().layout.bitmapTable!, bitmap().layout.bitmapData! + 2), finding: 'bitmap' },
  { name: 'hundreds of overlapping snapshot L1 tables', bytes: overlappingSnapshotTables, error: { code: 'NOT_SUPPORTED', field: /^snapshot\[\d+\]\.l1_table$/ } },
  { name: 'a file truncated after its L1 table', bytes: () => plain().bytes.subarray(0, plain().layout.l2), finding: 'past-eof' },
];

describe('the corrupt-image corpus', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-corpus-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('the builder makes images that check clean', async () => {
    for (const options of [{}, { snapshot: true }, { bitmap: true }, { clusterBits: 9, snapshot: true, bitmap: true }, { refcountOrder: 0 }, { refcountOrder: 6, clusterBits: 16 }]) {
      const path = join(dir, 'clean.qcow2');
      await writeFile(path, buildImage(options).bytes);
      const outcome = await checkTyped(path);
      assert.ok('result' in outcome, JSON.stringify(options));
      assert.deepEqual(outcome.result.findings, [], JSON.stringify(options));
      assert.equal(outcome.result['allocated-clusters'], 3, 'two data clusters and a compressed one');
    }
  });

  for (const [i, c] of CORPUS.entries()) {
    test(`checkQcow2() of ${c.name} gives ${c.error ? `a ${c.error.code} error` : `a ${c.finding} finding`}`, async () => {
      const bytes = c.bytes();
      decodeAllTyped(bytes);
      const path = join(dir, `corpus-${i}.qcow2`);
      await writeFile(path, bytes);
      readStatistics.largestBuffer = 0;
      const outcome = await checkTyped(path);
      if (c.error !== undefined) {
        assert.ok('error' in outcome, `expected an error, got ${JSON.stringify('result' in outcome ? outcome.result.findings : undefined)}`);
        assert.ok(outcome.error instanceof Qcow2CheckError, String(outcome.error));
        assert.equal(outcome.error.code, c.error.code, outcome.error.message);
        assert.match(outcome.error.field, c.error.field);
      } else {
        assert.ok('result' in outcome, `expected a result, got ${'error' in outcome ? outcome.error.message : ''}`);
        const kinds = outcome.result.findings.map((f) => f.kind);
        assert.ok(kinds.includes(c.finding!), `expected a ${c.finding} finding, got ${kinds.join(', ')}`);
      }
      const bound = Math.max(bytes.length, 64 * 1024, 4096);
      assert.ok(readStatistics.largestBuffer <= bound, `a read allocated ${readStatistics.largestBuffer} bytes for a ${bytes.length}-byte file`);
    });
  }

  test('checkQcow2() refuses a (sparse) file of more than 2^31 clusters before allocating anything', async () => {
    const path = join(dir, 'huge.qcow2');
    await writeFile(path, buildImage({ clusterBits: 9 }).bytes);
    await truncate(path, (2 ** 31 + 1) * 512);
    const outcome = await checkTyped(path);
    assert.ok('error' in outcome && outcome.error instanceof Qcow2CheckError, 'a typed error');
    assert.equal(outcome.error.code, 'NOT_SUPPORTED');
    assert.equal(outcome.error.field, 'file');
  });

  test("repairs of the corpus images give a result or a typed error, never anything else", async () => {
    for (const [i, c] of CORPUS.entries()) {
      for (const repair of ['leaks', 'all'] as const) {
        const path = join(dir, `repair-${i}-${repair}.qcow2`);
        await writeFile(path, c.bytes());
        await checkTyped(path, { repair });
        await checkTyped(path); // and the repaired file checks without surprises
      }
    }
  });
});
