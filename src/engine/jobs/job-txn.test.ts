// Jobs of one transaction (`completion-mode: grouped`). Expected orders are QEMU 7.2.22's for
// backups of separate null-co nodes started by one `transaction` (members are walked newest
// first; the job that fails first finalizes the others).
import assert from 'node:assert/strict';
import test from 'node:test';
import { jobHarness, startDrained, until } from './testing/harness.js';
import { StepJob } from './testing/step-job.js';

const MiB = 1024 * 1024;
const LEN = 4 * MiB;
const cancelled = (id: string, speed: number): string => `BLOCK_JOB_CANCELLED device=${id} len=${LEN} speed=${speed} type=backup`;
const completed = (id: string, speed = 0, error = ''): string => `BLOCK_JOB_COMPLETED device=${id}${error === '' ? '' : ` error=${error}`} len=${LEN} speed=${speed} type=backup`;

/** The events after the jobs started (created, running, paused, running for each). */
function tail(summary: string[], jobs: number): string[] {
  return summary.slice(jobs * 4);
}

test('a failing member cancels the others: the failed one finalizes first, then the cancelled ones, in the group order', async () => {
  const { manager, log } = jobHarness();
  const hooks: string[] = [];
  const txn = manager.createTxn();
  const a = new StepJob({ id: 'a', length: LEN, log: hooks });
  const b = new StepJob({ id: 'b', length: LEN, log: hooks, fault: { offset: 2 * MiB, errno: 'EIO', once: false, onError: 'report' } });
  manager.add(a, { txn, speed: MiB });
  manager.add(b, { txn });
  startDrained(manager, a, b);
  await log.waitForStatus('a', 'null');
  assert.deepEqual(tail(log.summary(), 2), [
    'BLOCK_JOB_ERROR action=report device=b operation=read',
    'b:aborting',
    completed('b', 0, 'Input/output error'),
    'b:concluded',
    'b:null',
    'a:aborting',
    cancelled('a', MiB),
    'a:concluded',
    'a:null',
  ]);
  assert.deepEqual(hooks, ['abort:b', 'clean:b', 'abort:a', 'clean:a']);
  assert.deepEqual(log.summary('a').slice(0, 4), ['a:created', 'a:running', 'a:paused', 'a:running']);
});

test('grouped jobs wait for each other, become pending together, and one job-finalize finalizes all', async () => {
  const { manager, log, timers } = jobHarness();
  const hooks: string[] = [];
  const txn = manager.createTxn();
  const a = new StepJob({ id: 'a', length: LEN, log: hooks });
  const b = new StepJob({ id: 'b', length: LEN, log: hooks, autoFinalize: false });
  manager.add(a, { txn, speed: 4 * MiB });
  manager.add(b, { txn });
  startDrained(manager, a, b);
  await log.waitForStatus('b', 'waiting');
  while (a.status === 'running') {
    await until(() => timers.waiting > 0 || a.status !== 'running', "a's sleep");
    timers.fireNext();
  }
  await log.waitForEvent('BLOCK_JOB_PENDING', 'b');
  assert.deepEqual(
    manager.queryJobs().map((j) => `${j.id}:${j.status}`),
    ['b:pending', 'a:pending'],
  );
  await manager.finalize(a);
  assert.deepEqual(tail(log.summary(), 2), [
    'b:waiting',
    'a:waiting',
    'b:pending',
    'BLOCK_JOB_PENDING id=b type=backup',
    'a:pending',
    completed('b'),
    'b:concluded',
    'b:null',
    completed('a', 4 * MiB),
    'a:concluded',
    'a:null',
  ]);
  assert.deepEqual(hooks, ['prepare:b', 'prepare:a', 'commit:b', 'clean:b', 'commit:a', 'clean:a']);
});

test('a member that fails while another waits and a third runs: the running one is cancelled first, the waiting one last', async () => {
  const { manager, log } = jobHarness();
  const txn = manager.createTxn();
  const a = new StepJob({ id: 'a', length: LEN });
  const b = new StepJob({ id: 'b', length: LEN, gated: true, fault: { offset: 2 * MiB, errno: 'EIO', once: false, onError: 'report' } });
  const c = new StepJob({ id: 'c', length: LEN, autoDismiss: false });
  manager.add(a, { txn });
  manager.add(b, { txn });
  manager.add(c, { txn, speed: MiB });
  startDrained(manager, a, b, c);
  await log.waitForStatus('a', 'waiting');
  b.release(3);
  await log.waitForStatus('a', 'null');
  assert.deepEqual(tail(log.summary(), 3), [
    'a:waiting',
    'BLOCK_JOB_ERROR action=report device=b operation=read',
    'b:aborting',
    'c:aborting',
    cancelled('c', MiB),
    'c:concluded',
    completed('b', 0, 'Input/output error'),
    'b:concluded',
    'b:null',
    'a:aborting',
    cancelled('a', 0),
    'a:concluded',
    'a:null',
  ]);
  assert.deepEqual(manager.queryJobs(), [{ id: 'c', type: 'backup', status: 'concluded', 'current-progress': MiB, 'total-progress': LEN, error: 'Operation canceled' }]);
});

