/**
 * Mutation tests: the metadata of a real qemu-img image, truncated at every length and with
 * random bytes changed, must decode to a value or fail with a BitbackError, never with any
 * other exception. Whatever decodes must encode again (or be refused with a BitbackError)
 * and decode to the same value.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { needPeers } from '../../../test/helpers/peers.js';
import { decodeBitmapDirectory } from './bitmap-directory.js';
import { decodeBitmapTable } from './bitmap-table.js';
import { decodeImageHeader, encodeImageHeader, type Qcow2ImageHeader } from './image-header.js';
import { decodeL1Table, decodeL2Table } from './l1-l2.js';
import { decodeRefcountTable } from './refcount.js';
import { decodeSnapshotTable, encodeSnapshotTable } from './snapshot-table.js';
import { returnsOrThrowsTyped } from './testing/assertions.js';
import { walkImage, type WalkedImage } from './testing/image-walk.js';
import { Scratch } from './testing/qemu.js';
import { BitbackError } from '../../errors.js';

const skip = needPeers('qemu-img', 'qemu-io');
let scratch: Scratch;
let file: Uint8Array;
let w: WalkedImage;

before(() => {
  if (skip !== false) return;
  scratch = new Scratch();
  // 4 KiB clusters: the whole first cluster can be cut at every length
  scratch.create('base.qcow2', '16M', { cluster_size: 4096 });
  scratch.create('m.qcow2', '16M', { cluster_size: 4096, lazy_refcounts: 'on' }, ['-b', 'base.qcow2', '-F', 'qcow2']);
  scratch.qemuImg('bitmap', '--add', 'm.qcow2', 'first');
  scratch.qemuImg('bitmap', '--add', '--granularity', '512', 'm.qcow2', 'second');
  scratch.qemuIo('m.qcow2', 'write -P 0x5a 0 64k', 'write -z 1M 8k');
  scratch.qemuImg('snapshot', '-c', 'one', 'm.qcow2');
  scratch.qemuImg('snapshot', '-c', 'two', 'm.qcow2');
  file = scratch.read('m.qcow2');
  w = walkImage(file);
});
after(() => scratch?.remove());

const mutations = (length: number) => fc.array(fc.tuple(fc.nat(length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 });

function mutate(bytes: Uint8Array, changes: ReadonlyArray<[number, number]>): Uint8Array {
  const out = bytes.slice();
  for (const [at, value] of changes) out[at] = value;
  return out;
}

/** Re-encoding whatever decoded either is refused with a typed error or gives it back. */
function reencodes(image: Qcow2ImageHeader): void {
  let bytes: Uint8Array;
  try {
    bytes = encodeImageHeader(image);
  } catch (e) {
    if (e instanceof BitbackError) return;
    throw e;
  }
  const again = decodeImageHeader(bytes);
  // The encoder computes where the backing file name goes and its length (meaningless without a
  // name: a mutated header with offset 0 and a non-zero size re-encodes with size 0).
  assert.deepEqual(again, {
    ...image,
    header: { ...image.header, backingFileOffset: again.header.backingFileOffset, backingFileSize: image.backingFile === undefined ? again.header.backingFileSize : image.header.backingFileSize },
  });
}

test('decodeImageHeader() of the first cluster cut at every length returns or throws a BitbackError', { skip }, () => {
  const cluster = file.subarray(0, 4096);
  let decoded = 0;
  for (let length = 0; length <= cluster.length; length++) {
    try {
      reencodes(decodeImageHeader(cluster.subarray(0, length)));
      decoded++;
    } catch (e) {
      if (!(e instanceof BitbackError)) throw e;
    }
  }
  // once the backing file name is complete, every longer prefix decodes
  assert.equal(decoded, cluster.length + 1 - (w.image.header.backingFileOffset + w.image.header.backingFileSize));
});

test('decodeImageHeader() of a first cluster with random bytes changed returns or throws a BitbackError', { skip }, () => {
  const cluster = file.subarray(0, 4096);
  // most changes land in the header, the extensions and the backing file name
  const used = w.image.header.backingFileOffset + w.image.header.backingFileSize + 8;
  fc.assert(
    fc.property(fc.oneof(mutations(used), mutations(cluster.length)), fc.boolean(), (changes, withSize) => {
      const mutated = mutate(cluster, changes);
      try {
        reencodes(decodeImageHeader(mutated, withSize ? file.length : undefined));
      } catch (e) {
        if (!(e instanceof BitbackError)) throw e;
      }
    }),
    { numRuns: 3000 },
  );
});

test('table decoders of mutated or truncated real tables return or throw a BitbackError', { skip }, () => {
  const g = w.geometry;
  const h = w.image.header;
  const ext = w.image.extensions.bitmaps!;
  const dir = file.subarray(ext.bitmapDirectoryOffset, ext.bitmapDirectoryOffset + ext.bitmapDirectorySize);
  const snaps = file.subarray(h.snapshotsOffset, h.snapshotsOffset + 4096);
  const l1 = file.subarray(h.l1TableOffset, h.l1TableOffset + h.l1Size * 8);
  const l2Offset = w.active.l1.find((e) => e.l2Offset !== 0)!.l2Offset;
  const l2 = file.subarray(l2Offset, l2Offset + g.clusterSize);
  const reftable = file.subarray(h.refcountTableOffset, h.refcountTableOffset + g.clusterSize);
  const bitmapTable = file.subarray(w.bitmaps[0]!.bitmapTableOffset, w.bitmaps[0]!.bitmapTableOffset + w.bitmaps[0]!.bitmapTableSize * 8);
  const context = { geometry: g, virtualSize: h.size };
  const decoders: Array<[string, Uint8Array, (bytes: Uint8Array) => unknown]> = [
    ['bitmap directory', dir, (b) => decodeBitmapDirectory(b, 0, { nbBitmaps: ext.nbBitmaps, bitmapDirectorySize: dir.length }, context, file.length)],
    ['snapshot table', snaps, (b) => {
      const t = decodeSnapshotTable(b, 0, h.nbSnapshots, g, file.length);
      assert.deepEqual(decodeSnapshotTable(encodeSnapshotTable(t.entries, g), 0, h.nbSnapshots, g).entries, t.entries);
    }],
    ['L1 table', l1, (b) => decodeL1Table(b, 0, h.l1Size, g, file.length)],
    ['L2 table', l2, (b) => decodeL2Table(b, 0, g, file.length)],
    ['refcount table', reftable, (b) => decodeRefcountTable(b, 0, g.tableEntriesPerCluster, g, file.length)],
    ['bitmap table', bitmapTable, (b) => decodeBitmapTable(b, 0, w.bitmaps[0]!.bitmapTableSize, g, file.length)],
  ];
  for (const [what, bytes, decode] of decoders) {
    decode(bytes); // the original decodes
    for (let length = 0; length < bytes.length; length += Math.max(1, Math.floor(bytes.length / 512))) {
      returnsOrThrowsTyped(() => decode(bytes.subarray(0, length)));
    }
    fc.assert(
      fc.property(mutations(bytes.length), (changes) => returnsOrThrowsTyped(() => decode(mutate(bytes, changes)))),
      { numRuns: 500 },
    );
    assert.ok(bytes.length > 0, what);
  }
});
