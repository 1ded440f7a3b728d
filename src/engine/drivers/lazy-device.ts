/**
 * A device opened at its first request, whose shape (size, capabilities, block sizes) is known
 * beforehand. Used for host files that a format node above reads through its own descriptor.
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { ClosedError } from '../../errors.js';

/** What a device looks like before it is opened. */
export interface DeviceShape {
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
}

/** See the module comment. */
export class LazyDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly #open: () => Promise<BlockDevice>;
  #device: Promise<BlockDevice> | undefined;
  #closed = false;

  constructor(shape: DeviceShape, open: () => Promise<BlockDevice>) {
    this.size = shape.size;
    this.capabilities = shape.capabilities;
    this.blockSize = shape.blockSize;
    this.#open = open;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return (await this.#get('read')).read(offset, length);
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return (await this.#get('write')).write(offset, data, options);
  }

  async writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    return (await this.#get('write zeroes')).writeZeroes(offset, length, options);
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return (await this.#get('trim')).trim(offset, length, options);
  }

  async flush(): Promise<void> {
    if (this.#device === undefined) return;
    return (await this.#get('flush')).flush();
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return (await this.#get('block status')).blockStatus(offset, length);
  }

  async close(): Promise<void> {
    this.#closed = true;
    const device = this.#device;
    if (device !== undefined) await (await device.catch(() => undefined))?.close();
  }

  #get(verb: string): Promise<BlockDevice> {
    if (this.#closed) return Promise.reject(new ClosedError(verb));
    this.#device ??= this.#open();
    return this.#device;
  }
}
