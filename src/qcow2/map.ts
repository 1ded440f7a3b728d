/**
 * `bitback image map`: the allocation of a disk, like `qemu-img map --output=json`: runs of
 * `{start, length, depth, present, zero, data}`, where `depth` is the layer of the backing chain
 * that holds the range (0 = the image itself; for a range no layer holds, the bottom layer's
 * index, as QEMU prints it) and `present` says whether any layer holds it.
 *
 * Unlike qemu-img we do not print the host `offset` of data; runs are merged when their other
 * fields are equal.
 */
import { ExtentFlags, type BlockDevice } from '../block/block-device.js';

/** One run of `qemu-img map --output=json`. */
export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
}

/**
 * Maps the whole device. `chainLength` is the number of files in its backing chain (1 without a
 * backing file), used for ranges that no layer holds.
 */
export async function mapDevice(device: BlockDevice, chainLength: number): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  for (let offset = 0; offset < device.size; ) {
    const extents = await device.blockStatus(offset, device.size - offset);
    for (const e of extents) {
      const zero = (e.flags & ExtentFlags.ZERO) !== 0;
      // Devices without layers (raw) hold every byte themselves, as QEMU's file driver does.
      const present = e.depth === undefined ? true : e.depth > 0;
      const depth = e.depth === undefined ? 0 : e.depth > 0 ? e.depth - 1 : chainLength - 1;
      const entry: MapEntry = { start: e.offset, length: e.length, depth, present, zero, data: present && !zero };
      const last = out[out.length - 1];
      if (last !== undefined && last.start + last.length === entry.start && last.depth === depth && last.present === present && last.zero === zero && last.data === entry.data) {
        last.length += entry.length;
      } else {
        out.push(entry);
      }
      offset = e.offset + e.length;
    }
  }
  return out;
}

/** The human-readable form: one line per run that holds data or reads as zero from a layer. */
export function formatMap(entries: readonly MapEntry[]): string[] {
  const lines = ['Offset          Length          Depth  Present  Zero   Data'];
  for (const e of entries) {
    lines.push(
      `0x${e.start.toString(16).padEnd(14)}0x${e.length.toString(16).padEnd(14)}${String(e.depth).padEnd(7)}` +
        `${String(e.present).padEnd(9)}${String(e.zero).padEnd(7)}${e.data}`,
    );
  }
  return lines;
}
