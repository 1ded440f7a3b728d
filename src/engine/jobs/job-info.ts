/**
 * What QMP shows of a job, member for member as QEMU 7.2 (qapi/job.json `JobInfo`,
 * qapi/block-core.json `BlockJobInfo` and the `BLOCK_JOB_*` events; job-qmp.c
 * `job_query_single`, blockjob.c `block_job_query` and its event notifiers).
 */
import type { JsonObject } from '../../qmp/protocol/messages.js';
import type { BlockErrorAction, JobIoStatus } from './job-context.js';
import type { JobCore } from './job-core.js';
import type { JobStatus, JobType } from './job-status.js';

/** `JobInfo`, an element of `query-jobs`. */
export interface JobInfo extends JsonObject {
  id: string;
  type: JobType;
  status: JobStatus;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

/** `BlockJobInfo`, an element of `query-block-jobs`. */
export interface BlockJobInfo extends JsonObject {
  type: string;
  device: string;
  len: number;
  offset: number;
  busy: boolean;
  paused: boolean;
  speed: number;
  'io-status': JobIoStatus;
  ready: boolean;
  status: JobStatus;
  'auto-finalize': boolean;
  'auto-dismiss': boolean;
  error?: string;
}

/** The `query-jobs` entry of a job. */
export function jobInfo(core: JobCore): JobInfo {
  const info: JobInfo = {
    id: core.id,
    type: core.type,
    status: core.status,
    'current-progress': core.progressCurrent,
    'total-progress': core.progressTotal,
  };
  if (core.failure !== undefined) info.error = core.failure;
  return info;
}

/** The `query-block-jobs` entry of a block job (`paused` is "a pause is requested"). */
export function blockJobInfo(core: JobCore): BlockJobInfo {
  const info: BlockJobInfo = {
    type: core.type,
    device: core.id,
    len: core.progressTotal,
    offset: core.progressCurrent,
    busy: core.busy,
    paused: core.pauseCount > 0,
    speed: core.speed,
    'io-status': core.ioStatus,
    ready: core.isReady,
    status: core.status,
    'auto-finalize': core.autoFinalize,
    'auto-dismiss': core.autoDismiss,
  };
  if (core.failure !== undefined) info.error = core.failure;
  return info;
}

/** `JOB_STATUS_CHANGE` data. */
export function statusChangeEvent(core: JobCore): JsonObject {
  return { id: core.id, status: core.status };
}

/** `BLOCK_JOB_READY` and `BLOCK_JOB_CANCELLED` data: type, device, len, offset, speed. */
export function progressEvent(core: JobCore): JsonObject {
  return { type: core.type, device: core.id, len: core.progressTotal, offset: core.progressCurrent, speed: core.speed };
}

/** `BLOCK_JOB_COMPLETED` data: as {@link progressEvent}, plus `error` when the job failed. */
export function completedEvent(core: JobCore): JsonObject {
  const data = progressEvent(core);
  if (core.failure !== undefined) data.error = core.failure;
  return data;
}

/** `BLOCK_JOB_PENDING` data. */
export function pendingEvent(core: JobCore): JsonObject {
  return { type: core.type, id: core.id };
}

/** `BLOCK_JOB_ERROR` data. */
export function errorEvent(core: JobCore, operation: 'read' | 'write', action: BlockErrorAction): JsonObject {
  return { device: core.id, operation, action };
}
