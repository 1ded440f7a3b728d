/**
 * Test-only: reading the replies a {@link RawClient} collected — the error value, the bytes of a
 * READ, the descriptors of a BLOCK_STATUS — with the protocol's decoders.
 */
import {
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
  NBD_REPLY_TYPE_ERROR_BIT,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  decodeBlockStatus,
  decodeErrorPayload,
  decodeOffsetData,
  decodeOffsetHole,
  type StatusDescriptor,
} from '../../protocol/index.js';
import { type RawReply } from './raw-client.js';

/** The error value of a reply (0 for success) and the message of an error chunk. */
export function replyError(reply: RawReply): { errno: number; message: string } {
  for (const frame of reply) {
    if (frame.kind === 'simple') return { errno: frame.error, message: '' };
    if ((frame.type & NBD_REPLY_TYPE_ERROR_BIT) !== 0) {
      const { error, message } = decodeErrorPayload(frame.payload, frame.type);
      return { errno: error, message };
    }
  }
  return { errno: 0, message: '' };
}

/** One content chunk of a READ reply, as a range. */
export interface ContentChunk {
  kind: 'data' | 'hole';
  offset: number;
  length: number;
}

/**
 * The bytes a successful READ reply describes, and its content chunks. Throws when the reply is
 * an error, has a chunk outside the range, or leaves a byte undescribed or described twice.
 */
export function readReplyData(reply: RawReply, offset: number, length: number): { data: Uint8Array; chunks: ContentChunk[] } {
  const data = new Uint8Array(length);
  const covered = new Uint8Array(length);
  const chunks: ContentChunk[] = [];
  const cover = (from: number, size: number): void => {
    if (from < offset || from + size > offset + length || size === 0) throw new Error(`a chunk ${from}+${size} is outside the read ${offset}+${length}`);
    for (let i = from - offset; i < from - offset + size; i++) {
      if (covered[i] === 1) throw new Error(`byte ${offset + i} is described twice`);
      covered[i] = 1;
    }
  };
  for (const frame of reply) {
    if (frame.kind === 'simple') {
      if (frame.error !== 0) throw new Error(`the read failed with error ${frame.error}`);
      if (length > 0) data.set(frame.data!);
      covered.fill(1);
      chunks.push({ kind: 'data', offset, length });
      continue;
    }
    switch (frame.type) {
      case NBD_REPLY_TYPE_OFFSET_DATA: {
        const chunk = decodeOffsetData(frame.payload);
        cover(chunk.offset, chunk.data.length);
        data.set(chunk.data, chunk.offset - offset);
        chunks.push({ kind: 'data', offset: chunk.offset, length: chunk.data.length });
        break;
      }
      case NBD_REPLY_TYPE_OFFSET_HOLE: {
        const hole = decodeOffsetHole(frame.payload);
        cover(hole.offset, hole.length);
        chunks.push({ kind: 'hole', ...hole });
        break;
      }
      case NBD_REPLY_TYPE_NONE:
        break;
      default:
        throw new Error(`unexpected chunk type ${frame.type} in a read reply`);
    }
  }
  if (covered.includes(0)) throw new Error(`byte ${offset + covered.indexOf(0)} is not described`);
  return { data, chunks };
}

/** The descriptors of a BLOCK_STATUS reply, by context id (throws on anything else). */
export function blockStatusOf(reply: RawReply): Map<number, StatusDescriptor[]> {
  const out = new Map<number, StatusDescriptor[]>();
  for (const frame of reply) {
    if (frame.kind !== 'chunk' || (frame.type !== NBD_REPLY_TYPE_BLOCK_STATUS && frame.type !== NBD_REPLY_TYPE_BLOCK_STATUS_EXT)) {
      throw new Error(`unexpected ${frame.kind} frame of type ${frame.kind === 'chunk' ? frame.type : 'simple'} in a block status reply`);
    }
    const { contextId, extents } = decodeBlockStatus(frame.payload, frame.type);
    if (out.has(contextId)) throw new Error(`context ${contextId} answered twice`);
    out.set(contextId, extents);
  }
  return out;
}
