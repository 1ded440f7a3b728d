/**
 * Test-only: a scripted NBD server on a Unix socket in a fresh folder. Each accepted connection
 * is handed to a script that speaks raw protocol bytes built with the protocol codecs, so tests
 * can make a server do exactly what they need (refuse an option, send chunks out of order, send
 * garbage, hang up mid-reply). `negotiate` plays a configurable, well-behaved option phase;
 * `serveDevice` a well-behaved transmission phase over a `BlockDevice`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BlockDevice } from '../../../block/block-device.js';
import { IoError } from '../../../errors.js';
import {
  EXTENDED_REQUEST_HEADER_SIZE,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FAST_ZERO,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  OPTION_HEADER_SIZE,
  REQUEST_HEADER_SIZE,
} from '../../protocol/constants.js';
import { nbdErrnoFor } from '../../protocol/errors.js';
import {
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeInfoReply,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerGreeting,
  encodeServerReply,
} from '../../protocol/handshake.js';
import {
  blockStatusReplyType,
  encodeBlockStatus,
  encodeChunk,
  encodeErrorPayload,
  encodeOffsetDataPrefix,
  encodeSimpleReply,
  decodeRequest,
  type NbdRequest,
} from '../../protocol/transmission.js';
import { SocketReader } from '../socket-reader.js';

/** One accepted connection, seen from the server side. */
export class FakeConnection {
  readonly socket: Socket;
  readonly #reader: SocketReader;

  constructor(socket: Socket) {
    this.socket = socket;
    this.#reader = new SocketReader(socket, 'fake NBD server');
  }

  /** The next `n` bytes the client sent. */
  read(n: number): Promise<Uint8Array> {
    return this.#reader.readExactly(n);
  }

  /** Sends bytes (concatenated) to the client. */
  send(...parts: Uint8Array[]): void {
    for (const p of parts) this.socket.write(p);
  }

  /** Sends the greeting and reads the client flags. */
  async greet(handshakeFlags = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES): Promise<number> {
    this.send(encodeServerGreeting(handshakeFlags));
    return new DataView((await this.read(4)).buffer).getUint32(0);
  }

  /** The next option request. */
  async option(): Promise<{ option: number; data: Uint8Array }> {
    const { option, length } = decodeOptionHeader(await this.read(OPTION_HEADER_SIZE));
    return { option, data: length === 0 ? new Uint8Array(0) : await this.read(length) };
  }

  /** Sends an option reply. */
  reply(option: number, type: number, data?: Uint8Array): void {
    this.send(encodeOptionReply(option, type, data));
  }

  /** The next request and, for WRITE, its payload. */
  async request(extended: boolean): Promise<{ request: NbdRequest; payload?: Uint8Array }> {
    const request = decodeRequest(await this.read(extended ? EXTENDED_REQUEST_HEADER_SIZE : REQUEST_HEADER_SIZE), extended);
    if (request.type !== NBD_CMD_WRITE) return { request };
    return { request, payload: await this.read(request.length) };
  }

  /** Sends one chunk (`extended`: with the 32-byte header). */
  chunk(cookie: bigint, type: number, payload: Uint8Array, done: boolean, extended = false, offset = 0): void {
    this.send(encodeChunk({ flags: done ? NBD_REPLY_FLAG_DONE : 0, type, cookie, offset }, payload, extended));
  }

  /** An OFFSET_DATA payload. */
  static data(offset: number, data: Uint8Array): Uint8Array {
    const prefix = encodeOffsetDataPrefix(offset);
    const out = new Uint8Array(prefix.length + data.length);
    out.set(prefix);
    out.set(data, prefix.length);
    return out;
  }

  /** Sends a simple reply (and READ data after it). */
  simple(cookie: bigint, error: number, data?: Uint8Array): void {
    this.send(encodeSimpleReply(cookie, error), ...(data === undefined ? [] : [data]));
  }
}

/** A running fake server. */
export interface FakeServer {
  /** `nbd+unix:///NAME?socket=PATH` */
  uri(exportName?: string): string;
  readonly path: string;
  /** Errors the scripts threw (other than the client hanging up), for tests to assert on. */
  readonly errors: unknown[];
  /** Stops listening, destroys open connections, removes the folder. */
  close(): Promise<void>;
}

