/**
 * `bitback image info`: what `qemu-img info --output=json` reports about an image, with the same
 * field names, read through the pure codecs. The image is opened read-only and never changed.
 * Like qemu-img info, a qcow2 image is locked meanwhile with permission none and without sharing
 * write and resize, so an image that a VM has open for writing needs `forceShare` (-U).
 */
import { open, realpath, stat } from 'node:fs/promises';
import { defaultImagePermissions, holdImageLock, type ImageLockOptions } from '../block/image-lock.js';
import { NotFoundError, fromSystemError } from '../errors.js';
import {
  AutoclearFeature,
  CompatibleFeature,
  IncompatibleFeature,
  MAX_SNAPSHOT_TABLE_BYTES,
  decodeBitmapDirectory,
  decodeImageHeader,
  decodeSnapshotTable,
  geometryOf,
  snapshotVmStateSize,
  type Qcow2ImageHeader,
} from './format/index.js';
import { corruptImage, withImagePath } from './image/errors.js';
import { probeFormat, resolveBackingPath } from './image/backing.js';

/** An image format bitback reads. */
export type ImageFormat = 'raw' | 'qcow2';

/** One bitmap as `qemu-img info` lists it. */
export interface BitmapInfo {
  /** `in-use` (inconsistent after a crash) and/or `auto` (enabled). */
  flags: Array<'in-use' | 'auto'>;
  name: string;
  /** Bytes per bit. */
  granularity: number;
}

/** One internal snapshot as `qemu-img info` lists it. */
export interface SnapshotInfo {
  id: string;
  name: string;
  'vm-state-size': number;
  'date-sec': number;
  'date-nsec': number;
  'vm-clock-sec': number;
  'vm-clock-nsec': number;
  icount?: number;
}

/** `qemu-img info --output=json` fields (the ones that apply to raw and qcow2). */
export interface ImageInfo {
  filename: string;
  format: ImageFormat;
  'virtual-size': number;
  /** Bytes the file occupies on disk. */
  'actual-size': number;
  'dirty-flag': boolean;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  snapshots?: SnapshotInfo[];
  'format-specific'?: {
    type: 'qcow2';
    data: {
      compat: '0.10' | '1.1';
      'compression-type': 'zlib' | 'zstd';
      /** Version 3 only, like the three below. */
      'lazy-refcounts'?: boolean;
      bitmaps?: BitmapInfo[];
      'refcount-bits': number;
      corrupt?: boolean;
      'extended-l2'?: boolean;
    };
  };
}

/** Reads `length` bytes at `position` (fewer at the end of the file). */
async function readAt(path: string, position: number, length: number): Promise<Uint8Array> {
  const handle = await open(path, 'r');
  try {
    const buffer = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return buffer.subarray(0, done);
  } finally {
    await handle.close();
  }
}

/** Tells qcow2 from raw by the magic (a file shorter than 4 bytes is raw). */
export function probeImageFormat(path: string): Promise<ImageFormat> {
  return probeFormat(path, `open image ${path}`);
}

async function readImageStart(path: string, length: number): Promise<Uint8Array> {
  try {
    return await readAt(path, 0, length);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`open image ${path}`, 'no such file');
    throw fromSystemError(`open image ${path}`, e);
  }
}

/** Decodes the first cluster of a qcow2 image (header, extensions, backing file name). */
export async function readQcow2Header(path: string): Promise<{ image: Qcow2ImageHeader; fileSize: number }> {
  const fileSize = (await stat(path)).size;
  // cluster_bits is the big-endian u32 at byte 20: read that many bytes, the first cluster. The
  // codec validates the value; this only bounds the read to 512 B .. 2 MiB.
  const start = await readImageStart(path, 24);
  const clusterBits = Math.min(21, Math.max(9, start[23] ?? 16));
  const head = await readImageStart(path, 2 ** clusterBits);
  try {
    const image = decodeImageHeader(head, fileSize);
    return { image, fileSize };
  } catch (e) {
    throw withImagePath(path, e);
  }
}

/** Options of {@link imageInfo} and {@link imageInfoChain}. */
export interface ImageInfoOptions {
  /** Image locks: `forceShare` is qemu-img's -U, `locking: 'off'` takes none. */
  lock?: ImageLockOptions;
}

/**
 * Describes one image. `format` may be given to skip probing.
 * @throws NotFoundError when the file is missing; Qcow2FormatError (naming the image and the
 *   field) when its metadata is damaged; ImageLockedError (code BUSY) when another process has
 *   a qcow2 image open for writing and `lock.forceShare` is not set.
 */
export async function imageInfo(path: string, format?: ImageFormat, options: ImageInfoOptions = {}): Promise<ImageInfo> {
  const fmt = format ?? (await probeImageFormat(path));
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`open image ${path}`, 'no such file');
    throw fromSystemError(`stat ${path}`, e);
  }
  const actualSize = st.blocks * 512;
  if (fmt === 'raw') {
    return { filename: path, format: 'raw', 'virtual-size': st.size, 'actual-size': actualSize, 'dirty-flag': false };
  }
  const lock = options.lock ?? {};
  const permissions = lock.permissions ?? defaultImagePermissions('qcow2', { readOnly: true, noIo: true, ...(lock.forceShare ? { forceShare: true } : {}) });
  const held = await holdImageLock(path, permissions, { action: `open image ${path}`, ...(lock.locking ? { locking: lock.locking } : {}) });
  try {
    return await qcow2Info(path, actualSize);
  } finally {
    await held.close();
  }
}

