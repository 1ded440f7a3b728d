/**
 * Golden tests: images made at test time by the real qemu-img, decoded with the codecs and
 * compared with what `qemu-img info --output=json` says about them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { needPeers } from '../../../test/helpers/peers.js';
import { featuresOf } from './header.js';
import { decodeImageHeader, encodeImageHeader } from './image-header.js';
import { snapshotVmStateSize } from './snapshot-table.js';
import { assertRefcountsConsistent, walkImage } from './testing/image-walk.js';
import { Scratch } from './testing/qemu.js';

const skip = needPeers('qemu-img', 'qemu-io');
let scratch: Scratch;
before(() => {
  if (skip === false) scratch = new Scratch();
});
after(() => scratch?.remove());

const CASES: Array<{ name: string; options: Record<string, string | number> }> = [
  { name: 'default.qcow2', options: {} },
  { name: 'v2-512.qcow2', options: { compat: '0.10', cluster_size: 512 } },
  { name: 'v2-2m.qcow2', options: { compat: '0.10', cluster_size: '2M' } },
  { name: 'rc1-4k.qcow2', options: { cluster_size: 4096, refcount_bits: 1 } },
  { name: 'rc2.qcow2', options: { cluster_size: 8192, refcount_bits: 2 } },
  { name: 'rc4.qcow2', options: { refcount_bits: 4 } },
  { name: 'rc8.qcow2', options: { refcount_bits: 8 } },
  { name: 'rc32-16k.qcow2', options: { cluster_size: 16384, refcount_bits: 32 } },
  { name: 'rc64-2m.qcow2', options: { cluster_size: '2M', refcount_bits: 64 } },
  { name: 'lazy.qcow2', options: { lazy_refcounts: 'on' } },
  { name: 'zstd.qcow2', options: { compression_type: 'zstd' } },
  { name: 'extl2.qcow2', options: { extended_l2: 'on', cluster_size: 32768 } },
  { name: 'datafile.qcow2', options: { data_file: 'datafile.raw', data_file_raw: 'on' } },
  { name: 'prealloc.qcow2', options: { preallocation: 'metadata', cluster_size: 4096 } },
];

test('decodeImageHeader() agrees with qemu-img info for every creation option', { skip }, () => {
  for (const { name, options } of CASES) {
    scratch.create(name, '20M', options);
    if (options.preallocation === undefined && options.data_file === undefined) scratch.qemuIo(name, 'write -P 0x5a 1M 64k', 'write -z 3M 64k');
    const info = scratch.info(name);
    const qemu = info['format-specific'].data;
    const file = scratch.read(name);
    const image = decodeImageHeader(file, file.length);
    const { header, extensions } = image;
    const features = featuresOf(header);
    const what = `${name}: `;
    assert.equal(header.size, info['virtual-size'], what + 'size');
    assert.equal(2 ** header.clusterBits, info['cluster-size'], what + 'cluster size');
    assert.equal(header.version, qemu.compat === '0.10' ? 2 : 3, what + 'version');
    assert.equal(2 ** header.refcountOrder, qemu['refcount-bits'], what + 'refcount bits');
    assert.equal(features.lazyRefcounts, qemu['lazy-refcounts'] ?? false, what + 'lazy refcounts');
    assert.equal(features.corrupt, qemu.corrupt ?? false, what + 'corrupt');
    assert.equal(features.extendedL2, qemu['extended-l2'] ?? false, what + 'extended L2');
    assert.equal(features.dirty, info['dirty-flag'] ?? false, what + 'dirty');
    assert.equal(features.externalDataFile, qemu['data-file'] !== undefined, what + 'external data file');
    assert.equal(features.rawExternalData, qemu['data-file-raw'] ?? false, what + 'raw external data');
    assert.equal(extensions.externalDataFile, qemu['data-file'], what + 'data file name');
    assert.equal(header.compressionType, { zlib: 0, zstd: 1 }[qemu['compression-type'] ?? 'zlib'], what + 'compression type');
    assert.equal(features.compressionType, qemu['compression-type'] === 'zstd', what + 'compression type bit');
    // re-encoding gives QEMU's first cluster back, byte for byte
    assert.deepEqual(encodeImageHeader(image), file.subarray(0, 2 ** header.clusterBits), what + 'first cluster re-encoded');
    // every table decodes within the file, and the refcounts match the references
    assertRefcountsConsistent(walkImage(file));
  }
});

test('decodeImageHeader() reads the backing file name and format qemu-img stored', { skip }, () => {
  scratch.create('base.qcow2', '8M', { cluster_size: 4096 });
  scratch.qemuImg('create', '-q', '-f', 'raw', 'base.raw', '8M');
  for (const [name, backing, format] of [
    ['over-qcow2.qcow2', 'base.qcow2', 'qcow2'],
    ['over-raw.qcow2', 'base.raw', 'raw'],
  ] as const) {
    scratch.create(name, '8M', {}, ['-b', backing, '-F', format]);
    const info = scratch.info(name);
    const file = scratch.read(name);
    const image = decodeImageHeader(file, file.length);
    assert.equal(image.backingFile, info['backing-filename']);
    assert.equal(image.backingFile, backing);
    assert.equal(image.extensions.backingFormat, info['backing-filename-format']);
    assert.deepEqual(encodeImageHeader(image), file.subarray(0, 65536));
  }
  // a version 2 image with a backing file
  scratch.create('v2-over.qcow2', '8M', { compat: '0.10' }, ['-b', 'base.qcow2', '-F', 'qcow2']);
  const v2 = decodeImageHeader(scratch.read('v2-over.qcow2'));
  assert.equal(v2.header.version, 2);
  assert.equal(v2.backingFile, 'base.qcow2');
  assert.equal(v2.extensions.backingFormat, 'qcow2');
});

test('the bitmap directory agrees with qemu-img info and holds the bits of a write', { skip }, () => {
  const name = 'bitmaps.qcow2';
  scratch.create(name, '100M');
  scratch.qemuImg('bitmap', '--add', '--granularity', '65536', name, 'b0');
  scratch.qemuImg('bitmap', '--add', name, 'checkpoint-β');
  scratch.qemuImg('bitmap', '--add', '--granularity', '512', '--disable', name, 'disabled');
  // enabled (auto) bitmaps record this write when qemu-io closes the image
  scratch.qemuIo(name, 'write -P 0x5a 1M 64k');
  const info = scratch.info(name);
  const file = scratch.read(name);
  const w = walkImage(file);
  assert.equal(featuresOf(w.image.header).bitmaps, true);
  assert.deepEqual(encodeImageHeader(w.image), file.subarray(0, 65536));
  assert.equal(w.image.extensions.bitmaps?.nbBitmaps, 3);
  const expected = info['format-specific'].data.bitmaps ?? [];
  assert.deepEqual(
    w.bitmaps.map((b) => ({ name: b.name, granularity: 2 ** b.granularityBits, flags: [...(b.inUse ? ['in-use'] : []), ...(b.auto ? ['auto'] : [])] })),
    expected.map((b) => ({ name: b.name, granularity: b.granularity, flags: [...b.flags].sort().reverse() })),
  );
  assertRefcountsConsistent(w);

  // b0: 64 KiB granules, so the write at 1 MiB is bit 16, bit 0 of byte 2 of the bitmap data
  const b0 = w.bitmaps.findIndex((b) => b.name === 'b0');
  const table = w.bitmapTables[b0]!;
  assert.equal(table.length, 1);
  const entry = table[0]!;
  assert.equal(entry.kind, 'data');
  if (entry.kind !== 'data') return;
  const data = file.subarray(entry.hostOffset, entry.hostOffset + 65536);
  const setBits = [...data.entries()].filter(([, v]) => v !== 0);
  assert.deepEqual(setBits, [[2, 0x01]]);
  // the disabled bitmap recorded nothing
  const disabled = w.bitmapTables[w.bitmaps.findIndex((b) => b.name === 'disabled')]!;
  assert.ok(disabled.every((e) => e.kind === 'zeroes'));
});

test('the snapshot table agrees with qemu-img info, and COPIED follows the refcounts', { skip }, () => {
  const name = 'snapshots.qcow2';
  scratch.create(name, '64M', { cluster_size: 16384 });
  scratch.qemuIo(name, 'write -P 1 0 256k', 'write -P 2 40M 16k');
  scratch.qemuImg('snapshot', '-c', 'first', name);
  scratch.qemuIo(name, 'write -P 3 0 16k');
  scratch.qemuImg('snapshot', '-c', 'second snapshot', name);
  scratch.qemuIo(name, 'write -P 4 32k 16k');
  const info = scratch.info(name);
  const file = scratch.read(name);
  const w = walkImage(file);
  assert.equal(w.image.header.nbSnapshots, 2);
  assert.deepEqual(encodeImageHeader(w.image), file.subarray(0, 16384));
  assert.deepEqual(
    w.snapshots.map((s) => ({
      id: s.id,
      name: s.name,
      'vm-state-size': snapshotVmStateSize(s),
      'date-sec': s.dateSeconds,
      'date-nsec': s.dateNanoseconds,
      vmClock: s.vmClockNanoseconds,
      ...(s.icount === undefined || s.icount === -1n ? {} : { icount: Number(s.icount) }),
    })),
    (info.snapshots ?? []).map((s) => ({
      id: s.id,
      name: s.name,
      'vm-state-size': s['vm-state-size'],
      'date-sec': s['date-sec'],
      'date-nsec': s['date-nsec'],
      vmClock: BigInt(s['vm-clock-sec']) * 1_000_000_000n + BigInt(s['vm-clock-nsec']),
      ...(s.icount === undefined ? {} : { icount: s.icount }),
    })),
  );
  for (const s of w.snapshots) assert.equal(s.diskSize, info['virtual-size']);
  assertRefcountsConsistent(w);
  // spec: COPIED is set exactly when the refcount is one (accurate in the active tables)
  let seen = 0;
  w.active.l1.forEach((e, i) => {
    if (e.l2Offset === 0) return;
    assert.equal(e.copied, w.refcount(e.l2Offset / w.geometry.clusterSize) === 1, `l1[${i}] COPIED`);
    for (const l2 of w.active.l2.get(i) ?? []) {
      if (l2.kind !== 'normal') continue;
      assert.equal(l2.copied, w.refcount(l2.hostOffset / w.geometry.clusterSize) === 1);
      seen++;
    }
  });
  assert.ok(seen > 10, 'the image has data clusters');
  assert.ok(
    [...w.references.values()].some((n) => n === 3),
    'some clusters are shared by the active image and both snapshots',
  );
});
