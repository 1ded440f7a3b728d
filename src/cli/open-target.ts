/**
 * Opens what a command names as a disk: an image file (raw now; qcow2 and NBD URIs as those layers
 * land). The CLI is the only layer that may import every image layer, so the dispatch lives here.
 */
import { open } from 'node:fs/promises';
import { InvalidArgumentError, NotSupportedError, fromSystemError, NotFoundError } from '../errors.js';
import { type BlockDevice } from '../block/block-device.js';
import { RawFileDevice } from '../block/raw-file-device.js';

/** Image formats `openTarget` knows. */
export type TargetFormat = 'raw' | 'qcow2';

/** Options of {@link openTarget}. */
export interface OpenTargetOptions {
  /** Force a format instead of probing the file's first bytes. */
  format?: TargetFormat;
  /** Open for reading only. */
  readOnly?: boolean;
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb", qcow2.rst "Header"

/** Reads the first four bytes of a file to tell qcow2 from raw. */
async function probeFormat(path: string): Promise<TargetFormat> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw new NotFoundError(`open ${path}`, 'no such file');
    throw fromSystemError(`open ${path}`, e);
  }
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await handle.read(head, 0, 4, 0);
    return bytesRead === 4 && head.readUInt32BE(0) === QCOW2_MAGIC ? 'qcow2' : 'raw';
  } finally {
    await handle.close();
  }
}

/**
 * Opens a disk named on the command line. NBD URIs (`nbd://`, `nbd+unix://`) and qcow2 images are
 * refused with a clear `NotSupportedError` until those layers exist.
 */
export async function openTarget(spec: string, options: OpenTargetOptions = {}): Promise<BlockDevice> {
  if (/^nbds?(\+unix)?:\/\//.test(spec)) {
    throw new NotSupportedError(`open ${spec}`, 'NBD URIs are not supported yet');
  }
  if (spec === '') throw new InvalidArgumentError('open disk', 'the file name is empty');
  const format = options.format ?? (await probeFormat(spec));
  switch (format) {
    case 'raw':
      return RawFileDevice.open(spec, { readOnly: options.readOnly ?? false });
    case 'qcow2':
      throw new NotSupportedError(`open ${spec}`, 'qcow2 images are not supported yet (use -f raw to treat it as raw)');
    default: {
      const unreachable: never = format;
      throw new InvalidArgumentError(`open ${spec}`, `unknown format ${String(unreachable)}`);
    }
  }
}

/** Parses a `-f FORMAT` value. */
export function parseFormat(text: string): TargetFormat {
  if (text === 'raw' || text === 'qcow2') return text;
  throw new InvalidArgumentError(`use format '${text}'`, 'known formats are raw and qcow2');
}