/** The info of the qcow2 image at `path`, read while its lock is held. */
async function qcow2Info(path: string, actualSize: number): Promise<ImageInfo> {
  const { image, fileSize } = await readQcow2Header(path);
  const { header, extensions } = image;
  const geometry = geometryOf(header);
  const info: ImageInfo = {
    filename: path,
    format: 'qcow2',
    'virtual-size': header.size,
    'actual-size': actualSize,
    'dirty-flag': (header.incompatibleFeatures & IncompatibleFeature.DIRTY) !== 0n,
    'cluster-size': geometry.clusterSize,
  };
  if (image.backingFile !== undefined) {
    info['backing-filename'] = image.backingFile;
    info['full-backing-filename'] = resolveBackingPath(path, image.backingFile);
    if (extensions.backingFormat !== undefined) info['backing-filename-format'] = extensions.backingFormat;
  }
  if (header.nbSnapshots > 0) {
    const length = Math.min(MAX_SNAPSHOT_TABLE_BYTES, Math.max(0, fileSize - header.snapshotsOffset));
    const bytes = await readAt(path, header.snapshotsOffset, length);
    try {
      const table = decodeSnapshotTable(bytes, 0, header.nbSnapshots, geometry, fileSize);
      info.snapshots = table.entries.map((s) => ({
        // QEMU omits icount when the snapshot has none (-1: record/replay was off)
        ...(s.icount === undefined || s.icount < 0n ? {} : { icount: Number(s.icount) }),
        'vm-clock-nsec': Number(s.vmClockNanoseconds % 1_000_000_000n),
        name: s.name,
        'date-sec': s.dateSeconds,
        'date-nsec': s.dateNanoseconds,
        'vm-clock-sec': Number(s.vmClockNanoseconds / 1_000_000_000n),
        id: s.id,
        'vm-state-size': snapshotVmStateSize(s),
      }));
    } catch (e) {
      throw withImagePath(path, e);
    }
  }
  let bitmaps: BitmapInfo[] | undefined;
  if (extensions.bitmaps !== undefined && (header.autoclearFeatures & AutoclearFeature.BITMAPS) !== 0n) {
    const ext = extensions.bitmaps;
    if (ext.bitmapDirectoryOffset + ext.bitmapDirectorySize > fileSize) {
      throw corruptImage(path, 'bitmaps.bitmap_directory_offset', `the directory ends past the end of the ${fileSize}-byte file`);
    }
    const bytes = await readAt(path, ext.bitmapDirectoryOffset, ext.bitmapDirectorySize);
    try {
      bitmaps = decodeBitmapDirectory(bytes, 0, ext, { geometry, virtualSize: header.size }, fileSize).map((b) => ({
        flags: [...(b.inUse ? (['in-use'] as const) : []), ...(b.auto ? (['auto'] as const) : [])],
        name: b.name,
        granularity: 2 ** b.granularityBits,
      }));
    } catch (e) {
      throw withImagePath(path, e);
    }
  }
  const compressionType = header.compressionType === 1 ? 'zstd' : 'zlib';
  const refcountBits = 2 ** header.refcountOrder;
  // QEMU reports only these three for a version 2 image.
  info['format-specific'] = {
    type: 'qcow2',
    data:
      header.version === 2
        ? { compat: '0.10', 'compression-type': compressionType, 'refcount-bits': refcountBits }
        : {
            compat: '1.1',
            'compression-type': compressionType,
            'lazy-refcounts': (header.compatibleFeatures & CompatibleFeature.LAZY_REFCOUNTS) !== 0n,
            ...(bitmaps !== undefined && bitmaps.length > 0 ? { bitmaps } : {}),
            'refcount-bits': refcountBits,
            corrupt: (header.incompatibleFeatures & IncompatibleFeature.CORRUPT) !== 0n,
            'extended-l2': geometry.extendedL2,
          },
  };
  return info;
}

/**
 * Describes an image and every image of its backing chain, top first (`qemu-img info
 * --backing-chain`). A cycle in the chain is an error naming the chain.
 */
export async function imageInfoChain(path: string, format?: ImageFormat, options: ImageInfoOptions = {}): Promise<ImageInfo[]> {
  const chain: ImageInfo[] = [];
  const seen = new Map<string, string>();
  let current: { path: string; format?: ImageFormat } | undefined = { path, ...(format ? { format } : {}) };
  while (current !== undefined) {
    let real: string;
    try {
      real = await realpath(current.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new NotFoundError(`open backing chain of ${path}`, `${current.path} does not exist`);
      }
      throw fromSystemError(`open ${current.path}`, e);
    }
    if (seen.has(real)) {
      const names = [...seen.values(), current.path].join(' -> ');
      throw corruptImage(path, 'backing_file', `the backing chain has a cycle: ${names}`);
    }
    seen.set(real, current.path);
    const info = await imageInfo(current.path, current.format, options);
    chain.push(info);
    const next = info['full-backing-filename'];
    const nextFormat = info['backing-filename-format'];
    current = next === undefined ? undefined : { path: next, ...(nextFormat === 'raw' || nextFormat === 'qcow2' ? { format: nextFormat } : {}) };
  }
  return chain;
}
