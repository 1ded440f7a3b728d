/**
 * Rewriting the first cluster of a closed qcow2 image (header, extensions, backing file name), for
 * operations that change what the header says: `rebase` (backing file and format). The image must
 * not be open elsewhere for writing: a `Qcow2Image` keeps its header in memory.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { defaultImagePermissions, lockImageFile } from '../block/image-lock.js';
import { NotFoundError, fromSystemError } from '../errors.js';
import { encodeImageHeader, type Qcow2ImageHeader } from './format/index.js';
import { withImagePath } from './image/errors.js';
import { readQcow2Header } from './info.js';

/**
 * Reads the first cluster, lets `change` modify the decoded header, and writes the re-encoded
 * cluster back in one write, then syncs. Throws (and writes nothing) when the result does not
 * fit in the first cluster. The file is locked for writing meanwhile as qemu-img locks a
 * qcow2 image it changes: `ImageLockedError` (code BUSY) when another process has it open.
 */
export async function updateQcow2Header(path: string, change: (image: Qcow2ImageHeader) => void): Promise<void> {
  const action = `update the header of ${path}`;
  let handle: FileHandle;
  try {
    handle = await open(path, 'r+');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`open image ${path}`, 'no such file', { cause: e });
    throw fromSystemError(action, e);
  }
  try {
    const lock = await lockImageFile(handle.fd, path, defaultImagePermissions('qcow2', { readOnly: false }), { action });
    try {
      // Read under the lock: nobody else may change the header between this read and the write.
      const { image } = await readQcow2Header(path);
      change(image);
      let bytes: Uint8Array;
      try {
        bytes = encodeImageHeader(image);
      } catch (e) {
        throw withImagePath(path, e);
      }
      try {
        let done = 0;
        while (done < bytes.length) {
          const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, done);
          done += bytesWritten;
        }
        await handle.datasync();
      } catch (e) {
        throw fromSystemError(action, e);
      }
    } finally {
      lock.release();
    }
  } finally {
    await handle.close();
  }
}
