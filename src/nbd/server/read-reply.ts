/**
 * NBD_CMD_READ replies. With structured replies a read is sparse (proto.md "NBD_CMD_READ",
 * structured replies): ranges the device reports as reading zero go out as
 * NBD_REPLY_TYPE_OFFSET_HOLE chunks without being read, the rest as NBD_REPLY_TYPE_OFFSET_DATA
 * chunks that point into the buffers the device returned (no copy). With NBD_CMD_FLAG_DF, or
 * without structured replies, the whole range is one piece of data.
 */
import { ExtentFlags, type BlockDevice } from '../../block/block-device.js';
import { IoError } from '../../errors.js';
import {
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  encodeOffsetDataPrefix,
  encodeOffsetHole,
  encodeSimpleReply,
  type NbdRequest,
} from '../protocol/index.js';
import { chunkParts, type ReplyMode, type ReplyParts } from './replies.js';

/** One piece of a read: bytes, or a range that reads as zero. */
export type ReadPiece =
  | { kind: 'data'; offset: number; data: Uint8Array }
  | { kind: 'hole'; offset: number; length: number };

/**
 * Zero extents shorter than this are read and sent as data: a chunk header costs 20-32 bytes
 * and a client a reassembly step, which is not worth it for a few sectors.
 */
export const MIN_HOLE_CHUNK = 4096;
/** Most pieces (and so chunks) of one reply; past this, the rest of the range is one piece of data. */
export const MAX_READ_PIECES = 1024;

interface Span {
  kind: 'data' | 'hole';
  offset: number;
  length: number;
}

/**
 * Reads `[offset, offset + length)` (within the device; `length` at most the maximum payload).
 * With `sparse`, asks the device's block status first and reads only what is not a zero run of
 * at least {@link MIN_HOLE_CHUNK} bytes. Pieces are in order and cover the range exactly; none is
 * empty. Device errors propagate (after every read started has settled).
 */
export async function readPieces(device: BlockDevice, offset: number, length: number, sparse: boolean): Promise<ReadPiece[]> {
  if (length === 0) return [];
  const spans = sparse && device.capabilities.canBlockStatus ? await spansOf(device, offset, length) : [{ kind: 'data' as const, offset, length }];
  const results = await Promise.allSettled(
    spans.map(async (span): Promise<ReadPiece> =>
      span.kind === 'hole' ? { kind: 'hole', offset: span.offset, length: span.length } : { kind: 'data', offset: span.offset, data: await readExactly(device, span.offset, span.length) },
    ),
  );
  const pieces: ReadPiece[] = [];
  for (const result of results) {
    if (result.status === 'rejected') throw result.reason;
    pieces.push(result.value);
  }
  return pieces;
}

async function readExactly(device: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  const data = await device.read(offset, length);
  if (data.length !== length) throw new IoError(`read ${length} bytes at ${offset}`, `the device returned ${data.length} bytes`, 'EIO');
  return data;
}

/** Data and hole spans of the range, merged, from the device's block status. */
async function spansOf(device: BlockDevice, offset: number, length: number): Promise<Span[]> {
  const end = offset + length;
  const spans: Span[] = [];
  const add = (kind: Span['kind'], from: number, size: number): void => {
    const last = spans[spans.length - 1];
    if (last !== undefined && last.kind === kind) last.length += size;
    else spans.push({ kind, offset: from, length: size });
  };
  let position = offset;
  scan: while (position < end) {
    const extents = await device.blockStatus(position, end - position);
    if (extents.length === 0 || extents[0]!.offset !== position) break; // a broken answer: read the rest
    let progressed = false;
    for (const extent of extents) {
      if (extent.offset !== position || !(extent.length > 0) || !Number.isSafeInteger(extent.length)) break;
      if (spans.length >= MAX_READ_PIECES) break scan;
      const size = Math.min(extent.length, end - position);
      add((extent.flags & ExtentFlags.ZERO) !== 0 && size >= MIN_HOLE_CHUNK ? 'hole' : 'data', position, size);
      position += size;
      progressed = true;
      if (position >= end) break;
    }
    if (!progressed) break;
  }
  if (position < end) add('data', position, end - position);
  return spans;
}

/**
 * The reply to a successful read. Simple replies: the header then the data (one piece).
 * Structured: one chunk per piece, the last with DONE (NBD_REPLY_TYPE_NONE for an empty read,
 * since a content chunk must describe at least one byte).
 */
export function encodeReadReply(mode: ReplyMode, request: NbdRequest, pieces: readonly ReadPiece[]): ReplyParts {
  if (!mode.structured && !mode.extended) {
    return [encodeSimpleReply(request.cookie, 0), ...pieces.map((p) => (p.kind === 'data' ? p.data : new Uint8Array(p.length)))];
  }
  if (pieces.length === 0) return chunkParts(mode, request, NBD_REPLY_TYPE_NONE, true, []);
  const parts: ReplyParts = [];
  pieces.forEach((piece, i) => {
    const done = i === pieces.length - 1;
    if (piece.kind === 'data') parts.push(...chunkParts(mode, request, NBD_REPLY_TYPE_OFFSET_DATA, done, [encodeOffsetDataPrefix(piece.offset), piece.data]));
    else parts.push(...chunkParts(mode, request, NBD_REPLY_TYPE_OFFSET_HOLE, done, [encodeOffsetHole(piece.offset, piece.length)]));
  });
  return parts;
}
