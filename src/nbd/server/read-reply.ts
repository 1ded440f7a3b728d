/**
 * NBD_CMD_READ replies. With structured replies a read is sparse (proto.md "NBD_CMD_READ",
 * structured replies): ranges the device reports as reading zero go out as
 * NBD_REPLY_TYPE_OFFSET_HOLE chunks without being read, the rest as NBD_REPLY_TYPE_OFFSET_DATA
 * chunks that point into the buffer the data was read into (no copy). With NBD_CMD_FLAG_DF, or
 * without structured replies, the whole range is one piece of data.
 *
 * A device that offers `readInto(offset, target)` (raw files, qcow2 images) reads into a buffer
 * of the server's {@link BufferPool}, which goes back to the pool once the reply is written;
 * other devices' `read` results are used as they are.
 */
import { ExtentFlags, type BlockDevice, type BlockExtent } from '../../block/block-device.js';
import { IoError } from '../../errors.js';
import { NBD_REPLY_TYPE_NONE, NBD_REPLY_TYPE_OFFSET_DATA, NBD_REPLY_TYPE_OFFSET_HOLE, type NbdRequest } from '../protocol/index.js';
import { type BufferPool } from './buffer-pool.js';
import { type KnownData } from './known-data.js';
import { chunkHead, chunkParts, putU32, putU64, simpleReply, type Reply, type ReplyMode } from './replies.js';

/** One piece of a read: bytes, or a range that reads as zero. */
export type ReadPiece =
  | { kind: 'data'; offset: number; data: Uint8Array }
  | { kind: 'hole'; offset: number; length: number };

/** What a read produced: its pieces, and the pool buffer their data lies in (if any). */
export interface ReadResult {
  pieces: ReadPiece[];
  /** Give it back to the pool once nothing refers to the pieces any more. */
  borrowed: Uint8Array | undefined;
}

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

/** A device that reads into a buffer of the caller's. */
type ReadIntoDevice = BlockDevice & { readInto(offset: number, target: Uint8Array): Promise<void> };

function hasReadInto(device: BlockDevice): device is ReadIntoDevice {
  return typeof (device as { readInto?: unknown }).readInto === 'function';
}

/** Where a read comes from and what may help it. */
export interface ReadSource {
  device: BlockDevice;
  /** Buffers to read into, for a device that can (`readInto`). */
  pool?: BufferPool | undefined;
  /** Ranges known to be data: a sparse read within one asks no block status. */
  known?: KnownData | undefined;
}

/**
 * Reads `[offset, offset + length)` (within the device; `length` at most the maximum payload).
 * With `sparse`, asks the device's block status first (unless `known` covers the range: data)
 * and reads only what is not a zero run of at least {@link MIN_HOLE_CHUNK} bytes. Pieces are in
 * order and cover the range exactly; none is empty. Device errors propagate (after every read
 * started has settled; a pool buffer they were reading into is then left to the garbage
 * collector, never reused).
 */
export async function readPieces(source: ReadSource, offset: number, length: number, sparse: boolean): Promise<ReadResult> {
  if (length === 0) return { pieces: [], borrowed: undefined };
  const { device, pool, known } = source;
  const end = offset + length;
  let spans: Span[] | undefined;
  // A range shorter than a hole chunk is data whatever its status says.
  if (sparse && length >= MIN_HOLE_CHUNK && device.capabilities.canBlockStatus && known?.covers(offset, end) !== true) {
    spans = [];
    let position = offset;
    while (position < end && spans.length < MAX_READ_PIECES) {
      const next = addExtents(spans, await device.blockStatus(position, end - position), position, end);
      if (next === position) break; // a broken answer or too many pieces: the rest is read as data
      position = next;
    }
    if (position < end) addSpan(spans, 'data', position, end - position);
  }
  const into = pool !== undefined && hasReadInto(device) ? device : undefined;
  if (spans === undefined || (spans.length === 1 && spans[0]!.kind === 'data')) {
    if (into === undefined) return { pieces: [{ kind: 'data', offset, data: await readExactly(device, offset, length) }], borrowed: undefined };
    const buffer = pool!.take(length);
    await into.readInto(offset, buffer);
    return { pieces: [{ kind: 'data', offset, data: buffer }], borrowed: buffer };
  }
  let dataBytes = 0;
  for (const span of spans) if (span.kind === 'data') dataBytes += span.length;
  if (dataBytes === 0) return { pieces: spans.map((span) => ({ kind: 'hole', offset: span.offset, length: span.length })), borrowed: undefined };
  const buffer = into === undefined ? undefined : pool!.take(length);
  const results = await Promise.allSettled(
    spans.map(async (span): Promise<ReadPiece> => {
      if (span.kind === 'hole') return { kind: 'hole', offset: span.offset, length: span.length };
      if (buffer === undefined) return { kind: 'data', offset: span.offset, data: await readExactly(device, span.offset, span.length) };
      const data = buffer.subarray(span.offset - offset, span.offset - offset + span.length);
      await into!.readInto(span.offset, data);
      return { kind: 'data', offset: span.offset, data };
    }),
  );
  const pieces: ReadPiece[] = [];
  for (const result of results) {
    if (result.status === 'rejected') throw result.reason;
    pieces.push(result.value);
  }
  return { pieces, borrowed: buffer };
}

