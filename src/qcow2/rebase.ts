/**
 * `bitback image rebase`: changes the backing file of a qcow2 image. The safe mode (default)
 * first copies into the image every cluster it does not hold itself where the old backing chain
 * and the new one read differently, so the image reads the same before and after — what
 * `qemu-img rebase` does. `unsafe` only rewrites the header (`qemu-img rebase -u`).
 */
import { ExtentFlags, type BlockDevice } from '../block/block-device.js';
import { InvalidArgumentError } from '../errors.js';
import { type BackingFormat } from './image/backing.js';
import { resolveBackingPath } from './image/backing.js';
import { type Qcow2Image } from './image/index.js';
import { firstDifference } from './compare.js';
import { updateQcow2Header } from './header-file.js';
import { openImage, openQcow2Tracking } from './open-image.js';
import { probeImageFormat } from './info.js';

/** Options of {@link rebaseImage}. */
export interface RebaseOptions {
  /** Format of the new backing file; probed when omitted. */
  backingFormat?: BackingFormat;
  /** Only rewrite the header, copy nothing. */
  unsafe?: boolean;
}

/** What a rebase copied. */
export interface RebaseStats {
  /** Bytes copied into the image because old and new backing differ there. */
  bytesCopied: number;
}

/** Reads `length` bytes at `offset` of `device`, zeroes past its end. */
async function readOrZero(device: BlockDevice | undefined, offset: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  if (device === undefined || offset >= device.size) return out;
  const n = Math.min(length, device.size - offset);
  out.set(await device.read(offset, n), 0);
  return out;
}

/**
 * Makes `newBacking` (a file name stored as given, relative to the image's directory; undefined:
 * no backing file) the backing file of the qcow2 image at `path`.
 */
export async function rebaseImage(path: string, newBacking: string | undefined, options: RebaseOptions = {}): Promise<RebaseStats> {
  const action = `rebase ${path}`;
  if (newBacking === '') throw new InvalidArgumentError(action, 'the new backing file name is empty (omit it to remove the backing file)');
  const newPath = newBacking === undefined ? undefined : resolveBackingPath(path, newBacking);
  const format = newPath === undefined ? undefined : options.backingFormat ?? (await probeImageFormat(newPath));
  const stats: RebaseStats = { bytesCopied: 0 };
  if (!options.unsafe) {
    const image = await openQcow2Tracking(path);
    try {
      const fresh = newPath === undefined ? undefined : await openImage(newPath, { readOnly: true, ...(format ? { format } : {}) });
      try {
        stats.bytesCopied = await copyDifferences(image, fresh?.device);
      } finally {
        await fresh?.device.close();
      }
      await image.flush();
    } finally {
      await image.close();
    }
  }
  await updateQcow2Header(path, (h) => {
    if (newBacking === undefined) {
      delete h.backingFile;
      delete h.extensions.backingFormat;
    } else {
      h.backingFile = newBacking;
      if (format !== undefined) h.extensions.backingFormat = format;
    }
  });
  return stats;
}

/**
 * Copies into `image` the ranges it does not hold where its current backing chain reads
 * differently from `fresh`. Returns the bytes copied.
 */
async function copyDifferences(image: Qcow2Image, fresh: BlockDevice | undefined): Promise<number> {
  const cluster = image.blockSize.preferred;
  let copied = 0;
  for (let offset = 0; offset < image.size; ) {
    const extents = await image.blockStatus(offset, image.size - offset);
    for (const e of extents) {
      // depth 1: the image holds the range itself; nothing shows through from any backing file.
      if (e.depth !== 1) {
        for (let at = e.offset; at < e.offset + e.length; ) {
          const end = Math.min(e.offset + e.length, at - (at % cluster) + 16 * cluster);
          const oldData = (e.flags & ExtentFlags.ZERO) !== 0 ? new Uint8Array(end - at) : await image.read(at, end - at);
          const newData = await readOrZero(fresh, at, end - at);
          // Copy whole clusters that differ, so the image's allocation stays cluster-aligned.
          for (let c = at; c < end; ) {
            const cEnd = Math.min(end, c - (c % cluster) + cluster);
            if (firstDifference(oldData.subarray(c - at, cEnd - at), newData.subarray(c - at, cEnd - at)) >= 0) {
              await image.write(c, oldData.subarray(c - at, cEnd - at));
              copied += cEnd - c;
            }
            c = cEnd;
          }
          at = end;
        }
      }
      offset = e.offset + e.length;
    }
  }
  return copied;
}
