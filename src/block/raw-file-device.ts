/**
 * A raw disk image: a regular file whose bytes are the disk's bytes.
 *
 * Node.js offers neither `fallocate` (hole punching, zero ranges) nor `SEEK_DATA`/`SEEK_HOLE`, so
 * this device cannot deallocate and knows allocation only in one case (a file with no blocks at
 * all). What it does instead: `trim` is a successful no-op, `writeZeroes` writes zero buffers, and
 * `blockStatus` detects zeroes by reading.
 */
import { createNewFile } from './new-file.js';
import { open, stat, unlink, type FileHandle } from 'node:fs/promises';
import { read as readFd, type Stats } from 'node:fs';
import {
  BitbackError,
  InvalidArgumentError,
  IoError,
  NotFoundError,
  NotSupportedError,
  ReadOnlyError,
  fromSystemError,
} from '../errors.js';
import {
  ExtentFlags,
  type BlockCapabilities,
  type BlockDevice,
  type BlockExtent,
  type BlockSizeConstraints,
  type WriteOptions,
  type WriteZeroesOptions,
} from './block-device.js';
import { DEFAULT_MAXIMUM_REQUEST, isPowerOfTwo } from './block-size.js';
import { isZero } from './is-zero.js';
import { checkRange } from './range.js';
import { lockImageFile, requestedPermissions, type ImageLock, type ImageLockOptions } from './image-lock.js';
import { nativeAddon, type NativeAddon } from './native.js';
import { RequestGate } from './request-gate.js';
import { WriteBehind } from './write-behind.js';

/** Largest single read or write system call (Node refuses lengths of 2 GiB and more). */
const MAX_SYSCALL = 1024 * 1024 * 1024;
/** Zero source for `writeZeroes` and preallocation; only ever read, shared by all calls. */
const ZERO_BUFFER = new Uint8Array(1024 * 1024);
/** Granule of zero detection in `blockStatus`, in bytes, aligned to file offsets. */
export const ZERO_DETECT_GRANULE = 4096;
/** Bytes that one `blockStatus` call reads at most; it returns fewer extents past that. */
export const ZERO_DETECT_LIMIT = 8 * 1024 * 1024;

/** Options of {@link createRawFile}. */
export interface CreateRawFileOptions {
  /** Write zeroes over the whole file instead of leaving it sparse. Default false. */
  preallocate?: boolean;
}

/** Options of {@link RawFileDevice.open}. */
export interface RawFileOpenOptions {
  /** Open the file read-only; writes, zero-writes and trims reject with `ReadOnlyError`. */
  readOnly?: boolean;
  /**
   * Find zeroes by reading, even where lseek(SEEK_DATA/SEEK_HOLE) is available: slower, but
   * reports zero-filled data as `ZERO` too. Default false.
   */
  detectZeroes?: boolean;
  /** Create the file first with {@link createRawFile} (it must not exist). */
  create?: { size: number; preallocate?: boolean };
  /**
   * Write behind, for a file a copy fills once (see write-behind.ts): every write starts its
   * writeback, and writes wait once more than a few MiB are not written back yet; written data
   * leaves the page cache. Needs the native addon; ignored without it ({@link
   * RawFileDevice.writesBehind} says which). Default false.
   */
  writeBehind?: boolean;
  /**
   * QEMU's image locks (src/block/image-lock.ts). By default a raw file is locked as qemu-io
   * locks one: holding consistent read (and write unless read-only) and sharing everything.
   * `forceShare` (read-only only), `noShare` (others may not write: qemu-img convert's source),
   * `locking: 'off'` or explicit `permissions` change that.
   */
  lock?: ImageLockOptions;
}

/**
 * Creates a raw image of `size` bytes at `path`. The file must not exist yet (an existing file is
 * never overwritten: `BitbackError` with code `ALREADY_EXISTS`). Sparse by default (the length
 * is set, nothing is written); with `preallocate`, zeroes are written over the whole length. The
 * file is synced before the promise resolves; on failure a partly created file is removed.
 */
export async function createRawFile(path: string, size: number, options: CreateRawFileOptions = {}): Promise<void> {
  const action = `create raw file ${path}`;
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new InvalidArgumentError(action, `size ${size} is not a non-negative integer`);
  }
  const handle = await createNewFile(path, action);
  try {
    if (options.preallocate === true) {
      for (let position = 0; position < size; position += ZERO_BUFFER.length) {
        await writeFully(handle, ZERO_BUFFER.subarray(0, Math.min(ZERO_BUFFER.length, size - position)), position);
      }
    } else {
      await handle.truncate(size);
    }
    await handle.sync();
    await handle.close();
  } catch (e) {
    await handle.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw fromSystemError(action, e);
  }
}

