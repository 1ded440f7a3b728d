/**
 * A sparse block device held in memory, for tests and for the engine's scratch nodes.
 *
 * The disk is cut into 64 KiB chunks. A chunk is in one of three states:
 * - absent: never written, or trimmed; reads as zero and is reported as `HOLE | ZERO`;
 * - allocated zero: provisioned (written with zeroes, or zeroed without `mayTrim`) but holding
 *   no memory; reads as zero and is reported as `ZERO`;
 * - data: a buffer of its own, allocated on the first write of non-zero bytes; reported as data.
 */
import { ClosedError, InvalidArgumentError, ReadOnlyError } from '../errors.js';
import {
  ExtentFlags,
  type BlockCapabilities,
  type BlockDevice,
  type BlockExtent,
  type BlockSizeConstraints,
  type WriteOptions,
  type WriteZeroesOptions,
} from './block-device.js';
import { DEFAULT_MAXIMUM_REQUEST, resolveBlockSize } from './block-size.js';
import { isZero } from './is-zero.js';
import { checkRange } from './range.js';

/** Size of the unit of allocation, in bytes. */
export const MEMORY_CHUNK_SIZE = 64 * 1024;

/** Marks a chunk that is provisioned but reads as zero and holds no buffer. */
const ALLOCATED_ZERO = 'allocated-zero';
type Chunk = Uint8Array | typeof ALLOCATED_ZERO;

/** Options of {@link MemoryBlockDevice}. */
export interface MemoryBlockDeviceOptions {
  /** Refuse writes, zero-writes and trims with `ReadOnlyError`. Default false. */
  readOnly?: boolean;
  /**
   * I/O granularities to advertise (powers of two). Default: minimum 1, preferred 4 KiB,
   * maximum 32 MiB. They are advisory: the device accepts any offset and length.
   */
  blockSize?: Partial<BlockSizeConstraints>;
}

const DEFAULT_BLOCK_SIZE: BlockSizeConstraints = {
  minimum: 1,
  preferred: 4096,
  maximum: DEFAULT_MAXIMUM_REQUEST,
};

/**
 * A sparse in-memory `BlockDevice`, zero-filled when created.
 *
 * Capabilities: flush and FUA are accepted and trivially honoured (the data lives as long as the
 * device), trim deallocates whole chunks and zeroes the partial ones (`trimZeroes`), fast zeroing
 * always succeeds, block status reports real allocation, and multi-conn is safe. `writeZeroes`
 * without `mayTrim` keeps its range provisioned: it records each chunk of the range (a map entry,
 * no buffer), so zeroing a huge range that way costs memory in proportion. A read-only
 * device can do none of the writing operations. Every request is done synchronously before its
 * promise settles, so requests in flight never interleave.
 */
