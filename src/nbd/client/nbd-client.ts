/**
 * The NBD client as a `BlockDevice`: one export over one or more connections (several only when
 * the server advertises CAN_MULTI_CONN). Large requests are split into `requestSize` pieces sent
 * at once, each to the least busy connection; the server's block size constraints are honoured
 * (requests never exceed its maximum payload; below its minimum block size the client
 * reads, modifies and writes whole blocks).
 */
import {
  type BlockCapabilities,
  type BlockDevice,
  type BlockExtent,
  type BlockSizeConstraints,
  type WriteOptions,
  type WriteZeroesOptions,
} from '../../block/block-device.js';
import { checkRange } from '../../block/range.js';
import { RequestGate } from '../../block/request-gate.js';
import { InvalidArgumentError, IoError, NotFoundError, NotSupportedError, ReadOnlyError } from '../../errors.js';
import {
  BASE_ALLOCATION,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  QEMU_ALLOCATION_DEPTH,
} from '../protocol/constants.js';
import { NbdCommandError } from '../protocol/errors.js';
import { type NbdUri } from '../protocol/uri.js';
import { NbdConnection } from './connection.js';
import { allocationExtents, placeExtents, type ContextExtent } from './extents.js';
import { openConnections, type OpenedExport } from './open-export.js';
import { RangeLock } from './range-lock.js';
import { type StatusReply } from './reply-assembly.js';
import { alignDown, alignUp, pieces, settleAll, type ClientSettings, type NbdConnectOptions } from './settings.js';

/** Longest range of one TRIM or WRITE_ZEROES request (they carry no payload; kept well under 2^32). */
const ZERO_REQUEST_LIMIT = 1024 * 1024 * 1024;

/** An NBD export as a `BlockDevice`; see the module comment. */
export class NbdClient implements BlockDevice {
  readonly exportName: string;
  readonly description: string | undefined;
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  /** NBD transmission flags as the server sent them. */
  readonly transmissionFlags: number;
  /** Negotiated meta contexts. */
  readonly contexts: readonly string[];
  readonly extendedHeaders: boolean;
  readonly structuredReplies: boolean;
  /** Connections open (1 unless the server allows multi-conn and more were asked for). */
  readonly connectionCount: number;
  /** The session runs over TLS. */
  readonly tls: boolean;

  readonly #connections: NbdConnection[];
  readonly #gate = new RequestGate();
  readonly #settings: ClientSettings;
  readonly #target: string;
  readonly #lock = new RangeLock();
  #zeroes: Uint8Array | undefined;

  private constructor(opened: OpenedExport[], exportName: string, where: string, settings: ClientSettings) {
    const first = opened[0]!;
    const { details } = first;
    this.exportName = exportName;
    this.description = details.description;
    this.size = details.size;
    this.transmissionFlags = details.transmissionFlags;
    this.contexts = [...first.contexts.values()];
    this.extendedHeaders = first.extendedHeaders;
    this.structuredReplies = first.structuredReplies;
    this.connectionCount = opened.length;
    this.tls = first.tls;
    this.#settings = settings;
    this.#target = `NBD export '${exportName}' at ${where}`;
    const flags = details.transmissionFlags;
    this.capabilities = {
      readOnly: (flags & NBD_FLAG_READ_ONLY) !== 0 || settings.readOnly,
      canFlush: (flags & NBD_FLAG_SEND_FLUSH) !== 0,
      canFua: (flags & NBD_FLAG_SEND_FUA) !== 0,
      canTrim: (flags & NBD_FLAG_SEND_TRIM) !== 0,
      trimZeroes: false,
      canFastZero: (flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0 && (flags & NBD_FLAG_SEND_FAST_ZERO) !== 0,
      canBlockStatus: this.contexts.includes(BASE_ALLOCATION),
      multiConn: (flags & NBD_FLAG_CAN_MULTI_CONN) !== 0,
    };
    this.blockSize = settings.blockSize;
    this.#connections = opened.map(
      (o) =>
        new NbdConnection(o.stream, o.leftover, o.input, {
          structuredReplies: o.structuredReplies,
          extendedHeaders: o.extendedHeaders,
          contexts: o.contexts,
          maxInFlight: settings.maxInFlight,
          maxReplyPayload: settings.maxReplyPayload,
          target: this.#target,
        }),
    );
  }