/** Starts a fake server that runs `script` on every connection. */
export async function startFakeServer(script: (connection: FakeConnection) => Promise<void>): Promise<FakeServer> {
  const dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-fake-'));
  const path = join(dir, 'nbd.sock');
  const sockets = new Set<Socket>();
  const errors: unknown[] = [];
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    script(new FakeConnection(socket)).then(
      () => undefined,
      (e: unknown) => {
        // The client hanging up ends a script's reads; anything else is worth a look.
        if (!(e instanceof IoError && e.errno === 'ECONNRESET')) errors.push(e);
        socket.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  return {
    path,
    errors,
    uri: (exportName = '') => `nbd+unix:///${encodeURIComponent(exportName)}?socket=${path}`,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** What {@link negotiate} offers. */
export interface FakeExport {
  name?: string;
  size: number;
  /** Transmission flags (HAS_FLAGS is added). Default: flush, FUA, trim, write zeroes. */
  flags?: number;
  description?: string;
  blockSize?: { minimum: number; preferred: number; maximum: number };
  /** Accept NBD_OPT_EXTENDED_HEADERS. Default false (answer ERR_UNSUP). */
  extendedHeaders?: boolean;
  /** Accept NBD_OPT_STRUCTURED_REPLY. Default true. */
  structuredReplies?: boolean;
  /** Meta contexts the export has. Default ['base:allocation']. */
  contexts?: string[];
  /** Answer NBD_OPT_GO with ERR_UNSUP (clients must fall back to EXPORT_NAME). */
  noGo?: boolean;
}

/** What the option phase settled. */
export interface FakeSession {
  extended: boolean;
  structured: boolean;
  /** Selected contexts by id. */
  contexts: Map<number, string>;
  noZeroes: boolean;
}

/** Default transmission flags of a fake export. */
export const FAKE_FLAGS = NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;

/**
 * Plays a well-behaved option phase for one export, up to and including GO or EXPORT_NAME.
 * Returns undefined when the client ended with NBD_OPT_ABORT.
 */
export async function negotiate(c: FakeConnection, e: FakeExport): Promise<FakeSession | undefined> {
  const clientFlags = await c.greet();
  const session: FakeSession = { extended: false, structured: false, contexts: new Map(), noZeroes: (clientFlags & 2) !== 0 };
  const name = e.name ?? '';
  const flags = NBD_FLAG_HAS_FLAGS | (e.flags ?? FAKE_FLAGS);
  const available = e.contexts ?? ['base:allocation'];
  for (;;) {
    const { option, data } = await c.option();
    switch (option) {
      case NBD_OPT_EXTENDED_HEADERS:
        if (e.extendedHeaders === true) {
          session.extended = true;
          session.structured = true;
          c.reply(option, NBD_REP_ACK);
        } else {
          c.reply(option, NBD_REP_ERR_UNSUP);
        }
        break;
      case NBD_OPT_STRUCTURED_REPLY:
        if (e.structuredReplies === false) {
          c.reply(option, NBD_REP_ERR_UNSUP);
        } else {
          session.structured = true;
          c.reply(option, NBD_REP_ACK);
        }
        break;
      case NBD_OPT_SET_META_CONTEXT:
      case NBD_OPT_LIST_META_CONTEXT: {
        const request = decodeMetaContextRequest(data);
        const list = option === NBD_OPT_LIST_META_CONTEXT;
        if (!list) session.contexts.clear();
        const names = list && request.queries.length === 0 ? available : request.queries.filter((q) => available.includes(q));
        names.forEach((n) => {
          const id = list ? 0 : 100 + available.indexOf(n);
          if (!list) session.contexts.set(id, n);
          c.reply(option, NBD_REP_META_CONTEXT, encodeMetaContextReply(id, n));
        });
        c.reply(option, NBD_REP_ACK);
        break;
      }
      case NBD_OPT_LIST:
        c.reply(option, NBD_REP_SERVER, encodeServerReply(name, e.description ?? ''));
        c.reply(option, NBD_REP_ACK);
        break;
      case NBD_OPT_INFO:
      case NBD_OPT_GO: {
        if (option === NBD_OPT_GO && e.noGo === true) {
          c.reply(option, NBD_REP_ERR_UNSUP);
          break;
        }
        const request = decodeInfoRequest(data);
        if (request.name !== name) {
          c.reply(option, NBD_REP_ERR_UNKNOWN, new TextEncoder().encode(`export '${request.name}' not present`));
          break;
        }
        c.reply(option, NBD_REP_INFO, encodeInfoReply({ type: 'export', size: e.size, transmissionFlags: flags }));
        if (e.description !== undefined) c.reply(option, NBD_REP_INFO, encodeInfoReply({ type: 'description', description: e.description }));
        if (e.blockSize !== undefined && request.infos.includes(NBD_INFO_BLOCK_SIZE)) c.reply(option, NBD_REP_INFO, encodeInfoReply({ type: 'block-size', ...e.blockSize }));
        c.reply(option, NBD_REP_ACK);
        if (option === NBD_OPT_GO) return session;
        break;
      }
      case NBD_OPT_EXPORT_NAME:
        c.send(encodeExportNameReply(e.size, flags, session.noZeroes));
        return session;
      case NBD_OPT_ABORT:
        c.reply(option, NBD_REP_ACK);
        c.socket.end();
        return undefined;
      default:
        c.reply(option, NBD_REP_ERR_UNSUP);
    }
  }
}

/** Options of {@link serveDevice}. */
export interface ServeOptions {
  /** Refuse (EINVAL) requests not aligned to this many bytes. Default 1. */
  minimum?: number;
  /** Every request the client sent, in order (for assertions). */
  log?: NbdRequest[];
}

/**
 * Serves `device` in the transmission phase of `session` until NBD_CMD_DISC: READ as one data
 * chunk (or a simple reply), block status of `base:allocation` from the device, the rest mapped
 * to the device's methods.
 */
export async function serveDevice(c: FakeConnection, session: FakeSession, device: BlockDevice, options: ServeOptions = {}): Promise<void> {
  const minimum = options.minimum ?? 1;
  for (;;) {
    const { request, payload } = await c.request(session.extended);
    options.log?.push(request);
    const { cookie, offset, length, type, flags } = request;
    if (type === NBD_CMD_DISC) {
      c.socket.end();
      return;
    }
    const fail = (error: number): void => {
      if (session.structured) c.chunk(cookie, NBD_REPLY_TYPE_ERROR, encodeErrorPayload(error, 'refused by the fake server'), true, session.extended, offset);
      else c.simple(cookie, error);
    };
    const aligned = type === NBD_CMD_FLUSH || (offset % minimum === 0 && (length % minimum === 0 || offset + length === device.size));
    if (!aligned) {
      fail(NBD_EINVAL);
      continue;
    }
    try {
      switch (type) {
        case NBD_CMD_READ: {
          const data = await device.read(offset, length);
          if (session.structured) c.chunk(cookie, NBD_REPLY_TYPE_OFFSET_DATA, FakeConnection.data(offset, data), true, session.extended, offset);
          else c.simple(cookie, 0, data);
          continue;
        }
        case NBD_CMD_BLOCK_STATUS: {
          const extents = await device.blockStatus(offset, length);
          for (const [id] of session.contexts) {
            c.chunk(cookie, blockStatusReplyType(session.extended), encodeBlockStatus(id, extents.map((x) => ({ length: x.length, flags: x.flags })), session.extended), false, session.extended, offset);
          }
          c.chunk(cookie, 0, new Uint8Array(0), true, session.extended, offset);
          continue;
        }
        case NBD_CMD_WRITE:
          await device.write(offset, payload!);
          break;
        case NBD_CMD_WRITE_ZEROES:
          await device.writeZeroes(offset, length, { mayTrim: (flags & NBD_CMD_FLAG_NO_HOLE) === 0, fast: (flags & NBD_CMD_FLAG_FAST_ZERO) !== 0 });
          break;
        case NBD_CMD_TRIM:
          await device.trim(offset, length);
          break;
        case NBD_CMD_FLUSH:
          await device.flush();
          break;
        case NBD_CMD_CACHE:
          break;
        default:
          fail(NBD_EINVAL);
          continue;
      }
      if (session.extended) c.chunk(cookie, 0, new Uint8Array(0), true, true, offset);
      else c.simple(cookie, 0);
    } catch (e) {
      fail(nbdErrnoFor(e instanceof IoError ? e.errno : 'EIO'));
    }
  }
}
