/**
 * A push decoder that cuts a QMP byte stream into JSON objects, without parsing them.
 *
 * QEMU's parser needs no separator between messages (`qobject/json-streamer.c`): a message ends
 * where its outermost `}` closes. So the splitter follows string and escape state (QEMU accepts
 * single-quoted strings too) and the depth of `{`/`[`, and emits the bytes of each complete
 * object. Between objects only JSON whitespace may appear. Any stray byte, a message longer than
 * `maxMessageBytes` or nested deeper than `maxDepth` ends the stream with a
 * {@link QmpFramingError}: no later byte can be trusted to start a message.
 *
 * No I/O; memory is bounded by `maxMessageBytes` whatever the input.
 */
import { DEFAULT_MAX_DEPTH, DEFAULT_MAX_MESSAGE_BYTES, QmpText } from './constants.js';
import { QmpFramingError } from './errors.js';
import { InvalidArgumentError } from '../../errors.js';

/** Limits of a {@link QmpSplitter}. */
export interface QmpSplitterOptions {
  /** Largest message accepted, in bytes from `{` to `}` inclusive. Default 1 MiB. */
  maxMessageBytes?: number;
  /** Deepest nesting of `{` and `[` accepted (a flat object is depth 1). Default 64. */
  maxDepth?: number;
}

/** One result of {@link QmpSplitter.feed}: the bytes of a complete object, or the end of the stream. */
export type QmpFrame = { type: 'message'; bytes: Uint8Array } | { type: 'error'; error: QmpFramingError };

/** Where the splitter is: between messages, inside one (outside strings), in a string, after `\`. */
type SplitterState = 'between' | 'object' | 'string' | 'escape' | 'failed';

const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const DOUBLE_QUOTE = 0x22;
const SINGLE_QUOTE = 0x27;
const BACKSLASH = 0x5c;

/** JSON whitespace (RFC 8259 section 2), which is also what QEMU's lexer skips. */
function isWhitespace(b: number): boolean {
  return b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
}

/**
 * Splits a byte stream into QMP messages. Feed it chunks as they arrive; each call returns the
 * messages that completed. The splitter copies what it keeps: the caller may reuse `chunk`.
 */
export class QmpSplitter {
  readonly maxMessageBytes: number;
  readonly maxDepth: number;
  #state: SplitterState = 'between';
  #depth = 0;
  #quote = 0;
  /** Bytes of the current message from earlier chunks. */
  #parts: Uint8Array[] = [];
  #partBytes = 0;

  constructor(options: QmpSplitterOptions = {}) {
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
    if (!Number.isSafeInteger(this.maxMessageBytes) || this.maxMessageBytes < 2) {
      throw new InvalidArgumentError('create a QMP splitter', `maxMessageBytes ${this.maxMessageBytes} is not an integer ≥ 2`);
    }
    if (!Number.isSafeInteger(this.maxDepth) || this.maxDepth < 1) {
      throw new InvalidArgumentError('create a QMP splitter', `maxDepth ${this.maxDepth} is not an integer ≥ 1`);
    }
  }

  /** Bytes held for the message in progress (never more than `maxMessageBytes`). */
  get bufferedBytes(): number {
    return this.#partBytes;
  }

  /** True once the stream ended with an error; later input is ignored. */
  get failed(): boolean {
    return this.#state === 'failed';
  }

  /** True when no message is in progress (a clean place for the stream to end). */
  get idle(): boolean {
    return this.#state === 'between';
  }

  /**
   * Consumes `chunk` and returns the messages it completed, in order. When the input breaks a
   * rule the last frame is `{type: 'error'}` and the splitter ignores everything after it.
   */
  feed(chunk: Uint8Array): QmpFrame[] {
    const frames: QmpFrame[] = [];
    if (this.#state === 'failed') return frames;
    let start = this.#state === 'between' ? -1 : 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      switch (this.#state) {
        case 'between':
          if (isWhitespace(b)) continue;
          if (b !== OPEN_BRACE) return this.#fail(frames, junkError(b));
          this.#state = 'object';
          this.#depth = 1;
          start = i;
          break;
        case 'object':
          if (b === DOUBLE_QUOTE || b === SINGLE_QUOTE) {
            this.#quote = b;
            this.#state = 'string';
          } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
            if (++this.#depth > this.maxDepth) {
              return this.#fail(frames, new QmpFramingError('depth', `a message nests deeper than ${this.maxDepth} levels`, QmpText.nestingLimit));
            }
          } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
            // Like QEMU's streamer, count brackets without matching them: a mismatched closer
            // ends the message early and the JSON parser reports it.
            if (--this.#depth === 0) {
              if (this.#partBytes + (i - start + 1) > this.maxMessageBytes) return this.#fail(frames, this.#sizeError());
              frames.push({ type: 'message', bytes: this.#take(chunk, start, i + 1) });
              this.#state = 'between';
              continue;
            }
          }
          break;
        case 'string':
          if (b === BACKSLASH) this.#state = 'escape';
          else if (b === this.#quote) this.#state = 'object';
          break;
        case 'escape':
          this.#state = 'string';
          break;
        default: {
          const never: never = this.#state;
          throw new Error(`unreachable splitter state ${String(never)}`);
        }
      }
      if (this.#partBytes + (i - start + 1) > this.maxMessageBytes) return this.#fail(frames, this.#sizeError());
    }
    if (this.#state !== 'between' && start < chunk.length) {
      const rest = chunk.slice(start);
      this.#parts.push(rest);
      this.#partBytes += rest.length;
    }
    return frames;
  }

  #take(chunk: Uint8Array, start: number, end: number): Uint8Array {
    if (this.#parts.length === 0) return chunk.slice(start, end);
    const out = new Uint8Array(this.#partBytes + end - start);
    let at = 0;
    for (const part of this.#parts) {
      out.set(part, at);
      at += part.length;
    }
    out.set(chunk.subarray(start, end), at);
    this.#parts = [];
    this.#partBytes = 0;
    return out;
  }

  #sizeError(): QmpFramingError {
    return new QmpFramingError('size', `a message is longer than ${this.maxMessageBytes} bytes`, QmpText.sizeLimit);
  }

  #fail(frames: QmpFrame[], error: QmpFramingError): QmpFrame[] {
    this.#state = 'failed';
    this.#parts = [];
    this.#partBytes = 0;
    frames.push({ type: 'error', error });
    return frames;
  }
}

/**
 * The error for a byte between messages that cannot start one. The reply text follows what
 * QEMU answers for such input where that is one fixed text: a closer or separator gives
 * "expecting value", the start of a JSON value other than an object gives "QMP input must be a
 * JSON object", anything else is a stray character.
 */
function junkError(b: number): QmpFramingError {
  const shown = b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  const reason = `unexpected byte 0x${b.toString(16).padStart(2, '0')} ('${shown}') between messages`;
  let desc: string;
  if (b === CLOSE_BRACE || b === CLOSE_BRACKET || b === 0x2c || b === 0x3a) desc = QmpText.jsonParseError('expecting value');
  else if (b === OPEN_BRACKET || b === DOUBLE_QUOTE || b === SINGLE_QUOTE || b === 0x2d || (b >= 0x30 && b <= 0x39) || b === 0x74 || b === 0x66 || b === 0x6e) {
    desc = QmpText.notObject;
  } else desc = QmpText.jsonParseError(`stray '${shown}'`);
  return new QmpFramingError('junk', reason, desc);
}