/**
 * A `BlockDevice` over a raw image file. Its size is the file's length when opened and does not
 * change.
 *
 * - Reads and writes are positioned and looped until complete. Bytes past the end of a file that
 *   became shorter than `size` (truncated by someone else) read as zero.
 * - `flush` is `fdatasync`; `fua` is emulated with `fdatasync` after the write (`canFua` false).
 * - `trim` checks its arguments and does nothing (`canTrim` and `trimZeroes` false).
 * - `writeZeroes` writes zero buffers (so the range stays allocated even with `mayTrim`);
 *   with `fast` it rejects with `NotSupportedError` and changes nothing (`canFastZero` false).
 * - `blockStatus`: a file with no blocks allocated (`st_blocks` 0) is reported as one
 *   `HOLE | ZERO` extent. Otherwise, with the native addon, holes and data come from
 *   lseek(SEEK_DATA/SEEK_HOLE) as qemu-img finds them (holes `HOLE | ZERO`, the rest data, not
 *   read). Without it, the range is read (at most {@link ZERO_DETECT_LIMIT} bytes per call) and
 *   4 KiB-aligned all-zero runs are reported as `ZERO`, the rest as data; it never claims `HOLE`
 *   then, because it cannot know where the blocks are.
 * - Failures of the file system reject with `IoError` carrying the errno.
 */
export class RawFileDevice implements BlockDevice {
  /** The path the file was opened by (for messages). */
  readonly path: string;
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly #handle: FileHandle;
  readonly #gate = new RequestGate();
  /**
   * Set by the first write: from then on `st_blocks` 0 is not trusted to mean "no data", since
   * some file systems (ZFS) report 0 blocks for data that is not yet committed.
   */
  #written = false;
  readonly #detectZeroesByReading: boolean;
  readonly #writeBehind: WriteBehind | undefined;
  /**
   * QEMU's lock bytes on the file: what this open holds and shares. The engine changes them
   * with `set`/`prepare` when its graph's permissions change.
   */
  readonly lock: ImageLock;

  private constructor(path: string, handle: FileHandle, stats: Stats, readOnly: boolean, detectZeroes: boolean, writeBehind: boolean, lock: ImageLock) {
    this.path = path;
    this.lock = lock;
    this.#detectZeroesByReading = detectZeroes;
    this.#handle = handle;
    this.#writeBehind = writeBehind && !readOnly ? WriteBehind.create(handle.fd) : undefined;
    this.size = stats.size;
    this.capabilities = {
      readOnly,
      canFlush: true,
      canFua: false,
      canTrim: false,
      trimZeroes: false,
      canFastZero: false,
      canBlockStatus: true,
      multiConn: true,
    };
    const preferred = isPowerOfTwo(stats.blksize) && stats.blksize <= DEFAULT_MAXIMUM_REQUEST ? stats.blksize : 4096;
    this.blockSize = { minimum: 1, preferred, maximum: DEFAULT_MAXIMUM_REQUEST };
  }

