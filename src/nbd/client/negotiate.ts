/**
 * The client side of the option phase (proto.md "Handshake", "Option haggling"): the greeting,
 * client flags FIXED_NEWSTYLE|NO_ZEROES, NBD_OPT_STARTTLS first when TLS is wanted, then the
 * options bitback sends, each request followed by its replies up to the final ACK or error.
 *
 * {@link Handshake} holds one connection in this phase. `openExport` in `open-export.ts` and the
 * listing functions in `list.ts` drive it.
 */
import { type Socket } from 'node:net';
import { type Duplex } from 'node:stream';
import { IoError, NotFoundError, NotSupportedError } from '../../errors.js';
import {
  EXPORT_NAME_PADDING,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_MAGIC,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_FLAG_ERROR,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  OPTION_REPLY_HEADER_SIZE,
  optionName,
  replyTypeName,
} from '../protocol/constants.js';
import { NbdOptionError, NbdProtocolError } from '../protocol/errors.js';
import {
  SERVER_GREETING_SIZE,
  decodeErrorMessage,
  decodeExportNameReply,
  decodeInfoReply,
  decodeMetaContextReply,
  decodeOptionReplyHeader,
  decodeServerGreeting,
  decodeServerReply,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
} from '../protocol/handshake.js';
import { type NbdAddress } from '../protocol/uri.js';
import { type TlsCredentials } from '../tls.js';
import { describeAddress, openSocket, upgradeToTls } from './connect.js';
import { endStream } from './connection.js';
import { SocketInput } from './socket-input.js';
import { SocketReader } from './socket-reader.js';

/** What the server says about an export (NBD_INFO_* replies, or the NBD_OPT_EXPORT_NAME reply). */
export interface ExportDetails {
  size: number;
  transmissionFlags: number;
  /** NBD_INFO_NAME, when the server sent it. */
  name?: string;
  description?: string;
  /** NBD_INFO_BLOCK_SIZE, when the server sent it (validated). */
  blockSize?: { minimum: number; preferred: number; maximum: number };
}

/** The outcome of one option: the replies before the final one, or the error reply. */
type OptionOutcome =
  | { ok: true; replies: Array<{ type: number; data: Uint8Array }> }
  | { ok: false; type: number; message: string };

/** Bytes of replies (besides the final one) accepted for one option: bounds a listing's memory. */
const MAX_OPTION_REPLY_BYTES = 16 * 1024 * 1024;
/** How long to wait for the server's ACK to NBD_OPT_ABORT before closing anyway. */
const ABORT_WAIT_MS = 1000;

/** The export size reply to NBD_OPT_EXPORT_NAME: size (8) and flags (2). */
const EXPORT_NAME_REPLY_SIZE = 10;

/**
 * One connection in the option phase. Every method rejects with `NbdProtocolError` when the
 * server breaks the protocol, `NbdOptionError` for error replies it cannot work around, and a
 * retryable `IoError` when the connection drops.
 */
export class Handshake {
  readonly address: NbdAddress;
  /** The server speaks fixed newstyle: options other than EXPORT_NAME are possible. */
  readonly fixedNewstyle: boolean;
  /** Both sides agreed to drop the 124 zero bytes after NBD_OPT_EXPORT_NAME. */
  readonly noZeroes: boolean;
  #stream: Duplex;
  #reader: SocketReader;
  #tls = false;
  #structuredReplies = false;
  #extendedHeaders = false;

  /** The plain socket's input, when it reads into user buffers (never with TLS). */
  readonly #input: SocketInput | undefined;

  private constructor(address: NbdAddress, stream: Duplex, reader: SocketReader, fixedNewstyle: boolean, noZeroes: boolean, input: SocketInput | undefined) {
    this.address = address;
    this.#stream = stream;
    this.#reader = reader;
    this.#input = input;
    this.fixedNewstyle = fixedNewstyle;
    this.noZeroes = noZeroes;
  }

