/**
 * Wire facts of QMP, the QEMU Machine Protocol, as QEMU 7.2 speaks it (`docs/interop/qmp-spec.txt`,
 * `qapi/qmp-dispatch.c`, `monitor/qmp.c`, `qobject/json-streamer.c`). Each value names its source.
 */

/**
 * The error classes QEMU puts in `{"error": {"class": ...}}` (`qapi/error.json`, enum
 * `QapiErrorClass`). Nearly every failure is `GenericError`; the others survive for compatibility.
 */
export const QMP_ERROR_CLASSES = ['GenericError', 'CommandNotFound', 'DeviceNotActive', 'DeviceNotFound', 'KVMMissingCap'] as const;

/** One of {@link QMP_ERROR_CLASSES}. */
export type QmpErrorClass = (typeof QMP_ERROR_CLASSES)[number];

/**
 * The capabilities a QEMU 7.2 greeting offers (`qapi/control.json`, enum `QMPCapability`):
 * out-of-band execution, requested with `qmp_capabilities {"enable": ["oob"]}`.
 */
export const QMP_CAPABILITIES = ['oob'] as const;

/** The command every session must start with (`qmp-spec.txt` 4. "Capabilities Negotiation"). */
export const QMP_CAPABILITIES_COMMAND = 'qmp_capabilities';

/**
 * What every encoded message ends with: QEMU writes `\r\n` after each JSON object
 * (`monitor/qmp.c` `qmp_send_response`). Readers must not rely on it: QEMU's own parser needs no
 * separator between objects (`json-streamer.c`).
 */
export const QMP_MESSAGE_TERMINATOR = '\r\n';

/** Default limit on the bytes of one message for a QMP server (bitback's choice). */
export const DEFAULT_MAX_MESSAGE_BYTES = 1 << 20;

/** Default limit on the nesting of `{` and `[` in one message for a QMP server (bitback's choice). */
export const DEFAULT_MAX_DEPTH = 64;

/**
 * QEMU's own parser limits (`json-streamer.c`: `MAX_TOKEN_SIZE` 64 MiB, `MAX_NESTING` 1024); a
 * client reading QEMU uses them, so that any reply QEMU can produce is accepted.
 */
export const QEMU_MAX_MESSAGE_BYTES = 64 << 20;
/** See {@link QEMU_MAX_MESSAGE_BYTES}. */
export const QEMU_MAX_DEPTH = 1024;

/**
 * How many commands QEMU queues per monitor before it stops reading from it
 * (`monitor/qmp.c` `QMP_REQ_QUEUE_LEN_MAX`).
 */
export const QMP_REQUEST_QUEUE_MAX = 8;

/** The texts QEMU 7.2 replies with; checked against qemu-system-x86_64 7.2.22. */
export const QmpText = {
  /** `monitor/qmp.c`: any command but `qmp_capabilities` before negotiation (class CommandNotFound). */
  expectingCapabilities: "Expecting capabilities negotiation with 'qmp_capabilities'",
  /** `monitor/qmp-cmds-control.c`: `qmp_capabilities` after negotiation (class CommandNotFound). */
  negotiationComplete: 'Capabilities negotiation is already complete, command ignored',
  /** `qapi/qmp-dispatch.c` (class CommandNotFound). */
  commandNotFound: (name: string): string => `The command ${name} has not been found`,
  /** `qapi/qmp-dispatch.c`: `exec-oob` of a command that does not allow it. */
  noOob: (name: string): string => `The command ${name} does not support OOB`,
  /** `qapi/qmp-dispatch.c` `qmp_dispatch_check_obj` and `qmp_dispatch`. */
  notObject: 'QMP input must be a JSON object',
  memberNotString: (member: string): string => `QMP input member '${member}' must be a string`,
  argumentsNotObject: "QMP input member 'arguments' must be an object",
  memberUnexpected: (member: string): string => `QMP input member '${member}' is unexpected`,
  lacksExecute: "QMP input lacks member 'execute'",
  executeClashes: "QMP input member 'execute' clashes with 'exec-oob'",
  /** `qapi/qobject-input-visitor.c` and `qapi/qapi-visit-core.c`. */
  missing: (path: string): string => `Parameter '${path}' is missing`,
  unexpected: (path: string): string => `Parameter '${path}' is unexpected`,
  invalidType: (path: string, expected: string): string => `Invalid parameter type for '${path}', expected: ${expected}`,
  expects: (path: string, what: string): string => `Parameter '${path}' expects ${what}`,
  badEnumValue: (name: string, value: string): string => `Parameter '${name}' does not accept value '${value}'`,
  /** `qobject/json-parser.c` and `json-streamer.c` prefix every syntax error with this. */
  jsonParseError: (detail: string): string => `JSON parse error, ${detail}`,
  /** `json-streamer.c`: these two come without the prefix. */
  nestingLimit: 'JSON nesting depth limit exceeded',
  sizeLimit: 'JSON token size limit exceeded',
  /** What bitback's server answers for a handler failure that is not a bitback error. */
  internalError: 'internal error',
} as const;
