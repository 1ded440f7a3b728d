/**
 * The public shapes of the NBD server: what an export is, where the server listens, and its
 * options. The server itself is `server.ts`.
 */
import { type DirtyBitmap } from '../../bitmap/index.js';
import { type BlockDevice } from '../../block/block-device.js';
import { InvalidArgumentError } from '../../errors.js';
import { DEFAULT_MAX_PAYLOAD } from '../protocol/index.js';
import { type TlsCredentials } from '../tls.js';

/** One disk the server offers, under a name. */
export interface NbdExport {
  /** The name clients select; `""` is the default export (as qemu-nbd's). At most 4096 UTF-8 bytes, no NUL. */
  name: string;
  /** Text shown by `nbdinfo --list` (NBD_REP_SERVER and NBD_INFO_DESCRIPTION). */
  description?: string;
  /** The disk. The server never closes it: its owner does, after `removeExport` or `close`. */
  device: BlockDevice;
  /**
   * Bitmaps served as `qemu:dirty-bitmap:${bitmap.name}` (bit 0 = DIRTY). Each must be named,
   * have the device's size and not be inconsistent. The server only reads them, live (changes
   * show in later replies); the caller marks them busy or disables them if it must.
   */
  bitmaps?: DirtyBitmap[];
  /** Serve read-only even if the device is writable. Default: read-only exactly when the device is. */
  readOnly?: boolean;
  /**
   * Offer `qemu:allocation-depth` (default true): `BlockExtent.depth`, or 1 for allocated and 0 for
   * holes when the device reports no depth.
   */
  allocationDepth?: boolean;
}

/** Where to listen. */
export type NbdListenAddress =
  /** A Unix socket, created with `mode` (default 0o600) and `group` before anyone can connect. */
  | { transport: 'unix'; path: string; mode?: number; group?: string | number }
  /** TCP on `host` (default 127.0.0.1); port 0 picks a free port. */
  | { transport: 'tcp'; host?: string; port: number };

/** Where the server actually listens (the real port for TCP port 0; the absolute socket path). */
export type NbdListening = { transport: 'unix'; path: string } | { transport: 'tcp'; host: string; port: number };

/** What the server holds now, summed over its connections (see `NbdServer.stats`). */
export interface NbdServerStats {
  connections: number;
  requestsInFlight: number;
  /** Bytes of requests in flight: WRITE payloads and READ data being served. */
  bytesInFlight: number;
  /** Requests received and waiting for a slot. */
  requestsWaiting: number;
  /** Reply bytes queued on sockets, not yet taken by the kernel. */
  bytesUnsent: number;
  /** Connections whose reading is paused by flow control. */
  pausedConnections: number;
  /** The most bytes (in flight, waiting and unsent) any one connection holds. */
  maxConnectionBytes: number;
}

/** What one connection holds (summed into `NbdServerStats`). */
export interface ConnectionStats {
  requestsInFlight: number;
  /** Bytes of requests in flight (WRITE payloads, READ data). */
  bytesInFlight: number;
  /** Requests received, waiting for a slot. */
  requestsWaiting: number;
  /** WRITE payload bytes of the waiting requests. */
  bytesWaiting: number;
  /** Reply bytes written to the socket and not yet taken by the kernel. */
  bytesUnsent: number;
  /** Reading is paused by flow control. */
  paused: boolean;
}

/** Options of `NbdServer`. */
export interface NbdServerOptions {
  /**
   * Largest request payload (and READ length) accepted, in bytes, announced as the maximum in
   * NBD_INFO_BLOCK_SIZE. Default DEFAULT_MAX_PAYLOAD (32 MiB); between 64 KiB and 1 GiB.
   */
  maxPayload?: number;
  /** Offer NBD_OPT_STARTTLS with these credentials. */
  tls?: TlsCredentials;
  /**
   * FORCEDTLS mode (proto.md "TLS support"): every option but STARTTLS and ABORT is refused until
   * TLS is up. Default true when `tls` is given (as qemu-nbd does); meaningless without `tls`.
   */
  tlsRequired?: boolean;
  /**
   * Requests in flight per connection before the server stops reading that connection (default
   * 64). The payload bytes in flight are capped too, at twice `maxPayload`.
   */
  maxInFlight?: number;
  /** Told of connection-level problems (protocol violations, socket errors), for logging. */
  onError?: (e: unknown, context: string) => void;
}

/** The options with their defaults filled in. */
export interface ResolvedServerOptions {
  maxPayload: number;
  tls: TlsCredentials | undefined;
  tlsRequired: boolean;
  maxInFlight: number;
  /** Payload bytes in flight per connection above which reading stops. */
  maxInFlightBytes: number;
  onError: (e: unknown, context: string) => void;
}

const MIN_PAYLOAD = 64 * 1024;
const MAX_PAYLOAD = 1024 * 1024 * 1024;

/** Checks `options` and fills in defaults. @throws InvalidArgumentError for out-of-range values */
export function resolveServerOptions(options: NbdServerOptions = {}): ResolvedServerOptions {
  const action = 'create NBD server';
  const maxPayload = options.maxPayload ?? DEFAULT_MAX_PAYLOAD;
  if (!Number.isSafeInteger(maxPayload) || maxPayload < MIN_PAYLOAD || maxPayload > MAX_PAYLOAD) {
    throw new InvalidArgumentError(action, `maxPayload ${maxPayload} is not an integer from ${MIN_PAYLOAD} to ${MAX_PAYLOAD}`);
  }
  const maxInFlight = options.maxInFlight ?? 64;
  if (!Number.isSafeInteger(maxInFlight) || maxInFlight < 1 || maxInFlight > 65536) {
    throw new InvalidArgumentError(action, `maxInFlight ${maxInFlight} is not an integer from 1 to 65536`);
  }
  return {
    maxPayload,
    tls: options.tls,
    tlsRequired: options.tls !== undefined && (options.tlsRequired ?? true),
    maxInFlight,
    maxInFlightBytes: 2 * maxPayload,
    onError: options.onError ?? (() => undefined),
  };
}
