/**
 * Test-only: a device whose calls can be held until the test releases them, so that tests of
 * requests in flight (out-of-order replies, draining on shutdown, flow control) are decided by
 * the test, never by timing.
 */
import {
  type BlockCapabilities,
  type BlockDevice,
  type BlockExtent,
  type BlockSizeConstraints,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../../block/block-device.js';

/** The methods that can be held. */
export type GatedOperation = 'read' | 'write' | 'writeZeroes' | 'trim' | 'flush' | 'blockStatus';

/** A call waiting for the test. */
export interface HeldCall {
  operation: GatedOperation;
  offset: number;
  length: number;
  release(): void;
}

/** Wraps `inner`; calls of held operations wait in {@link held} until released. */
export class GatedDevice implements BlockDevice {
  readonly #inner: BlockDevice;
  readonly #holding = new Set<GatedOperation>();
  readonly held: HeldCall[] = [];
  /** The most calls held at once so far. */
  maxHeld = 0;
  /** Calls that reached the inner device, by operation. */
  readonly started = { read: 0, write: 0, writeZeroes: 0, trim: 0, flush: 0, blockStatus: 0 };
  #watchers: Array<() => void> = [];

  constructor(inner: BlockDevice) {
    this.#inner = inner;
  }

  get size(): number {
    return this.#inner.size;
  }

  get capabilities(): BlockCapabilities {
    return this.#inner.capabilities;
  }

  get blockSize(): BlockSizeConstraints {
    return this.#inner.blockSize;
  }

  /** Holds later calls of these operations. */
  hold(...operations: GatedOperation[]): void {
    for (const o of operations) this.#holding.add(o);
  }

  /** Stops holding (calls already held stay held until released). */
  unhold(...operations: GatedOperation[]): void {
    for (const o of operations) this.#holding.delete(o);
  }

  /** Releases the held calls that `which` selects (all by default), in order. */
  release(which: (call: HeldCall) => boolean = () => true): number {
    const chosen = this.held.filter(which);
    for (const call of chosen) {
      this.held.splice(this.held.indexOf(call), 1);
      call.release();
    }
    return chosen.length;
  }

  /** Resolves once at least `count` calls are held. */
  async waitHeld(count: number): Promise<void> {
    while (this.held.length < count) await new Promise<void>((resolve) => this.#watchers.push(resolve));
  }

  async #gate(operation: GatedOperation, offset: number, length: number): Promise<void> {
    if (this.#holding.has(operation)) {
      await new Promise<void>((release) => {
        this.held.push({ operation, offset, length, release });
        this.maxHeld = Math.max(this.maxHeld, this.held.length);
        const watchers = this.#watchers;
        this.#watchers = [];
        for (const w of watchers) w();
      });
    }
    this.started[operation]++;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    await this.#gate('read', offset, length);
    return this.#inner.read(offset, length);
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    await this.#gate('write', offset, data.length);
    return this.#inner.write(offset, data, options);
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    await this.#gate('writeZeroes', offset, length);
    return this.#inner.writeZeroes(offset, length, options);
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    await this.#gate('trim', offset, length);
    return this.#inner.trim(offset, length, options);
  }

  async flush(): Promise<void> {
    await this.#gate('flush', 0, 0);
    return this.#inner.flush();
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    await this.#gate('blockStatus', offset, length);
    return this.#inner.blockStatus(offset, length);
  }

  close(): Promise<void> {
    return this.#inner.close();
  }
}