export class MemoryBlockDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly #chunks = new Map<number, Chunk>();
  #closed = false;

  /**
   * @param size - virtual size in bytes (a non-negative safe integer; any value, not only
   *   multiples of a block size)
   * @throws InvalidArgumentError for a bad size or block size
   */
  constructor(size: number, options: MemoryBlockDeviceOptions = {}) {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new InvalidArgumentError('create memory block device', `size ${size} is not a non-negative integer`);
    }
    this.size = size;
    this.blockSize = resolveBlockSize('create memory block device', DEFAULT_BLOCK_SIZE, options.blockSize);
    const writable = options.readOnly !== true;
    this.capabilities = {
      readOnly: !writable,
      canFlush: true,
      canFua: true,
      canTrim: writable,
      trimZeroes: writable,
      canFastZero: writable,
      canBlockStatus: true,
      multiConn: true,
    };
  }

  /**
   * Creates a device of `data.length` bytes holding a copy of `data` (the caller keeps `data`).
   * All-zero chunks of `data` stay unallocated.
   */
  static fromBytes(data: Uint8Array, options: MemoryBlockDeviceOptions = {}): MemoryBlockDevice {
    const device = new MemoryBlockDevice(data.length, options);
    device.#writeChunks(0, data);
    return device;
  }

  /** Bytes of memory held by data chunks (for tests and diagnostics). */
  get allocatedBytes(): number {
    let total = 0;
    for (const chunk of this.#chunks.values()) if (chunk !== ALLOCATED_ZERO) total += chunk.length;
    return total;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    this.#check('read', offset, length);
    const result = new Uint8Array(length);
    const end = offset + length;
    for (let index = chunkIndex(offset); index * MEMORY_CHUNK_SIZE < end; index++) {
      const chunk = this.#chunks.get(index);
      if (chunk === undefined || chunk === ALLOCATED_ZERO) continue;
      const base = index * MEMORY_CHUNK_SIZE;
      const from = Math.max(offset, base);
      const to = Math.min(end, base + chunk.length);
      result.set(chunk.subarray(from - base, to - base), from - offset);
    }
    return result;
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    if (!(data instanceof Uint8Array)) {
      throw new InvalidArgumentError('write to memory block device', 'data is not a Uint8Array');
    }
    this.#checkWrite('write', offset, data.length);
    this.#writeChunks(offset, data);
  }

  async writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    this.#checkWrite('write zeroes', offset, length);
    this.#zero(offset, offset + length, options.mayTrim === true);
  }

  async trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.#checkWrite('trim', offset, length);
    this.#zero(offset, offset + length, true);
  }

  async flush(): Promise<void> {
    this.#checkOpen('flush');
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    this.#check('get block status', offset, length);
    if (length === 0) {
      throw new InvalidArgumentError(`get block status at ${offset} of memory block device`, 'length is 0');
    }
    const end = offset + length;
    const extents: BlockExtent[] = [];
    const add = (from: number, to: number, flags: number): void => {
      const last = extents[extents.length - 1];
      if (last !== undefined && last.flags === flags) last.length += to - from;
      else extents.push({ offset: from, length: to - from, flags });
    };
    const first = chunkIndex(offset);
    const last = chunkIndex(end - 1);
    if (last - first + 1 <= this.#chunks.size) {
      for (let index = first; index <= last; index++) {
        const base = index * MEMORY_CHUNK_SIZE;
        add(Math.max(offset, base), Math.min(end, base + MEMORY_CHUNK_SIZE), flagsOf(this.#chunks.get(index)));
      }
      return extents;
    }
    // A long range of a sparse device: visit only the chunks that exist.
    const present = [...this.#chunks.keys()].filter((i) => i >= first && i <= last).sort((a, b) => a - b);
    let position = offset;
    for (const index of present) {
      const base = index * MEMORY_CHUNK_SIZE;
      const from = Math.max(offset, base);
      if (from > position) add(position, from, flagsOf(undefined));
      position = Math.min(end, base + MEMORY_CHUNK_SIZE);
      add(from, position, flagsOf(this.#chunks.get(index)));
    }
    if (position < end) add(position, end, flagsOf(undefined));
    return extents;
  }

  /** Drops the data. Later calls reject with `ClosedError`; a second call does nothing. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#chunks.clear();
  }

  #checkOpen(verb: string): void {
    if (this.#closed) throw new ClosedError(`${verb} memory block device`);
  }

  #check(verb: string, offset: number, length: number): void {
    const action = `${verb} ${length} bytes at ${offset} of memory block device`;
    if (this.#closed) throw new ClosedError(action);
    checkRange(action, this.size, offset, length);
  }

  #checkWrite(verb: string, offset: number, length: number): void {
    this.#check(verb, offset, length);
    if (this.capabilities.readOnly) {
      throw new ReadOnlyError(`${verb} ${length} bytes at ${offset} of memory block device`, 'it is read-only');
    }
  }

  /** Copies `data` in at `offset`; zero bytes written to unallocated chunks take no memory. */
  #writeChunks(offset: number, data: Uint8Array): void {
    const end = offset + data.length;
    for (let index = chunkIndex(offset); index * MEMORY_CHUNK_SIZE < end; index++) {
      const base = index * MEMORY_CHUNK_SIZE;
      const from = Math.max(offset, base);
      const piece = data.subarray(from - offset, Math.min(end, base + MEMORY_CHUNK_SIZE) - offset);
      let chunk = this.#chunks.get(index);
      if (chunk === undefined || chunk === ALLOCATED_ZERO) {
        if (isZero(piece)) {
          this.#chunks.set(index, ALLOCATED_ZERO);
          continue;
        }
        chunk = new Uint8Array(Math.min(MEMORY_CHUNK_SIZE, this.size - base));
        this.#chunks.set(index, chunk);
      }
      chunk.set(piece, from - base);
    }
  }

  /**
   * Makes `[offset, end)` read as zero. Whole chunks inside the range are deallocated when
   * `deallocate` is set and marked allocated-zero otherwise; partial chunks are zeroed in place
   * (and released when that leaves them all zero).
   */
  #zero(offset: number, end: number, deallocate: boolean): void {
    if (offset === end) return;
    const firstWhole = Math.ceil(offset / MEMORY_CHUNK_SIZE);
    // The last chunk may be shorter than MEMORY_CHUNK_SIZE: it is whole when the range reaches the end.
    const endWhole = end === this.size ? chunkIndex(end - 1) + 1 : Math.floor(end / MEMORY_CHUNK_SIZE);
    if (firstWhole >= endWhole) {
      this.#zeroPartial(chunkIndex(offset), offset, end, deallocate);
      if (chunkIndex(end - 1) !== chunkIndex(offset)) this.#zeroPartial(chunkIndex(end - 1), offset, end, deallocate);
      return;
    }
    if (offset < firstWhole * MEMORY_CHUNK_SIZE) this.#zeroPartial(firstWhole - 1, offset, end, deallocate);
    if (end > endWhole * MEMORY_CHUNK_SIZE) this.#zeroPartial(endWhole, offset, end, deallocate);
    if (!deallocate) {
      for (let index = firstWhole; index < endWhole; index++) this.#chunks.set(index, ALLOCATED_ZERO);
    } else if (endWhole - firstWhole > this.#chunks.size) {
      for (const index of this.#chunks.keys()) if (index >= firstWhole && index < endWhole) this.#chunks.delete(index);
    } else {
      for (let index = firstWhole; index < endWhole; index++) this.#chunks.delete(index);
    }
  }

  /** Zeroes the part of chunk `index` that lies in `[offset, end)`. */
  #zeroPartial(index: number, offset: number, end: number, deallocate: boolean): void {
    const chunk = this.#chunks.get(index);
    if (chunk === ALLOCATED_ZERO) return;
    if (chunk === undefined) {
      // Reads as zero already; provisioning without mayTrim means the chunk becomes allocated.
      if (!deallocate) this.#chunks.set(index, ALLOCATED_ZERO);
      return;
    }
    const base = index * MEMORY_CHUNK_SIZE;
    chunk.fill(0, Math.max(offset, base) - base, Math.min(end, base + chunk.length) - base);
    if (isZero(chunk)) {
      if (deallocate) this.#chunks.delete(index);
      else this.#chunks.set(index, ALLOCATED_ZERO);
    }
  }
}

function chunkIndex(offset: number): number {
  return Math.floor(offset / MEMORY_CHUNK_SIZE);
}

function flagsOf(chunk: Chunk | undefined): number {
  if (chunk === undefined) return ExtentFlags.HOLE | ExtentFlags.ZERO;
  return chunk === ALLOCATED_ZERO ? ExtentFlags.ZERO : 0;
}
