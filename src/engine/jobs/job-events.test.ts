// Event sequences of single jobs. Each expected sequence is the one QEMU 7.2.22 sent for a
// blockdev-backup (or blockdev-mirror) of a 4 MiB null-co node in the same scenario.
import assert from 'node:assert/strict';
import test from 'node:test';
import { JobError } from './job-errors.js';
import { EventLog } from './testing/event-log.js';
import { jobHarness, startDrained, until } from './testing/harness.js';
import { StepJob } from './testing/step-job.js';

const MiB = 1024 * 1024;
const LEN = 4 * MiB;
const completed = (id: string, extra = ''): string => `BLOCK_JOB_COMPLETED device=${id}${extra} len=${LEN} speed=0 type=backup`;

async function refused(p: Promise<unknown>, reason: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof JobError && e.reason === reason);
}

test('a backup job with auto-finalize and auto-dismiss goes created → running → paused → running → waiting → pending → concluded → null', async () => {
  const { manager, log, hookErrors } = jobHarness();
  const log2: string[] = [];
  const job = new StepJob({ id: 'j', length: LEN, log: log2 });
  manager.add(job);
  startDrained(manager, job);
  await log.waitForStatus('j', 'null');
  assert.deepEqual(log.summary(), ['j:created', 'j:running', 'j:paused', 'j:running', 'j:waiting', 'j:pending', completed('j'), 'j:concluded', 'j:null']);
  assert.deepEqual(log2, ['prepare:j', 'commit:j', 'clean:j']);
  assert.equal(manager.get('j'), undefined);
  assert.deepEqual(hookErrors, []);
});

test('a job started outside a drained section never pauses on the way', async () => {
  const { manager, log } = jobHarness();
  const job = new StepJob({ id: 'j', length: LEN });
  manager.add(job);
  manager.start(job);
  await log.waitForStatus('j', 'null');
  assert.deepEqual(log.summary(), ['j:created', 'j:running', 'j:waiting', 'j:pending', completed('j'), 'j:concluded', 'j:null']);
});

test('with auto-finalize and auto-dismiss false a job waits in pending for job-finalize and in concluded for job-dismiss', async () => {
  const { manager, log } = jobHarness();
  const job = new StepJob({ id: 'j', length: LEN, autoFinalize: false, autoDismiss: false });
  manager.add(job);
  startDrained(manager, job);
  await log.waitForEvent('BLOCK_JOB_PENDING', 'j');
  assert.deepEqual(manager.queryJobs(), [{ id: 'j', type: 'backup', status: 'pending', 'current-progress': LEN, 'total-progress': LEN }]);
  await refused(manager.userPause(job), "Job 'j' in state 'pending' cannot accept command verb 'pause'");
  await refused(manager.userResume(job), "Can't resume a job that was not paused");
  await refused(manager.userComplete(job), "Job 'j' in state 'pending' cannot accept command verb 'complete'");
  await refused(manager.dismiss(job), "Job 'j' in state 'pending' cannot accept command verb 'dismiss'");
  await refused(manager.setSpeed(job, 1), "Job 'j' in state 'pending' cannot accept command verb 'set-speed'");
  await manager.finalize(job);
  assert.equal(job.status, 'concluded');
  await refused(manager.finalize(job), "Job 'j' in state 'concluded' cannot accept command verb 'finalize'");
  await refused(manager.userCancel(job, true), "Job 'j' in state 'concluded' cannot accept command verb 'cancel'");
  await manager.dismiss(job);
  assert.deepEqual(log.summary(), [
    'j:created',
    'j:running',
    'j:paused',
    'j:running',
    'j:waiting',
    'j:pending',
    'BLOCK_JOB_PENDING id=j type=backup',
    completed('j'),
    'j:concluded',
    'j:null',
  ]);
  assert.deepEqual(manager.queryJobs(), []);
});

