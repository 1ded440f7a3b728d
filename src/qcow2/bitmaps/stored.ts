/**
 * What the bitmap code remembers about each bitmap of an image: the live `DirtyBitmap` and
 * where (if anywhere) its directory entry and table are on disk now.
 * @internal
 */
import type { DirtyBitmap } from '../../bitmap/index.js';

/** A bitmap table on disk. */
export interface StoredTable {
  /** Cluster-aligned byte offset of the table. */
  offset: number;
  /** Entries in the table. */
  size: number;
  /**
   * True when the table and its data clusters are counted in the refcounts for this bitmap, so
   * they may be freed once nothing points to them. False for a directory found without the
   * auto-clear bit: a repair (`qemu-img check -r`) may have freed and reused those clusters,
   * so they are never freed and never pointed to again (at worst they leak).
   */
  owned: boolean;
}

/** One bitmap of the image. */
export interface BitmapSlot {
  bitmap: DirtyBitmap;
  /** Its current table on disk; undefined until it is first stored. */
  table: StoredTable | undefined;
  /** Extra data of the directory entry (kept as it was; only with `extraDataCompatible`). */
  extraData: Uint8Array;
  extraDataCompatible: boolean;
}

/** The bitmap directory on disk. */
export interface StoredDirectory {
  /** Cluster-aligned byte offset. */
  offset: number;
  /** Bytes. */
  size: number;
  /** Counted in the refcounts (see {@link StoredTable.owned}). */
  owned: boolean;
}
