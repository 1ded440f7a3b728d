/**
 * The QMP commands on jobs, with QEMU 7.2's arguments, replies, error classes and texts
 * (qapi/job.json, qapi/block-core.json; job-qmp.c, blockdev.c): `job-pause`, `job-resume`,
 * `job-cancel`, `job-complete`, `job-finalize`, `job-dismiss`, `query-jobs`, and the older
 * `block-job-*` family and `query-block-jobs`, which name a block job by `device` (its id).
 */
import { QmpError } from '../../qmp/protocol/errors.js';
import type { QmpHandler } from '../../qmp/server/dispatcher.js';
import type { QmpArgsOf, QmpArgsSchema } from '../../qmp/server/schema.js';
import { JOB_CORE } from './job-core.js';
import { JobError, JobText } from './job-errors.js';
import type { JobManager } from './job-manager.js';

/** Where commands are registered: a `QmpServer` or the `Engine`. */
export interface QmpCommandRegistry {
  register<const S extends QmpArgsSchema>(name: string, handler: QmpHandler<QmpArgsOf<S>>, schema: S): unknown;
}

/** The QMP error for a refused job command: QEMU's class and text. */
function toQmp(e: unknown): unknown {
  return e instanceof JobError ? new QmpError(e.errorClass, e.reason, { cause: e }) : e;
}

/** A handler whose job errors become QMP errors. */
function handler<A>(body: (args: A) => unknown): QmpHandler<A> {
  return async (args) => {
    try {
      return await body(args);
    } catch (e) {
      throw toQmp(e);
    }
  };
}

const byId = { id: 'str' } as const;
const byDevice = { device: 'str' } as const;

/** Registers the job commands on `registry`, acting on `manager`'s jobs. */
export function registerJobCommands(registry: QmpCommandRegistry, manager: JobManager): void {
  // qapi/job.json: find_job, then the job.c verb.
  registry.register('job-pause', handler((a: { id: string }) => manager.userPause(manager.findJob(a.id))), byId);
  registry.register('job-resume', handler((a: { id: string }) => manager.userResume(manager.findJob(a.id))), byId);
  registry.register('job-cancel', handler((a: { id: string }) => manager.userCancel(manager.findJob(a.id), true)), byId);
  registry.register('job-complete', handler((a: { id: string }) => manager.userComplete(manager.findJob(a.id))), byId);
  registry.register('job-finalize', handler((a: { id: string }) => manager.finalize(manager.findJob(a.id))), byId);
  registry.register('job-dismiss', handler((a: { id: string }) => manager.dismiss(manager.findJob(a.id))), byId);
  registry.register('query-jobs', () => manager.queryJobs(), {});

  // qapi/block-core.json: find_block_job (class DeviceNotActive), then the same verbs.
  registry.register(
    'block-job-cancel',
    handler((a: { device: string; force?: boolean }) => {
      const job = manager.findBlockJob(a.device);
      const force = a.force ?? false;
      if (job[JOB_CORE].userPaused && !force) throw new JobError('INVALID_ARGUMENT', `cancel job '${a.device}'`, JobText.cancelPaused(a.device));
      return manager.userCancel(job, force);
    }),
    { device: 'str', '*force': 'bool' },
  );
  registry.register('block-job-pause', handler((a: { device: string }) => manager.userPause(manager.findBlockJob(a.device))), byDevice);
  registry.register('block-job-resume', handler((a: { device: string }) => manager.userResume(manager.findBlockJob(a.device))), byDevice);
  registry.register('block-job-complete', handler((a: { device: string }) => manager.userComplete(manager.findBlockJob(a.device))), byDevice);
  registry.register(
    'block-job-set-speed',
    handler((a: { device: string; speed: number }) => manager.setSpeed(manager.findBlockJob(a.device), a.speed)),
    { device: 'str', speed: 'int' },
  );
  registry.register('block-job-finalize', handler((a: { id: string }) => manager.finalize(manager.findBlockJob(a.id))), byId);
  registry.register('block-job-dismiss', handler((a: { id: string }) => manager.dismiss(manager.findBlockJob(a.id))), byId);
  registry.register('query-block-jobs', () => manager.queryBlockJobs(), {});
}
