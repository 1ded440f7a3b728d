import { open, type FileHandle } from 'node:fs/promises';
import { BitbackError, NotFoundError, fromSystemError } from '../errors.js';

/**
 * Creates a new file for writing, never overwriting one: `ALREADY_EXISTS` when `path` exists,
 * `NotFoundError` when its directory does not, an `IoError` for anything else. The caller owns
 * the handle (and removes the file if it fails to fill it).
 *
 * @param action - what is being attempted, for messages ("create qcow2 image a.qcow2")
 */
export async function createNewFile(path: string, action: string): Promise<FileHandle> {
  try {
    return await open(path, 'wx');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new BitbackError('ALREADY_EXISTS', action, 'the file exists', { cause: e });
    if (code === 'ENOENT') throw new NotFoundError(action, 'its directory does not exist', { cause: e });
    throw fromSystemError(action, e);
  }
}
