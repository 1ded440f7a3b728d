/**
 * Errors of the QMP layer: a command that QEMU (or bitback's engine) refused, and input that
 * breaks the protocol (bad JSON, oversized or too deeply nested messages, wrong message shapes).
 */
import { BitbackError, type BitbackErrorOptions, type ErrorCode } from '../../errors.js';
import { type QmpErrorClass } from './constants.js';

/** Options of {@link QmpError}. */
export interface QmpErrorOptions extends BitbackErrorOptions {
  /** The command that failed, when known (the client always knows it). */
  command?: string;
  /** The bitback error code; by default derived from the class (see {@link qmpErrorCode}). */
  code?: ErrorCode;
}

/**
 * A QMP command failed: the reply was `{"error": {"class": errorClass, "desc": desc}}`.
 *
 * The client rejects with it; command handlers of the server throw it to choose the class and
 * text that go on the wire (the server sends `errorClass` and `desc` verbatim).
 */
export class QmpError extends BitbackError {
  /** QEMU's error class (`GenericError`, `CommandNotFound`, ...); any string a peer sent. */
  readonly errorClass: QmpErrorClass | (string & {});
  /** The human-readable text of the error, as sent on the wire. */
  readonly desc: string;
  /** The command that failed, when known. */
  readonly command: string | undefined;

  constructor(errorClass: QmpErrorClass | (string & {}), desc: string, options: QmpErrorOptions = {}) {
    const action = options.command === undefined ? 'run a QMP command' : `run QMP command ${options.command}`;
    super(options.code ?? qmpErrorCode(errorClass), action, `${errorClass}: ${desc}`, options);
    this.errorClass = errorClass;
    this.desc = desc;
    this.command = options.command;
  }
}

/**
 * The bitback code for a QMP error class: `CommandNotFound` and `KVMMissingCap` →
 * NOT_SUPPORTED, `DeviceNotFound` → NOT_FOUND, everything else (QEMU's catch-all
 * `GenericError`, `DeviceNotActive`, unknown classes) → INVALID_ARGUMENT: the peer refused the
 * command as given.
 */
export function qmpErrorCode(errorClass: string): ErrorCode {
  switch (errorClass) {
    case 'CommandNotFound':
    case 'KVMMissingCap':
      return 'NOT_SUPPORTED';
    case 'DeviceNotFound':
      return 'NOT_FOUND';
    default:
      return 'INVALID_ARGUMENT';
  }
}

/**
 * The peer sent something that is not QMP: a message of the wrong shape, bytes that are not
 * JSON, a message over a limit. `desc` is the text a QMP server answers with (QEMU's wording
 * where QEMU answers the same input).
 */
export class QmpProtocolError extends BitbackError {
  readonly desc: string;

  constructor(action: string, reason: string, desc: string = reason, options?: BitbackErrorOptions) {
    super('PROTOCOL', action, reason, options);
    this.desc = desc;
  }
}

/**
 * A complete message is not valid JSON. `detail` is QEMU's wording (`expecting value`,
 * `duplicate key`, ...); `desc` is `JSON parse error, <detail>`, QEMU's reply. The stream stays
 * usable: the next message starts after this one.
 */
export class QmpJsonError extends QmpProtocolError {
  readonly detail: string;
  /** Offset in the message (UTF-16 code units) where the error was found. */
  readonly offset: number;

  constructor(detail: string, offset: number, options?: BitbackErrorOptions) {
    super('parse a QMP message', `${detail} (at offset ${offset})`, `JSON parse error, ${detail}`, options);
    this.detail = detail;
    this.offset = offset;
  }
}

/** What kind of limit or rule a {@link QmpFramingError} is about. */
export type QmpFramingProblem = 'size' | 'depth' | 'junk';

/**
 * The byte stream cannot be split into messages any more: a message grew past the size or
 * nesting limit, or something other than whitespace came between two messages. The stream is
 * not recoverable; a server answers `desc` and closes that monitor.
 */
export class QmpFramingError extends QmpProtocolError {
  readonly problem: QmpFramingProblem;

  constructor(problem: QmpFramingProblem, reason: string, desc: string) {
    super('split the QMP stream into messages', reason, desc);
    this.problem = problem;
  }
}
