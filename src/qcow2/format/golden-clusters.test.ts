/**
 * Golden tests of the cluster mapping: L2 entries of images written by qemu-io and converted
 * by qemu-img, compared with `qemu-img map --output=json` and with the data itself.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { inflateRawSync } from 'node:zlib';
import { needPeers } from '../../../test/helpers/peers.js';
import { compressedByteRange, subclusterKind } from './l1-l2.js';
import { assertRefcountsConsistent, l2EntryOf, walkImage } from './testing/image-walk.js';
import { Scratch, type QemuMapExtent } from './testing/qemu.js';

const skip = needPeers('qemu-img', 'qemu-io');
let scratch: Scratch;
before(() => {
  if (skip === false) scratch = new Scratch();
});
after(() => scratch?.remove());

function extentAt(map: QemuMapExtent[], offset: number): QemuMapExtent {
  const e = map.find((x) => x.start <= offset && offset < x.start + x.length);
  assert.ok(e, `qemu-img map covers ${offset}`);
  return e;
}

test('decodeL2Entry() agrees with qemu-img map on every cluster', { skip }, () => {
  const name = 'map.qcow2';
  scratch.create(name, '8M');
  scratch.qemuIo(
    name,
    'write -P 0x11 0 64k',
    'write -z 128k 64k',
    'write -P 0x22 320k 4k',
    'write -P 0x33 1M 128k',
    'write -P 0x44 2M 64k',
    'write -z 2M 64k',
    'write -P 0x55 3M 64k',
    'write -z -u 3M 64k',
    'write -P 0x66 7M 64k',
  );
  const file = scratch.read(name);
  const w = walkImage(file);
  const g = w.geometry;
  const map = scratch.map(name);
  const kinds = new Set<string>();
  for (let c = 0; c < w.image.header.size / g.clusterSize; c++) {
    const guest = c * g.clusterSize;
    const ext = extentAt(map, guest);
    const entry = l2EntryOf(w.active, c, g) ?? { kind: 'unallocated' as const };
    kinds.add(entry.kind);
    const where = `cluster ${c}`;
    if (!ext.present) {
      assert.equal(entry.kind, 'unallocated', where);
    } else if (ext.data) {
      assert.equal(entry.kind, 'normal', where);
      assert.equal(entry.kind === 'normal' && entry.hostOffset, ext.offset! + guest - ext.start, where);
    } else {
      assert.ok(ext.zero, where);
      assert.equal(entry.kind, 'zero', where);
      assert.equal(entry.kind === 'zero' && entry.hostOffset, ext.offset === undefined ? 0 : ext.offset + guest - ext.start, where);
    }
  }
  assert.deepEqual([...kinds].sort(), ['normal', 'unallocated', 'zero']);
  // the data is where the entries say
  const first = l2EntryOf(w.active, 0, g);
  assert.ok(first?.kind === 'normal');
  assert.ok(file.subarray(first.hostOffset, first.hostOffset + 65536).every((b) => b === 0x11));
  assertRefcountsConsistent(w);
});

test('compressed clusters written by qemu-img convert -c decompress to the source data', { skip }, () => {
  for (const clusterSize of [512, 4096, 65536]) {
    const clusters = 24;
    const source = new Uint8Array(clusters * clusterSize);
    const text = new TextEncoder();
    for (let c = 0; c < clusters - 4; c++) {
      const line = text.encode(`cluster ${c} of ${clusterSize} bytes; `);
      for (let i = 0; i < clusterSize; i++) source[c * clusterSize + i] = line[i % line.length]!;
    }
    // two clusters of noise that do not compress; two zero clusters at the end
    let seed = clusterSize;
    for (let i = (clusters - 4) * clusterSize; i < (clusters - 2) * clusterSize; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      source[i] = seed >>> 24;
    }
    scratch.write(`src-${clusterSize}.raw`, source);
    const name = `compressed-${clusterSize}.qcow2`;
    scratch.qemuImg('convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, `src-${clusterSize}.raw`, name);
    const file = scratch.read(name);
    const w = walkImage(file);
    const g = w.geometry;
    const counts = { compressed: 0, normal: 0, unallocated: 0 };
    for (let c = 0; c < clusters; c++) {
      const expected = source.subarray(c * clusterSize, (c + 1) * clusterSize);
      const entry = l2EntryOf(w.active, c, g) ?? { kind: 'unallocated' as const };
      const where = `${clusterSize}-byte cluster ${c}`;
      if (entry.kind === 'compressed') {
        counts.compressed++;
        const range = compressedByteRange(entry);
        assert.ok(range.offset + range.length - file.length < 512, `${where}: the range ends in the file's last sector`);
        const data = inflateRawSync(file.subarray(range.offset, range.offset + range.length), { finishFlush: 2 /* Z_SYNC_FLUSH */ });
        assert.deepEqual(data.subarray(0, clusterSize), Buffer.from(expected), where);
      } else if (entry.kind === 'normal') {
        counts.normal++;
        assert.deepEqual(file.subarray(entry.hostOffset, entry.hostOffset + clusterSize), expected, where);
      } else {
        counts.unallocated++;
        assert.equal(entry.kind, 'unallocated', where);
        assert.ok(expected.every((b) => b === 0), where);
      }
    }
    assert.deepEqual(counts, { compressed: clusters - 4, normal: 2, unallocated: 2 }, `${clusterSize}-byte clusters`);
    assertRefcountsConsistent(w);
  }
});

