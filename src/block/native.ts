/**
 * The native addon (native/bitback_native.c, built by `npm install`): system calls Node.js does
 * not offer. Optional: when it was not built, {@link nativeAddon} returns undefined and callers
 * fall back to slower pure-JavaScript ways (bitback says so where it matters).
 */
import { createRequire } from 'node:module';

/** A lock mode of {@link NativeAddon.setLock} and {@link NativeAddon.testLock}: F_RDLCK or F_WRLCK. */
export type NativeLockMode = 'read' | 'write';

/** One lock that {@link NativeAddon.testLock} found in the way. */
export interface NativeLockConflict {
  /** Whether it is a shared (read) or exclusive (write) lock. */
  mode: NativeLockMode;
  /** Its first byte. */
  start: number;
  /** Its length in bytes; -1 when it runs to the end of the file however far that grows. */
  length: number;
  /**
   * The holder's process id for a classic POSIX (process-owned) lock; -1 for an open file
   * description lock, whose holder the kernel does not know (QEMU's image locks are OFD locks).
   */
  pid: number;
}

/** The functions the addon exports. */
export interface NativeAddon {
  /** lseek(fd, offset, SEEK_DATA): the next data offset at or after `offset`, or -1 when there is none. */
  seekData(fd: number, offset: number): number;
  /** lseek(fd, offset, SEEK_HOLE): the next hole at or after `offset` (the end of the file counts as one). */
  seekHole(fd: number, offset: number): number;
  /**
   * On the thread pool: writes `data` (exactly `length` bytes; null: nothing) at `offset`
   * (pwrite, looped until complete), starts the writeback of `[offset, offset + length)`
   * (sync_file_range SYNC_FILE_RANGE_WRITE; nothing when `length` is 0), then, when
   * `evictLength` > 0, waits until `[evictOffset, evictOffset + evictLength)` is written back and
   * drops it from the page cache (posix_fadvise DONTNEED). `data` is borrowed until the promise
   * settles. Makes nothing durable (fdatasync does). Rejects with an Error whose `code` is the
   * errno name and whose `syscall` names the failed call (pwrite, sync_file_range, posix_fadvise).
   */
  writeBack(fd: number, data: Uint8Array | null, offset: number, length: number, evictOffset: number, evictLength: number): Promise<void>;
  /**
   * fcntl(fd, F_OFD_SETLK): takes (`'read'`: shared, `'write'`: exclusive) or drops (`'unlock'`)
   * an open file description lock on `length` (> 0) bytes from `start`, without waiting. OFD
   * locks belong to the open file description: two opens of one file in one process conflict,
   * and closing the last descriptor of the description drops them. Throws an Error whose `code`
   * is the errno name: EAGAIN or EACCES when another description holds a conflicting lock,
   * EINVAL when the kernel has no OFD locks, EBADF for a write lock on a read-only descriptor.
   */
  setLock(fd: number, start: number, length: number, mode: NativeLockMode | 'unlock'): void;
  /**
   * fcntl(fd, F_OFD_GETLK): whether a lock of `mode` on `length` (> 0) bytes from `start` could
   * be taken now. Null when it could (locks of this same open file description never count),
   * else one lock of another description or process in the way. Throws like `setLock`.
   */
  testLock(fd: number, start: number, length: number, mode: NativeLockMode): NativeLockConflict | null;
}

let loaded: NativeAddon | null | undefined;

/** The addon, or undefined when it is not built (or `BITBACK_NO_NATIVE=1` disables it). */
export function nativeAddon(): NativeAddon | undefined {
  if (loaded === undefined) {
    loaded = null;
    if (process.env.BITBACK_NO_NATIVE !== '1') {
      try {
        // dist/src/block/native.js -> build/Release at the package root.
        loaded = createRequire(import.meta.url)('../../../build/Release/bitback_native.node') as NativeAddon;
      } catch {
        loaded = null;
      }
    }
  }
  return loaded ?? undefined;
}