  /**
   * Opens the raw image at `path` (creating it first when `options.create` is given) and takes
   * QEMU's image locks on it (`options.lock`).
   *
   * Rejects with `NotFoundError` when the file does not exist, `InvalidArgumentError` for a
   * directory, FIFO or socket or for `forceShare` on a writable open, `NotSupportedError` for a
   * block or character device (not yet supported) or when a writable open cannot take the locks
   * (no native addon), `ImageLockedError` (code BUSY) when another open of the file conflicts,
   * and `IoError` with the errno for other failures.
   */
  static async open(path: string, options: RawFileOpenOptions = {}): Promise<RawFileDevice> {
    const action = `open raw file ${path}`;
    const permissions = requestedPermissions('raw', options.readOnly === true, options.lock);
    if (options.create !== undefined) {
      await createRawFile(path, options.create.size, { preallocate: options.create.preallocate ?? false });
    }
    // Check the type before opening: opening a FIFO would block until a writer appears.
    checkFileType(action, await statOrThrow(action, path));
    const readOnly = options.readOnly === true;
    let handle: FileHandle;
    try {
      handle = await open(path, readOnly ? 'r' : 'r+');
    } catch (e) {
      throw openError(action, e);
    }
    try {
      const stats = await handle.stat();
      checkFileType(action, stats);
      const locking = options.lock?.locking;
      const lock = await lockImageFile(handle.fd, path, permissions, { action, ...(locking ? { locking } : {}), writer: !readOnly });
      return new RawFileDevice(path, handle, stats, readOnly, options.detectZeroes ?? false, options.writeBehind ?? false, lock);
    } catch (e) {
      await handle.close().catch(() => {});
      throw fromSystemError(action, e);
    }
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    const action = `read ${length} bytes at ${offset} of ${this.path}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      const result = new Uint8Array(length);
      try {
        await readFully(this.#handle, result, offset);
      } catch (e) {
        throw fromSystemError(action, e);
      }
      return result;
    });
  }

  /**
   * Reads `target.length` bytes at `offset` into `target` (borrowed until the promise settles),
   * like `read` without allocating: for callers that reuse their buffers. Bytes past the end of
   * a file that became shorter than `size` read as zero.
   */
  readInto(offset: number, target: Uint8Array): Promise<void> {
    const action = `read ${target?.length} bytes at ${offset} of ${this.path}`;
    return this.#gate.run(action, async () => {
      if (!(target instanceof Uint8Array)) throw new InvalidArgumentError(action, 'target is not a Uint8Array');
      checkRange(action, this.size, offset, target.length);
      try {
        const done = await readFully(this.#handle, target, offset);
        target.fill(0, done);
      } catch (e) {
        throw fromSystemError(action, e);
      }
    });
  }

  write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const action = `write ${data?.length} bytes at ${offset} of ${this.path}`;
    return this.#gate.run(action, async () => {
      if (!(data instanceof Uint8Array)) throw new InvalidArgumentError(action, 'data is not a Uint8Array');
      this.#checkWrite(action, offset, data.length);
      this.#written = true;
      try {
        if (this.#writeBehind !== undefined) await this.#writeBehind.write(offset, data);
        else await writeFully(this.#handle, data, offset);
        if (options.fua === true) await this.#handle.datasync();
      } catch (e) {
        throw fromSystemError(action, e);
      }
    });
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    const action = `write zeroes to ${length} bytes at ${offset} of ${this.path}`;
    return this.#gate.run(action, async () => {
      this.#checkWrite(action, offset, length);
      if (options.fast === true) {
        throw new NotSupportedError(action, 'a raw file cannot zero a range without writing it');
      }
      this.#written = true;
      try {
        const end = offset + length;
        for (let position = offset; position < end; position += ZERO_BUFFER.length) {
          await writeFully(this.#handle, ZERO_BUFFER.subarray(0, Math.min(ZERO_BUFFER.length, end - position)), position);
        }
        await this.#writeBehind?.written(offset, length);
        if (options.fua === true) await this.#handle.datasync();
      } catch (e) {
        throw fromSystemError(action, e);
      }
    });
  }

  trim(offset: number, length: number, options?: WriteOptions): Promise<void> {
    const action = `trim ${length} bytes at ${offset} of ${this.path}`;
    return this.#gate.run(action, async () => {
      this.#checkWrite(action, offset, length);
      // Node cannot punch holes: the range keeps its data, which the contract allows.
    });
  }

  flush(): Promise<void> {
    const action = `flush ${this.path}`;
    return this.#gate.run(action, async () => {
      try {
        // A failed writeback may not show in fdatasync any more: report it here.
        if (this.#writeBehind?.failure !== undefined) throw this.#writeBehind.failure;
        await this.#handle.datasync();
      } catch (e) {
        throw fromSystemError(action, e);
      }
    });
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const action = `get block status of ${length} bytes at ${offset} of ${this.path}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) throw new InvalidArgumentError(action, 'length is 0');
      try {
        if (!this.#written && (await this.#handle.stat()).blocks === 0) {
          return [{ offset, length, flags: ExtentFlags.HOLE | ExtentFlags.ZERO }];
        }
        const addon = this.#detectZeroesByReading ? undefined : nativeAddon();
        if (addon !== undefined) return seekExtents(addon, this.#handle.fd, offset, length);
        return await this.#detectZeroes(offset, length);
      } catch (e) {
        throw fromSystemError(action, e);
      }
    });
  }

  /** True when writes go through write-behind (opened with `writeBehind` and the native addon is there). */
  get writesBehind(): boolean {
    return this.#writeBehind !== undefined;
  }

  /**
   * Waits for requests in flight, then releases the image locks and closes the file. A second
   * call does nothing more.
   */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      try {
        this.lock.release();
      } catch {
        // Closing the descriptor drops the locks anyway.
      }
      try {
        await this.#handle.close();
      } catch (e) {
        throw fromSystemError(`close ${this.path}`, e);
      }
    });
  }

  #checkWrite(action: string, offset: number, length: number): void {
    checkRange(action, this.size, offset, length);
    if (this.capabilities.readOnly) throw new ReadOnlyError(action, 'it is opened read-only');
  }

  /** Reads up to ZERO_DETECT_LIMIT bytes from `offset` and reports zero and data runs. */
  async #detectZeroes(offset: number, length: number): Promise<BlockExtent[]> {
    // Stop on a granule boundary, so that the next call starts aligned.
    const limit = Math.floor((offset + ZERO_DETECT_LIMIT) / ZERO_DETECT_GRANULE) * ZERO_DETECT_GRANULE;
    const end = Math.min(offset + length, limit);
    const data = new Uint8Array(end - offset);
    await readFully(this.#handle, data, offset);
    const extents: BlockExtent[] = [];
    let from = offset;
    while (from < end) {
      const to = Math.min(end, (Math.floor(from / ZERO_DETECT_GRANULE) + 1) * ZERO_DETECT_GRANULE);
      const flags = isZero(data.subarray(from - offset, to - offset)) ? ExtentFlags.ZERO : 0;
      const last = extents[extents.length - 1];
      if (last !== undefined && last.flags === flags) last.length += to - from;
      else extents.push({ offset: from, length: to - from, flags });
      from = to;
    }
    return extents;
  }
}

