/**
 * The one interface that every disk in bitback implements: memory and raw-file devices, qcow2
 * images, the NBD client, and every filter that wraps one of them. The NBD server serves any
 * `BlockDevice`; the engine's node graph is made of them.
 *
 * ## Units and alignment
 * All offsets and lengths are in bytes, as JavaScript numbers (exact up to 2^53, far beyond any
 * disk). Every device accepts I/O at any byte offset and length (no alignment is required of
 * callers); `blockSize.minimum` only says below which granularity a device has to do a
 * read-modify-write, and `blockSize.preferred` which request size is efficient.
 *
 * A request must lie within `[0, size]`: `offset >= 0`, `length >= 0`, `offset + length <= size`.
 * Otherwise the call rejects with an `OutOfRangeError`; nothing is read or written. A request of
 * length 0 is valid and does nothing.
 *
 * ## Buffer ownership
 * - `read` returns a buffer that the caller owns from then on; the device keeps no reference.
 * - `write` borrows `data` until its promise settles; the caller must not change it meanwhile and
 *   may reuse it afterwards. The device copies what it needs to keep.
 *
 * ## Concurrency
 * Any number of calls may be in flight at once, overlapping or not. Each call is atomic with
 * respect to the others only in this sense: once a write's promise has resolved, every read
 * *started* afterwards sees its data. Overlapping writes in flight at the same time may land in
 * either order (as on real disks and NBD).
 *
 * ## Errors
 * Failures reject with a `BitbackError` (usually `IoError` with an errno, `ReadOnlyError`,
 * `OutOfRangeError`, `NotSupportedError`, `ClosedError`). A device never throws synchronously.
 */
export interface BlockDevice {
  /** Virtual size of the disk in bytes. */
  readonly size: number;
  /** What this device can do; constant for the device's life. */
  readonly capabilities: BlockCapabilities;
  /** Granularities of I/O (bytes, powers of two). */
  readonly blockSize: BlockSizeConstraints;

  /** Reads `length` bytes at `offset`. The returned buffer belongs to the caller. */
  read(offset: number, length: number): Promise<Uint8Array>;

  /**
   * Writes `data` at `offset`. With `fua`, the data is durable when the promise resolves
   * (as if followed by `flush`). Rejects with `ReadOnlyError` on a read-only device.
   */
  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void>;

  /**
   * Makes `length` bytes at `offset` read as zero.
   * - `mayTrim`: the device may deallocate the range instead of writing zeroes (it must still read
   *   back as zero). Without it, the range stays allocated (NBD `NO_HOLE` is the inverse flag).
   * - `fast`: fail with `NotSupportedError` instead of falling back to writing zero buffers when the
   *   device cannot zero the range cheaply (NBD `FAST_ZERO`). Nothing is changed in that case.
   */
  writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void>;

  /**
   * Tells the device that the range is no longer needed. Afterwards the range reads either as
   * its old data or as zeroes (devices document which; `capabilities.trimZeroes` says zeroes are
   * guaranteed). A device that cannot trim treats this as a successful no-op.
   */
  trim(offset: number, length: number, options?: WriteOptions): Promise<void>;

  /** Makes every write that has completed so far durable. */
  flush(): Promise<void>;

  /**
   * Describes the allocation of the range `[offset, offset + length)`.
   *
   * Returns a non-empty list of contiguous, non-empty extents in ascending order, the first
   * starting at `offset`. The list may end before `offset + length` (the caller asks again from
   * where it ends) but never extends past `offset + length`. `length` must be > 0.
   * Flags are those of NBD `base:allocation`: `HOLE` (not allocated) and `ZERO` (reads as zero).
   * A device with no allocation knowledge reports the whole range as data (flags 0).
   */
  blockStatus(offset: number, length: number): Promise<BlockExtent[]>;

  /**
   * Releases the device (files, sockets). Waits for requests in flight to settle. Further calls
   * reject with `ClosedError`. Calling `close` twice is harmless.
   */
  close(): Promise<void>;
}

/** Options of `write` and `trim`. */
export interface WriteOptions {
  /** Force unit access: durable when the call resolves. */
  fua?: boolean;
}

/** Options of `writeZeroes`. */
export interface WriteZeroesOptions extends WriteOptions {
  /** The device may deallocate the range (it must still read as zero). Default false. */
  mayTrim?: boolean;
  /** Fail with `NotSupportedError` rather than write zero buffers. Default false. */
  fast?: boolean;
}

/** What a device can do. Filters derive theirs from the device they wrap. */
export interface BlockCapabilities {
  /** Writes, zero-writes and trims are refused. */
  readonly readOnly: boolean;
  /** `flush` does something (false: data is never cached, or durability is not offered). */
  readonly canFlush: boolean;
  /** `write({ fua })` is honoured natively (otherwise it is emulated with a flush). */
  readonly canFua: boolean;
  /** `trim` can deallocate. */
  readonly canTrim: boolean;
  /** A trimmed range is guaranteed to read as zero afterwards. */
  readonly trimZeroes: boolean;
  /** `writeZeroes({ fast: true })` can succeed (cheap zeroing exists). */
  readonly canFastZero: boolean;
  /** `blockStatus` reports real allocation (false: everything is reported as data). */
  readonly canBlockStatus: boolean;
  /**
   * Several independent users (NBD connections) may use the device at once and each sees the
   * others' flushed writes: the NBD server may advertise `CAN_MULTI_CONN`.
   */
  readonly multiConn: boolean;
}

/** I/O granularities of a device, in bytes (each a power of two). */
export interface BlockSizeConstraints {
  /** Smallest unit the device writes without a read-modify-write (1 when any byte is fine). */
  readonly minimum: number;
  /** Efficient request size and alignment. */
  readonly preferred: number;
  /** Largest single request the device handles in one go; callers may still pass more. */
  readonly maximum: number;
}

/** Extent flags: the same bits as NBD `base:allocation` (proto.md, "base:allocation"). */
export const ExtentFlags = {
  /** The range is not allocated (a hole). */
  HOLE: 1,
  /** The range reads as zeroes. */
  ZERO: 2,
} as const;

/** One run of bytes with the same allocation state. */
export interface BlockExtent {
  /** Start, in bytes. */
  offset: number;
  /** Length, in bytes; always > 0. */
  length: number;
  /** OR of {@link ExtentFlags}; 0 means allocated data. */
  flags: number;
  /**
   * For devices with a backing chain: 0 when no layer has the range allocated, 1 when the top
   * layer has, 2 for its backing file, and so on (QEMU's `qemu:allocation-depth`). Undefined when
   * the device has no layers.
   */
  depth?: number;
}