  /**
   * Connects to `target` (an NBD URI) and negotiates; see {@link NbdConnectOptions}.
   *
   * @throws InvalidArgumentError for a bad URI or options (or an `nbds` URI without credentials);
   *   NbdOptionError when the server refuses (code NOT_FOUND for an unknown export);
   *   NotFoundError naming a meta context the server lacks; NbdProtocolError when the peer breaks
   *   the protocol (or is not an NBD server); IoError for connection failures (ETIMEDOUT past
   *   `timeoutMs`).
   */
  static async connect(target: string | NbdUri, options: NbdConnectOptions = {}): Promise<NbdClient> {
    const { opened, exportName, where, settings } = await openConnections(target, options);
    return new NbdClient(opened, exportName, where, settings);
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    const action = `read ${length} bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0) return new Uint8Array(0);
      const { start, end } = this.#aligned(offset, offset + length);
      const data = await this.#readRange(action, start, end);
      return start === offset && data.length === length ? data : data.subarray(offset - start, offset - start + length);
    });
  }

  /**
   * Reads `target.length` bytes at `offset` into `target` (borrowed until the promise settles;
   * on failure its content is unspecified): `read` without allocating, for callers that reuse
   * their buffers. Reply data goes from the socket straight into `target` where it can.
   */
  readInto(offset: number, target: Uint8Array): Promise<void> {
    const action = `read ${target?.length} bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      if (!(target instanceof Uint8Array)) throw new InvalidArgumentError(action, 'target is not a Uint8Array');
      checkRange(action, this.size, offset, target.length);
      if (target.length === 0) return;
      const { start, end } = this.#aligned(offset, offset + target.length);
      if (start === offset && end === offset + target.length) await this.#readRange(action, start, end, target);
      else target.set((await this.#readRange(action, start, end)).subarray(offset - start, offset - start + target.length));
    });
  }

