/**
 * Validating decoders: from a parsed JSON value to a typed QMP message. A client decodes what
 * a server sends ({@link decodeServerMessage}); a server decodes commands ({@link decodeCommand})
 * and words its complaints as QEMU 7.2 does. No I/O.
 */
import { QmpText } from './constants.js';
import { QmpError, QmpProtocolError } from './errors.js';
import { JsonFloat } from './json-parse.js';
import { type JsonObject, type QmpCommand, type QmpEvent, type QmpGreeting, type QmpServerMessage } from './messages.js';

/** True for a JSON object (not an array, not null, not a {@link JsonFloat}). */
export function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && !(value instanceof JsonFloat);
}

function has(o: JsonObject, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key);
}

function bad(reason: string): QmpProtocolError {
  return new QmpProtocolError('decode a message from the QMP server', reason);
}

function nonNegativeInteger(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) throw bad(`${what} is not a non-negative integer: ${JSON.stringify(value)}`);
  return value;
}

function decodeGreeting(body: unknown): QmpGreeting {
  if (!isJsonObject(body)) throw bad('the greeting member QMP is not an object');
  const version = body.version;
  if (!isJsonObject(version) || !isJsonObject(version.qemu)) throw bad('the greeting has no version.qemu object');
  if (typeof version.package !== 'string') throw bad('the greeting has no version.package string');
  const caps = body.capabilities;
  if (!Array.isArray(caps) || !caps.every((c): c is string => typeof c === 'string')) throw bad('the greeting capabilities are not an array of strings');
  return {
    version: {
      qemu: {
        major: nonNegativeInteger(version.qemu.major, 'version.qemu.major'),
        minor: nonNegativeInteger(version.qemu.minor, 'version.qemu.minor'),
        micro: nonNegativeInteger(version.qemu.micro, 'version.qemu.micro'),
      },
      package: version.package,
    },
    capabilities: [...caps],
  };
}

function decodeEvent(message: JsonObject): QmpEvent {
  if (typeof message.event !== 'string') throw bad('an event name is not a string');
  const ts = message.timestamp;
  if (!isJsonObject(ts)) throw bad(`event ${message.event} has no timestamp object`);
  const event: QmpEvent = {
    event: message.event,
    timestamp: { seconds: nonNegativeInteger(ts.seconds, 'timestamp.seconds'), microseconds: nonNegativeInteger(ts.microseconds, 'timestamp.microseconds') },
  };
  if (has(message, 'data')) {
    if (!isJsonObject(message.data)) throw bad(`the data of event ${message.event} is not an object`);
    event.data = message.data;
  }
  return event;
}

/**
 * Decodes a message a QMP server sent: greeting, success, error or event, told apart by the
 * members `QMP`, `return`, `error` and `event`. Members bitback does not know are ignored (later
 * QEMU versions may add some).
 *
 * @throws QmpProtocolError when the value has none of those shapes or a required member is wrong
 */
export function decodeServerMessage(value: unknown): QmpServerMessage {
  if (!isJsonObject(value)) throw bad('a message is not a JSON object');
  if (has(value, 'QMP')) return { type: 'greeting', greeting: decodeGreeting(value.QMP) };
  if (has(value, 'return')) {
    return has(value, 'id') ? { type: 'return', value: value.return, id: value.id } : { type: 'return', value: value.return };
  }
  if (has(value, 'error')) {
    const body = value.error;
    if (!isJsonObject(body) || typeof body.class !== 'string' || typeof body.desc !== 'string') throw bad('an error reply has no class and desc strings');
    const error = { class: body.class, desc: body.desc };
    return has(value, 'id') ? { type: 'error', error, id: value.id } : { type: 'error', error };
  }
  if (has(value, 'event')) return { type: 'event', event: decodeEvent(value) };
  throw bad(`a message has none of the members QMP, return, error, event (members: ${Object.keys(value).join(', ')})`);
}

/** The `id` member of a command as the client sent it (any JSON value), or `undefined`. */
export function commandId(value: unknown): unknown {
  return isJsonObject(value) && has(value, 'id') ? value.id : undefined;
}

/** Options of {@link decodeCommand}. */
export interface DecodeCommandOptions {
  /** Accept `exec-oob` (the client enabled the `oob` capability). Default false. */
  allowOob?: boolean;
}

/**
 * Decodes a command as QEMU 7.2 does (`qapi/qmp-dispatch.c` `qmp_dispatch_check_obj`): an
 * object whose members are `execute` (a string), `arguments` (an object), `id` (anything) and,
 * with out-of-band enabled, `exec-oob` (a string) instead of `execute`. The arguments are not
 * checked here (that is the dispatcher's job). Members are checked in input order; QEMU's order
 * differs (a hash table) when one command breaks several rules.
 *
 * @throws QmpError class GenericError with QEMU's text (the server sends it as the reply)
 */
export function decodeCommand(value: unknown, options: DecodeCommandOptions = {}): QmpCommand {
  const fail = (desc: string): never => {
    throw new QmpError('GenericError', desc);
  };
  if (!isJsonObject(value)) return fail(QmpText.notObject);
  for (const [key, member] of Object.entries(value)) {
    if (key === 'execute' || (key === 'exec-oob' && options.allowOob === true)) {
      if (typeof member !== 'string') fail(QmpText.memberNotString(key));
    } else if (key === 'arguments') {
      if (!isJsonObject(member)) fail(QmpText.argumentsNotObject);
    } else if (key !== 'id') {
      fail(QmpText.memberUnexpected(key));
    }
  }
  const execute = value.execute as string | undefined;
  const oob = value['exec-oob'] as string | undefined;
  if (execute === undefined && oob === undefined) return fail(QmpText.lacksExecute);
  if (execute !== undefined && oob !== undefined) return fail(QmpText.executeClashes);
  const command: QmpCommand = { execute: (execute ?? oob)! };
  if (oob !== undefined) command.oob = true;
  if (has(value, 'arguments')) command.arguments = value.arguments as JsonObject;
  if (has(value, 'id')) command.id = value.id;
  return command;
}