test('a cancelled running job goes aborting and sends BLOCK_JOB_CANCELLED; concluded it reports "Operation canceled"', async () => {
  const { manager, log, timers } = jobHarness();
  const job = new StepJob({ id: 'j', length: LEN, autoDismiss: false });
  manager.add(job, { speed: MiB });
  startDrained(manager, job);
  await until(() => timers.waiting > 0, 'the rate-limit sleep');
  await manager.userCancel(job, true);
  await log.waitForStatus('j', 'concluded');
  assert.deepEqual(log.summary(), [
    'j:created',
    'j:running',
    'j:paused',
    'j:running',
    'j:aborting',
    `BLOCK_JOB_CANCELLED device=j len=${LEN} speed=${MiB} type=backup`,
    'j:concluded',
  ]);
  assert.deepEqual(manager.queryJobs(), [{ id: 'j', type: 'backup', status: 'concluded', 'current-progress': MiB, 'total-progress': LEN, error: 'Operation canceled' }]);
  const [info] = manager.queryBlockJobs();
  assert.equal(info?.error, 'Operation canceled');
  assert.equal(info?.paused, false);
  await manager.dismiss(job);
  assert.equal(log.summary().at(-1), 'j:null');
});

test('a user pause stops the job at its next pause point, a second pause is refused, resume continues it', async () => {
  const { manager, log, timers } = jobHarness();
  const job = new StepJob({ id: 'j', length: LEN });
  manager.add(job, { speed: MiB });
  startDrained(manager, job);
  await until(() => timers.waiting > 0, 'the rate-limit sleep');
  await manager.userPause(job);
  await log.waitForStatus('j', 'paused', 2);
  const [info] = manager.queryBlockJobs();
  assert.deepEqual(
    { status: info?.status, paused: info?.paused, busy: info?.busy, speed: info?.speed, ioStatus: info?.['io-status'] },
    { status: 'paused', paused: true, busy: false, speed: MiB, ioStatus: 'ok' },
  );
  await refused(manager.userPause(job), 'Job is already paused');
  await manager.userResume(job);
  await refused(manager.userResume(job), "Can't resume a job that was not paused");
  await log.waitForStatus('j', 'running', 3);
  await manager.setSpeed(job, 0); // unlimited: cuts the sleep short
  await log.waitForStatus('j', 'null');
  assert.deepEqual(log.summary().slice(0, 8), ['j:created', 'j:running', 'j:paused', 'j:running', 'j:paused', 'j:running', 'j:waiting', 'j:pending']);
});

test('cancelling a user-paused job resumes it first: paused → running → aborting', async () => {
  const { manager, log, timers } = jobHarness();
  const job = new StepJob({ id: 'j', length: LEN });
  manager.add(job, { speed: MiB });
  startDrained(manager, job);
  await until(() => timers.waiting > 0, 'the rate-limit sleep');
  await manager.userPause(job);
  await log.waitForStatus('j', 'paused', 2);
  await manager.userCancel(job, true);
  await log.waitForStatus('j', 'null');
  assert.deepEqual(log.summary().slice(4), ['j:paused', 'j:running', 'j:aborting', `BLOCK_JOB_CANCELLED device=j len=${LEN} speed=${MiB} type=backup`, 'j:concluded', 'j:null']);
});

test('cancelling a pending job aborts it: pending → aborting → BLOCK_JOB_CANCELLED', async () => {
  const { manager, log } = jobHarness();
  const hooks: string[] = [];
  const job = new StepJob({ id: 'j', length: LEN, autoFinalize: false, log: hooks });
  manager.add(job);
  startDrained(manager, job);
  await log.waitForEvent('BLOCK_JOB_PENDING', 'j');
  await manager.userCancel(job, true);
  assert.deepEqual(log.summary().slice(5), ['j:pending', 'BLOCK_JOB_PENDING id=j type=backup', 'j:aborting', `BLOCK_JOB_CANCELLED device=j len=${LEN} speed=0 type=backup`, 'j:concluded', 'j:null']);
  assert.deepEqual(hooks, ['abort:j', 'clean:j']);
});