test('cancelling one member cancels the group: the cancelled one finalizes first', async () => {
  const { manager, log, timers } = jobHarness();
  const txn = manager.createTxn();
  const a = new StepJob({ id: 'a', length: LEN });
  const b = new StepJob({ id: 'b', length: LEN });
  manager.add(a, { txn, speed: MiB });
  manager.add(b, { txn, speed: MiB });
  startDrained(manager, a, b);
  await until(() => timers.waiting === 2, 'both sleeps');
  await manager.userCancel(b, true);
  await log.waitForStatus('a', 'null');
  assert.deepEqual(tail(log.summary(), 2), ['b:aborting', cancelled('b', MiB), 'b:concluded', 'b:null', 'a:aborting', cancelled('a', MiB), 'a:concluded', 'a:null']);
});

test('cancelling a waiting member aborts it and the running one', async () => {
  const { manager, log } = jobHarness();
  const txn = manager.createTxn();
  const a = new StepJob({ id: 'a', length: LEN });
  const b = new StepJob({ id: 'b', length: LEN, autoDismiss: false });
  manager.add(a, { txn, speed: MiB });
  manager.add(b, { txn });
  startDrained(manager, a, b);
  await log.waitForStatus('b', 'waiting');
  await assert.rejects(manager.userPause(b), { reason: "Job 'b' in state 'waiting' cannot accept command verb 'pause'" });
  await manager.userCancel(b, false); // backup has no soft cancel
  await log.waitForStatus('a', 'null');
  assert.deepEqual(tail(log.summary(), 2), ['b:waiting', 'b:aborting', cancelled('b', 0), 'b:concluded', 'a:aborting', cancelled('a', MiB), 'a:concluded', 'a:null']);
  assert.equal(manager.queryJobs()[0]?.error, 'Operation canceled');
});

test('a prepare that fails aborts every member of the group: nothing commits', async () => {
  const { manager, log } = jobHarness();
  const hooks: string[] = [];
  const txn = manager.createTxn();
  const a = new StepJob({ id: 'a', length: LEN, log: hooks, prepareError: new Error('Could not merge the bitmap') });
  const b = new StepJob({ id: 'b', length: LEN, log: hooks });
  manager.add(a, { txn });
  manager.add(b, { txn });
  manager.start(a);
  manager.start(b);
  await log.waitForStatus('a', 'null');
  await log.waitForStatus('b', 'null');
  // Members newest first: b prepares, a fails; b is cancelled and both abort.
  assert.deepEqual(hooks, ['prepare:b', 'prepare:a', 'abort:b', 'clean:b', 'abort:a', 'clean:a']);
  assert.deepEqual(
    log.summary().filter((s) => s.startsWith('BLOCK_JOB_')),
    [cancelled('b', 0), completed('a', 0, 'Could not merge the bitmap')],
  );
});

test('cancelling created jobs of one group (a failed transaction) ends each without waiting forever', async () => {
  // QEMU 7.2 hangs here (job_finish_sync on a job that never started); the engine completes it.
  const { manager, log } = jobHarness();
  const txn = manager.createTxn();
  const a = new StepJob({ id: 'a', length: LEN });
  const b = new StepJob({ id: 'b', length: LEN });
  manager.add(a, { txn });
  manager.add(b, { txn });
  await manager.cancelSync(b);
  await manager.cancelSync(a);
  assert.deepEqual(log.summary(), ['a:created', 'b:created', 'b:aborting', 'b:concluded', 'b:null', 'a:aborting', 'a:concluded', 'a:null']);
});

test('cancelAll() ends jobs in every state, including ones waiting for finalize or dismiss', async () => {
  const { manager, log } = jobHarness();
  const pending = new StepJob({ id: 'p', length: LEN, autoFinalize: false });
  const concluded = new StepJob({ id: 'c', length: LEN, autoDismiss: false });
  const running = new StepJob({ id: 'r', length: LEN });
  const created = new StepJob({ id: 'n', length: LEN });
  manager.add(pending);
  manager.add(concluded);
  manager.add(running, { speed: MiB });
  manager.add(created);
  manager.start(pending);
  manager.start(concluded);
  manager.start(running);
  await log.waitForEvent('BLOCK_JOB_PENDING', 'p');
  await log.waitForStatus('c', 'concluded');
  await manager.cancelAll();
  assert.deepEqual(manager.jobs, []);
  for (const id of ['p', 'c', 'r', 'n']) assert.equal(log.summary(id).at(-1), `${id}:null`);
});
