/**
 * The `null-co` driver: a disk of `size` bytes (default 1 GiB) that discards writes and reads
 * as zeroes. QEMU 7.2 leaves read buffers untouched unless `read-zeroes` is set; bitback always
 * returns zeroes (its buffers are its own), and reports the range as data that reads as zero
 * with `read-zeroes`, as data otherwise, as QEMU does.
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints } from '../../block/block-device.js';
import { ExtentFlags } from '../../block/block-device.js';
import { checkRange } from '../../block/range.js';
import { RequestGate } from '../../block/request-gate.js';
import type { BlockDriver } from './driver.js';

const GiB = 1024 * 1024 * 1024;

/** The device of a null-co node. */
export class NullDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: BlockCapabilities = {
    readOnly: false,
    canFlush: false,
    canFua: false,
    canTrim: false,
    trimZeroes: false,
    canFastZero: true,
    canBlockStatus: true,
    multiConn: true,
  };
  readonly blockSize: BlockSizeConstraints = { minimum: 1, preferred: 4096, maximum: 1 << 30 };
  readonly #readZeroes: boolean;
  readonly #gate = new RequestGate();

  constructor(size: number, readZeroes: boolean) {
    this.size = size;
    this.#readZeroes = readZeroes;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#run('read', offset, length, async () => new Uint8Array(length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#run('write', offset, data.length, async () => undefined);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#run('write zeroes', offset, length, async () => undefined);
  }

  trim(offset: number, length: number): Promise<void> {
    return this.#run('trim', offset, length, async () => undefined);
  }

  flush(): Promise<void> {
    return this.#gate.run('flush null-co', async () => undefined);
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#run('block status', offset, length, async () => [{ offset, length, flags: this.#readZeroes ? ExtentFlags.ZERO : 0 }]);
  }

  close(): Promise<void> {
    return this.#gate.close();
  }

  #run<T>(verb: string, offset: number, length: number, body: () => Promise<T>): Promise<T> {
    const action = `${verb} null-co`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      return body();
    });
  }
}

export const nullCoDriver: BlockDriver = {
  name: 'null-co',
  async open(options) {
    const size = typeof options.size === 'number' ? options.size : GiB;
    const readZeroes = options['read-zeroes'] === true;
    return { device: new NullDevice(size, readZeroes), filename: readZeroes ? 'json:{"read-zeroes": true, "driver": "null-co"}' : 'null-co://' };
  },
};