  /**
   * Connects to `address`, reads the greeting, sends the client flags and, with `credentials`,
   * upgrades to TLS. `onStream` is told of every stream opened (so that a deadline can destroy it).
   */
  static async start(address: NbdAddress, credentials: TlsCredentials | undefined, onStream: (stream: Duplex) => void): Promise<Handshake> {
    const action = `negotiate with the NBD server at ${describeAddress(address)}`;
    // A socket TLS will wrap keeps its 'data' events; a plain one reads into reused buffers.
    const input = credentials === undefined ? new SocketInput() : undefined;
    const { socket, connected } = openSocket(address, action, input);
    onStream(socket);
    await connected;
    const reader = new SocketReader(socket, action, input);
    const magic = await reader.readExactly(8);
    const magicValue = new DataView(magic.buffer, magic.byteOffset, 8).getBigUint64(0);
    if (magicValue !== NBD_MAGIC) {
      throw new NbdProtocolError(action, `the peer did not send NBDMAGIC (it sent 0x${magicValue.toString(16).padStart(16, '0')}): not an NBD server`);
    }
    const greeting = new Uint8Array(SERVER_GREETING_SIZE);
    greeting.set(magic);
    greeting.set(await reader.readExactly(SERVER_GREETING_SIZE - 8), 8);
    const flags = decodeServerGreeting(greeting);
    const fixedNewstyle = (flags & NBD_FLAG_FIXED_NEWSTYLE) !== 0;
    const noZeroes = (flags & NBD_FLAG_NO_ZEROES) !== 0;
    socket.write(encodeClientFlags((fixedNewstyle ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0)));
    const handshake = new Handshake(address, socket, reader, fixedNewstyle, noZeroes, input);
    if (credentials !== undefined) await handshake.#startTls(socket, credentials, onStream);
    return handshake;
  }

  /** The session runs over TLS. */
  get tls(): boolean {
    return this.#tls;
  }

  get structuredReplies(): boolean {
    return this.#structuredReplies;
  }

  get extendedHeaders(): boolean {
    return this.#extendedHeaders;
  }

  /** Where the server is, for messages. */
  get where(): string {
    return describeAddress(this.address);
  }

