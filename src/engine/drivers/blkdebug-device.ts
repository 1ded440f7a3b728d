/**
 * The device of a `blkdebug` node: it passes every request to its `image` child, unless an
 * active rule fails it (see {@link BlkdebugRules}), and fires the events that QEMU 7.2's generic
 * block layer (block/io.c) fires on a node for the requests that reach it.
 *
 * In QEMU a request reaches blkdebug's driver functions only after the generic layer has shaped
 * it for the node's limits (`align`, `max-transfer`, `opt-write-zero`, ...), and every piece the
 * driver gets is checked against the rules on its own. This device does that shaping itself,
 * the same way, so that a `sector` or `once` rule fails the same piece as on QEMU:
 * - reads are widened to the alignment and cut into `max-transfer` pieces (zeroes past the end);
 * - writes not aligned are read-modify-written: `pwritev_rmw_head`/`pwritev_rmw_tail` fire
 *   before the padding is read and `pwritev_rmw_after_*` after; QEMU 7.2 ignores a failed
 *   padding read and writes its buffer anyway (uninitialized memory there; zeroes here);
 * - an aligned write fires `pwritev` (`pwritev_zero` for a zero-write), then the pieces are
 *   written, then `pwritev_done` fires (also after a failure);
 * - zero-writes are cut at the zero alignment; a piece below it, or one that fails with
 *   ENOTSUP, is written as zeroes (unless `fast`); discards are cut the same way, a piece below
 *   the alignment or one that fails with ENOTSUP is skipped (blkdebug-cuts.ts);
 * - a flush does nothing on a read-only node; `flush_to_os` then fires on the image (if it is a
 *   blkdebug node), and only when something was written since the last successful flush do
 *   `flush_to_disk` (on the image) and the flush rules take part.
 *
 * `read_aio`, `write_aio`, `flush_to_os` and `flush_to_disk` of the node itself come from a
 * parent format node ({@link fireBlkdebugEvent}).
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints, WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { checkRange } from '../../block/range.js';
import { RequestGate } from '../../block/request-gate.js';
import { BitbackError, InvalidArgumentError, IoError, NotSupportedError } from '../../errors.js';
import { Edge } from '../graph/edge.js';
import { alignDown, alignUp, cutDiscard, cutZeroWrite, type BlkdebugLimits } from './blkdebug-cuts.js';
import { errnoName, type BlkdebugEvent, type BlkdebugIoType, type BlkdebugRules } from './blkdebug-rules.js';

/** QEMU's largest read or write piece without `max-transfer`: INT_MAX (block/io.c). */
const INT_MAX = 0x7fffffff;

/** Fires `event` on the node behind `child` if it is a blkdebug node (QEMU's `BLKDBG_EVENT(child, ...)`); else nothing. */
export function fireBlkdebugEvent(child: BlockDevice, event: BlkdebugEvent): void {
  if (!(child instanceof Edge)) return;
  const device = child.node.device;
  if (device instanceof BlkdebugDevice) device.debugEvent(event);
}

/** The part of a write that QEMU pads with what it reads around it; see {@link BlkdebugDevice}. */
interface Padding {
  /** Aligned start of the padded range. */
  start: number;
  /** Bytes before the request in its first block. */
  head: number;
  /** Bytes after the request in its last block. */
  tail: number;
  /** Length of the padded range. */
  length: number;
}

/** See the module comment. */
export class BlkdebugDevice implements BlockDevice {
  readonly rules: BlkdebugRules;
  readonly limits: BlkdebugLimits;
  readonly #image: BlockDevice;
  readonly #name: string;
  readonly #readOnly: () => boolean;
  readonly #unmap: () => boolean;
  readonly #gate = new RequestGate();
  /** QEMU's `write_gen` / `flushed_gen`: a flush only reaches the rules when something was written since the last one. */
  #writeGen = 0;
  #flushedGen = 0;
  #flushQueue: Promise<void> = Promise.resolve();

  /**
   * @param image - the edge to the `image` child
   * @param node - the node's name, whether it is read-only and whether discards are passed down (`discard: unmap`), asked at each request
   */
  constructor(image: BlockDevice, rules: BlkdebugRules, limits: BlkdebugLimits, node: { name: string; readOnly: () => boolean; unmap: () => boolean }) {
    this.#image = image;
    this.rules = rules;
    this.limits = limits;
    this.#name = node.name;
    this.#readOnly = node.readOnly;
    this.#unmap = node.unmap;
  }

