import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatQcow2CheckHuman, percent, qcow2CheckExitStatus, type Qcow2CheckResult } from './result.js';

function result(fields: Partial<Qcow2CheckResult>): Qcow2CheckResult {
  return {
    filename: 'disk.qcow2',
    format: 'qcow2',
    'check-errors': 0,
    'image-end-offset': 0,
    'total-clusters': 0,
    'allocated-clusters': 0,
    'fragmented-clusters': 0,
    'compressed-clusters': 0,
    leaks: 0,
    corruptions: 0,
    'leaks-fixed': 0,
    'corruptions-fixed': 0,
    findings: [],
    'findings-omitted': 0,
    ...fields,
  };
}

test('percent() rounds exact ties to even as printf("%0.2f") does', () => {
  // 17/160 is exactly 10.625: qemu-img prints 10.62.
  assert.equal(percent((17 * 100) / 160), '10.62');
  assert.equal(percent(0.125), '0.12');
  assert.equal(percent(0.375), '0.38');
  assert.equal(percent(2.875), '2.88');
  assert.equal(percent(100), '100.00');
  assert.equal(percent(0), '0.00');
});

test('percent() rounds values that are not ties to the nearest', () => {
  assert.equal(percent(100 / 3), '33.33');
  assert.equal(percent(200 / 3), '66.67');
  assert.equal(percent(5.8823529411764710), '5.88');
  assert.equal(percent(0.0625), '0.06');
});

test('formatQcow2CheckHuman() of a clean image prints what qemu-img prints', () => {
  const text = formatQcow2CheckHuman(result({ 'total-clusters': 160, 'allocated-clusters': 17, 'fragmented-clusters': 1, 'image-end-offset': 2031616 }));
  assert.equal(text, 'No errors were found on the image.\n17/160 = 10.62% allocated, 5.88% fragmented, 0.00% compressed clusters\nImage end offset: 2031616\n');
});

test('formatQcow2CheckHuman() lists corruptions, leaks and internal errors in qemu-img order', () => {
  const text = formatQcow2CheckHuman(result({ corruptions: 2, leaks: 14, 'check-errors': 1, 'image-end-offset': 65536 }));
  assert.equal(
    text,
    '\n2 errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n' +
      '\n14 leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n' +
      '\n1 internal errors have occurred during the check.\n' +
      'Image end offset: 65536\n',
  );
});

test('formatQcow2CheckHuman() leaves out the allocation line without allocated clusters', () => {
  assert.equal(formatQcow2CheckHuman(result({ 'total-clusters': 16384, 'image-end-offset': 196608 })), 'No errors were found on the image.\nImage end offset: 196608\n');
});

test('formatQcow2CheckHuman() of a repair starts with the repair summary', () => {
  const text = formatQcow2CheckHuman(result({ 'leaks-fixed': 3, 'corruptions-fixed': 1, 'image-end-offset': 65536 }));
  assert.equal(
    text,
    'The following inconsistencies were found and repaired:\n\n    3 leaked clusters\n    1 corruptions\n\nDouble checking the fixed image now...\n' +
      'No errors were found on the image.\nImage end offset: 65536\n',
  );
});

test('qcow2CheckExitStatus() is 1 for check errors, 2 for corruptions, 3 for leaks only, else 0', () => {
  assert.equal(qcow2CheckExitStatus(result({})), 0);
  assert.equal(qcow2CheckExitStatus(result({ leaks: 5 })), 3);
  assert.equal(qcow2CheckExitStatus(result({ leaks: 5, corruptions: 1 })), 2);
  assert.equal(qcow2CheckExitStatus(result({ leaks: 5, corruptions: 1, 'check-errors': 2 })), 1);
  assert.equal(qcow2CheckExitStatus(result({ 'leaks-fixed': 5 })), 0);
});
