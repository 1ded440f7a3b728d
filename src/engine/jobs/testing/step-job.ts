/**
 * Test-only: a job that "copies" `length` bytes in `chunk`-sized steps without touching any
 * data, the way QEMU's backup loop is shaped (pause point, copy, progress, rate-limit sleep),
 * with an injectable read/write failure at one offset (like `blkdebug`), an optional ready
 * phase (like a mirror: ready, then `complete` or a soft cancel), gates to hold steps, and a
 * log of the hooks called.
 */
import { IoError } from '../../../errors.js';
import type { BlockdevOnError, JobContext } from '../job-context.js';
import type { JobType } from '../job-status.js';
import { Job, type JobOptions } from '../job.js';

/** Options of {@link StepJob}. */
export interface StepJobOptions extends Omit<JobOptions, 'type'> {
  type?: JobType;
  /** Bytes to copy. */
  length: number;
  /** Bytes per step. Default 1 MiB (QEMU's block-copy chunk for these tests). */
  chunk?: number;
  /** A failing step: the step that covers `offset` fails with `errno` (each time, or `once`). */
  fault?: { offset: number; errno: string; once: boolean; onError: BlockdevOnError; operation?: 'read' | 'write' };
  /** Become ready after the copy and wait for `complete` or a cancel, like a mirror. */
  mirror?: boolean;
  /** `prepare()` throws this. */
  prepareError?: Error;
  /** Hold each step until {@link StepJob.release} allows it. */
  gated?: boolean;
  /** Hook calls are appended here as `hook:id`. */
  log?: string[];
}

const MiB = 1024 * 1024;

/** See the module comment. */
export class StepJob extends Job {
  readonly #options: StepJobOptions;
  #faultFired = false;
  #completeAsked = false;
  #allowed = 0;
  #onAllowed: (() => void) | undefined;
  /** Steps copied so far. */
  steps = 0;

  constructor(options: StepJobOptions) {
    super({ ...options, type: options.type ?? 'backup' });
    this.#options = options;
  }

  /** Lets `n` more steps run (gated jobs). */
  release(n = 1): void {
    this.#allowed += n;
    const wake = this.#onAllowed;
    this.#onAllowed = undefined;
    wake?.();
  }

  protected async run(ctx: JobContext): Promise<void> {
    const { length, chunk = MiB, fault } = this.#options;
    ctx.progressSetRemaining(length);
    let offset = 0;
    while (offset < length) {
      await ctx.pausePoint();
      if (ctx.cancelled) return;
      await this.#gate();
      const n = Math.min(chunk, length - offset);
      if (fault !== undefined && fault.offset >= offset && fault.offset < offset + n && !(fault.once && this.#faultFired)) {
        this.#faultFired = true;
        const action = ctx.errorAction(fault.onError, (fault.operation ?? 'read') === 'read', fault.errno);
        if (action === 'report') throw new IoError(`copy step at ${offset}`, 'injected failure', fault.errno);
        await ctx.sleep(0); // retry this step (after the pause point, when stopped)
        continue;
      }
      offset += n;
      this.steps++;
      ctx.progressUpdate(n);
      await ctx.sleepForRate(n);
    }
    if (this.#options.mirror !== true) return;
    ctx.transitionToReady();
    while (!this.#completeAsked && !ctx.cancelRequested) await ctx.yield();
  }

  protected override prepare(): void {
    this.#log('prepare');
    if (this.#options.prepareError !== undefined) throw this.#options.prepareError;
  }

  protected override commit(): void {
    this.#log('commit');
  }

  protected override abort(): void {
    this.#log('abort');
  }

  protected override clean(): void {
    this.#log('clean');
  }

  protected override complete(): void {
    if (this.#options.mirror !== true) throw new Error('unreachable: complete() on a job that is never ready');
    this.#completeAsked = true;
    this.enter();
  }

  /** A mirror in ready state cancels softly unless forced (QEMU's `mirror_cancel`). */
  protected override onCancel(force: boolean): boolean {
    return this.#options.mirror === true ? force || (this.status !== 'ready' && this.status !== 'standby') : true;
  }

  #gate(): Promise<void> | void {
    if (this.#options.gated !== true) return;
    if (this.#allowed > 0) {
      this.#allowed--;
      return;
    }
    return new Promise<void>((resolve) => (this.#onAllowed = resolve)).then(() => this.#gate());
  }

  #log(hook: string): void {
    this.#options.log?.push(`${hook}:${this.id}`);
  }
}