  async #startTls(socket: Socket, credentials: TlsCredentials, onStream: (stream: Duplex) => void): Promise<void> {
    const action = `start TLS with the NBD server at ${this.where}`;
    if (!this.fixedNewstyle) throw new NotSupportedError(action, 'the server does not speak fixed newstyle negotiation, which TLS needs');
    const outcome = await this.#option(NBD_OPT_STARTTLS);
    if (!outcome.ok) throw new NbdOptionError(action, outcome.type, outcome.message);
    const early = this.#reader.detach();
    if (early.length > 0) throw new NbdProtocolError(action, `the server sent ${early.length} bytes after its ACK to NBD_OPT_STARTTLS`);
    const secure = await upgradeToTls(socket, credentials, this.address, action);
    onStream(secure);
    this.#stream = secure;
    this.#reader = new SocketReader(secure, `negotiate with the NBD server at ${this.where} over TLS`);
    this.#tls = true;
  }

  /**
   * Negotiates the reply format: NBD_OPT_EXTENDED_HEADERS when `extended`, falling back to
   * NBD_OPT_STRUCTURED_REPLY when the server refuses it; nothing when `structured` is false or the
   * server does not speak fixed newstyle. A server that requires TLS is reported at once.
   */
  async negotiateReplies(structured: boolean, extended: boolean): Promise<void> {
    if (!structured || !this.fixedNewstyle) return;
    if (extended) {
      const outcome = await this.#option(NBD_OPT_EXTENDED_HEADERS);
      if (outcome.ok) {
        this.#extendedHeaders = true;
        this.#structuredReplies = true;
        return;
      }
      this.#refuseTlsRequired(outcome);
    }
    const outcome = await this.#option(NBD_OPT_STRUCTURED_REPLY);
    if (outcome.ok) {
      this.#structuredReplies = true;
      return;
    }
    this.#refuseTlsRequired(outcome);
  }

  /**
   * NBD_OPT_SET_META_CONTEXT with exact context names. Returns the contexts the server selected,
   * by id (empty when the server refuses the option). An unknown export is an `NbdOptionError`
   * with code NOT_FOUND.
   */
  async setMetaContexts(exportName: string, queries: readonly string[]): Promise<Map<number, string>> {
    const selected = new Map<number, string>();
    if (!this.#structuredReplies || queries.length === 0) return selected;
    const outcome = await this.#option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName, queries: [...queries] }), NBD_REP_META_CONTEXT);
    if (!outcome.ok) {
      this.#refuseTlsRequired(outcome);
      if (outcome.type === NBD_REP_ERR_UNKNOWN) throw new NbdOptionError(openAction(exportName, this.where), outcome.type, outcome.message);
      return selected;
    }
    const action = `select meta contexts of NBD export '${exportName}' at ${this.where}`;
    for (const reply of outcome.replies) {
      const { id, name } = decodeMetaContextReply(reply.data);
      if (!queries.includes(name)) throw new NbdProtocolError(action, `the server selected context '${name}', which was not asked for`);
      if (selected.has(id)) throw new NbdProtocolError(action, `the server gave id ${id} to two contexts`);
      selected.set(id, name);
    }
    return selected;
  }

  /**
   * Enters the transmission phase with NBD_OPT_GO (asking for the name, description and block
   * size), or with NBD_OPT_EXPORT_NAME when the server does not know GO or fixed newstyle.
   */
  async go(exportName: string): Promise<ExportDetails> {
    if (!this.fixedNewstyle) return this.#exportName(exportName);
    const outcome = await this.#option(NBD_OPT_GO, encodeInfoRequest({ name: exportName, infos: [NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE] }), NBD_REP_INFO);
    if (!outcome.ok && outcome.type === NBD_REP_ERR_UNSUP) return this.#exportName(exportName);
    return this.#details(exportName, NBD_OPT_GO, outcome);
  }

  /** NBD_OPT_INFO: what GO would say, staying in the option phase. */
  async info(exportName: string): Promise<ExportDetails> {
    if (!this.fixedNewstyle) throw new NotSupportedError(openAction(exportName, this.where), 'the server does not speak fixed newstyle negotiation, so it cannot describe an export without opening it');
    const outcome = await this.#option(NBD_OPT_INFO, encodeInfoRequest({ name: exportName, infos: [NBD_INFO_NAME, NBD_INFO_DESCRIPTION, NBD_INFO_BLOCK_SIZE] }), NBD_REP_INFO);
    return this.#details(exportName, NBD_OPT_INFO, outcome);
  }

  /** NBD_OPT_LIST: the exports the server lists, with their descriptions ('' when none). */
  async list(): Promise<Array<{ name: string; description: string }>> {
    const action = `list the exports of the NBD server at ${this.where}`;
    if (!this.fixedNewstyle) throw new NotSupportedError(action, 'the server does not speak fixed newstyle negotiation');
    const outcome = await this.#option(NBD_OPT_LIST, undefined, NBD_REP_SERVER);
    if (!outcome.ok) throw new NbdOptionError(this.#tlsHint(action, outcome), outcome.type, outcome.message);
    return outcome.replies.map((reply) => decodeServerReply(reply.data));
  }

  /**
   * NBD_OPT_LIST_META_CONTEXT with no query: every context the server has for the export. Empty
   * when structured replies were not negotiated or the server refuses the option.
   */
  async listMetaContexts(exportName: string): Promise<string[]> {
    if (!this.#structuredReplies) return [];
    const action = `list the meta contexts of NBD export '${exportName}' at ${this.where}`;
    const outcome = await this.#option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ exportName, queries: [] }), NBD_REP_META_CONTEXT);
    if (!outcome.ok) {
      this.#refuseTlsRequired(outcome);
      if (outcome.type === NBD_REP_ERR_UNKNOWN) throw new NbdOptionError(action, outcome.type, outcome.message);
      return [];
    }
    return outcome.replies.map((reply) => decodeMetaContextReply(reply.data).name);
  }

  /** Ends the option phase without entering transmission (NBD_OPT_ABORT) and closes the connection. */
  async abort(): Promise<void> {
    // The connection is being let go: a late write error (the server hung up first) is of no interest.
    this.#stream.on('error', () => {});
    if (this.fixedNewstyle && !this.#stream.destroyed && this.#stream.writable) {
      this.#stream.write(encodeOptionRequest(NBD_OPT_ABORT));
      // proto.md: the server should ACK, but clients must cope with servers that just close.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.#reader.readExactly(OPTION_REPLY_HEADER_SIZE).catch(() => undefined),
        new Promise((resolve) => (timer = setTimeout(resolve, ABORT_WAIT_MS))),
      ]);
      clearTimeout(timer);
    }
    this.#reader.detach();
    this.#input?.discard();
    await endStream(this.#stream);
  }

  /** Drops the connection at once (after a failure). */
  destroy(): void {
    this.#stream.on('error', () => {});
    this.#stream.destroy();
  }

  /** After GO or EXPORT_NAME: hands the stream and the bytes received past the handshake to the transmission phase. */
  finish(): { stream: Duplex; leftover: Uint8Array; input: SocketInput | undefined } {
    return { stream: this.#stream, leftover: this.#reader.detach(), input: this.#tls ? undefined : this.#input };
  }

  async #exportName(exportName: string): Promise<ExportDetails> {
    const action = openAction(exportName, this.where);
    this.#stream.write(encodeOptionRequest(NBD_OPT_EXPORT_NAME, new TextEncoder().encode(exportName)));
    let reply: Uint8Array;
    try {
      reply = await this.#reader.readExactly(EXPORT_NAME_REPLY_SIZE);
      if (!this.noZeroes) await this.#reader.readExactly(EXPORT_NAME_PADDING);
    } catch (e) {
      if (e instanceof IoError && e.errno === 'ECONNRESET') {
        // NBD_OPT_EXPORT_NAME cannot fail with a reply: the server just hangs up (proto.md).
        throw new NotFoundError(action, 'the server closed the connection after NBD_OPT_EXPORT_NAME: it has no such export, or refuses it', { cause: e });
      }
      throw e;
    }
    return decodeExportNameReply(reply);
  }

  #details(exportName: string, option: number, outcome: OptionOutcome): ExportDetails {
    const action = openAction(exportName, this.where);
    if (!outcome.ok) throw new NbdOptionError(this.#tlsHint(action, outcome), outcome.type, outcome.message);
    const details: Partial<ExportDetails> = {};
    for (const reply of outcome.replies) {
      const info = decodeInfoReply(reply.data);
      switch (info.type) {
        case 'export':
          details.size = info.size;
          details.transmissionFlags = info.transmissionFlags;
          break;
        case 'name':
          details.name = info.name;
          break;
        case 'description':
          details.description = info.description;
          break;
        case 'block-size':
          checkBlockSize(info, action);
          details.blockSize = { minimum: info.minimum, preferred: info.preferred, maximum: info.maximum };
          break;
        case 'unknown':
          break; // proto.md: clients ignore information types they did not ask for
        default: {
          const never: never = info;
          throw new Error(`unreachable: ${String(never)}`);
        }
      }
    }
    if (details.size === undefined || details.transmissionFlags === undefined) {
      throw new NbdProtocolError(action, `the server acknowledged ${optionName(option)} without NBD_INFO_EXPORT`);
    }
    return details as ExportDetails;
  }

  /**
   * Sends one option and reads its replies up to the final ACK or error reply. `informational` is
   * the one reply type the option may get before its ACK (NBD_REP_SERVER for LIST...); any other
   * is a protocol error.
   */
  async #option(option: number, data?: Uint8Array, informational?: number): Promise<OptionOutcome> {
    const action = `negotiate ${optionName(option)} with the NBD server at ${this.where}`;
    this.#stream.write(encodeOptionRequest(option, data));
    const replies: Array<{ type: number; data: Uint8Array }> = [];
    let bytes = 0;
    for (;;) {
      const header = decodeOptionReplyHeader(await this.#reader.readExactly(OPTION_REPLY_HEADER_SIZE));
      const body = header.length === 0 ? new Uint8Array(0) : await this.#reader.readExactly(header.length);
      if (header.option !== option) {
        throw new NbdProtocolError(action, `the server answered with a reply to ${optionName(header.option)}`);
      }
      if (header.type >= NBD_REP_FLAG_ERROR) return { ok: false, type: header.type, message: decodeErrorMessage(body) };
      if (header.type === NBD_REP_ACK) {
        if (body.length !== 0) throw new NbdProtocolError(action, `NBD_REP_ACK carries ${body.length} bytes`);
        return { ok: true, replies };
      }
      if (header.type !== informational) throw new NbdProtocolError(action, `the server answered with ${replyTypeName(header.type)}`);
      bytes += body.length + OPTION_REPLY_HEADER_SIZE;
      if (bytes > MAX_OPTION_REPLY_BYTES) throw new NbdProtocolError(action, `the replies exceed ${MAX_OPTION_REPLY_BYTES} bytes`);
      replies.push({ type: header.type, data: body });
    }
  }

  /** NBD_REP_ERR_TLS_REQD is final: the server refuses everything until TLS starts. */
  #refuseTlsRequired(outcome: Extract<OptionOutcome, { ok: false }>): void {
    if (outcome.type !== NBD_REP_ERR_TLS_REQD) return;
    throw new NbdOptionError(this.#tlsHint(`negotiate with the NBD server at ${this.where}`, outcome), outcome.type, outcome.message);
  }

  #tlsHint(action: string, outcome: Extract<OptionOutcome, { ok: false }>): string {
    if (outcome.type !== NBD_REP_ERR_TLS_REQD || this.#tls) return action;
    return `${action} without TLS (the server requires TLS: use an nbds:// or nbds+unix:// URI with tls-certificates or tls-psk-file)`;
  }
}

/** The action of opening an export, for messages. */
export function openAction(exportName: string, where: string): string {
  return `open NBD export '${exportName}' at ${where}`;
}

/** proto.md "Block size constraints": powers of two, minimum ≤ 64 KiB, preferred ≥ minimum, maximum ≥ minimum. */
function checkBlockSize(info: { minimum: number; preferred: number; maximum: number }, action: string): void {
  const { minimum, preferred, maximum } = info;
  const pow2 = (v: number): boolean => v > 0 && (v & (v - 1)) === 0;
  const problem = !pow2(minimum) || minimum > 64 * 1024 ? `minimum block size ${minimum} is not a power of two up to 64 KiB`
    : !pow2(preferred) || preferred < minimum ? `preferred block size ${preferred} is not a power of two at least the minimum ${minimum}`
      : maximum < minimum ? `maximum payload ${maximum} is below the minimum block size ${minimum}` : undefined;
  if (problem !== undefined) throw new NbdProtocolError(action, `the server's NBD_INFO_BLOCK_SIZE is invalid: ${problem}`);
}
