/**
 * The messages of QMP (`docs/interop/qmp-spec.txt` section 2), as bitback holds them.
 * Wire shapes:
 * - greeting: `{"QMP": {"version": {"qemu": {"micro", "minor", "major"}, "package"}, "capabilities": [...]}}`
 * - command: `{"execute": NAME, "arguments"?: {...}, "id"?: ANY}` (or `"exec-oob"` instead of `"execute"`)
 * - success: `{"return": ANY, "id"?: ANY}`
 * - error: `{"error": {"class": CLASS, "desc": TEXT}, "id"?: ANY}`
 * - event: `{"event": NAME, "data"?: {...}, "timestamp": {"seconds", "microseconds"}}`
 */

/** A JSON object as a record (QMP arguments and event data are always objects). */
export type JsonObject = Record<string, unknown>;

/** The version triple and package string of `query-version` and the greeting. */
export interface QmpVersionInfo {
  qemu: { major: number; minor: number; micro: number };
  /** Free text; QEMU puts its distribution package version here, bitback its own version. */
  package: string;
}

/** The greeting a server sends as soon as a client connects. */
export interface QmpGreeting {
  version: QmpVersionInfo;
  /** Capabilities the server offers (`oob`); the client enables some with `qmp_capabilities`. */
  capabilities: string[];
}

/** A command from client to server. */
export interface QmpCommand {
  /** The command name. */
  execute: string;
  /** The arguments; absent when there are none. */
  arguments?: JsonObject;
  /**
   * Any JSON value the server echoes verbatim in the reply; `undefined` means no `id` member
   * (a JSON `null` id is sent and echoed as `null`).
   */
  id?: unknown;
  /** Sent as `exec-oob` (out-of-band) instead of `execute`. */
  oob?: boolean;
}

/** The wall-clock time of an event: seconds and microseconds since the Unix epoch. */
export interface QmpTimestamp {
  seconds: number;
  microseconds: number;
}

/** An asynchronous event from server to client. */
export interface QmpEvent {
  event: string;
  /** Absent for events without data (QEMU's `STOP`, `RESUME`). */
  data?: JsonObject;
  timestamp: QmpTimestamp;
}

/** The body of an error reply. */
export interface QmpErrorBody {
  class: string;
  desc: string;
}

/** Anything a server sends, tagged by kind. `id` is `undefined` when the reply has none. */
export type QmpServerMessage =
  | { type: 'greeting'; greeting: QmpGreeting }
  | { type: 'return'; value: unknown; id?: unknown }
  | { type: 'error'; error: QmpErrorBody; id?: unknown }
  | { type: 'event'; event: QmpEvent };