for (const [policy, errno, once, expected] of [
  ['report', 'EIO', false, ['BLOCK_JOB_ERROR action=report device=j operation=read', 'j:aborting', completed('j', ' error=Input/output error'), 'j:concluded']],
  ['ignore', 'EIO', true, ['BLOCK_JOB_ERROR action=ignore device=j operation=read', 'j:waiting', 'j:pending', completed('j'), 'j:concluded']],
  ['enospc', 'EIO', true, ['BLOCK_JOB_ERROR action=report device=j operation=read', 'j:aborting', completed('j', ' error=Input/output error'), 'j:concluded']],
] as const) {
  test(`a read error with on-error ${policy} (${errno}) sends ${expected[0]} and ends like QEMU's`, async () => {
    const { manager, log } = jobHarness();
    const job = new StepJob({ id: 'j', length: LEN, autoDismiss: false, fault: { offset: 2 * MiB, errno, once, onError: policy } });
    manager.add(job);
    startDrained(manager, job);
    await log.waitForStatus('j', 'concluded');
    assert.deepEqual(log.summary().slice(4), expected);
  });
}

for (const [policy, errno, ioStatus] of [
  ['stop', 'EIO', 'failed'],
  ['enospc', 'ENOSPC', 'nospace'],
] as const) {
  test(`a read error with on-error ${policy} (${errno}) pauses the job with io-status ${ioStatus}; job-resume retries and clears it`, async () => {
    const { manager, log } = jobHarness();
    const job = new StepJob({ id: 'j', length: LEN, fault: { offset: 2 * MiB, errno, once: true, onError: policy } });
    manager.add(job);
    startDrained(manager, job);
    await log.waitForStatus('j', 'paused', 2);
    const [info] = manager.queryBlockJobs();
    assert.deepEqual({ status: info?.status, paused: info?.paused, io: info?.['io-status'] }, { status: 'paused', paused: true, io: ioStatus });
    await manager.userResume(job);
    assert.equal(manager.queryBlockJobs()[0]?.['io-status'], 'ok');
    await log.waitForStatus('j', 'null');
    assert.deepEqual(log.summary().slice(4), ['BLOCK_JOB_ERROR action=stop device=j operation=read', 'j:paused', 'j:running', 'j:waiting', 'j:pending', completed('j'), 'j:concluded', 'j:null']);
  });
}

test('a job stopped by a persistent error stops again after each resume, and can be cancelled', async () => {
  const { manager, log } = jobHarness();
  const job = new StepJob({ id: 'j', length: LEN, fault: { offset: 2 * MiB, errno: 'EIO', once: false, onError: 'stop' } });
  manager.add(job);
  startDrained(manager, job);
  await log.waitForStatus('j', 'paused', 2);
  await manager.userResume(job);
  await log.waitForStatus('j', 'paused', 3);
  assert.equal(manager.queryBlockJobs()[0]?.['io-status'], 'failed');
  await manager.userCancel(job, true);
  await log.waitForStatus('j', 'null');
  const stop = 'BLOCK_JOB_ERROR action=stop device=j operation=read';
  assert.deepEqual(log.summary().slice(4), [stop, 'j:paused', 'j:running', stop, 'j:paused', 'j:running', 'j:aborting', `BLOCK_JOB_CANCELLED device=j len=${LEN} speed=0 type=backup`, 'j:concluded', 'j:null']);
});