async function readExactly(device: BlockDevice, offset: number, length: number): Promise<Uint8Array> {
  const data = await device.read(offset, length);
  if (data.length !== length) throw new IoError(`read ${length} bytes at ${offset}`, `the device returned ${data.length} bytes`, 'EIO');
  return data;
}

/**
 * Adds the spans a block status answer describes from `position` (merging neighbours of one
 * kind) and returns where they end: `position` itself when the answer is unusable (it does not
 * start at `position`, has an empty or unsafe extent) or {@link MAX_READ_PIECES} are reached.
 */
function addExtents(spans: Span[], extents: readonly BlockExtent[], position: number, end: number): number {
  for (const extent of extents) {
    if (extent.offset !== position || !(extent.length > 0) || !Number.isSafeInteger(extent.length)) break;
    if (spans.length >= MAX_READ_PIECES) break;
    const size = Math.min(extent.length, end - position);
    addSpan(spans, (extent.flags & ExtentFlags.ZERO) !== 0 && size >= MIN_HOLE_CHUNK ? 'hole' : 'data', position, size);
    position += size;
    if (position >= end) break;
  }
  return position;
}

function addSpan(spans: Span[], kind: Span['kind'], offset: number, length: number): void {
  const last = spans[spans.length - 1];
  if (last !== undefined && last.kind === kind) last.length += length;
  else spans.push({ kind, offset, length });
}

/**
 * The reply to a successful read. Simple replies: the header then the data (one piece).
 * Structured: one chunk per piece, the last with DONE (NBD_REPLY_TYPE_NONE for an empty read,
 * since a content chunk must describe at least one byte).
 */
export function encodeReadReply(mode: ReplyMode, request: NbdRequest, read: ReadResult): Reply {
  const { pieces, borrowed } = read;
  const parts: Uint8Array[] = [];
  if (!mode.structured && !mode.extended) {
    parts.push(simpleReply(request, 0));
    for (const piece of pieces) parts.push(piece.kind === 'data' ? piece.data : new Uint8Array(piece.length));
  } else if (pieces.length === 0) {
    return { parts: chunkParts(mode, request, NBD_REPLY_TYPE_NONE, true, []) };
  } else {
    const last = pieces.length - 1;
    for (let i = 0; i <= last; i++) {
      const piece = pieces[i]!;
      if (piece.kind === 'data') {
        // proto.md "NBD_REPLY_TYPE_OFFSET_DATA": a 64-bit offset, then the data.
        const head = chunkHead(mode, request, NBD_REPLY_TYPE_OFFSET_DATA, i === last, 8 + piece.data.length, 8);
        putU64(head, head.length - 8, piece.offset);
        parts.push(head, piece.data);
      } else {
        // proto.md "NBD_REPLY_TYPE_OFFSET_HOLE": a 64-bit offset and a 32-bit length.
        const head = chunkHead(mode, request, NBD_REPLY_TYPE_OFFSET_HOLE, i === last, 12, 12);
        putU64(head, head.length - 12, piece.offset);
        putU32(head, head.length - 4, piece.length);
        parts.push(head);
      }
    }
  }
  return borrowed === undefined ? { parts } : { parts, borrowed };
}
