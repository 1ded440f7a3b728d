/**
 * Test-only: a device in memory whose requests are logged and can be held at will, so that a
 * test puts concurrent requests in a chosen order without timing.
 */
import type { BlockDevice, WriteOptions, WriteZeroesOptions } from '../../../block/block-device.js';
import { BlockFilter } from '../../../block/filters/filter.js';
import { MemoryBlockDevice } from '../../../block/memory-device.js';

/** The operations logged and holdable. */
export type ControlledOperation = 'read' | 'write' | 'writeZeroes' | 'trim' | 'blockStatus';

/** One logged request. */
export interface LoggedRequest {
  operation: ControlledOperation;
  offset: number;
  length: number;
}

/** A request held by {@link ControlledDevice.hold}. */
export interface HeldRequest extends LoggedRequest {
  /** Lets it go on. */
  release(): void;
  /** Makes it fail with `error`. */
  fail(error: unknown): void;
}

/** See the module comment. */
export class ControlledDevice extends BlockFilter {
  /** Every request that reached the device, in order (held ones when they arrived). */
  readonly log: LoggedRequest[] = [];
  readonly #holding = new Set<ControlledOperation>();
  readonly #held: HeldRequest[] = [];
  readonly #arrivals: Array<() => void> = [];

  constructor(inner: BlockDevice = new MemoryBlockDevice(16 * 1024 * 1024)) {
    super(inner, { name: 'controlled device', size: inner.size, capabilities: inner.capabilities, blockSize: inner.blockSize });
  }

  /** From now on, holds every request of `operation` until the test releases it. */
  hold(operation: ControlledOperation): void {
    this.#holding.add(operation);
  }

  /** Stops holding `operation` (requests already held stay held). */
  unhold(operation: ControlledOperation): void {
    this.#holding.delete(operation);
  }

  /** Resolves with the next held request (at once if one is waiting). */
  nextHeld(): Promise<HeldRequest> {
    const held = this.#held.shift();
    if (held !== undefined) return Promise.resolve(held);
    return new Promise((resolve) => this.#arrivals.push(() => resolve(this.#held.shift()!)));
  }

  /** The logged requests of `operation`. */
  requests(operation: ControlledOperation): LoggedRequest[] {
    return this.log.filter((r) => r.operation === operation);
  }

  protected override async doRead(_action: string, offset: number, length: number): Promise<Uint8Array> {
    await this.#gate('read', offset, length);
    return this.inner.read(offset, length);
  }

  protected override async doWrite(_action: string, offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
    const copy = data.slice();
    await this.#gate('write', offset, data.length);
    return this.inner.write(offset, copy, options);
  }

  protected override async doWriteZeroes(_action: string, offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    await this.#gate('writeZeroes', offset, length);
    return this.inner.writeZeroes(offset, length, options);
  }

  protected override async doTrim(_action: string, offset: number, length: number, options: WriteOptions): Promise<void> {
    await this.#gate('trim', offset, length);
    return this.inner.trim(offset, length, options);
  }

  protected override async doBlockStatus(_action: string, offset: number, length: number) {
    await this.#gate('blockStatus', offset, length);
    return this.inner.blockStatus(offset, length);
  }

  async #gate(operation: ControlledOperation, offset: number, length: number): Promise<void> {
    const request = { operation, offset, length };
    this.log.push(request);
    if (!this.#holding.has(operation)) return;
    await new Promise<void>((resolve, reject) => {
      this.#held.push({ ...request, release: resolve, fail: reject });
      this.#arrivals.shift()?.();
    });
  }
}
