/**
 * How the qcow2 image names the file in its errors.
 *
 * The format codecs do not know which file their bytes came from; the image adds the path to
 * every `Qcow2FormatError` and `Qcow2UnsupportedError` that leaves it, keeping the `field`.
 */
import { Qcow2FormatError, Qcow2UnsupportedError } from '../format/index.js';

/**
 * A `Qcow2FormatError` about `field` of the image at `path`:
 * `Cannot decode qcow2 l2[5]: host offset 4097 is not aligned (image /var/a.qcow2)`.
 */
export function corruptImage(path: string, field: string, reason: string): Qcow2FormatError {
  return new Qcow2FormatError(field, `${reason} (image ${path})`);
}

/**
 * Returns `error` with the image path added when it is a format error that names no image yet
 * (an error from a backing file keeps naming the backing file); anything else is returned
 * unchanged.
 */
export function withImagePath(path: string, error: unknown): unknown {
  const suffix = ` (image ${path})`;
  if (error instanceof Qcow2FormatError && !error.reason.includes(' (image ')) {
    return new Qcow2FormatError(error.field, error.reason + suffix, { cause: error });
  }
  if (error instanceof Qcow2UnsupportedError && !error.reason.includes(' (image ')) {
    return new Qcow2UnsupportedError(error.field, error.reason + suffix, { cause: error });
  }
  return error;
}
