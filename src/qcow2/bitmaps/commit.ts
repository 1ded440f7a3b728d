/**
 * Storing the whole set of bitmaps of an image at once, atomically: new data clusters, then new
 * tables, then a new directory, a sync, then one header write that points the bitmaps
 * extension at the new directory (and sets or clears auto-clear bit 0), and only then are the
 * old directory and the replaced tables freed. A process killed at any point leaves either the
 * old bitmaps or the new ones, with at worst leaked clusters; a bitmap is only ever marked
 * consistent (`in_use` clear) together with the data it had when it was written.
 * @internal
 */
import type { DirtyBitmap } from '../../bitmap/index.js';
import { AutoclearFeature, encodeBitmapDirectory, type BitmapDirectoryEntry } from '../format/index.js';
import type { Qcow2Internals } from '../image/index.js';
import { freeDirectory, freeTable, writeBitmap, writeDirectory, writeEmptyTable } from './store.js';
import type { BitmapSlot, StoredDirectory, StoredTable } from './stored.js';

/** What {@link commitBitmaps} writes. */
export interface CommitOptions {
  /**
   * Store every consistent bitmap with `in_use` set (mode `track` while the image is open:
   * a crash then leaves them inconsistent). Inconsistent bitmaps always keep `in_use`.
   */
  inUse: boolean;
  /**
   * Bitmaps whose data is written anew (`all`: every consistent one, on close). The others keep
   * their table when it is owned; new bitmaps and those with an untrusted table are always written.
   */
  rewrite: ReadonlySet<BitmapSlot> | 'all';
  /** Tables of bitmaps removed since the last commit: freed once the new header is written. */
  released: readonly StoredTable[];
}

/**
 * Stores the persistent bitmaps of `slots` as the image's bitmap directory and returns the new
 * directory (undefined when there are no persistent bitmaps: the extension is removed and
 * auto-clear bit 0 cleared). On success each slot's `table` is its new table. Run inside
 * `internals.exclusive`.
 *
 * Freeing the old clusters is best effort: once the header points to the new directory a
 * failure there only leaks clusters (`qemu-img check -r leaks` repairs that), so it is not
 * reported.
 */
export async function commitBitmaps(
  internals: Qcow2Internals,
  virtualSize: number,
  slots: readonly BitmapSlot[],
  directory: StoredDirectory | undefined,
  options: CommitOptions,
): Promise<StoredDirectory | undefined> {
  const freeLater: StoredTable[] = [...options.released];
  const tables = new Map<BitmapSlot, StoredTable | undefined>();
  const entries: BitmapDirectoryEntry[] = [];
  for (const slot of slots) {
    const bitmap = slot.bitmap;
    if (!bitmap.persistent) {
      // No longer persistent: it leaves the image.
      if (slot.table !== undefined) freeLater.push(slot.table);
      tables.set(slot, undefined);
      continue;
    }
    let table = slot.table;
    if (bitmap.inconsistent) {
      // Its data means nothing: keep the table it has, unless nothing vouches for that table.
      if (table === undefined || !table.owned) table = await writeEmptyTable(internals, bitmap);
    } else if (table === undefined || !table.owned || options.rewrite === 'all' || options.rewrite.has(slot)) {
      table = await writeBitmap(internals, withSuccessor(bitmap));
      if (slot.table !== undefined) freeLater.push(slot.table);
    }
    tables.set(slot, table);
    entries.push({
      name: bitmap.name!,
      bitmapTableOffset: table.offset,
      bitmapTableSize: table.size,
      granularityBits: Math.log2(bitmap.granularity),
      inUse: bitmap.inconsistent || options.inUse,
      auto: !bitmap.inconsistent && (bitmap.enabled || (bitmap.successor?.enabled ?? false)),
      extraDataCompatible: slot.extraDataCompatible,
      extraData: slot.extraData,
    });
  }

  let next: StoredDirectory | undefined;
  if (entries.length > 0) {
    const bytes = encodeBitmapDirectory(entries, { geometry: internals.geometry, virtualSize });
    next = { offset: await writeDirectory(internals, bytes), size: bytes.length, owned: true };
  }
  const image = internals.imageHeader();
  if (next === undefined && directory === undefined && (image.header.autoclearFeatures & AutoclearFeature.BITMAPS) === 0n) {
    return undefined; // nothing stored before, nothing to store now
  }
  // Everything new reaches the disk before the header points to it.
  await internals.datasync();
  if (next !== undefined) {
    image.extensions.bitmaps = { nbBitmaps: entries.length, bitmapDirectorySize: next.size, bitmapDirectoryOffset: next.offset };
    if (image.header.version >= 3) image.header.autoclearFeatures |= AutoclearFeature.BITMAPS;
  } else {
    delete image.extensions.bitmaps;
    image.header.autoclearFeatures &= ~AutoclearFeature.BITMAPS;
  }
  await internals.writeImageHeader(image);

  for (const [slot, table] of tables) slot.table = table;
  try {
    if (directory?.owned === true) await freeDirectory(internals, directory.offset, directory.size);
    for (const table of freeLater) await freeTable(internals, table);
  } catch {
    // Only leaks are left (see above).
  }
  return next;
}

/**
 * What a bitmap stands for when stored: its own bits, plus those of its successor while a job
 * has it frozen (what `reclaim` would give, so that no write is lost).
 */
function withSuccessor(bitmap: DirtyBitmap): DirtyBitmap {
  const successor = bitmap.successor;
  if (successor === undefined) return bitmap;
  const union = bitmap.copy(bitmap.name);
  union.merge(successor);
  return union;
}
