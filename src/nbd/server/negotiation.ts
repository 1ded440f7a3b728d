/**
 * The server's side of the option phase (proto.md "Handshake", fixed newstyle only): answers each
 * frame the NegotiationDecoder yields and says what the connection does next. No I/O: replies
 * are returned as bytes for the connection to write, in order.
 */
import {
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_NAME,
  NBD_MAX_STRING,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_PEEK_EXPORT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NbdProtocolError,
  WireReader,
  decodeInfoRequest,
  decodeMetaContextRequest,
  encodeExportNameReply,
  encodeInfoReply,
  encodeMetaContextReply,
  encodeOptionReply,
  encodeServerReply,
  optionName,
  type MetaContextRequest,
  type NegotiationDecoder,
  type NegotiationFrame,
} from '../protocol/index.js';
import { listContexts, setContexts, type SelectedContext } from './meta-contexts.js';
import { preferredBlockSize, transmissionFlags, type ServedExport } from './served-export.js';
import { type ResolvedServerOptions } from './types.js';

/** What negotiation needs from the server. */
export interface NegotiationHost {
  readonly options: ResolvedServerOptions;
  /** True once the server is closing: options get NBD_REP_ERR_SHUTDOWN. */
  readonly shuttingDown: boolean;
  findExport(name: string): ServedExport | undefined;
  listExports(): readonly ServedExport[];
}

/** What transmission starts with. */
export interface SessionSetup {
  export: ServedExport;
  structured: boolean;
  extended: boolean;
  contexts: SelectedContext[];
  transmissionFlags: number;
}

/** What the connection does after writing `replies`. */
export type NegotiationStep =
  | { next: 'continue'; replies: Uint8Array[] }
  /** Close the connection; `violation` names a protocol violation (for the log), if that was the cause. */
  | { next: 'close'; replies: Uint8Array[]; violation?: string }
  /** Upgrade to TLS (the ACK is in `replies`); nothing may be left unread. */
  | { next: 'starttls'; replies: Uint8Array[] }
  | { next: 'transmission'; replies: Uint8Array[]; session: SessionSetup };

const ENCODER = new TextEncoder();
const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

/** The option state of one connection. */
export class Negotiator {
  readonly #host: NegotiationHost;
  #fixedNewstyle = false;
  #noZeroes = false;
  #tls = false;
  #structured = false;
  #extended = false;
  /** The last SET_META_CONTEXT: the export it named and what it selected. */
  #meta: { exportName: string; contexts: SelectedContext[] } | undefined;
  #nextContextId = 1;

  constructor(host: NegotiationHost) {
    this.#host = host;
  }

  /** True once TLS is up on this connection. */
  get tls(): boolean {
    return this.#tls;
  }

  /**
   * TLS is up: every option negotiated before is forgotten (proto.md NBD_OPT_STARTTLS: "the
   * server MUST NOT preserve any negotiation state").
   */
  tlsStarted(): void {
    this.#tls = true;
    this.#structured = false;
    this.#extended = false;
    this.#meta = undefined;
  }

  /** Answers one frame. */
  handle(frame: NegotiationFrame): NegotiationStep {
    switch (frame.kind) {
      case 'client-flags':
        return this.#clientFlags(frame.flags);
      case 'option-too-big':
        return this.#tooBig(frame.option, frame.length);
      case 'option':
        return this.#option(frame.option, frame.data);
      default: {
        const never: never = frame;
        throw new Error(`unreachable frame ${String(never)}`);
      }
    }
  }

