import assert from 'node:assert/strict';
import test from 'node:test';
import { JOB_STATUSES, JOB_VERBS, canTransition, isCompletedStatus, isReadyStatus, verbAllowed } from './job-status.js';
import { QEMU_JOB_STT, QEMU_JOB_VERB_TABLE } from './testing/qemu-tables.js';

test('canTransition() allows exactly the moves of QEMU 7.2 JobSTT, for every pair of statuses', () => {
  JOB_STATUSES.forEach((from, i) => {
    JOB_STATUSES.forEach((to, j) => {
      assert.equal(canTransition(from, to), QEMU_JOB_STT[i]![j] === 1, `${from} -> ${to}`);
    });
  });
});

test('verbAllowed() accepts exactly the verbs of QEMU 7.2 JobVerbTable, for every verb and status', () => {
  assert.deepEqual(Object.keys(QEMU_JOB_VERB_TABLE).sort(), [...JOB_VERBS].sort());
  for (const verb of JOB_VERBS) {
    JOB_STATUSES.forEach((status, i) => {
      assert.equal(verbAllowed(verb, status), QEMU_JOB_VERB_TABLE[verb][i] === 1, `${verb} in ${status}`);
    });
  }
});

test('isCompletedStatus() and isReadyStatus() classify every status as job.c does', () => {
  assert.deepEqual(JOB_STATUSES.filter(isCompletedStatus), ['waiting', 'pending', 'aborting', 'concluded', 'null']);
  assert.deepEqual(JOB_STATUSES.filter(isReadyStatus), ['ready', 'standby']);
});
