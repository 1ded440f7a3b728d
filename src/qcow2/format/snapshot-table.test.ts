import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { makeGeometry } from './geometry.js';
import {
  decodeSnapshotTable,
  encodeSnapshotTable,
  newSnapshotEntry,
  snapshotEntryLength,
  snapshotTableSize,
  snapshotVmStateSize,
  type SnapshotEntry,
} from './snapshot-table.js';
import { geometryArb, snapshotEntryArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument, assertUnsupported } from './testing/assertions.js';
import { concat, snapshotEntryBytes, snapshotExtra } from './testing/builder.js';

const G64K = makeGeometry({ clusterBits: 16 });
const V2 = makeGeometry({ clusterBits: 16, version: 2 });

test('decodeSnapshotTable() reads every field of every entry', () => {
  const first = snapshotEntryBytes({
    l1TableOffset: 0x50000,
    l1Size: 2,
    id: '1',
    name: 'before upgrade',
    dateSec: 1_700_000_123,
    dateNsec: 456_000_000,
    vmClockNsec: 2n ** 60n + 5n,
    vmStateSize: 77,
    extra: snapshotExtra(2n ** 40n, 2n ** 30n, -1n),
  });
  const second = snapshotEntryBytes({ l1TableOffset: 0x70000, l1Size: 1, id: '2', name: 'ünïcode', extra: concat(snapshotExtra(0n, 2n ** 29n, 12345n), new Uint8Array([9, 9, 9])) });
  const table = decodeSnapshotTable(concat(first, second), 0, 2, G64K);
  assert.equal(table.byteLength, first.length + second.length);
  assert.deepEqual(table.entries, [
    {
      id: '1',
      name: 'before upgrade',
      l1TableOffset: 0x50000,
      l1Size: 2,
      dateSeconds: 1_700_000_123,
      dateNanoseconds: 456_000_000,
      vmClockNanoseconds: 2n ** 60n + 5n,
      vmStateSize32: 77,
      vmStateSizeLarge: 2 ** 40,
      diskSize: 2 ** 30,
      icount: -1n,
      unknownExtraData: new Uint8Array(0),
    },
    {
      id: '2',
      name: 'ünïcode',
      l1TableOffset: 0x70000,
      l1Size: 1,
      dateSeconds: 1_700_000_000,
      dateNanoseconds: 5,
      vmClockNanoseconds: 0n,
      vmStateSize32: 0,
      vmStateSizeLarge: 0,
      diskSize: 2 ** 29,
      icount: 12345n,
      unknownExtraData: new Uint8Array([9, 9, 9]),
    },
  ]);
  assert.equal(snapshotVmStateSize(table.entries[0]!), 2 ** 40);
  assert.deepEqual(encodeSnapshotTable(table.entries, G64K), concat(first, second));
});

test('decodeSnapshotTable() reads entries with fewer extra data fields', () => {
  const none = snapshotEntryBytes({ extra: new Uint8Array(0), vmStateSize: 1234 });
  const oneAndHalf = snapshotEntryBytes({ extra: concat(snapshotExtra(99n), new Uint8Array([1, 2, 3, 4])) });
  const { entries } = decodeSnapshotTable(concat(none, oneAndHalf), 0, 2, V2);
  assert.equal(entries[0]!.vmStateSizeLarge, undefined);
  assert.equal(entries[0]!.diskSize, undefined);
  assert.equal(snapshotVmStateSize(entries[0]!), 1234);
  assert.equal(entries[1]!.vmStateSizeLarge, 99);
  assert.equal(entries[1]!.diskSize, undefined);
  assert.deepEqual(entries[1]!.unknownExtraData, new Uint8Array([1, 2, 3, 4]));
  assert.deepEqual(encodeSnapshotTable(entries, V2), concat(none, oneAndHalf));
  // a version 3 entry without a disk size is accepted, as QEMU does
  assert.equal(decodeSnapshotTable(none, 0, 1, G64K).entries[0]!.diskSize, undefined);
});

