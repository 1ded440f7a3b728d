/**
 * From block status descriptors (lengths from the start of the query, proto.md
 * "NBD_REPLY_TYPE_BLOCK_STATUS") to extents at absolute offsets, clamped to what the caller asked
 * for; and the merge of `base:allocation` with `qemu:allocation-depth` into `BlockExtent`s.
 */
import { type BlockExtent } from '../../block/block-device.js';
import { NbdProtocolError } from '../protocol/errors.js';
import { type StatusDescriptor } from '../protocol/transmission.js';

/** One extent of a meta context at an absolute offset. */
export interface ContextExtent {
  offset: number;
  length: number;
  flags: number;
}

/**
 * Places `descriptors` (which start at `queryStart`) at absolute offsets and keeps what lies in
 * `[offset, end)`: extents before `offset` are skipped (a query widened to the block size), one
 * that runs past `end` is cut (the spec allows the last to), and any after it are dropped.
 *
 * @throws NbdProtocolError when nothing of `[offset, end)` is described
 */
export function placeExtents(descriptors: readonly StatusDescriptor[], queryStart: number, offset: number, end: number, action: string): ContextExtent[] {
  const extents: ContextExtent[] = [];
  let position = queryStart;
  for (const { length, flags } of descriptors) {
    const start = position;
    position += length;
    if (position <= offset) continue;
    if (start >= end) break;
    const from = Math.max(start, offset);
    extents.push({ offset: from, length: Math.min(position, end) - from, flags });
    if (position >= end) break;
  }
  if (extents.length === 0) throw new NbdProtocolError(action, `the block status reply describes nothing from offset ${offset}`);
  return extents;
}

/**
 * `base:allocation` extents (flags HOLE and ZERO kept, other bits dropped) as `BlockExtent`s;
 * with `depth` (the `qemu:allocation-depth` extents of the same range), each extent also gets
 * the depth, split where either changes. The result ends where the shorter list ends.
 */
export function allocationExtents(base: readonly ContextExtent[], depth?: readonly ContextExtent[]): BlockExtent[] {
  const mask = 0b11;
  if (depth === undefined) return base.map(({ offset, length, flags }) => ({ offset, length, flags: flags & mask }));
  const out: BlockExtent[] = [];
  let i = 0;
  let j = 0;
  let position = base[0]!.offset;
  while (i < base.length && j < depth.length) {
    const a = base[i]!;
    const b = depth[j]!;
    const end = Math.min(a.offset + a.length, b.offset + b.length);
    out.push({ offset: position, length: end - position, flags: a.flags & mask, depth: b.flags });
    position = end;
    if (a.offset + a.length === end) i++;
    if (b.offset + b.length === end) j++;
  }
  return out;
}