test('pause requests nest: a drain and a user pause each hold the job until both are lifted', async () => {
  const { manager, log, timers } = jobHarness();
  const job = new StepJob({ id: 'j', length: LEN });
  manager.add(job, { speed: MiB });
  manager.start(job);
  await until(() => timers.waiting > 0, 'the rate-limit sleep');
  job.pause(); // a drain begins
  await log.waitForStatus('j', 'paused');
  await manager.userPause(job);
  job.resume(); // the drain ends: still user-paused
  await job.whenIdle();
  assert.equal(job.status, 'paused');
  assert.equal(manager.queryBlockJobs()[0]?.paused, true);
  job.pause(); // another drain
  await manager.userResume(job); // still drained
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(job.status, 'paused');
  job.resume();
  await log.waitForStatus('j', 'running', 2);
  assert.equal(manager.queryBlockJobs()[0]?.paused, false);
  assert.deepEqual(log.summary(), ['j:created', 'j:running', 'j:paused', 'j:running']);
  await manager.cancelAll();
});

test('add() refuses bad and duplicate ids and a negative speed with QEMU texts; the last after created → null', () => {
  const { manager, log } = jobHarness();
  assert.throws(() => manager.add(new StepJob({ id: '1a', length: LEN })), (e: unknown) => e instanceof JobError && e.reason === "Invalid job ID '1a'");
  assert.throws(() => manager.add(new StepJob({ id: '', length: LEN })), (e: unknown) => e instanceof JobError && e.reason === "Invalid job ID ''");
  manager.add(new StepJob({ id: 'a', length: LEN }));
  assert.throws(() => manager.add(new StepJob({ id: 'a', length: LEN })), (e: unknown) => e instanceof JobError && e.reason === "Job ID 'a' already in use");
  assert.throws(
    () => manager.add(new StepJob({ id: 'b', length: LEN }), { speed: -1 }),
    (e: unknown) => e instanceof JobError && e.reason === "Parameter 'speed' expects a non-negative value",
  );
  assert.deepEqual(log.summary(), ['a:created', 'b:created', 'b:null']);
  assert.deepEqual(
    manager.jobs.map((j) => j.id),
    ['a'],
  );
});

test('a job that never started and is cancelled goes created → aborting → concluded → null with no BLOCK_JOB event', async () => {
  const { manager, log } = jobHarness();
  const hooks: string[] = [];
  const job = new StepJob({ id: 'j', length: LEN, log: hooks, autoDismiss: false });
  manager.add(job);
  await manager.cancelSync(job);
  assert.deepEqual(log.summary(), ['j:created', 'j:aborting', 'j:concluded', 'j:null']);
  assert.deepEqual(hooks, ['abort:j', 'clean:j']);
});

test('a job that is not a block job sends only JOB_STATUS_CHANGE and is not in query-block-jobs', async () => {
  const { manager, log } = jobHarness();
  const job = new StepJob({ id: 'c', type: 'create', length: LEN, autoDismiss: false });
  manager.add(job);
  manager.start(job);
  await log.waitForStatus('c', 'concluded');
  assert.deepEqual(log.summary(), ['c:created', 'c:running', 'c:waiting', 'c:pending', 'c:concluded']);
  assert.deepEqual(manager.queryBlockJobs(), []);
  assert.equal(manager.queryJobs()[0]?.type, 'create');
});

test('a commit hook that throws is reported and the job still concludes', async () => {
  const { manager, log, hookErrors } = jobHarness();
  class FailingCommit extends StepJob {
    protected override commit(): void {
      throw new Error('boom');
    }
  }
  const job = new FailingCommit({ id: 'j', length: LEN });
  manager.add(job);
  manager.start(job);
  await log.waitForStatus('j', 'null');
  assert.deepEqual(hookErrors, ['commit:j']);
  assert.ok(log.summary().includes(completed('j')));
});

test('EventLog.summary() leaves out offsets and keeps every other member', () => {
  const log = new EventLog();
  log.emit('BLOCK_JOB_COMPLETED', { type: 'backup', device: 'j', len: 4, offset: 2, speed: 0, error: 'x' });
  assert.deepEqual(log.summary(), ['BLOCK_JOB_COMPLETED device=j error=x len=4 speed=0 type=backup']);
});
