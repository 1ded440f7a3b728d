// The job commands over QMP (in-process), with QEMU 7.2.22's replies, classes and texts.
import assert from 'node:assert/strict';
import test from 'node:test';
import { connectInProcess } from '../../qmp/client/in-process.js';
import type { QmpClient } from '../../qmp/client/qmp-client.js';
import { QmpError } from '../../qmp/protocol/errors.js';
import { QmpServer } from '../../qmp/server/qmp-server.js';
import type { Engine } from '../engine.js';
import { registerJobCommands, type QmpCommandRegistry } from './job-commands.js';
import { JobManager } from './job-manager.js';
import { FakeTimers } from './testing/fake-timers.js';
import { until } from './testing/harness.js';
import { StepJob } from './testing/step-job.js';

const MiB = 1024 * 1024;

async function served(): Promise<{ manager: JobManager; client: QmpClient; timers: FakeTimers; close: () => Promise<void> }> {
  const server = new QmpServer();
  const timers = new FakeTimers();
  const manager = new JobManager({ emit: (event, data) => server.emit(event, data), timers });
  registerJobCommands(server, manager);
  const client = await connectInProcess(server);
  return {
    manager,
    client,
    timers,
    close: async () => {
      await manager.cancelAll();
      await client.close();
      await server.close();
    },
  };
}

async function qmpError(p: Promise<unknown>): Promise<[string, string]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof QmpError) return [e.errorClass, e.desc];
    throw e;
  }
  throw new Error('the command succeeded');
}

test('query-jobs and query-block-jobs describe a running backup job member for member as QEMU does', async () => {
  const { manager, client, timers, close } = await served();
  try {
    const job = new StepJob({ id: 'j', length: 4 * MiB, autoDismiss: false });
    manager.add(job, { speed: MiB });
    manager.start(job);
    await until(() => timers.waiting > 0, 'the sleep');
    assert.deepEqual(await client.execute('query-jobs'), [{ id: 'j', type: 'backup', status: 'running', 'current-progress': MiB, 'total-progress': 4 * MiB }]);
    assert.deepEqual(await client.execute('query-block-jobs'), [
      {
        type: 'backup',
        device: 'j',
        len: 4 * MiB,
        offset: MiB,
        busy: false,
        paused: false,
        speed: MiB,
        'io-status': 'ok',
        ready: false,
        status: 'running',
        'auto-finalize': true,
        'auto-dismiss': false,
      },
    ]);
    const change = await client.waitForEvent('JOB_STATUS_CHANGE', (e) => e.data?.status === 'running');
    assert.deepEqual(change.data, { id: 'j', status: 'running' });
  } finally {
    await close();
  }
});

test('job-* commands answer "Job not found" and block-job-* commands DeviceNotActive for an unknown job', async () => {
  const { client, close } = await served();
  try {
    for (const command of ['job-pause', 'job-resume', 'job-cancel', 'job-complete', 'job-finalize', 'job-dismiss']) {
      assert.deepEqual(await qmpError(client.execute(command, { id: 'x' })), ['GenericError', 'Job not found'], command);
    }
    for (const [command, args] of [
      ['block-job-pause', { device: 'x' }],
      ['block-job-resume', { device: 'x' }],
      ['block-job-cancel', { device: 'x' }],
      ['block-job-complete', { device: 'x' }],
      ['block-job-set-speed', { device: 'x', speed: 1 }],
      ['block-job-finalize', { id: 'x' }],
      ['block-job-dismiss', { id: 'x' }],
    ] as const) {
      assert.deepEqual(await qmpError(client.execute(command, args)), ['DeviceNotActive', "Block job 'x' not found"], command);
    }
    assert.deepEqual(await qmpError(client.execute('job-pause', {})), ['GenericError', "Parameter 'id' is missing"]);
    assert.deepEqual(await qmpError(client.execute('block-job-set-speed', { device: 'x', speed: 'fast' })), ['GenericError', "Invalid parameter type for 'speed', expected: integer"]);
  } finally {
    await close();
  }
});

test('block-job-cancel refuses a paused job unless forced; job-cancel always forces', async () => {
  const { manager, client, timers, close } = await served();
  try {
    const job = new StepJob({ id: 'j', length: 4 * MiB, autoDismiss: false });
    manager.add(job, { speed: MiB });
    manager.start(job);
    await until(() => timers.waiting > 0, 'the sleep');
    await client.execute('block-job-pause', { device: 'j' });
    assert.deepEqual(await qmpError(client.execute('job-pause', { id: 'j' })), ['GenericError', 'Job is already paused']);
    assert.deepEqual(await qmpError(client.execute('block-job-cancel', { device: 'j' })), ['GenericError', "The block job for device 'j' is currently paused"]);
    assert.deepEqual(await qmpError(client.execute('block-job-set-speed', { device: 'j', speed: -1 })), ['GenericError', "Parameter 'speed' expects a non-negative value"]);
    await client.execute('block-job-cancel', { device: 'j', force: true });
    await client.waitForEvent('BLOCK_JOB_CANCELLED');
    await client.waitForEvent('JOB_STATUS_CHANGE', (e) => e.data?.status === 'concluded');
    assert.deepEqual(await qmpError(client.execute('block-job-cancel', { device: 'j' })), ['GenericError', "Job 'j' in state 'concluded' cannot accept command verb 'cancel'"]);
    assert.deepEqual(await client.execute('block-job-dismiss', { id: 'j' }), {});
    assert.deepEqual(await client.execute('query-block-jobs'), []);
  } finally {
    await close();
  }
});

test('block-job-* commands do not see jobs that are not block jobs; job-* commands do', async () => {
  const { manager, client, close } = await served();
  try {
    const job = new StepJob({ id: 'c', type: 'create', length: MiB, autoDismiss: false });
    manager.add(job);
    manager.start(job);
    await client.waitForEvent('JOB_STATUS_CHANGE', (e) => e.data?.status === 'concluded');
    assert.deepEqual(await client.execute('query-block-jobs'), []);
    assert.deepEqual(await qmpError(client.execute('block-job-dismiss', { id: 'c' })), ['DeviceNotActive', "Block job 'c' not found"]);
    assert.deepEqual(await client.execute('job-dismiss', { id: 'c' }), {});
    assert.deepEqual(await client.execute('query-jobs'), []);
  } finally {
    await close();
  }
});

// The engine registers commands with the same signature as QmpServer: both can take the job commands.
type EngineTakesJobCommands = Engine extends QmpCommandRegistry ? true : never;
const engineTakesJobCommands: EngineTakesJobCommands = true;
void engineTakesJobCommands;
