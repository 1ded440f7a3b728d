/**
 * Encoders of QMP messages: each returns the bytes of one message, JSON in QEMU's style
 * followed by `\r\n` (what QEMU writes). Key order follows QEMU's output where it is stable.
 * No I/O; the returned buffer belongs to the caller.
 */
import { encodeQmpJson } from './json-encode.js';
import { QMP_MESSAGE_TERMINATOR } from './constants.js';
import { type QmpCommand, type QmpErrorBody, type QmpEvent, type QmpGreeting, type QmpServerMessage } from './messages.js';

const utf8 = new TextEncoder();

/** The bytes of `value` as one QMP message (any JSON value; used for raw and test input too). */
export function encodeQmpMessage(value: unknown): Uint8Array {
  return utf8.encode(encodeQmpJson(value) + QMP_MESSAGE_TERMINATOR);
}

/** `{"QMP": {"version": {"qemu": {"micro", "minor", "major"}, "package"}, "capabilities"}}`. */
export function encodeGreeting(greeting: QmpGreeting): Uint8Array {
  const { qemu } = greeting.version;
  return encodeQmpMessage({
    QMP: {
      version: { qemu: { micro: qemu.micro, minor: qemu.minor, major: qemu.major }, package: greeting.version.package },
      capabilities: greeting.capabilities,
    },
  });
}

/** `{"execute": NAME, "arguments": {...}, "id": ID}`; `arguments` and `id` only when given. */
export function encodeCommand(command: QmpCommand): Uint8Array {
  const message: Record<string, unknown> = { [command.oob === true ? 'exec-oob' : 'execute']: command.execute };
  if (command.arguments !== undefined) message.arguments = command.arguments;
  if (command.id !== undefined) message.id = command.id;
  return encodeQmpMessage(message);
}

/** `{"return": VALUE, "id": ID}`; `id` only when not `undefined`. */
export function encodeReturn(value: unknown, id?: unknown): Uint8Array {
  return encodeQmpMessage(id === undefined ? { return: value } : { return: value, id });
}

/** `{"error": {"class": CLASS, "desc": DESC}, "id": ID}`; `id` only when not `undefined`. */
export function encodeError(error: QmpErrorBody, id?: unknown): Uint8Array {
  const body = { class: error.class, desc: error.desc };
  return encodeQmpMessage(id === undefined ? { error: body } : { error: body, id });
}

/** `{"timestamp": {"seconds", "microseconds"}, "event": NAME, "data": {...}}`; `data` only when given. */
export function encodeEvent(event: QmpEvent): Uint8Array {
  const message: Record<string, unknown> = {
    timestamp: { seconds: event.timestamp.seconds, microseconds: event.timestamp.microseconds },
    event: event.event,
  };
  if (event.data !== undefined) message.data = event.data;
  return encodeQmpMessage(message);
}

/** Encodes any server message (the inverse of `decodeServerMessage`). */
export function encodeServerMessage(message: QmpServerMessage): Uint8Array {
  switch (message.type) {
    case 'greeting':
      return encodeGreeting(message.greeting);
    case 'return':
      return encodeReturn(message.value, message.id);
    case 'error':
      return encodeError(message.error, message.id);
    case 'event':
      return encodeEvent(message.event);
    default: {
      const never: never = message;
      throw new Error(`unknown QMP message ${JSON.stringify(never)}`);
    }
  }
}