test('decodeSnapshotTable() starts at the offset and snapshotEntryLength() measures one entry', () => {
  const entry = snapshotEntryBytes({ name: 'abc' }); // 40 + 24 + 1 + 3 = 68, padded to 72
  assert.equal(entry.length, 72);
  const bytes = concat(new Uint8Array(16), entry, entry);
  assert.equal(snapshotEntryLength(bytes, 16), 72);
  assert.equal(decodeSnapshotTable(bytes, 16, 2, G64K).byteLength, 144);
  assertCorrupt(() => snapshotEntryLength(bytes, bytes.length - 39), 'snapshot', /needs 40 bytes/);
});

test('decodeSnapshotTable(encodeSnapshotTable(x)) is x', () => {
  fc.assert(
    fc.property(
      geometryArb.chain((g) => fc.tuple(fc.constant(g), fc.array(snapshotEntryArb(g), { maxLength: 6 }))),
      ([g, entries]) => {
        const bytes = encodeSnapshotTable(entries, g);
        assert.equal(bytes.length, snapshotTableSize(entries));
        assert.deepEqual(decodeSnapshotTable(bytes, 0, entries.length, g), { entries, byteLength: bytes.length });
      },
    ),
    { numRuns: 300 },
  );
});

test('decodeSnapshotTable() rejects entries that run past the bytes given', () => {
  const entry = snapshotEntryBytes({});
  assertCorrupt(() => decodeSnapshotTable(entry, 0, 2, G64K), 'snapshot[1]', /needs 40 bytes but only 0/);
  assertCorrupt(() => decodeSnapshotTable(entry.subarray(0, 50), 0, 1, G64K), 'snapshot[0]', /needs 69 bytes but only 50/);
  // The last entry may lack its padding (QEMU does not write it at the end of the file) ...
  assert.equal(decodeSnapshotTable(entry.subarray(0, 69), 0, 1, G64K).entries.length, 1);
  // ... but an entry before the last may not.
  const two = new Uint8Array(entry.length * 2);
  two.set(entry, 0);
  two.set(entry, entry.length);
  assertCorrupt(() => decodeSnapshotTable(two.subarray(0, 69), 0, 2, G64K), 'snapshot[0]', /needs 72 bytes but only 69/);
  const claimsMore = snapshotEntryBytes({ extraDataSize: 1000 });
  assertCorrupt(() => decodeSnapshotTable(claimsMore, 0, 1, G64K), 'snapshot[0]', /needs 1045 bytes/);
});

test('decodeSnapshotTable() refuses what exceeds QEMU limits', () => {
  assertUnsupported(() => decodeSnapshotTable(snapshotEntryBytes({ extraDataSize: 1025 }), 0, 1, G64K), 'snapshot[0].extra_data_size', /1024/);
  assertUnsupported(() => decodeSnapshotTable(new Uint8Array(0), 0, 65537, G64K), 'snapshot_table', /65536/);
  assertUnsupported(() => decodeSnapshotTable(snapshotEntryBytes({ l1Size: 2 ** 22 + 1 }), 0, 1, G64K), 'snapshot[0].l1_size', /32 MiB/);
  assertUnsupported(() => decodeSnapshotTable(snapshotEntryBytes({ extra: snapshotExtra(2n ** 53n) }), 0, 1, G64K), 'snapshot[0].vm_state_size_large', /2\^53/);
  assertUnsupported(() => decodeSnapshotTable(snapshotEntryBytes({ l1TableOffset: 2n ** 60n }), 0, 1, G64K), 'snapshot[0].l1_table_offset', /2\^53/);
});

test('decodeSnapshotTable() refuses a table beyond QEMU size limit before reading past it', () => {
  // entries of the largest size QEMU reads (1 KiB of extra data, 64 KiB id and name): the
  // 508th would end past 64 MiB; only the first 507 and that one's fixed part are given
  const entry = snapshotEntryBytes({ extra: new Uint8Array(1024), id: '\0'.repeat(65535), name: '\0'.repeat(65535) });
  assert.equal(entry.length, 132136);
  const many = new Uint8Array(entry.length * 507 + 40);
  for (let i = 0; i < 507; i++) many.set(entry, i * entry.length);
  many.set(entry.subarray(0, 40), 507 * entry.length);
  assertUnsupported(() => decodeSnapshotTable(many, 0, 508, G64K), 'snapshot_table', /limit of 67108864 bytes/);
  assert.equal(decodeSnapshotTable(many, 0, 507, G64K).entries.length, 507);
});

