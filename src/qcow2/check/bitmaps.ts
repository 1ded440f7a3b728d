/**
 * References of the persistent bitmaps (QEMU `qcow2_check_bitmaps_refcounts`): the bitmap
 * directory, each bitmap table and the data clusters it points to. As in QEMU, bitmaps count
 * only while the auto-clear bitmaps bit is set; otherwise their clusters show up as leaks.
 * @internal
 */
import { Qcow2FormatError, Qcow2UnsupportedError, decodeBitmapDirectory, decodeBitmapTableEntry, featuresOf } from '../format/index.js';
import { charge, reference, type CheckContext } from './context.js';
import { hex } from './findings.js';
import { Role } from './reference-counts.js';

/** Counts the bitmap directory, tables and data clusters. */
export async function referenceBitmaps(ctx: CheckContext): Promise<void> {
  const extension = ctx.extensions.bitmaps;
  if (extension === undefined || !featuresOf(ctx.header).bitmaps) return;
  const { bitmapDirectoryOffset: offset, bitmapDirectorySize: size } = extension;
  if (!reference(ctx, offset, size, Role.BITMAP_DIRECTORY, 'bitmap_directory')) return;
  const directory = await ctx.file.readClamped(offset, size);
  if (directory.length < size) {
    ctx.findings.add({ kind: 'bitmap', field: 'bitmap_directory', offset, message: `the ${size}-byte directory at ${hex(offset)} runs past the end of the file` });
    return;
  }
  let entries;
  try {
    entries = decodeBitmapDirectory(directory, 0, extension, { geometry: ctx.geometry, virtualSize: ctx.header.size });
  } catch (e) {
    if (!(e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError)) throw e;
    ctx.findings.add({ kind: 'bitmap', field: e.field, offset, message: e.reason });
    return;
  }
  for (const [b, entry] of entries.entries()) {
    const field = `bitmap_directory[${b}].bitmap_table`;
    const tableBytes = entry.bitmapTableSize * 8;
    if (!reference(ctx, entry.bitmapTableOffset, tableBytes, Role.BITMAP_TABLE, field)) continue;
    const table = await ctx.file.readClamped(entry.bitmapTableOffset, tableBytes, 8);
    charge(ctx, table.length / 8, field);
    // QEMU validates the whole table before it counts any data cluster, and stops at a bad one.
    const dataClusters: Array<[number, number]> = [];
    for (let i = 0; i < Math.floor(table.length / 8); i++) {
      try {
        const e = decodeBitmapTableEntry(table, i, ctx.geometry);
        if (e.kind === 'data') dataClusters.push([i, e.hostOffset]);
      } catch (e) {
        if (!(e instanceof Qcow2FormatError || e instanceof Qcow2UnsupportedError)) throw e;
        ctx.findings.add({ kind: 'bitmap', field: `bitmap '${entry.name}' ${e.field}`, offset: entry.bitmapTableOffset + i * 8, message: e.reason });
        return;
      }
    }
    for (const [i, dataOffset] of dataClusters) {
      reference(ctx, dataOffset, ctx.geometry.clusterSize, Role.BITMAP_DATA, `bitmap '${entry.name}' bitmap_table[${i}]`);
    }
  }
}
