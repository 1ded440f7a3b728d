/**
 * The client's numbers: options checked, then combined with what the server announced
 * (NBD_INFO_BLOCK_SIZE, proto.md "Block size constraints") into request sizes and limits; and the
 * small arithmetic of splitting ranges into requests.
 */
import { type BlockSizeConstraints } from '../../block/block-device.js';
import { DEFAULT_MAXIMUM_REQUEST } from '../../block/block-size.js';
import { InvalidArgumentError } from '../../errors.js';
import { DEFAULT_PEER_MAX_PAYLOAD } from '../protocol/constants.js';
import { type TlsCredentials } from '../tls.js';
import { type ExportDetails } from './negotiate.js';

/** Default size of the pieces reads and writes are split into. */
export const DEFAULT_REQUEST_SIZE = 2 * 1024 * 1024;
/** Default requests in flight per connection. */
export const DEFAULT_MAX_IN_FLIGHT = 16;
/** Default time for connecting and negotiating, in ms. */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Most connections to one export. */
export const MAX_CONNECTIONS = 64;
/** Smallest reply payload limit, whatever the request size: block status replies can be long. */
const MIN_REPLY_PAYLOAD = 16 * 1024 * 1024;
/** proto.md "Block size constraints": the preferred size when the server gives none. */
const DEFAULT_PREFERRED = 4096;

/** Options of {@link NbdClient.connect}. */
export interface NbdConnectOptions {
  /** Overrides the URI's export name. */
  exportName?: string;
  /** TLS credentials; else loaded from the URI's `tls-certificates` / `tls-psk-file`. */
  tls?: TlsCredentials;
  /**
   * Meta contexts to select besides `base:allocation` (e.g. `qemu:dirty-bitmap:b0`,
   * `qemu:allocation-depth`). One the server does not have is a `NotFoundError` naming it.
   */
  contexts?: string[];
  /** Connections wanted (default 1); more than one only when the server advertises CAN_MULTI_CONN. */
  connections?: number;
  /** Try NBD_OPT_EXTENDED_HEADERS first (default true); falls back to structured replies. */
  extendedHeaders?: boolean;
  /** Negotiate structured replies (default true); false: simple replies only. */
  structuredReplies?: boolean;
  /** Refuse writes locally even when the export is writable. */
  readOnly?: boolean;
  /** Requests in flight per connection (default 16). */
  maxInFlight?: number;
  /** Size of the pieces reads and writes are split into, in bytes (default 2 MiB, capped by the server's maximum payload). */
  requestSize?: number;
  /** Time allowed to connect and negotiate, in ms (default 30 s); commands have no timeout. */
  timeoutMs?: number;
}

/** What the client uses once the export is known. */
export interface ClientSettings {
  readOnly: boolean;
  maxInFlight: number;
  /** Bytes per READ or WRITE request: a multiple of the minimum block size, within the maximum payload. */
  requestSize: number;
  /** Largest chunk payload accepted from the server. */
  maxReplyPayload: number;
  /** Longest range of one BLOCK_STATUS request. */
  maxStatusLength: number;
  blockSize: BlockSizeConstraints;
}

/** The options that matter before the export is known, and how to finish the settings after. */
export interface CheckedOptions {
  timeoutMs: number;
  connections: number;
  settle(details: ExportDetails, extendedHeaders: boolean): ClientSettings;
}

/**
 * Checks the options; `settle` later derives the settings from the export's details.
 *
 * @throws InvalidArgumentError naming the bad option
 */
export function openOptions(options: NbdConnectOptions, action: string): CheckedOptions {
  const integer = (name: string, value: number | undefined, fallback: number, min: number, max: number): number => {
    if (value === undefined) return fallback;
    if (!Number.isSafeInteger(value) || value < min || value > max) throw new InvalidArgumentError(action, `${name} ${value} is not an integer from ${min} to ${max}`);
    return value;
  };
  const connections = integer('connections', options.connections, 1, 1, MAX_CONNECTIONS);
  const maxInFlight = integer('maxInFlight', options.maxInFlight, DEFAULT_MAX_IN_FLIGHT, 1, 1024);
  const wantedRequestSize = integer('requestSize', options.requestSize, DEFAULT_REQUEST_SIZE, 1, 0xffffffff);
  const timeoutMs = integer('timeoutMs', options.timeoutMs, DEFAULT_TIMEOUT_MS, 1, 0x7fffffff);
  const readOnly = options.readOnly === true;
  return {
    timeoutMs,
    connections,
    settle(details, extendedHeaders) {
      const minimum = details.blockSize?.minimum ?? 1;
      const maxPayload = Math.min(details.blockSize?.maximum ?? DEFAULT_PEER_MAX_PAYLOAD, 0xffffffff);
      const requestSize = Math.max(minimum, alignDown(Math.min(wantedRequestSize, maxPayload), minimum));
      const maximum = Math.max(minimum, floorPowerOfTwo(Math.min(maxPayload, DEFAULT_MAXIMUM_REQUEST)));
      const preferred = Math.min(maximum, Math.max(minimum, details.blockSize?.preferred ?? DEFAULT_PREFERRED));
      return {
        readOnly,
        maxInFlight,
        requestSize,
        maxReplyPayload: Math.max(MIN_REPLY_PAYLOAD, requestSize + 4096),
        // Compact requests carry a 32-bit length: stay aligned below 2^32.
        maxStatusLength: extendedHeaders ? alignDown(Number.MAX_SAFE_INTEGER, minimum) : alignDown(0xffffffff, minimum),
        blockSize: { minimum, preferred, maximum },
      };
    },
  };
}

/** `value` rounded down to a multiple of `alignment`. */
export function alignDown(value: number, alignment: number): number {
  return alignment === 1 ? value : value - (value % alignment);
}

/** `value` rounded up to a multiple of `alignment`. */
export function alignUp(value: number, alignment: number): number {
  return alignment === 1 ? value : alignDown(value + alignment - 1, alignment);
}

/** The largest power of two that is at most `value` (`value` >= 1). */
function floorPowerOfTwo(value: number): number {
  let p = 1;
  while (p * 2 <= value) p *= 2;
  return p;
}

/** `[start, end)` cut into `[offset, length]` pieces of at most `size` bytes, from `start`. */
export function pieces(start: number, end: number, size: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (let at = start; at < end; at += size) out.push([at, Math.min(size, end - at)]);
  return out;
}

/** Waits for every promise to settle (so nothing is left in flight), then rejects with the first failure, if any. */
export async function settleAll<T>(promises: Array<Promise<T>>): Promise<T[]> {
  if (promises.length === 1) return [await promises[0]!];
  const results = await Promise.allSettled(promises);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<T>).value);
}
