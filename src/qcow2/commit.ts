/**
 * `bitback image commit`: writes what a qcow2 overlay holds into its backing file, then empties
 * the overlay (unless `keep`), so the chain reads the same and the backing file alone holds the
 * data — what `qemu-img commit` does.
 */
import { rename, rm } from 'node:fs/promises';
import { ExtentFlags } from '../block/block-device.js';
import { InvalidArgumentError, NotSupportedError } from '../errors.js';
import { createQcow2 } from './create.js';
import { Qcow2Image } from './image/index.js';
import { imageInfo } from './info.js';
import { openImage } from './open-image.js';

/** Options of {@link commitImage}. */
export interface CommitOptions {
  /** Do not empty the overlay afterwards (`qemu-img commit -d`). */
  keep?: boolean;
}

/** What a commit did. */
export interface CommitStats {
  /** Bytes of data written into the backing file. */
  bytesCommitted: number;
  /** Whether the overlay was emptied. */
  emptied: boolean;
}

const CHUNK = 2 * 1024 * 1024;

/** Commits the overlay at `path` into its backing file. */
export async function commitImage(path: string, options: CommitOptions = {}): Promise<CommitStats> {
  const action = `commit ${path}`;
  const info = await imageInfo(path, 'qcow2');
  if (info['full-backing-filename'] === undefined) throw new InvalidArgumentError(action, 'the image has no backing file');
  const backingPath = info['full-backing-filename'];
  const backingFormat = info['backing-filename-format'] === 'raw' ? 'raw' : info['backing-filename-format'] === 'qcow2' ? 'qcow2' : undefined;
  const stats: CommitStats = { bytesCommitted: 0, emptied: false };
  // One graph, as qemu-img commit builds it: the backing file is opened once, for writing, and
  // the overlay reads through that open (a second, read-only open would conflict with its locks).
  const base = await openImage(backingPath, { ...(backingFormat ? { format: backingFormat } : {}) });
  try {
    const top = await Qcow2Image.open(path, { readOnly: true, backing: base.device });
    try {
      if (base.device.size < top.size) {
        throw new NotSupportedError(action, `the backing file ${backingPath} (${base.device.size} bytes) is smaller than the overlay (${top.size} bytes)`);
      }
      for (let offset = 0; offset < top.size; ) {
        for (const e of await top.blockStatus(offset, top.size - offset)) {
          if (e.depth === 1) {
            if ((e.flags & ExtentFlags.ZERO) !== 0) {
              await base.device.writeZeroes(e.offset, e.length);
            } else {
              for (let at = e.offset; at < e.offset + e.length; at += CHUNK) {
                const n = Math.min(CHUNK, e.offset + e.length - at);
                await base.device.write(at, await top.read(at, n));
              }
            }
            stats.bytesCommitted += e.length;
          }
          offset = e.offset + e.length;
        }
      }
      await base.device.flush();
    } finally {
      await top.close();
    }
  } finally {
    await base.device.close();
  }
  if (!options.keep) stats.emptied = await emptyOverlay(path, info);
  return stats;
}

/**
 * Replaces the overlay by an empty one with the same backing file and creation options. Images
 * with internal snapshots or bitmaps are kept as they are (their metadata would be lost).
 */
async function emptyOverlay(path: string, info: Awaited<ReturnType<typeof imageInfo>>): Promise<boolean> {
  const data = info['format-specific']?.data;
  if ((info.snapshots?.length ?? 0) > 0 || (data?.bitmaps?.length ?? 0) > 0) return false;
  const temporary = `${path}.bitback-empty`;
  await rm(temporary, { force: true });
  await createQcow2(temporary, {
    size: info['virtual-size'],
    ...(info['cluster-size'] !== undefined ? { clusterSize: info['cluster-size'] } : {}),
    ...(data !== undefined ? { refcountBits: data['refcount-bits'], compat: data.compat } : {}),
    ...(info['backing-filename'] !== undefined ? { backingFile: info['backing-filename'] } : {}),
    ...(info['backing-filename-format'] === 'raw' || info['backing-filename-format'] === 'qcow2' ? { backingFormat: info['backing-filename-format'] } : {}),
  });
  // The new file was created next to the old one, so a relative backing name resolves the same.
  await rename(temporary, path);
  return true;
}