  #clientFlags(flags: number): NegotiationStep {
    // proto.md "Client flags": the server MUST drop the connection on a flag it does not know.
    if ((flags & ~KNOWN_CLIENT_FLAGS) !== 0) return close(`unknown client flags 0x${flags.toString(16)}`);
    this.#fixedNewstyle = (flags & NBD_FLAG_C_FIXED_NEWSTYLE) !== 0;
    this.#noZeroes = (flags & NBD_FLAG_C_NO_ZEROES) !== 0;
    return { next: 'continue', replies: [] };
  }

  #tooBig(option: number, length: number): NegotiationStep {
    if (!this.#fixedNewstyle || option === NBD_OPT_EXPORT_NAME) return close(`${optionName(option)} of ${length} bytes is too long`);
    if (option === NBD_OPT_ABORT) return { next: 'close', replies: [reply(option, NBD_REP_ACK)] };
    return fail(option, NBD_REP_ERR_TOO_BIG, `${optionName(option)} of ${length} bytes is past the limit of the server`);
  }

  #option(option: number, data: Uint8Array): NegotiationStep {
    const host = this.#host;
    if (!this.#fixedNewstyle && option !== NBD_OPT_EXPORT_NAME) {
      // Without NBD_FLAG_C_FIXED_NEWSTYLE the client speaks plain newstyle: EXPORT_NAME only.
      return close(`${optionName(option)} from a client that did not set NBD_FLAG_C_FIXED_NEWSTYLE`);
    }
    if (host.shuttingDown) {
      // proto.md "Termination of the session during option haggling".
      if (option === NBD_OPT_ABORT) return { next: 'close', replies: [reply(option, NBD_REP_ACK)] };
      if (option === NBD_OPT_EXPORT_NAME) return close();
      return fail(option, NBD_REP_ERR_SHUTDOWN, 'the server is shutting down');
    }
    if (host.options.tlsRequired && !this.#tls && option !== NBD_OPT_STARTTLS && option !== NBD_OPT_ABORT) {
      // proto.md "FORCEDTLS mode": EXPORT_NAME cannot be answered with an error.
      if (option === NBD_OPT_EXPORT_NAME) return close('NBD_OPT_EXPORT_NAME before TLS on a server that requires TLS');
      return fail(option, NBD_REP_ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
    }
    switch (option) {
      case NBD_OPT_EXPORT_NAME:
        return this.#exportName(data);
      case NBD_OPT_ABORT:
        // The spec says to ignore any data sent with it.
        return { next: 'close', replies: [reply(option, NBD_REP_ACK)] };
      case NBD_OPT_LIST:
        return this.#list(data);
      case NBD_OPT_STARTTLS:
        return this.#startTls(data);
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.#infoOrGo(option, data);
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length > 0) return fail(option, NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
        // Project decision: extended headers already imply structured replies; asking again is an error.
        if (this.#extended) return fail(option, NBD_REP_ERR_INVALID, 'extended headers are already negotiated');
        this.#structured = true;
        return ack(option);
      case NBD_OPT_LIST_META_CONTEXT:
        return this.#listMetaContext(data);
      case NBD_OPT_SET_META_CONTEXT:
        return this.#setMetaContext(data);
      case NBD_OPT_EXTENDED_HEADERS:
        if (data.length > 0) return fail(option, NBD_REP_ERR_INVALID, 'NBD_OPT_EXTENDED_HEADERS takes no data');
        // Changing the header mode drops the selected contexts (their replies change shape).
        if (!this.#extended) this.#meta = undefined;
        this.#extended = true;
        this.#structured = true;
        return ack(option);
      case NBD_OPT_PEEK_EXPORT:
      default:
        return fail(option, NBD_REP_ERR_UNSUP, `${optionName(option)} is not supported`);
    }
  }

  #exportName(data: Uint8Array): NegotiationStep {
    let name: string;
    try {
      name = new WireReader(data, 'NBD_OPT_EXPORT_NAME').string(data.length, 'export name', NBD_MAX_STRING);
    } catch (e) {
      return close(e instanceof Error ? e.message : String(e));
    }
    const exp = this.#host.findExport(name);
    // proto.md: "If the chosen export does not exist ... the server MUST terminate the session."
    if (exp === undefined) return close();
    const session = this.#session(exp, name);
    return { next: 'transmission', replies: [encodeExportNameReply(exp.spec.device.size, session.transmissionFlags, this.#noZeroes)], session };
  }

  #list(data: Uint8Array): NegotiationStep {
    if (data.length > 0) return fail(NBD_OPT_LIST, NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
    const replies = this.#host.listExports().map((e) => reply(NBD_OPT_LIST, NBD_REP_SERVER, encodeServerReply(e.name, e.spec.description ?? '')));
    replies.push(reply(NBD_OPT_LIST, NBD_REP_ACK));
    return { next: 'continue', replies };
  }

  #startTls(data: Uint8Array): NegotiationStep {
    if (data.length > 0) return fail(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
    // proto.md "NOTLS mode": POLICY when TLS is not offered; "FORCEDTLS mode": INVALID once TLS is up.
    if (this.#host.options.tls === undefined) return fail(NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY, 'this server does not offer TLS');
    if (this.#tls) return fail(NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID, 'TLS is already running');
    return { next: 'starttls', replies: [reply(NBD_OPT_STARTTLS, NBD_REP_ACK)] };
  }

  #infoOrGo(option: number, data: Uint8Array): NegotiationStep {
    let request;
    try {
      request = decodeInfoRequest(data);
    } catch (e) {
      return fail(option, NBD_REP_ERR_INVALID, e instanceof Error ? e.message : String(e));
    }
    const exp = this.#host.findExport(request.name);
    if (exp === undefined) return fail(option, NBD_REP_ERR_UNKNOWN, `there is no export named '${request.name}'`);
    const session = this.#session(exp, request.name);
    const replies = [info(option, encodeInfoReply({ type: 'export', size: exp.spec.device.size, transmissionFlags: session.transmissionFlags }))];
    if (request.infos.includes(NBD_INFO_NAME)) replies.push(info(option, encodeInfoReply({ type: 'name', name: exp.name })));
    const description = exp.spec.description;
    if (request.infos.includes(NBD_INFO_DESCRIPTION) && description !== undefined && description !== '') {
      replies.push(info(option, encodeInfoReply({ type: 'description', description })));
    }
    // Always sent: the server enforces its maximum payload whether or not the client asked.
    const maxPayload = this.#host.options.maxPayload;
    replies.push(info(option, encodeInfoReply({ type: 'block-size', minimum: 1, preferred: preferredBlockSize(exp, maxPayload), maximum: maxPayload })));
    replies.push(reply(option, NBD_REP_ACK));
    if (option === NBD_OPT_INFO) return { next: 'continue', replies };
    return { next: 'transmission', replies, session };
  }

  /** Transmission with `exp`: contexts survive only if the last SET named the same export. */
  #session(exp: ServedExport, requestedName: string): SessionSetup {
    const contexts = this.#meta !== undefined && this.#meta.exportName === requestedName ? this.#meta.contexts : [];
    return {
      export: exp,
      structured: this.#structured,
      extended: this.#extended,
      contexts,
      transmissionFlags: transmissionFlags(exp, this.#structured),
    };
  }

  #metaRequest(option: number, data: Uint8Array): { request: MetaContextRequest; exp: ServedExport } | NegotiationStep {
    if (!this.#structured) {
      return fail(option, NBD_REP_ERR_INVALID, `${optionName(option)} needs structured replies (send NBD_OPT_STRUCTURED_REPLY first)`);
    }
    let request: MetaContextRequest;
    try {
      request = decodeMetaContextRequest(data);
    } catch (e) {
      return fail(option, NBD_REP_ERR_INVALID, e instanceof Error ? e.message : String(e));
    }
    const exp = this.#host.findExport(request.exportName);
    if (exp === undefined) return fail(option, NBD_REP_ERR_UNKNOWN, `there is no export named '${request.exportName}'`);
    return { request, exp };
  }

  #listMetaContext(data: Uint8Array): NegotiationStep {
    const parsed = this.#metaRequest(NBD_OPT_LIST_META_CONTEXT, data);
    if ('next' in parsed) return parsed;
    const replies = listContexts(parsed.exp.contexts, parsed.request.queries).map((c) =>
      // proto.md: "The metadata context ID in these replies is reserved and SHOULD be set to zero".
      reply(NBD_OPT_LIST_META_CONTEXT, NBD_REP_META_CONTEXT, encodeMetaContextReply(0, c.name)),
    );
    replies.push(reply(NBD_OPT_LIST_META_CONTEXT, NBD_REP_ACK));
    return { next: 'continue', replies };
  }

  #setMetaContext(data: Uint8Array): NegotiationStep {
    // proto.md: SET "replaces all previously-set metadata contexts (including when this command fails)".
    this.#meta = undefined;
    const parsed = this.#metaRequest(NBD_OPT_SET_META_CONTEXT, data);
    if ('next' in parsed) return parsed;
    const contexts = setContexts(parsed.exp.contexts, parsed.request.queries).map((c) => ({ ...c, id: this.#nextContextId++ }));
    this.#meta = { exportName: parsed.request.exportName, contexts };
    const replies = contexts.map((c) => reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, encodeMetaContextReply(c.id, c.name)));
    replies.push(reply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK));
    return { next: 'continue', replies };
  }
}

function reply(option: number, type: number, data?: Uint8Array): Uint8Array {
  return encodeOptionReply(option, type, data);
}

function info(option: number, payload: Uint8Array): Uint8Array {
  return reply(option, NBD_REP_INFO, payload);
}

function ack(option: number): NegotiationStep {
  return { next: 'continue', replies: [reply(option, NBD_REP_ACK)] };
}

/** An error reply with a message (proto.md: error replies MAY carry a string for the user). */
function fail(option: number, type: number, message: string): NegotiationStep {
  let bytes = ENCODER.encode(message);
  if (bytes.length > NBD_MAX_STRING) bytes = ENCODER.encode(message.slice(0, 1024));
  return { next: 'continue', replies: [reply(option, type, bytes)] };
}

function close(violation?: string): NegotiationStep {
  return violation === undefined ? { next: 'close', replies: [] } : { next: 'close', replies: [], violation };
}

/** What {@link feedNegotiation} asks the connection to do. */
export interface NegotiationActions {
  /** Write these replies (in order). */
  send(replies: Uint8Array[]): void;
  /** Close the connection after what was sent; `violation` says why when the client broke the protocol. */
  close(violation?: NbdProtocolError): void;
  /** The client broke the protocol in a way that allows no reply: drop the connection now. */
  violation(e: unknown): void;
  /** Upgrade to TLS now (the ACK was sent and nothing else is pending). */
  startTls(): void;
  /** Enter transmission; `rest` is what the client sent behind NBD_OPT_GO (requests). */
  transmission(session: SessionSetup, rest: Uint8Array): void;
}

const EMPTY = new Uint8Array(0);

/** Feeds received bytes to the decoder and answers every complete option through `actions`. */
export function feedNegotiation(decoder: NegotiationDecoder, negotiator: Negotiator, chunk: Uint8Array, actions: NegotiationActions): void {
  try {
    let frames = decoder.feed(chunk);
    while (frames.length > 0) {
      for (let i = 0; i < frames.length; i++) {
        const step = negotiator.handle(frames[i]!);
        actions.send(step.replies);
        switch (step.next) {
          case 'continue':
            break;
          case 'close':
            actions.close(step.violation === undefined ? undefined : new NbdProtocolError('negotiate with an NBD client', step.violation));
            return;
          case 'starttls':
            // After the ACK the next bytes must be the TLS handshake: anything already queued was
            // sent before the client could have seen the ACK, which breaks the protocol.
            if (i !== frames.length - 1 || decoder.buffered > 0) {
              actions.violation(new NbdProtocolError('start TLS with an NBD client', 'it sent data after NBD_OPT_STARTTLS without waiting for the reply'));
            } else {
              actions.startTls();
            }
            return;
          case 'transmission':
            actions.transmission(step.session, decoder.takeRest());
            return;
          default: {
            const never: never = step;
            throw new Error(`unreachable step ${String(never)}`);
          }
        }
      }
      // The decoder stops after options that may end negotiation; go on with what is queued.
      frames = decoder.feed(EMPTY);
    }
  } catch (e) {
    // A bad option magic: the stream cannot be resynchronised.
    actions.violation(e);
  }
}
