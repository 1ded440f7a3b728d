/**
 * The base of filters: a `BlockDevice` that wraps another one and passes every request through,
 * unless a subclass overrides the hook for it (as nbdkit filters call `next_ops`).
 */
import { InvalidArgumentError } from '../../errors.js';
import {
  type BlockCapabilities,
  type BlockDevice,
  type BlockExtent,
  type BlockSizeConstraints,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../block-device.js';
import { checkRange } from '../range.js';
import { RequestGate } from '../request-gate.js';

/** Options every filter accepts. */
export interface FilterOptions {
  /**
   * Whether `close()` of the filter also closes the inner device. Default true: a filter owns
   * the device it wraps. With false, `close()` only waits for the filter's own requests in
   * flight and makes the filter reject further calls; the inner device stays usable.
   */
  closeInner?: boolean;
}

/** What a subclass tells the base about the device it presents. */
export interface FilterShape {
  /** Short name for messages ("read-only filter"). */
  name: string;
  size: number;
  capabilities: BlockCapabilities;
  blockSize: BlockSizeConstraints;
}

/**
 * A pass-through filter. Each public method checks that the filter is open and that the range
 * lies within the filter's `size` (so subclasses see only valid requests), then calls the
 * protected hook of the same name, which by default forwards to `inner` unchanged.
 */
export abstract class BlockFilter implements BlockDevice {
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  /** The wrapped device. */
  protected readonly inner: BlockDevice;
  /** Short name for messages. */
  protected readonly name: string;
  readonly #gate = new RequestGate();
  readonly #closeInner: boolean;

  protected constructor(inner: BlockDevice, shape: FilterShape, options: FilterOptions = {}) {
    this.inner = inner;
    this.name = shape.name;
    this.size = shape.size;
    this.capabilities = shape.capabilities;
    this.blockSize = shape.blockSize;
    this.#closeInner = options.closeInner ?? true;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    const action = `read ${length} bytes at ${offset} of ${this.name}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      return this.doRead(action, offset, length);
    });
  }

  write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const action = `write ${data?.length} bytes at ${offset} of ${this.name}`;
    return this.#gate.run(action, async () => {
      if (!(data instanceof Uint8Array)) throw new InvalidArgumentError(action, 'data is not a Uint8Array');
      checkRange(action, this.size, offset, data.length);
      return this.doWrite(action, offset, data, options);
    });
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    const action = `write zeroes to ${length} bytes at ${offset} of ${this.name}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      return this.doWriteZeroes(action, offset, length, options);
    });
  }

  trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    const action = `trim ${length} bytes at ${offset} of ${this.name}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      return this.doTrim(action, offset, length, options);
    });
  }

  flush(): Promise<void> {
    const action = `flush ${this.name}`;
    return this.#gate.run(action, async () => this.doFlush(action));
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const action = `get block status of ${length} bytes at ${offset} of ${this.name}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) throw new InvalidArgumentError(action, 'length is 0');
      return this.doBlockStatus(action, offset, length);
    });
  }

  /**
   * Waits for this filter's requests in flight, then closes the inner device unless the filter
   * was created with `closeInner: false`. A second call does nothing more.
   */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      if (this.#closeInner) await this.inner.close();
    });
  }

  /** Hook of `read`; `action` names the request for error messages. The range is valid. */
  protected doRead(action: string, offset: number, length: number): Promise<Uint8Array> {
    return this.inner.read(offset, length);
  }

  /** Hook of `write`. The range is valid and `data` a Uint8Array. */
  protected doWrite(action: string, offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
    return this.inner.write(offset, data, options);
  }

  /** Hook of `writeZeroes`. The range is valid. */
  protected doWriteZeroes(action: string, offset: number, length: number, options: WriteZeroesOptions): Promise<void> {
    return this.inner.writeZeroes(offset, length, options);
  }

  /** Hook of `trim`. The range is valid. */
  protected doTrim(action: string, offset: number, length: number, options: WriteOptions): Promise<void> {
    return this.inner.trim(offset, length, options);
  }

  /** Hook of `flush`. */
  protected doFlush(action: string): Promise<void> {
    return this.inner.flush();
  }

  /** Hook of `blockStatus`. The range is valid and not empty. */
  protected doBlockStatus(action: string, offset: number, length: number): Promise<BlockExtent[]> {
    return this.inner.blockStatus(offset, length);
  }
}
