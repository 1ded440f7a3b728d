/**
 * Rewriting the first cluster of a closed qcow2 image (header, extensions, backing file name), for
 * operations that change what the header says: `rebase` (backing file and format). The image must
 * not be open elsewhere for writing: a `Qcow2Image` keeps its header in memory.
 */
import { open } from 'node:fs/promises';
import { fromSystemError } from '../errors.js';
import { encodeImageHeader, type Qcow2ImageHeader } from './format/index.js';
import { withImagePath } from './image/errors.js';
import { readQcow2Header } from './info.js';

/**
 * Reads the first cluster, lets `change` modify the decoded header, and writes the re-encoded
 * cluster back in one write, then syncs. Throws (and writes nothing) when the result does not
 * fit in the first cluster.
 */
export async function updateQcow2Header(path: string, change: (image: Qcow2ImageHeader) => void): Promise<void> {
  const { image } = await readQcow2Header(path);
  change(image);
  let bytes: Uint8Array;
  try {
    bytes = encodeImageHeader(image);
  } catch (e) {
    throw withImagePath(path, e);
  }
  const action = `update the header of ${path}`;
  try {
    const handle = await open(path, 'r+');
    try {
      let done = 0;
      while (done < bytes.length) {
        const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, done);
        done += bytesWritten;
      }
      await handle.datasync();
    } finally {
      await handle.close();
    }
  } catch (e) {
    throw fromSystemError(action, e);
  }
}