test('decodeSnapshotTable() checks the snapshot L1 table', () => {
  assertCorrupt(() => decodeSnapshotTable(snapshotEntryBytes({ l1TableOffset: 0x50200 }), 0, 1, G64K), 'snapshot[0].l1_table_offset', /not aligned/);
  assertCorrupt(() => decodeSnapshotTable(snapshotEntryBytes({ l1TableOffset: 0, l1Size: 1 }), 0, 1, G64K), 'snapshot[0].l1_table_offset', /overlap the header/);
  assertCorrupt(() => decodeSnapshotTable(snapshotEntryBytes({ l1TableOffset: 0x50000, l1Size: 3 }), 0, 1, G64K, 0x50010), 'snapshot[0].l1_table_offset', /past the end/);
  decodeSnapshotTable(snapshotEntryBytes({ l1TableOffset: 0x50000, l1Size: 2 }), 0, 1, G64K, 0x50010);
});

test('decodeSnapshotTable() rejects ids and names that are not UTF-8', () => {
  const bytes = snapshotEntryBytes({ id: 'a', name: 'b' });
  bytes[40 + 24] = 0xff;
  assertCorrupt(() => decodeSnapshotTable(bytes, 0, 1, G64K), 'snapshot[0].id', /UTF-8/);
});

test('newSnapshotEntry() makes an entry with the three known extra data fields', () => {
  const e = newSnapshotEntry({ id: '3', name: 'n', l1TableOffset: 0x90000, l1Size: 2, diskSize: 2 ** 30, timeMs: 1_700_000_000_250 });
  assert.deepEqual(e, {
    id: '3',
    name: 'n',
    l1TableOffset: 0x90000,
    l1Size: 2,
    dateSeconds: 1_700_000_000,
    dateNanoseconds: 250_000_000,
    vmClockNanoseconds: 0n,
    vmStateSize32: 0,
    vmStateSizeLarge: 0,
    diskSize: 2 ** 30,
    icount: -1n,
    unknownExtraData: new Uint8Array(0),
  });
  assert.deepEqual(decodeSnapshotTable(encodeSnapshotTable([e], G64K), 0, 1, G64K).entries, [e]);
});

test('encodeSnapshotTable() refuses what the decoder would reject or misread', () => {
  const e: SnapshotEntry = newSnapshotEntry({ id: '1', name: 'n', l1TableOffset: 0x90000, l1Size: 2, diskSize: 2 ** 30, timeMs: 0 });
  const { diskSize: _d, icount: _i, ...noDiskSize } = e;
  assertInvalidArgument(() => encodeSnapshotTable([noDiskSize], G64K), /diskSize: is required/);
  encodeSnapshotTable([noDiskSize], V2);
  const { vmStateSizeLarge: _v, ...gap } = e;
  assertInvalidArgument(() => encodeSnapshotTable([gap], G64K), /in order/);
  assertInvalidArgument(() => encodeSnapshotTable([{ ...noDiskSize, unknownExtraData: new Uint8Array(8) }], V2), /read back as a known field/);
  assertInvalidArgument(() => encodeSnapshotTable([{ ...e, unknownExtraData: new Uint8Array(1001) }], G64K), /1024/);
  assertInvalidArgument(() => encodeSnapshotTable([{ ...e, l1TableOffset: 0x100 }], G64K), /not aligned/);
  assertInvalidArgument(() => encodeSnapshotTable([{ ...e, name: 'x'.repeat(65536) }], G64K), /65535/);
  assertInvalidArgument(() => encodeSnapshotTable([{ ...e, vmClockNanoseconds: -1n }], G64K), /vmClockNanoseconds/);
  assertInvalidArgument(() => encodeSnapshotTable([{ ...e, icount: 2n ** 63n }], G64K), /icount/);
  assertInvalidArgument(() => encodeSnapshotTable([{ ...e, dateSeconds: 2 ** 32 }], G64K), /dateSeconds/);
});
