/**
 * The error of a refused image lock, worded like QEMU's: `Failed to get "write" lock` /
 * `Failed to get shared "write" lock`, then `Is another process using the image [PATH]?`.
 */
import { BitbackError, type BitbackErrorOptions } from '../errors.js';

/** A process found holding a lock byte of an image (from /proc, see image-lock-holders.ts). */
export interface LockHolder {
  pid: number;
  /** The process name (/proc/PID/comm), when it could be read. */
  command?: string;
  /** True when the holder is this process (another open of the same image). */
  self: boolean;
}

/**
 * Another user of the image holds a permission this open does not share, or does not share a
 * permission this open needs. Code `BUSY` (exit status 6); not retryable as such (the holder
 * may run for months: retrying only helps once it has closed the image).
 *
 * - `shared` true: another user holds `permission`, which this open would not share; QEMU says
 *   `Failed to get shared "write" lock`.
 * - `shared` false: another user does not share `permission`, which this open needs; QEMU says
 *   `Failed to get "write" lock`.
 *
 * `holders` names the processes that hold the conflicting lock byte where they could be found
 * (the kernel does not report the holder of an open file description lock: they are looked up in
 * /proc/PID/fdinfo); empty when unknown.
 */
export class ImageLockedError extends BitbackError {
  /** The image file, as it was opened. */
  readonly path: string;
  /** QEMU's name of the permission in conflict: consistent read, write, write unchanged, resize. */
  readonly permission: string;
  readonly shared: boolean;
  readonly holders: readonly LockHolder[];

  constructor(action: string, path: string, permission: string, shared: boolean, holders: readonly LockHolder[] = [], options?: BitbackErrorOptions) {
    super('BUSY', action, lockedReason(path, permission, shared, holders), options);
    this.path = path;
    this.permission = permission;
    this.shared = shared;
    this.holders = holders;
  }

  /** The same error, for another action or with the holders named. */
  with(changes: { action?: string; holders?: readonly LockHolder[] }): ImageLockedError {
    return new ImageLockedError(changes.action ?? this.action, this.path, this.permission, this.shared, changes.holders ?? this.holders, { cause: this.cause });
  }
}

function lockedReason(path: string, permission: string, shared: boolean, holders: readonly LockHolder[]): string {
  const failed = `Failed to get ${shared ? 'shared ' : ''}"${permission}" lock`;
  const question = `Is another process using the image [${path}]?`;
  if (holders.length === 0) return `${failed}. ${question}`;
  const who = holders.map(describeHolder).join(', ');
  const what = shared ? `${holders.length === 1 ? 'holds' : 'hold'} "${permission}"` : `${holders.length === 1 ? 'does' : 'do'} not share "${permission}"`;
  return `${failed}: ${who} ${what}. ${question}`;
}

function describeHolder(holder: LockHolder): string {
  if (holder.self) return `another open in this process (pid ${holder.pid})`;
  return `process ${holder.pid}${holder.command === undefined ? '' : ` (${holder.command})`}`;
}
