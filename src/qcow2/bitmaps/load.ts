/**
 * Loading the persistent bitmaps of an image (spec "Bitmaps extension", "Bitmap directory",
 * "Bitmap table"): the directory from the extension, then for each bitmap that can be trusted
 * its table and data clusters, deserialized into a `DirtyBitmap` one cluster at a time.
 *
 * A bitmap is inconsistent (loaded without data, never trusted) when its `in_use` flag is set,
 * or when the extension is there but auto-clear bit 0 is not (a program without bitmap support
 * changed the image since; version 2 images have no auto-clear bits at all).
 * @internal
 */
import { DirtyBitmap, deserializeBytes } from '../../bitmap/index.js';
import { BitbackError } from '../../errors.js';
import {
  AutoclearFeature,
  Qcow2FormatError,
  Qcow2UnsupportedError,
  TABLE_ENTRY_SIZE,
  bitmapDataBytes,
  decodeBitmapDirectory,
  decodeBitmapTableEntry,
  type BitmapDirectoryEntry,
  type Qcow2ImageHeader,
} from '../format/index.js';
import type { Qcow2Internals } from '../image/index.js';
import type { BitmapSlot, StoredDirectory } from './stored.js';

/** Table entries read at once: bounded memory for huge tables. */
const TABLE_CHUNK_ENTRIES = 65536;

/** What {@link loadBitmaps} found. */
export interface LoadedBitmaps {
  directory: StoredDirectory | undefined;
  slots: BitmapSlot[];
}

/**
 * Reads the bitmaps that `image` (the first cluster as the image knows it) describes.
 *
 * @param virtualSize - the disk size in bytes (every bitmap's size)
 * @param fileSize - the image file's size, that tables and data clusters must lie within
 * @throws Qcow2FormatError / Qcow2UnsupportedError for a directory or table the spec or QEMU refuse
 */
export async function loadBitmaps(internals: Qcow2Internals, image: Qcow2ImageHeader, virtualSize: number, fileSize: number): Promise<LoadedBitmaps> {
  const extension = image.extensions.bitmaps;
  if (extension === undefined) return { directory: undefined, slots: [] };
  const geometry = internals.geometry;
  const owned = image.header.version >= 3 && (image.header.autoclearFeatures & AutoclearFeature.BITMAPS) !== 0n;
  const bytes = await internals.readHost(extension.bitmapDirectoryOffset, extension.bitmapDirectorySize);
  let entries: BitmapDirectoryEntry[];
  try {
    entries = decodeBitmapDirectory(bytes, 0, extension, { geometry, virtualSize }, fileSize);
  } catch (e) {
    // Without the auto-clear bit nothing vouches for the directory: its cluster may hold other
    // data by now. QEMU ignores such an extension; so do we (the next store drops it).
    if (owned || !(e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError)) throw e;
    entries = [];
  }
  const slots: BitmapSlot[] = [];
  for (const entry of entries) {
    const inconsistent = !owned || entry.inUse;
    const bitmap = new DirtyBitmap({
      size: virtualSize,
      granularity: 2 ** entry.granularityBits,
      name: entry.name,
      persistent: true,
      enabled: !inconsistent && entry.auto,
      inconsistent,
    });
    if (!inconsistent) await readData(internals, entry, bitmap, fileSize);
    slots.push({
      bitmap,
      table: { offset: entry.bitmapTableOffset, size: entry.bitmapTableSize, owned },
      extraData: entry.extraData,
      extraDataCompatible: entry.extraDataCompatible,
    });
  }
  return {
    directory: { offset: extension.bitmapDirectoryOffset, size: extension.bitmapDirectorySize, owned },
    slots,
  };
}

/** Fills `bitmap` from the table of `entry`: entry 0 all clean, "ones" all dirty, else a data cluster. */
async function readData(internals: Qcow2Internals, entry: BitmapDirectoryEntry, bitmap: DirtyBitmap, fileSize: number): Promise<void> {
  const geometry = internals.geometry;
  const cs = geometry.clusterSize;
  const dataBytes = bitmapDataBytes(bitmap.size, entry.granularityBits);
  // Entries past the data (a table larger than needed) describe nothing.
  const used = Math.min(entry.bitmapTableSize, Math.ceil(dataBytes / cs));
  for (let first = 0; first < used; first += TABLE_CHUNK_ENTRIES) {
    const count = Math.min(TABLE_CHUNK_ENTRIES, used - first);
    const table = await internals.readHost(entry.bitmapTableOffset + first * TABLE_ENTRY_SIZE, count * TABLE_ENTRY_SIZE);
    for (let i = 0; i < count; i++) {
      const byteOffset = (first + i) * cs;
      const length = Math.min(cs, dataBytes - byteOffset);
      const cluster = decodeBitmapTableEntry(table, i, geometry, fileSize);
      switch (cluster.kind) {
        case 'zeroes':
          break; // a new bitmap is clean
        case 'ones':
          deserializeBytes(bitmap, byteOffset, new Uint8Array(length).fill(0xff));
          break;
        case 'data':
          deserializeBytes(bitmap, byteOffset, await internals.readHost(cluster.hostOffset, length));
          break;
        default: {
          const never: never = cluster;
          throw new BitbackError('INTERNAL', 'load bitmap data', `unknown table entry kind ${String((never as { kind: unknown }).kind)}`);
        }
      }
    }
  }
}
