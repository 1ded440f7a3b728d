/**
 * The whole first cluster of a qcow2 image: header, extension area and backing file name,
 * decoded and encoded together (spec "Header", "Header extensions": the backing file name sits
 * in the first cluster after the extension area).
 */
import { AutoclearFeature, MAX_BACKING_FILE_NAME } from './constants.js';
import { decodeUtf8, encodeUtf8, need } from './bytes.js';
import { problem } from './errors.js';
import { decodeHeaderExtensions, encodeHeaderExtensions, type HeaderExtensions } from './extensions.js';
import { decodeHeader, encodeHeader, type Qcow2Header } from './header.js';

/** Everything stored in the first cluster of an image. */
export interface Qcow2ImageHeader {
  header: Qcow2Header;
  extensions: HeaderExtensions;
  /** The backing file name as stored (not resolved), when the image has a backing file. */
  backingFile?: string;
}

/**
 * Decodes and validates the header, the extensions and the backing file name.
 *
 * @param bytes - the start of the file: the whole first cluster, or the whole file when it is
 *   shorter. Not retained.
 * @param fileSize - the file's size in bytes, to check that tables lie within it.
 * @throws Qcow2FormatError / Qcow2UnsupportedError as `decodeHeader` and
 *   `decodeHeaderExtensions` do.
 */
export function decodeImageHeader(bytes: Uint8Array, fileSize?: number): Qcow2ImageHeader {
  const header = decodeHeader(bytes, fileSize);
  const extensions = decodeHeaderExtensions(bytes, header, fileSize);
  const backingFile = readBackingFileName(bytes, header);
  return backingFile === undefined ? { header, extensions } : { header, extensions, backingFile };
}

/**
 * The backing file name stored at `header.backingFileOffset`, or undefined when the image has
 * no backing file. `bytes` is the start of the file.
 */
export function readBackingFileName(bytes: Uint8Array, header: Qcow2Header): string | undefined {
  if (header.backingFileOffset === 0) return undefined;
  need(bytes, header.backingFileOffset, header.backingFileSize, 'header.backing_file_name');
  const end = header.backingFileOffset + header.backingFileSize;
  return decodeUtf8(bytes.subarray(header.backingFileOffset, end), 'header.backing_file_name');
}

/**
 * Encodes the first cluster: the header, the extensions right after it and the backing file
 * name right after the extensions' end marker, as QEMU lays them out. The header's
 * `backingFileOffset` and `backingFileSize` are computed here (the values in `image.header`
 * are ignored); everything else is written as given.
 *
 * @returns a new zero-filled buffer of exactly one cluster.
 * @throws InvalidArgumentError when a part is invalid or the parts do not fit in one cluster,
 *   or when the auto-clear bitmaps bit is set without a bitmaps extension (spec: an error).
 */
export function encodeImageHeader(image: Qcow2ImageHeader): Uint8Array {
  const clusterSize = 2 ** image.header.clusterBits;
  const name = image.backingFile === undefined ? undefined : encodeUtf8(image.backingFile);
  if (name !== undefined && (name.length === 0 || name.length > MAX_BACKING_FILE_NAME)) {
    throw problem('encode', 'backing_file', `a backing file name must have 1..${MAX_BACKING_FILE_NAME} bytes, not ${name.length}`);
  }
  if ((image.header.autoclearFeatures & AutoclearFeature.BITMAPS) !== 0n && image.extensions.bitmaps === undefined) {
    throw problem('encode', 'header.autoclear_features', 'the bitmaps bit is set but there is no bitmaps extension');
  }
  const extensions = encodeHeaderExtensions(image.extensions, image.header.clusterBits);
  const extensionsEnd = image.header.headerLength + extensions.length;
  const total = extensionsEnd + (name?.length ?? 0);
  if (total > clusterSize) {
    throw problem('encode', 'header', `header, extensions and backing file name need ${total} bytes, more than the ${clusterSize}-byte cluster`);
  }
  const header: Qcow2Header = {
    ...image.header,
    backingFileOffset: name === undefined ? 0 : extensionsEnd,
    backingFileSize: name?.length ?? 0,
  };
  const out = new Uint8Array(clusterSize);
  out.set(encodeHeader(header), 0);
  out.set(extensions, header.headerLength);
  if (name !== undefined) out.set(name, extensionsEnd);
  return out;
}