  get size(): number {
    return this.#image.size;
  }

  get capabilities(): BlockCapabilities {
    return this.#image.capabilities;
  }

  get blockSize(): BlockSizeConstraints {
    const inner = this.#image.blockSize;
    const minimum = Math.max(inner.minimum, this.limits.align);
    const preferred = Math.max(inner.preferred, minimum);
    return { minimum, preferred, maximum: Math.max(inner.maximum, preferred) };
  }

  /** Fires `event` on this node: the rules of that event take effect. */
  debugEvent(event: BlkdebugEvent): void {
    this.rules.event(event);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    const action = `read ${length} bytes at ${offset} of blkdebug node '${this.#name}'`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) return new Uint8Array(0);
      const align = this.limits.align;
      const start = alignDown(offset, align);
      const data = await this.#alignedRead(action, start, alignUp(offset + length, align) - start);
      return data.subarray(offset - start, offset - start + length);
    });
  }

  write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const action = `write ${data?.length} bytes at ${offset} of blkdebug node '${this.#name}'`;
    return this.#gate.run(action, async () => {
      if (!(data instanceof Uint8Array)) throw new InvalidArgumentError(action, 'data is not a Uint8Array');
      checkRange(action, this.size, offset, data.length);
      if (data.length === 0) return;
      try {
        const padding = this.#padding(offset, data.length);
        if (padding === undefined) return await this.#alignedWrite(action, offset, data.length, data, options);
        const buffer = await this.#readPadding(action, padding, false);
        buffer.set(data, padding.head);
        await this.#alignedWrite(action, padding.start, padding.length, buffer, options);
      } finally {
        this.#writeGen++;
      }
    });
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    const action = `write ${length} zero bytes at ${offset} of blkdebug node '${this.#name}'`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) return;
      const padding = this.#padding(offset, length);
      if (options.fast === true && (padding !== undefined || !this.#image.capabilities.canFastZero)) {
        throw new NotSupportedError(action, 'the range cannot be zeroed fast');
      }
      // QEMU passes "may unmap" down only from a node opened with discard=unmap.
      const zeroOptions: WriteZeroesOptions = { ...options, mayTrim: options.mayTrim === true && this.#unmap() };
      try {
        if (padding === undefined) await this.#alignedWrite(action, offset, length, undefined, zeroOptions);
        else await this.#paddedZeroes(action, offset, length, padding, zeroOptions);
      } finally {
        this.#writeGen++;
      }
    });
  }

  trim(offset: number, length: number): Promise<void> {
    const action = `discard ${length} bytes at ${offset} of blkdebug node '${this.#name}'`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) return;
      try {
        await this.#discard(action, offset, length);
      } finally {
        this.#writeGen++;
      }
    });
  }

  flush(): Promise<void> {
    const action = `flush blkdebug node '${this.#name}'`;
    return this.#gate.run(action, () => {
      // One flush at a time, as QEMU waits for the previous one (block/io.c `bdrv_co_flush`).
      const run = this.#flushQueue.then(() => this.#flushOnce(action));
      this.#flushQueue = run.catch(() => undefined);
      return run;
    });
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const action = `get block status of ${length} bytes at ${offset} of blkdebug node '${this.#name}'`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) throw new InvalidArgumentError(action, 'length is 0');
      const align = this.limits.align;
      const start = alignDown(offset, align);
      // A negative errno would hand QEMU's caller a nonsense status; here the request just goes on.
      await this.#check(action, 'block-status', start, alignUp(offset + length, align) - start);
      return this.#image.blockStatus(offset, length);
    });
  }

  /** Waits for the requests in flight; the image belongs to the graph and stays open. */
  close(): Promise<void> {
    return this.#gate.close();
  }

  async #flushOnce(action: string): Promise<void> {
    if (this.#readOnly()) return;
    const gen = this.#writeGen;
    fireBlkdebugEvent(this.#image, 'flush_to_os');
    if (this.#flushedGen !== gen) {
      fireBlkdebugEvent(this.#image, 'flush_to_disk');
      // blkdebug's own flush, then (as for every node) the flush of its children.
      if (!(await this.#check(action, 'flush', 0, 0))) await this.#image.flush();
    }
    await this.#image.flush();
    this.#flushedGen = gen;
  }

  /**
   * Checks the rules for one piece as blkdebug's driver function gets it. Throws the injected
   * error; resolves true when the piece must "succeed" without I/O (a negative errno).
   */
  async #check(action: string, ioType: BlkdebugIoType, offset: number, bytes: number): Promise<boolean> {
    const injection = this.rules.check(ioType, offset, bytes);
    if (injection === undefined) return false;
    // Without `immediately`, QEMU fails the request after yielding to the event loop once.
    if (!injection.immediately) await new Promise((resolve) => setImmediate(resolve));
    if (injection.errno < 0) return true;
    const name = errnoName(injection.errno);
    throw new IoError(action, `blkdebug injected error ${name} (errno ${injection.errno})`, name);
  }

  /** The padding of an unaligned request, or undefined when it is aligned. */
  #padding(offset: number, length: number): Padding | undefined {
    const align = this.limits.align;
    const head = offset % align;
    const tail = (align - ((offset + length) % align)) % align;
    if (head === 0 && tail === 0) return undefined;
    return { start: offset - head, head, tail, length: head + length + tail };
  }

  /** QEMU's `bdrv_aligned_preadv`: `[offset, offset + bytes)` (aligned) in `max-transfer` pieces, zeroes past the end. */
  async #alignedRead(action: string, offset: number, bytes: number): Promise<Uint8Array> {
    const maxTransfer = this.#maxTransfer();
    let maxBytes = alignUp(Math.max(0, this.size - offset), this.limits.align);
    const out = new Uint8Array(bytes);
    for (let done = 0; done < bytes && maxBytes > 0; ) {
      const num = Math.min(bytes - done, maxBytes, maxTransfer);
      out.set(await this.#driverRead(action, offset + done, num), done);
      maxBytes -= num;
      done += num;
    }
    return out;
  }

  /** blkdebug's read: the rules, then the image (zeroes past its end). */
  async #driverRead(action: string, offset: number, bytes: number): Promise<Uint8Array> {
    if (await this.#check(action, 'read', offset, bytes)) return new Uint8Array(bytes);
    const inside = this.#inside(offset, bytes);
    if (inside === bytes) return this.#image.read(offset, bytes);
    const out = new Uint8Array(bytes);
    if (inside > 0) out.set(await this.#image.read(offset, inside), 0);
    return out;
  }

  /**
   * QEMU's `bdrv_padding_rmw_read`: the padded range with the head and tail blocks read in
   * (one read when they fit in one or two adjacent blocks), the rest zero; with `zeroMiddle`
   * the request's own bytes are zero too. QEMU 7.2 ignores a failed read and writes its buffer
   * as it is: uninitialized memory where nothing was read (zeroes here), and, as the middle is
   * not zeroed then, the head block's old bytes where the request should have written zeroes.
   */
  async #readPadding(action: string, padding: Padding, zeroMiddle: boolean): Promise<Uint8Array> {
    const align = this.limits.align;
    const { start, head, tail, length } = padding;
    const bufferLength = length > align && head > 0 && tail > 0 ? 2 * align : align;
    const merged = length === bufferLength;
    const out = new Uint8Array(length);
    try {
      if (head > 0 || merged) {
        if (head > 0) this.rules.event('pwritev_rmw_head');
        if (merged && tail > 0) this.rules.event('pwritev_rmw_tail');
        const bytes = merged ? bufferLength : align;
        out.set(await this.#alignedRead(action, start, bytes), 0);
        if (head > 0) this.rules.event('pwritev_rmw_after_head');
        if (merged && tail > 0) this.rules.event('pwritev_rmw_after_tail');
      }
      if (tail > 0 && !merged) {
        this.rules.event('pwritev_rmw_tail');
        out.set(await this.#alignedRead(action, start + length - align, align), length - align);
        this.rules.event('pwritev_rmw_after_tail');
      }
    } catch (e) {
      if (!(e instanceof BitbackError)) throw e;
      // QEMU returns before zeroing the middle: what the head read brought in is written back.
      return out;
    }
    if (zeroMiddle) out.fill(0, head, length - tail);
    return out;
  }

  /**
   * QEMU's `bdrv_aligned_pwritev` for an aligned range: `data`, or zeroes when undefined,
   * between the `pwritev`/`pwritev_zero` and `pwritev_done` events.
   */
  async #alignedWrite(action: string, offset: number, bytes: number, data: Uint8Array | undefined, options: WriteZeroesOptions): Promise<void> {
    try {
      if (data === undefined) {
        this.rules.event('pwritev_zero');
        await this.#zeroes(action, offset, bytes, options);
      } else {
        this.rules.event('pwritev');
        const maxTransfer = this.#maxTransfer();
        for (let done = 0; done < bytes; ) {
          const num = Math.min(bytes - done, maxTransfer);
          await this.#driverWrite(action, offset + done, data.subarray(done, done + num), options);
          done += num;
        }
      }
    } finally {
      this.rules.event('pwritev_done');
    }
  }

  async #driverWrite(action: string, offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
    if (await this.#check(action, 'write', offset, data.length)) return;
    const inside = this.#inside(offset, data.length);
    if (inside > 0) await this.#image.write(offset, data.subarray(0, inside), options.fua === true ? { fua: true } : {});
  }

  /** QEMU's `bdrv_co_do_zero_pwritev`: the padded blocks as writes, the aligned middle as a zero-write. */
  async #paddedZeroes(action: string, offset: number, length: number, padding: Padding, options: WriteZeroesOptions): Promise<void> {
    const align = this.limits.align;
    const buffer = await this.#readPadding(action, padding, true);
    const dataOptions: WriteOptions = options.fua === true ? { fua: true } : {};
    const merged = padding.length === (padding.length > align && padding.head > 0 && padding.tail > 0 ? 2 * align : align);
    let at = offset;
    let bytes = length;
    if (padding.head > 0 || merged) {
      const headBytes = merged ? padding.length : align;
      await this.#alignedWrite(action, padding.start, headBytes, buffer.subarray(0, headBytes), dataOptions);
      if (merged) return;
      at += headBytes - padding.head;
      bytes -= headBytes - padding.head;
    }
    if (bytes >= align) {
      const middle = alignDown(bytes, align);
      await this.#alignedWrite(action, at, middle, undefined, options);
      at += middle;
      bytes -= middle;
    }
    if (bytes > 0) await this.#alignedWrite(action, at, align, buffer.subarray(padding.length - align), dataOptions);
  }

  /** QEMU's `bdrv_co_do_pwrite_zeroes` for an aligned range (see {@link cutZeroWrite}). */
  #zeroes(action: string, offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    return cutZeroWrite(offset, bytes, this.limits, options.fast === true, {
      zero: (at, num) => this.#driverZeroes(action, at, num, options),
      write: (at, num) => this.#driverWrite(action, at, new Uint8Array(num), options),
    });
  }

  async #driverZeroes(action: string, offset: number, bytes: number, options: WriteZeroesOptions): Promise<void> {
    if (bytes < Math.max(this.limits.align, this.limits.optWriteZero)) throw new NotSupportedError(action, 'blkdebug leaves zero-writes below its zero alignment to be written as data');
    if (await this.#check(action, 'write-zeroes', offset, bytes)) return;
    const inside = this.#inside(offset, bytes);
    if (inside > 0) await this.#image.writeZeroes(offset, inside, options);
  }

  /** QEMU's `bdrv_co_pdiscard` (see {@link cutDiscard}). */
  #discard(action: string, offset: number, bytes: number): Promise<void> {
    return cutDiscard(offset, bytes, this.limits, (at, num) => this.#driverDiscard(action, at, num));
  }

  async #driverDiscard(action: string, offset: number, bytes: number): Promise<void> {
    if (bytes < this.limits.align) throw new NotSupportedError(action, 'blkdebug ignores discards below its alignment');
    if (await this.#check(action, 'discard', offset, bytes)) return;
    const inside = this.#inside(offset, bytes);
    if (inside > 0) await this.#image.trim(offset, inside);
  }

  /**
   * How many bytes of a piece lie within the image: a piece widened to the alignment may end
   * past an image whose size is not a multiple of it; the image is never asked beyond its end.
   */
  #inside(offset: number, bytes: number): number {
    return Math.max(0, Math.min(bytes, this.#image.size - offset));
  }

  /** The largest read or write piece: `max-transfer` (else INT_MAX) down to the alignment. */
  #maxTransfer(): number {
    const limit = this.limits.maxTransfer === 0 ? INT_MAX : Math.min(this.limits.maxTransfer, INT_MAX);
    return alignDown(limit, this.limits.align);
  }
}
