// Every user verb on a job in every status a user can see, checked against QEMU 7.2's verb
// table and the extra checks of job.c (resume needs a user pause, which is checked first; a
// second pause is refused). Texts as QEMU 7.2.22 answers.
import assert from 'node:assert/strict';
import test from 'node:test';
import { JobError } from './job-errors.js';
import type { JobManager } from './job-manager.js';
import { JOB_VERBS, type JobStatus, type JobVerb } from './job-status.js';
import { jobHarness, until } from './testing/harness.js';
import { qemuAccepts } from './testing/qemu-tables.js';
import { StepJob } from './testing/step-job.js';

const MiB = 1024 * 1024;
const LEN = 4 * MiB;

interface Scene {
  manager: JobManager;
  job: StepJob;
  userPaused: boolean;
}

/** A job named `j` brought to `status` the way a user gets it there. */
async function jobIn(status: JobStatus): Promise<Scene> {
  const { manager, log, timers } = jobHarness();
  const mirror = status === 'ready' || status === 'standby';
  const job = new StepJob({
    id: 'j',
    type: mirror ? 'mirror' : 'backup',
    length: LEN,
    mirror,
    autoFinalize: status !== 'pending',
    autoDismiss: status !== 'concluded',
  });
  const txn = manager.createTxn();
  manager.add(job, { txn, speed: status === 'running' || status === 'paused' ? MiB : 0 });
  if (status === 'created') return { manager, job, userPaused: false };
  if (status === 'waiting') {
    const slow = new StepJob({ id: 'slow', length: LEN });
    manager.add(slow, { txn, speed: MiB });
    manager.start(slow);
  }
  manager.start(job);
  switch (status) {
    case 'running':
      await until(() => timers.waiting > 0, 'the sleep');
      break;
    case 'paused':
      await until(() => timers.waiting > 0, 'the sleep');
      await manager.userPause(job);
      await log.waitForStatus('j', 'paused');
      return { manager, job, userPaused: true };
    case 'ready':
      await log.waitForStatus('j', 'ready');
      break;
    case 'standby':
      await log.waitForStatus('j', 'ready');
      await manager.userPause(job);
      await log.waitForStatus('j', 'standby');
      return { manager, job, userPaused: true };
    case 'waiting':
      await log.waitForStatus('j', 'waiting');
      break;
    case 'pending':
      await log.waitForEvent('BLOCK_JOB_PENDING', 'j');
      break;
    case 'concluded':
      await log.waitForStatus('j', 'concluded');
      break;
    default:
      throw new Error(`no scene for ${status}`);
  }
  return { manager, job, userPaused: false };
}

function apply(manager: JobManager, job: StepJob, verb: JobVerb): Promise<void> {
  switch (verb) {
    case 'cancel':
      return manager.userCancel(job, true);
    case 'pause':
      return manager.userPause(job);
    case 'resume':
      return manager.userResume(job);
    case 'set-speed':
      return manager.setSpeed(job, 1024);
    case 'complete':
      return manager.userComplete(job);
    case 'dismiss':
      return manager.dismiss(job);
    case 'finalize':
      return manager.finalize(job);
    default: {
      const never: never = verb;
      throw new Error(`unreachable: verb ${String(never)}`);
    }
  }
}

/** What QEMU answers: undefined for success, else the error text. */
function qemuAnswer(verb: JobVerb, status: JobStatus, userPaused: boolean): string | undefined {
  if (verb === 'resume' && !userPaused) return "Can't resume a job that was not paused";
  if (!qemuAccepts(verb, status)) return `Job 'j' in state '${status}' cannot accept command verb '${verb}'`;
  if (verb === 'pause' && userPaused) return 'Job is already paused';
  return undefined;
}

const STATUSES: JobStatus[] = ['created', 'running', 'paused', 'ready', 'standby', 'waiting', 'pending', 'concluded'];

for (const status of STATUSES) {
  test(`every verb on a job in state ${status} is accepted or refused as QEMU 7.2 does`, async () => {
    for (const verb of JOB_VERBS) {
      const { manager, job, userPaused } = await jobIn(status);
      assert.equal(job.status, status);
      const expected = qemuAnswer(verb, status, userPaused);
      let got: string | undefined;
      try {
        await apply(manager, job, verb);
      } catch (e) {
        if (!(e instanceof JobError)) throw e;
        got = e.reason;
      }
      assert.equal(got, expected, `${verb} in ${status}`);
      if (expected !== undefined) assert.equal(job.status, status, `a refused ${verb} changes nothing`);
      await manager.cancelAll();
      assert.deepEqual(manager.jobs, []);
    }
  });
}
