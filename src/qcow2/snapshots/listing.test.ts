import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatSnapshotTable, sizeToStr, snapshotInfo } from './listing.js';
import type { Qcow2Snapshot } from './snapshots.js';

const snapshot: Qcow2Snapshot = {
  id: '12',
  name: 'before-upgrade',
  dateSeconds: 1_700_000_000,
  dateNanoseconds: 5_000,
  vmClockNanoseconds: 3_723_456_000_000n, // 1 h 2 min 3.456 s
  vmStateSize: 1536,
  diskSize: 1 << 20,
  l1TableOffset: 65536,
  l1Size: 1,
};

test('sizeToStr() prints three significant digits and a binary unit, as QEMU size_to_str', () => {
  assert.equal(sizeToStr(0), '0 B');
  assert.equal(sizeToStr(999), '999 B');
  assert.equal(sizeToStr(1000), '0.977 KiB'); // QEMU switches units at 1000, not 1024
  assert.equal(sizeToStr(1536), '1.5 KiB');
  assert.equal(sizeToStr(1 << 20), '1 MiB');
  assert.equal(sizeToStr(123_456_789), '118 MiB');
});

test('formatSnapshotTable() lays out the columns of qemu-img snapshot -l', () => {
  const [title, header, line] = formatSnapshotTable([snapshot]);
  assert.equal(title, 'Snapshot list:');
  assert.equal(header, 'ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT');
  assert.ok(line !== undefined);
  assert.equal(line.slice(0, 35), '12        before-upgrade    1.5 KiB');
  assert.match(line.slice(35, 55), /^ \d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/);
  assert.equal(line.slice(55), ` 01:02:03.456${' '.repeat(11)}`);
  assert.deepEqual(formatSnapshotTable([]), []);
});

test('snapshotInfo() gives qemu-img info fields, icount only when recorded', () => {
  assert.deepEqual(snapshotInfo(snapshot), {
    'vm-clock-nsec': 456_000_000,
    name: 'before-upgrade',
    'date-sec': 1_700_000_000,
    'date-nsec': 5_000,
    'vm-clock-sec': 3723,
    id: '12',
    'vm-state-size': 1536,
  });
  assert.equal(snapshotInfo({ ...snapshot, icount: 0n }).icount, 0);
});