/** Most extents one `blockStatus` call returns from lseek (the caller asks again from the end). */
const MAX_SEEK_EXTENTS = 1024;

/**
 * Holes and data of `[offset, offset + length)` from lseek(SEEK_DATA/SEEK_HOLE). Past the end of
 * the file everything is a hole.
 */
function seekExtents(addon: NativeAddon, fd: number, offset: number, length: number): BlockExtent[] {
  const end = offset + length;
  const extents: BlockExtent[] = [];
  let pos = offset;
  while (pos < end && extents.length < MAX_SEEK_EXTENTS) {
    const data = addon.seekData(fd, pos);
    if (data < 0 || data >= end) {
      extents.push({ offset: pos, length: end - pos, flags: ExtentFlags.HOLE | ExtentFlags.ZERO });
      break;
    }
    if (data > pos) {
      extents.push({ offset: pos, length: data - pos, flags: ExtentFlags.HOLE | ExtentFlags.ZERO });
      pos = data;
    }
    const hole = Math.min(end, Math.max(pos + 1, addon.seekHole(fd, pos)));
    extents.push({ offset: pos, length: hole - pos, flags: 0 });
    pos = hole;
  }
  return extents;
}

/**
 * Reads `buffer.length` bytes at `position`; what lies past the end of file stays as it is.
 * Returns the number of bytes read.
 */
async function readFully(handle: FileHandle, buffer: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < buffer.length) {
    const n = Math.min(buffer.length - done, MAX_SYSCALL);
    const bytesRead = await pread(handle.fd, buffer, done, n, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/**
 * One positioned read into `buffer` at `offset`, resolving with the bytes read. Through the
 * callback API on the handle's descriptor: `FileHandle.read` costs three times as much CPU per
 * call (a promise and a stats array per request), which shows when serving small NBD reads.
 * The descriptor stays open meanwhile: `close` waits for the requests in flight.
 */
function pread(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    readFd(fd, buffer, offset, length, position, (e, bytesRead) => (e === null ? resolve(bytesRead) : reject(e)));
  });
}

/** Writes all of `data` at `position`, looping on short writes. */
async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const n = Math.min(data.length - done, MAX_SYSCALL);
    const { bytesWritten } = await handle.write(data, done, n, position + done);
    if (bytesWritten === 0) throw new IoError(`write at ${position + done}`, 'the write made no progress', 'EIO');
    done += bytesWritten;
  }
}

async function statOrThrow(action: string, path: string): Promise<Stats> {
  try {
    return await stat(path);
  } catch (e) {
    throw openError(action, e);
  }
}

function openError(action: string, e: unknown): BitbackError {
  if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
    return new NotFoundError(action, 'no such file', { cause: e });
  }
  return fromSystemError(action, e);
}

function checkFileType(action: string, stats: Stats): void {
  if (stats.isFile()) return;
  if (stats.isDirectory()) throw new InvalidArgumentError(action, 'it is a directory, not a raw image file');
  if (stats.isBlockDevice() || stats.isCharacterDevice()) {
    throw new NotSupportedError(action, 'device files are not supported yet, only regular files');
  }
  throw new InvalidArgumentError(action, 'it is not a regular file (a FIFO or socket)');
}
