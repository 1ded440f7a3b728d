/**
 * The image file as the check sees it: positional reads that behave like QEMU's (bytes past
 * the end of the file read as zeroes), never allocating more than the file can hold, and the
 * few in-place writes a repair makes.
 * @internal
 */
import { open, type FileHandle } from 'node:fs/promises';
import { lockImageFile, requestedPermissions, type ImageLock, type ImageLockOptions } from '../../block/image-lock.js';
import { NotFoundError, fromSystemError } from '../../errors.js';

/** Largest single read: Node refuses lengths of 2 GiB and more. */
const MAX_SYSCALL = 1024 * 1024 * 1024;

/**
 * The largest buffer any read allocated so far, in bytes: lets tests assert that a table whose
 * size field lies costs no more memory than the file holds. Test-only; never reset here.
 */
export const readStatistics = { largestBuffer: 0 };

/** An open qcow2 file. Not exported from the index. */
export class ImageFile {
  private constructor(
    private readonly handle: FileHandle,
    /** The file as given, for messages. */
    readonly path: string,
    /** File size in bytes when it was opened (the check never changes the length). */
    readonly size: number,
    /** True when opened for repair. */
    readonly writable: boolean,
    private readonly lock: ImageLock,
  ) {}

  /**
   * Opens `path` read-only, or read-write for a repair, and takes QEMU's image locks as qemu-img
   * check does (`lock.forceShare` is its -U, read-only only). Rejects with `ImageLockedError`
   * (code BUSY) when another process has the image open for writing.
   */
  static async open(path: string, writable: boolean, lock: ImageLockOptions = {}): Promise<ImageFile> {
    const action = `open qcow2 image ${path}`;
    const permissions = requestedPermissions('qcow2', !writable, lock);
    let handle: FileHandle;
    try {
      handle = await open(path, writable ? 'r+' : 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(action, 'the file does not exist', { cause: e });
      throw fromSystemError(action, e);
    }
    try {
      const stats = await handle.stat();
      const locks = await lockImageFile(handle.fd, path, permissions, { action, ...(lock.locking ? { locking: lock.locking } : {}), writer: writable });
      return new ImageFile(handle, path, stats.size, writable, locks);
    } catch (e) {
      await handle.close().catch(() => undefined);
      throw fromSystemError(action, e);
    }
  }

  /**
   * Reads `length` bytes at `offset` into a new buffer of exactly `length` bytes; what lies past
   * the end of the file reads as zeroes (as QEMU reads it). Only for lengths the caller has
   * bounded (one cluster, a header): use {@link readClamped} for a table of claimed size.
   */
  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    noteBuffer(length);
    const available = Math.max(0, Math.min(length, this.size - offset));
    if (available > 0) await this.readInto(out.subarray(0, available), offset);
    return out;
  }

  /**
   * Reads what exists of `[offset, offset + length)`: a buffer of `min(length, size - offset)`
   * bytes (empty past the end), rounded up to a multiple of `granule` (an entry cut by the end
   * of the file reads with zeroes, as QEMU reads it). The caller treats the missing tail as
   * zeroes, so a table whose size field lies costs no more memory than the file holds.
   */
  async readClamped(offset: number, length: number, granule = 1): Promise<Uint8Array> {
    const available = Math.max(0, Math.min(length, this.size - offset));
    const out = new Uint8Array(Math.min(length, Math.ceil(available / granule) * granule));
    noteBuffer(out.length);
    if (available > 0) await this.readInto(out.subarray(0, available), offset);
    return out;
  }

  /** Writes `bytes` at `offset` (a repair). The caller owns `bytes`; it is not retained. */
  async write(bytes: Uint8Array, offset: number): Promise<void> {
    try {
      for (let done = 0; done < bytes.length; ) {
        const { bytesWritten } = await this.handle.write(bytes, done, Math.min(MAX_SYSCALL, bytes.length - done), offset + done);
        done += bytesWritten;
      }
    } catch (e) {
      throw fromSystemError(`write ${bytes.length} bytes at ${offset} of qcow2 image ${this.path}`, e);
    }
  }

  /** Makes the writes durable. */
  async sync(): Promise<void> {
    try {
      await this.handle.datasync();
    } catch (e) {
      throw fromSystemError(`sync qcow2 image ${this.path}`, e);
    }
  }

  /** Closes the file; idempotent errors are ignored. */
  async close(): Promise<void> {
    try {
      this.lock.release();
    } catch {
      // Closing the descriptor drops the locks anyway.
    }
    await this.handle.close().catch(() => undefined);
  }

  private async readInto(out: Uint8Array, offset: number): Promise<void> {
    try {
      for (let done = 0; done < out.length; ) {
        const { bytesRead } = await this.handle.read(out, done, Math.min(MAX_SYSCALL, out.length - done), offset + done);
        if (bytesRead === 0) break; // the file shrank under us: the rest stays zero
        done += bytesRead;
      }
    } catch (e) {
      throw fromSystemError(`read ${out.length} bytes at ${offset} of qcow2 image ${this.path}`, e);
    }
  }
}

function noteBuffer(length: number): void {
  if (length > readStatistics.largestBuffer) readStatistics.largestBuffer = length;
}
