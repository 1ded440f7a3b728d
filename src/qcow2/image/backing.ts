/**
 * Opening the backing file of an image (spec "Header": backing_file_offset; "Header
 * extensions": backing file format name).
 *
 * The name is used as QEMU uses it: an absolute path as it is, a relative one against the
 * directory of the image that names it. The format comes from the extension (`raw` or `qcow2`)
 * or, when absent, from the file's first bytes. Backing files are opened read-only, each
 * qcow2 one following its own backing file in turn; a file met twice on the way down (same
 * device and inode) is a cycle and an error naming the chain.
 */
import { open, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import type { BlockDevice } from '../../block/block-device.js';
import { type ImageLockOptions } from '../../block/image-lock.js';
import { RawFileDevice } from '../../block/raw-file-device.js';
import { NotFoundError, NotSupportedError, fromSystemError } from '../../errors.js';
import { QCOW2_MAGIC } from '../format/index.js';
import { corruptImage } from './errors.js';

/** The formats a backing file may have. */
export type BackingFormat = 'raw' | 'qcow2';

/** One file of a backing chain, as `info` shows it. */
export interface BackingFileInfo {
  /** The name as the image that refers to it stores it. */
  filename: string;
  /** The path it was opened by (resolved against the referring image's directory). */
  path: string;
  /** Its format. */
  format: BackingFormat;
  /** True when the format was probed because the referring image does not name it. */
  probed: boolean;
}

/** The files already on the way down from the top image: identity (`dev:ino`) and path. */
export type ChainVisit = ReadonlyArray<{ identity: string; path: string }>;

/** What it takes to open a qcow2 backing file (supplied by the image, to avoid an import cycle). */
export type OpenQcow2Backing = (path: string, visited: ChainVisit) => Promise<{ device: BlockDevice; chain: readonly BackingFileInfo[] }>;

/** The identity of a file for cycle detection: device and inode, following symbolic links. */
export async function fileIdentity(path: string, action: string): Promise<string> {
  try {
    const stats = await stat(path);
    return `${stats.dev}:${stats.ino}`;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(action, `no such file: ${path}`, { cause: e });
    throw fromSystemError(action, e);
  }
}

/** Resolves a stored backing file name against the directory of the image that stores it. */
export function resolveBackingPath(imagePath: string, filename: string): string {
  const name = filename.startsWith('file:') ? filename.slice('file:'.length) : filename;
  return isAbsolute(name) ? name : join(dirname(imagePath), name);
}

/**
 * Opens the backing file `filename` of the image at `imagePath`, and its own chain.
 *
 * @param visited - the chain so far, the image at `imagePath` last
 * @param lock - how the image above was locked: a raw backing file inherits `locking`,
 *   `forceShare` and `noShare` (as QEMU's children inherit force-share); explicit permissions
 *   are not passed down
 * @returns the device (owned by the caller, who closes it) and the chain below the image
 * @throws NotFoundError naming the file when it does not exist; Qcow2FormatError (field
 *   `header.backing_file`) for a cycle; NotSupportedError for protocols and other formats
 */
export async function openBackingChain(
  imagePath: string,
  filename: string,
  storedFormat: string | undefined,
  visited: ChainVisit,
  openQcow2: OpenQcow2Backing,
  lock: ImageLockOptions = {},
): Promise<{ device: BlockDevice; chain: BackingFileInfo[] }> {
  const action = `open backing file ${filename} of ${imagePath}`;
  if (/^[a-z][a-z0-9+.-]*:/i.test(filename) && !filename.startsWith('file:')) {
    throw new NotSupportedError(action, 'backing files given by protocol or json: names are not supported, only local files');
  }
  const path = resolveBackingPath(imagePath, filename);
  const identity = await fileIdentity(path, action);
  const seen = visited.findIndex((v) => v.identity === identity);
  if (seen !== -1) {
    const names = [...visited.slice(seen).map((v) => v.path), path].join(' -> ');
    throw corruptImage(imagePath, 'header.backing_file', `the backing chain loops: ${names}`);
  }
  const format = storedFormat ?? (await probeFormat(path, action));
  const info: BackingFileInfo = { filename, path, format: checkFormat(format, action), probed: storedFormat === undefined };
  if (info.format === 'raw') {
    return { device: await RawFileDevice.open(path, { readOnly: true, lock: inheritedLock(lock) }), chain: [info] };
  }
  const opened = await openQcow2(path, [...visited, { identity, path }]);
  return { device: opened.device, chain: [info, ...opened.chain] };
}

/** What a backing file inherits of its parent's lock options (all but explicit permissions). */
export function inheritedLock(lock: ImageLockOptions): ImageLockOptions {
  const { permissions: _explicit, ...inherited } = lock;
  return inherited;
}

function checkFormat(format: string, action: string): BackingFormat {
  if (format === 'raw' || format === 'qcow2') return format;
  throw new NotSupportedError(action, `backing format '${format}' is not supported (raw and qcow2 are)`);
}

/** `qcow2` when the file starts with the qcow2 magic, else `raw` (as QEMU probes). */
export async function probeFormat(path: string, action: string): Promise<BackingFormat> {
  try {
    const handle = await open(path, 'r');
    try {
      const head = new Uint8Array(4);
      const { bytesRead } = await handle.read(head, 0, 4, 0);
      const magic = bytesRead === 4 ? new DataView(head.buffer).getUint32(0) : 0;
      return magic === QCOW2_MAGIC ? 'qcow2' : 'raw';
    } finally {
      await handle.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(action, `no such file: ${path}`, { cause: e });
    throw fromSystemError(action, e);
  }
}