  write(offset: number, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    const action = `write ${data?.length} bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      this.#checkWritable(action);
      checkRange(action, this.size, offset, data.length);
      if (data.length === 0) return;
      const fua = options.fua === true;
      const nativeFua = fua && this.capabilities.canFua;
      const flags = nativeFua ? NBD_CMD_FLAG_FUA : 0;
      if (this.blockSize.minimum === 1) await this.#sendWrites(action, offset, data, flags);
      else await this.#locked(offset, offset + data.length, () => this.#writeBlocks(action, offset, data, flags));
      if (fua && !nativeFua) await this.#flushOnce(action);
    });
  }

  writeZeroes(offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
    const action = `write ${length} zero bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      this.#checkWritable(action);
      checkRange(action, this.size, offset, length);
      if (length === 0) return;
      const fast = options.fast === true;
      const fua = options.fua === true;
      const nativeFua = fua && this.capabilities.canFua;
      const end = offset + length;
      if ((this.transmissionFlags & NBD_FLAG_SEND_WRITE_ZEROES) === 0) {
        if (fast) throw new NotSupportedError(action, 'the server cannot write zeroes fast (no NBD_FLAG_SEND_WRITE_ZEROES)');
        await this.#writeZeroBuffers(action, offset, end, nativeFua ? NBD_CMD_FLAG_FUA : 0);
      } else {
        if (fast && !this.capabilities.canFastZero) throw new NotSupportedError(action, 'the server cannot write zeroes fast (no NBD_FLAG_SEND_FAST_ZERO)');
        const flags = (options.mayTrim === true ? 0 : NBD_CMD_FLAG_NO_HOLE) | (fast ? NBD_CMD_FLAG_FAST_ZERO : 0) | (nativeFua ? NBD_CMD_FLAG_FUA : 0);
        try {
          if (this.blockSize.minimum === 1) await this.#sendRanges(action, NBD_CMD_WRITE_ZEROES, flags, offset, end);
          else await this.#locked(offset, end, () => this.#zeroBlocks(action, offset, end, flags));
        } catch (e) {
          // proto.md NBD_CMD_FLAG_FAST_ZERO: a server that cannot zero fast fails with ENOTSUP.
          if (fast && e instanceof NbdCommandError && e.errno === 'ENOTSUP') throw new NotSupportedError(action, 'the server cannot zero this range fast', { cause: e });
          throw e;
        }
      }
      if (fua && !nativeFua) await this.#flushOnce(action);
    });
  }

  trim(offset: number, length: number, options: WriteOptions = {}): Promise<void> {
    const action = `trim ${length} bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      this.#checkWritable(action);
      checkRange(action, this.size, offset, length);
      if (length === 0 || !this.capabilities.canTrim) return;
      const fua = options.fua === true;
      const nativeFua = fua && this.capabilities.canFua;
      // A trim is a hint: below the minimum block size there is nothing to gain by a read-modify-write.
      const start = alignUp(offset, this.blockSize.minimum);
      const end = offset + length === this.size ? this.size : alignDown(offset + length, this.blockSize.minimum);
      if (start < end) await this.#sendRanges(action, NBD_CMD_TRIM, nativeFua ? NBD_CMD_FLAG_FUA : 0, start, end);
      if (fua && !nativeFua) await this.#flushOnce(action);
    });
  }

  flush(): Promise<void> {
    const action = `flush ${this.#target}`;
    return this.#gate.run(action, () => this.#flushOnce(action));
  }

  /**
   * Allocation of `[offset, offset + length)` from `base:allocation` (with the depth from
   * `qemu:allocation-depth` when that context was selected); everything as data when the server
   * has no `base:allocation`. The list may end early (one request's worth), never past the range.
   */
  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    const action = `query the block status of ${length} bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      this.#checkStatusRange(action, offset, length);
      if (!this.capabilities.canBlockStatus) return [{ offset, length, flags: 0 }];
      const { start, end, reply } = await this.#queryStatus(action, offset, length, 0);
      const base = placeExtents(reply.get(BASE_ALLOCATION)!, start, offset, end, action);
      const depth = reply.get(QEMU_ALLOCATION_DEPTH);
      return allocationExtents(base, depth === undefined ? undefined : placeExtents(depth, start, offset, end, action));
    });
  }

  /**
   * Extents of any negotiated meta context, `[{ offset, length, flags }]` from `offset` on,
   * clamped to the request; may end before `offset + length`. `reqOne` sets NBD_CMD_FLAG_REQ_ONE
   * (one extent per context).
   *
   * @throws NotFoundError when `context` was not negotiated
   */
  contextStatus(context: string, offset: number, length: number, options: { reqOne?: boolean } = {}): Promise<ContextExtent[]> {
    const action = `query ${context} for ${length} bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      if (!this.contexts.includes(context)) {
        throw new NotFoundError(action, `the context was not negotiated (negotiated: ${this.contexts.length === 0 ? 'none' : this.contexts.join(', ')})`);
      }
      this.#checkStatusRange(action, offset, length);
      const { start, end, reply } = await this.#queryStatus(action, offset, length, options.reqOne === true ? NBD_CMD_FLAG_REQ_ONE : 0);
      return placeExtents(reply.get(context)!, start, offset, end, action);
    });
  }

  /** Asks the server to cache the range (NBD_CMD_CACHE); a no-op when it cannot. */
  cache(offset: number, length: number): Promise<void> {
    const action = `cache ${length} bytes at ${offset} of ${this.#target}`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      if (length === 0 || (this.transmissionFlags & NBD_FLAG_SEND_CACHE) === 0) return;
      const { start, end } = this.#aligned(offset, offset + length);
      await settleAll(pieces(start, end, this.#settings.requestSize).map(([at, count]) => this.#pick(action).command(NBD_CMD_CACHE, 0, at, count)));
    });
  }

  /** Waits for the requests in flight, then disconnects softly (NBD_CMD_DISC) and closes every connection. */
  close(): Promise<void> {
    return this.#gate.close(async () => {
      await Promise.all(this.#connections.map((c) => c.close()));
    });
  }

  /** Reads the aligned range `[start, end)` in requests of `requestSize`, into `into` (exactly that long) or a new buffer. */
  async #readRange(action: string, start: number, end: number, into?: Uint8Array): Promise<Uint8Array> {
    const { requestSize } = this.#settings;
    if (end - start <= requestSize) return this.#pick(action).read(start, end - start, into);
    const out = into ?? new Uint8Array(end - start);
    await settleAll(pieces(start, end, requestSize).map(([at, count]) => this.#pick(action).read(at, count, out, at - start)));
    return out;
  }

  /** The least busy usable connection; rejects with a retryable error when none is left. */
  #pick(action: string): NbdConnection {
    let best: NbdConnection | undefined;
    for (const c of this.#connections) if (c.usable && (best === undefined || c.load < best.load)) best = c;
    if (best !== undefined) return best;
    throw this.#connections[0]!.unusableError(action) ?? new IoError(action, 'no connection is usable', 'ECONNRESET', { retryable: true });
  }

  #checkWritable(action: string): void {
    if (!this.capabilities.readOnly) return;
    throw new ReadOnlyError(action, (this.transmissionFlags & NBD_FLAG_READ_ONLY) !== 0 ? 'the export is read-only' : 'the client was opened read-only');
  }

  #checkStatusRange(action: string, offset: number, length: number): void {
    checkRange(action, this.size, offset, length);
    if (length === 0) throw new InvalidArgumentError(action, 'the length must be more than 0');
  }

  /** `[start, end)` widened to the minimum block size (the end stays within the export). */
  #aligned(start: number, end: number): { start: number; end: number } {
    const minimum = this.blockSize.minimum;
    return { start: alignDown(start, minimum), end: Math.min(alignUp(end, minimum), this.size) };
  }

  async #queryStatus(action: string, offset: number, length: number, flags: number): Promise<{ start: number; end: number; reply: StatusReply }> {
    const aligned = this.#aligned(offset, offset + length);
    const count = Math.min(aligned.end - aligned.start, this.#settings.maxStatusLength);
    const reply = await this.#pick(action).blockStatus(NBD_CMD_BLOCK_STATUS, flags, aligned.start, count);
    return { start: aligned.start, end: Math.min(offset + length, aligned.start + count), reply };
  }

  async #flushOnce(action: string): Promise<void> {
    // With CAN_MULTI_CONN a flush on one connection covers the writes of all (proto.md).
    if (this.capabilities.canFlush) await this.#pick(action).command(NBD_CMD_FLUSH, 0, 0, 0);
  }

  #sendWrites(action: string, offset: number, data: Uint8Array, flags: number): Promise<unknown> {
    const { requestSize } = this.#settings;
    if (data.length <= requestSize) return this.#pick(action).write(offset, data, flags);
    return settleAll(pieces(offset, offset + data.length, requestSize).map(([at, count]) => this.#pick(action).write(at, data.subarray(at - offset, at - offset + count), flags)));
  }

  #sendRanges(action: string, type: number, flags: number, start: number, end: number): Promise<unknown> {
    const limit = alignDown(ZERO_REQUEST_LIMIT, this.blockSize.minimum);
    return settleAll(pieces(start, end, limit).map(([at, count]) => this.#pick(action).command(type, flags, at, count)));
  }

  /** Writes zero buffers (for servers without WRITE_ZEROES); one shared, never written buffer. */
  #writeZeroBuffers(action: string, start: number, end: number, flags: number): Promise<unknown> {
    const { requestSize } = this.#settings;
    const zeroes = (this.#zeroes ??= new Uint8Array(requestSize));
    return settleAll(
      pieces(start, end, requestSize).map(([at, count]) =>
        this.blockSize.minimum === 1
          ? this.#pick(action).write(at, zeroes.subarray(0, count), flags)
          : this.#locked(at, at + count, () => this.#writeBlocks(action, at, zeroes.subarray(0, count), flags)),
      ),
    );
  }

  /** Runs `body` holding the whole blocks around `[start, end)` (servers with a minimum block size > 1). */
  async #locked<T>(start: number, end: number, body: () => Promise<T>): Promise<T> {
    const aligned = this.#aligned(start, end);
    const release = await this.#lock.acquire(aligned.start, aligned.end);
    try {
      return await body();
    } finally {
      release();
    }
  }

  /** Writes `data` at `offset` in whole blocks, reading the partial blocks at either end first. Hold the lock. */
  async #writeBlocks(action: string, offset: number, data: Uint8Array, flags: number): Promise<void> {
    const end = offset + data.length;
    const aligned = this.#aligned(offset, end);
    if (aligned.start === offset && aligned.end === end) {
      await this.#sendWrites(action, offset, data, flags);
      return;
    }
    const minimum = this.blockSize.minimum;
    const merged = new Uint8Array(aligned.end - aligned.start);
    const reads: Array<Promise<unknown>> = [];
    const headEnd = Math.min(aligned.start + minimum, aligned.end);
    if (aligned.start < offset) reads.push(this.#pick(action).read(aligned.start, headEnd - aligned.start, merged, 0));
    if (end < aligned.end) {
      const tailStart = alignDown(end, minimum);
      if (!(aligned.start < offset && tailStart < headEnd)) reads.push(this.#pick(action).read(tailStart, aligned.end - tailStart, merged, tailStart - aligned.start));
    }
    await settleAll(reads);
    merged.set(data, offset - aligned.start);
    await this.#sendWrites(action, aligned.start, merged, flags);
  }

  /** WRITE_ZEROES on the whole blocks of `[start, end)`, zero writes on the partial blocks at either end. Hold the lock. */
  async #zeroBlocks(action: string, start: number, end: number, flags: number): Promise<void> {
    const minimum = this.blockSize.minimum;
    const innerStart = Math.min(alignUp(start, minimum), end);
    const innerEnd = Math.max(end === this.size ? end : alignDown(end, minimum), innerStart);
    // The whole blocks first: with FAST_ZERO they may fail, and then nothing has changed.
    if (innerStart < innerEnd) await this.#sendRanges(action, NBD_CMD_WRITE_ZEROES, flags, innerStart, innerEnd);
    const dataFlags = flags & NBD_CMD_FLAG_FUA;
    const edges: Array<Promise<void>> = [];
    if (start < innerStart) edges.push(this.#writeBlocks(action, start, new Uint8Array(innerStart - start), dataFlags));
    if (innerEnd < end) edges.push(this.#writeBlocks(action, innerEnd, new Uint8Array(end - innerEnd), dataFlags));
    await settleAll(edges);
  }
}
