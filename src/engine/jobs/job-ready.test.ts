// Jobs that reach `ready` (mirror-like), and rate limiting seen from a job. Expected sequences
// are QEMU 7.2.22's for a blockdev-mirror of a 4 MiB null-co node.
import assert from 'node:assert/strict';
import test from 'node:test';
import { jobHarness, until } from './testing/harness.js';
import { StepJob } from './testing/step-job.js';
import { BLOCK_JOB_SLICE_NS } from './rate-limit.js';

const MiB = 1024 * 1024;
const LEN = 4 * MiB;
const event = (name: string, id: string): string => `${name} device=${id} len=${LEN} speed=0 type=mirror`;

function mirror(id: string, options: { autoFinalize?: boolean; autoDismiss?: boolean } = {}): StepJob {
  return new StepJob({ id, type: 'mirror', length: LEN, mirror: true, ...options });
}

test('a ready job pauses into standby, accepts job-complete there, and completes once resumed', async () => {
  const { manager, log } = jobHarness();
  const job = mirror('m');
  manager.add(job);
  manager.start(job);
  await log.waitForEvent('BLOCK_JOB_READY', 'm');
  assert.deepEqual(
    manager.queryBlockJobs().map((i) => [i.status, i.ready, i.paused]),
    [['ready', true, false]],
  );
  await manager.userPause(job);
  await log.waitForStatus('m', 'standby');
  assert.deepEqual(
    manager.queryBlockJobs().map((i) => [i.status, i.ready, i.paused]),
    [['standby', true, true]],
  );
  await manager.userComplete(job);
  await manager.userResume(job);
  await log.waitForStatus('m', 'null');
  assert.deepEqual(log.summary(), [
    'm:created',
    'm:running',
    'm:ready',
    event('BLOCK_JOB_READY', 'm'),
    'm:standby',
    'm:ready',
    'm:waiting',
    'm:pending',
    event('BLOCK_JOB_COMPLETED', 'm'),
    'm:concluded',
    'm:null',
  ]);
});

test('block-job-cancel of a ready job is a soft cancel: it completes (BLOCK_JOB_COMPLETED, no error)', async () => {
  const { manager, log } = jobHarness();
  const job = mirror('m');
  manager.add(job);
  manager.start(job);
  await log.waitForEvent('BLOCK_JOB_READY', 'm');
  await manager.userCancel(job, false);
  await log.waitForStatus('m', 'null');
  assert.deepEqual(log.summary().slice(4), ['m:waiting', 'm:pending', event('BLOCK_JOB_COMPLETED', 'm'), 'm:concluded', 'm:null']);
});

test('a forced cancel of a ready job aborts it (BLOCK_JOB_CANCELLED)', async () => {
  const { manager, log } = jobHarness();
  const job = mirror('m', { autoFinalize: false, autoDismiss: false });
  manager.add(job);
  manager.start(job);
  await log.waitForEvent('BLOCK_JOB_READY', 'm');
  await manager.userCancel(job, true);
  await log.waitForStatus('m', 'concluded');
  assert.deepEqual(log.summary().slice(4), ['m:aborting', event('BLOCK_JOB_CANCELLED', 'm'), 'm:concluded']);
  assert.equal(manager.queryJobs()[0]?.error, 'Operation canceled');
});

test('job-complete is refused before ready and after a cancel request, with QEMU texts', async () => {
  const { manager, log } = jobHarness();
  const job = new StepJob({ id: 'm', type: 'mirror', length: LEN, mirror: true, gated: true, autoFinalize: false });
  manager.add(job);
  manager.start(job);
  await assert.rejects(manager.userComplete(job), { reason: "Job 'm' in state 'running' cannot accept command verb 'complete'" });
  job.release(4);
  await log.waitForEvent('BLOCK_JOB_READY', 'm');
  await manager.userComplete(job);
  await log.waitForEvent('BLOCK_JOB_PENDING', 'm');
  await assert.rejects(manager.userComplete(job), { reason: "Job 'm' in state 'pending' cannot accept command verb 'complete'" });
  await manager.finalize(job);
  assert.deepEqual(log.summary().slice(4), ['m:waiting', 'm:pending', 'BLOCK_JOB_PENDING id=m type=mirror', event('BLOCK_JOB_COMPLETED', 'm'), 'm:concluded', 'm:null']);
});

test('a job at 1 MiB/s asks to sleep once per chunk, in total exactly as long as its bytes take at that speed', async () => {
  const { manager, log, timers } = jobHarness();
  const chunk = 256 * 1024;
  const job = new StepJob({ id: 'j', length: MiB, chunk });
  manager.add(job, { speed: MiB });
  manager.start(job);
  for (let fired = 0; fired < 4; fired++) {
    await until(() => timers.waiting > 0, `sleep ${fired + 1}`);
    timers.fireNext();
  }
  await log.waitForStatus('j', 'null');
  const sleeps = timers.requested.filter((ns) => ns > 0);
  assert.equal(sleeps.length, 4);
  // The quota per 100 ms slice is 104857 bytes; the clock moved exactly to each slice end.
  assert.equal(
    sleeps.reduce((a, b) => a + b, 0),
    Math.trunc((MiB / 104857) * BLOCK_JOB_SLICE_NS),
  );
});

test('block-job-set-speed to a higher speed wakes a sleeping job; to a lower one does not', async () => {
  const { manager, log, timers } = jobHarness();
  const job = new StepJob({ id: 'j', length: 2 * MiB });
  manager.add(job, { speed: MiB });
  manager.start(job);
  await until(() => timers.waiting > 0, 'the first sleep');
  await manager.setSpeed(job, MiB / 2);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(timers.waiting, 1);
  assert.equal(job.progress.current, MiB);
  await manager.setSpeed(job, 0);
  await log.waitForStatus('j', 'null');
  assert.equal(job.steps, 2);
  await assert.rejects(manager.setSpeed(job, 1), { reason: "Job 'j' in state 'null' cannot accept command verb 'set-speed'" });
});
