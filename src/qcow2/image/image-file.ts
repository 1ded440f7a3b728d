/**
 * The host file under a qcow2 image: positioned reads and writes that loop until complete,
 * the file's end, tracked as the image grows it, and QEMU's image locks on it.
 */
import { read as readFd } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { lockImageFile, requestedPermissions, type ImageLock, type ImageLockOptions } from '../../block/image-lock.js';
import { IoError, NotFoundError, fromSystemError } from '../../errors.js';

/** Largest single read or write system call (Node refuses 2 GiB and more). */
const MAX_SYSCALL = 1024 * 1024 * 1024;

/** An open image file. All offsets and lengths are in bytes. */
export class ImageFile {
  /** The path the file was opened by (for messages). */
  readonly path: string;
  readonly readOnly: boolean;
  /**
   * QEMU's lock bytes on the file (see src/block/image-lock.ts): what this open holds and
   * shares. The engine changes them with `set`/`prepare` when its graph's permissions change.
   */
  readonly lock: ImageLock;
  readonly #handle: FileHandle;
  #size: number;

  private constructor(path: string, handle: FileHandle, size: number, readOnly: boolean, lock: ImageLock) {
    this.path = path;
    this.#handle = handle;
    this.#size = size;
    this.readOnly = readOnly;
    this.lock = lock;
  }

  /**
   * Opens `path` for reading (and writing unless `readOnly`) and takes QEMU's image locks on it
   * as qemu-img does for a qcow2 file (`defaultImagePermissions`): read-only holds consistent
   * read, writable also write and resize, and neither lets others write or resize; `lock`
   * changes that (`forceShare` as qemu-img -U, `locking: 'off'`, explicit permissions).
   *
   * Rejects with `NotFoundError` when it does not exist, `ImageLockedError` (code BUSY, naming
   * the permission and the holders found) when another open of the image conflicts,
   * `InvalidArgumentError` for `forceShare` on a writable open, `NotSupportedError` when a
   * writable open cannot take the locks (no native addon), `IoError` otherwise.
   */
  static async open(path: string, readOnly: boolean, action = `open qcow2 image ${path}`, lock: ImageLockOptions = {}): Promise<ImageFile> {
    const permissions = requestedPermissions('qcow2', readOnly, lock);
    let handle: FileHandle;
    try {
      handle = await open(path, readOnly ? 'r' : 'r+');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(action, 'no such file', { cause: e });
      throw fromSystemError(action, e);
    }
    try {
      const stats = await handle.stat();
      if (!stats.isFile()) throw new IoError(action, 'it is not a regular file', 'EINVAL');
      const locks = await lockImageFile(handle.fd, path, permissions, { action, ...(lock.locking ? { locking: lock.locking } : {}), writer: !readOnly });
      return new ImageFile(path, handle, stats.size, readOnly, locks);
    } catch (e) {
      await handle.close().catch(() => {});
      throw fromSystemError(action, e);
    }
  }

  /** The length of the file in bytes, including what this process has written past its old end. */
  get size(): number {
    return this.#size;
  }

  /** Reads `length` bytes at `position` into a new buffer; bytes past the end of the file read as zero. */
  async read(position: number, length: number): Promise<Uint8Array> {
    const buffer = new Uint8Array(length);
    await this.readInto(buffer, position);
    return buffer;
  }

  /** Fills `target` (borrowed until the promise settles) from `position`; bytes past the end of the file read as zero. */
  async readInto(target: Uint8Array, position: number): Promise<void> {
    let done = 0;
    try {
      while (done < target.length) {
        const n = Math.min(target.length - done, MAX_SYSCALL);
        const bytesRead = await pread(this.#handle.fd, target, done, n, position + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
    } catch (e) {
      throw fromSystemError(`read ${target.length} bytes at ${position} of ${this.path}`, e);
    }
    if (done < target.length) target.fill(0, done);
  }

  /** Writes all of `data` at `position` (borrowed until the promise settles). */
  async write(position: number, data: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < data.length) {
        const n = Math.min(data.length - done, MAX_SYSCALL);
        const { bytesWritten } = await this.#handle.write(data, done, n, position + done);
        if (bytesWritten === 0) throw new IoError(`write at ${position + done} of ${this.path}`, 'the write made no progress');
        done += bytesWritten;
      }
    } catch (e) {
      throw fromSystemError(`write ${data.length} bytes at ${position} of ${this.path}`, e);
    }
    this.#size = Math.max(this.#size, position + data.length);
  }

  /** Extends the file to at least `length` bytes (a sparse extension). */
  async extendTo(length: number): Promise<void> {
    if (length <= this.#size) return;
    try {
      await this.#handle.truncate(length);
    } catch (e) {
      throw fromSystemError(`extend ${this.path} to ${length} bytes`, e);
    }
    this.#size = length;
  }

  /** `fdatasync`: everything written so far is durable when this resolves. */
  async datasync(): Promise<void> {
    try {
      await this.#handle.datasync();
    } catch (e) {
      throw fromSystemError(`flush ${this.path}`, e);
    }
  }

  /** Releases the image locks and closes the file. */
  async close(): Promise<void> {
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
  }
}

/**
 * One positioned read into `buffer` at `offset`, resolving with the bytes read. Through the
 * callback API on the handle's descriptor: `FileHandle.read` costs about three times as much
 * CPU per call (a promise and a stats array per request), which shows when an NBD server reads
 * a qcow2 image. The descriptor stays open meanwhile: the image's `close` waits for its reads.
 */
function pread(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    readFd(fd, buffer, offset, length, position, (e, bytesRead) => (e === null ? resolve(bytesRead) : reject(e)));
  });
}
