/**
 * The server's push decoder for the negotiation phase: the client's flags, then option requests.
 * `feed(chunk)` returns every complete frame and keeps the rest; an option whose data is past the
 * limit is skipped (never buffered) and reported as `option-too-big`, so that the server can answer
 * NBD_REP_ERR_TOO_BIG and go on (proto.md "Option types": servers may limit option lengths).
 */
import { MAX_OPTION_LENGTH, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_STARTTLS, OPTION_HEADER_SIZE } from './constants.js';
import { ByteQueue, collectFrames, type StepResult } from './byte-queue.js';
import { CLIENT_FLAGS_SIZE, decodeOptionHeader } from './handshake.js';
import { WireReader } from './wire.js';

/** One thing the client sent during negotiation. */
export type NegotiationFrame =
  | { kind: 'client-flags'; flags: number }
  | { kind: 'option'; option: number; data: Uint8Array }
  | { kind: 'option-too-big'; option: number; length: number };

type State =
  | { name: 'client-flags' }
  | { name: 'option-header' }
  | { name: 'option-data'; option: number; length: number }
  | { name: 'option-skip'; option: number; length: number; left: number };

const STOPPING_OPTIONS: ReadonlySet<number> = new Set([NBD_OPT_GO, NBD_OPT_EXPORT_NAME, NBD_OPT_STARTTLS, NBD_OPT_ABORT]);

/** Decodes what a client sends before transmission. Not reusable after {@link takeRest}. */
export class NegotiationDecoder {
  readonly #queue = new ByteQueue();
  readonly #limit: number;
  #state: State = { name: 'client-flags' };

  /** `limit`: the largest option data accepted, in bytes. */
  constructor(limit = MAX_OPTION_LENGTH) {
    this.#limit = limit;
  }

  /**
   * Adds received bytes and returns the frames now complete. Throws `NbdProtocolError` on a bad
   * option magic (the server should then drop the connection: the stream cannot be resynchronised).
   *
   * Decoding stops after an option that may end negotiation or change the stream (NBD_OPT_GO,
   * NBD_OPT_EXPORT_NAME, NBD_OPT_STARTTLS, NBD_OPT_ABORT): what follows it stays queued, because
   * it may be requests (take them with {@link takeRest}) or TLS records. When negotiation goes on
   * (a failed GO), call `feed(new Uint8Array(0))` to decode what is queued behind it.
   */
  feed(chunk: Uint8Array): NegotiationFrame[] {
    this.#queue.push(chunk);
    return collectFrames(() => this.#step(), (frame) => frame.kind === 'option' && STOPPING_OPTIONS.has(frame.option));
  }

  /**
   * Hands over the bytes received after the last frame (requests a client pipelined after
   * NBD_OPT_GO) so that the transmission decoder starts with them.
   */
  takeRest(): Uint8Array {
    return this.#queue.takeAll();
  }

  /** Bytes buffered and not decoded yet (at most one option header or `limit` bytes of data). */
  get buffered(): number {
    return this.#queue.length;
  }

  #step(): StepResult<NegotiationFrame> {
    const q = this.#queue;
    const s = this.#state;
    switch (s.name) {
      case 'client-flags': {
        if (q.length < CLIENT_FLAGS_SIZE) return 'more';
        const flags = new WireReader(q.take(CLIENT_FLAGS_SIZE), 'client flags').u32('client flags');
        this.#state = { name: 'option-header' };
        return { kind: 'client-flags', flags };
      }
      case 'option-header': {
        if (q.length < OPTION_HEADER_SIZE) return 'more';
        const { option, length } = decodeOptionHeader(q.take(OPTION_HEADER_SIZE));
        this.#state = length > this.#limit ? { name: 'option-skip', option, length, left: length } : { name: 'option-data', option, length };
        return 'progress';
      }
      case 'option-data': {
        if (q.length < s.length) return 'more';
        const data = q.take(s.length, new Uint8Array(s.length));
        this.#state = { name: 'option-header' };
        return { kind: 'option', option: s.option, data };
      }
      case 'option-skip': {
        s.left -= q.skip(s.left);
        if (s.left > 0) return 'more';
        this.#state = { name: 'option-header' };
        return { kind: 'option-too-big', option: s.option, length: s.length };
      }
      default: {
        const never: never = s;
        throw new Error(`unreachable state ${String(never)}`);
      }
    }
  }
}