test('extended L2 subcluster bitmaps agree with qemu-img map', { skip }, () => {
  const name = 'subclusters.qcow2';
  scratch.create(name, '4M', { extended_l2: 'on', cluster_size: 65536 });
  scratch.qemuIo(name, 'write -P 0x55 8k 4k', 'write -z 64k 2k', 'write -P 0x66 192k 64k', 'write -P 0x77 262k 2k', 'write -z 262k 2k');
  const file = scratch.read(name);
  const w = walkImage(file);
  const g = w.geometry;
  assert.equal(g.extendedL2, true);
  assert.equal(g.subclusterSize, 2048);
  const map = scratch.map(name);
  const kinds = new Set<string>();
  for (let s = 0; s < 8 * 32; s++) {
    const guest: number = s * g.subclusterSize;
    const ext = extentAt(map, guest);
    const entry = l2EntryOf(w.active, Math.floor(s / 32), g) ?? { kind: 'unallocated' as const };
    const kind = subclusterKind(entry, s % 32);
    kinds.add(kind);
    const where = `subcluster ${s}`;
    if (!ext.present) assert.equal(kind, 'unallocated', where);
    else if (ext.data) {
      assert.equal(kind, 'normal', where);
      assert.equal(entry.kind === 'normal' && entry.hostOffset + (s % 32) * g.subclusterSize, ext.offset! + guest - ext.start, where);
    } else assert.equal(kind, 'zero', where);
  }
  assert.deepEqual([...kinds].sort(), ['normal', 'unallocated', 'zero']);
  const second = l2EntryOf(w.active, 1, g);
  assert.deepEqual(second, { kind: 'unallocated', subclusters: { allocated: 0, zero: 1 } });
  assertRefcountsConsistent(w);
});

test('refcounts of every width count the clusters that snapshots share', { skip }, () => {
  for (const bits of [2, 4, 8, 16, 32, 64]) {
    const name = `shared-rc${bits}.qcow2`;
    scratch.create(name, '8M', { cluster_size: 4096, refcount_bits: bits });
    scratch.qemuIo(name, 'write -P 1 0 64k');
    scratch.qemuImg('snapshot', '-c', 'a', name);
    scratch.qemuIo(name, 'write -P 2 0 4k');
    scratch.qemuImg('snapshot', '-c', 'b', name);
    scratch.qemuIo(name, 'write -P 3 8k 4k');
    const w = walkImage(scratch.read(name));
    assert.equal(w.geometry.refcountBits, bits);
    assertRefcountsConsistent(w);
    assert.equal(Math.max(...w.storedRefcounts().values()), 3, `rc${bits}: clusters shared by the image and two snapshots`);
  }
});
