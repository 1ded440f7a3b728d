/**
 * Opening one connection to an export, from the socket to the transmission phase: greeting,
 * STARTTLS, reply format, meta contexts, NBD_OPT_GO. The result is what `NbdConnection` needs.
 */
import { type Duplex } from 'node:stream';
import { NotFoundError } from '../../errors.js';
import { BASE_ALLOCATION, NBD_FLAG_CAN_MULTI_CONN } from '../protocol/constants.js';
import { NbdOptionError, NbdProtocolError } from '../protocol/errors.js';
import { type NbdAddress, type NbdUri } from '../protocol/uri.js';
import { type TlsCredentials } from '../tls.js';
import { credentialsFor, describeAddress, resolveTarget, withDeadline } from './connect.js';
import { Handshake, openAction, type ExportDetails } from './negotiate.js';
import { openOptions, type ClientSettings, type NbdConnectOptions } from './settings.js';
import { type SocketInput } from './socket-input.js';

/** What to ask for on one connection. */
export interface OpenExportRequest {
  address: NbdAddress;
  exportName: string;
  credentials?: TlsCredentials;
  /** Exact meta context names to select. */
  contexts: readonly string[];
  /** Of `contexts`, those that must be there (NotFoundError otherwise). */
  requiredContexts: readonly string[];
  structuredReplies: boolean;
  extendedHeaders: boolean;
  timeoutMs: number;
}

/** One connection in the transmission phase and what negotiation decided. */
export interface OpenedExport {
  stream: Duplex;
  /** Bytes received after the handshake (the start of the first replies). */
  leftover: Uint8Array;
  /** Where a plain socket's bytes arrive (it emits no 'data' events then); undefined over TLS. */
  input: SocketInput | undefined;
  details: ExportDetails;
  tls: boolean;
  structuredReplies: boolean;
  extendedHeaders: boolean;
  /** Selected meta contexts by id. */
  contexts: Map<number, string>;
}

/**
 * Connects and negotiates one connection to `request.exportName`; see the module comment.
 * Rejects with IoError ETIMEDOUT when it takes longer than `request.timeoutMs`, with
 * `NbdOptionError` for refused options (NOT_FOUND for an unknown export) and `NotFoundError`
 * naming a required context the server lacks.
 */
export function openExport(request: OpenExportRequest): Promise<OpenedExport> {
  const where = describeAddress(request.address);
  const action = openAction(request.exportName, where);
  return withDeadline(action, request.timeoutMs, async (onStream) => {
    const handshake = await Handshake.start(request.address, request.credentials, onStream);
    try {
      await handshake.negotiateReplies(request.structuredReplies, request.extendedHeaders);
      const contexts = await handshake.setMetaContexts(request.exportName, request.contexts);
      const selected = new Set(contexts.values());
      const missing = request.requiredContexts.filter((name) => !selected.has(name));
      if (missing.length > 0) {
        const why = handshake.structuredReplies ? 'the server does not offer it' : 'meta contexts need structured replies, which were not negotiated';
        throw new NotFoundError(action, `no meta context ${missing.map((m) => `'${m}'`).join(', ')}: ${why}`);
      }
      const details = await handshake.go(request.exportName);
      const { stream, leftover, input } = handshake.finish();
      return {
        stream,
        leftover,
        input,
        details,
        tls: handshake.tls,
        structuredReplies: handshake.structuredReplies,
        extendedHeaders: handshake.extendedHeaders,
        contexts,
      };
    } catch (e) {
      // A refused option leaves the connection in step: say goodbye properly (proto.md NBD_OPT_ABORT).
      if (e instanceof NbdOptionError || e instanceof NotFoundError) await handshake.abort().catch(() => undefined);
      else handshake.destroy();
      throw e;
    }
  });
}

/** Every connection of a client, negotiated, and what the client needs to know of them. */
export interface OpenedConnections {
  opened: OpenedExport[];
  exportName: string;
  /** The server's address, for messages. */
  where: string;
  settings: ClientSettings;
}

/**
 * Opens the connections `NbdClient.connect` asks for: one, then (when the server advertises
 * CAN_MULTI_CONN) the others at once. Every connection must see the same export; if one fails,
 * all are closed and the call rejects with that failure.
 */
export async function openConnections(target: string | NbdUri, options: NbdConnectOptions): Promise<OpenedConnections> {
  const uri = resolveTarget(target);
  const exportName = options.exportName ?? uri.exportName;
  const where = describeAddress(uri.address);
  const action = openAction(exportName, where);
  const checked = openOptions(options, action);
  const credentials = await credentialsFor(uri, options.tls);
  const extra = [...new Set(options.contexts ?? [])].filter((c) => c !== BASE_ALLOCATION);
  const request: OpenExportRequest = {
    address: uri.address,
    exportName,
    ...(credentials === undefined ? {} : { credentials }),
    contexts: [BASE_ALLOCATION, ...extra],
    requiredContexts: extra,
    structuredReplies: options.structuredReplies ?? true,
    extendedHeaders: options.extendedHeaders ?? true,
    timeoutMs: checked.timeoutMs,
  };
  const first = await openExport(request);
  const count = (first.details.transmissionFlags & NBD_FLAG_CAN_MULTI_CONN) !== 0 ? checked.connections : 1;
  const more = await Promise.allSettled(Array.from({ length: count - 1 }, () => openExport(request)));
  const opened = [first, ...more.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))];
  const failed = more.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  const mismatch = failed === undefined && opened.some((o) => !sameExport(o, first));
  if (failed !== undefined || mismatch) {
    for (const o of opened) o.stream.destroy();
    if (failed !== undefined) throw failed.reason;
    throw new NbdProtocolError(action, 'another connection to the same export saw a different size, flags or contexts');
  }
  return { opened, exportName, where, settings: checked.settle(first.details, first.extendedHeaders) };
}

function sameExport(a: OpenedExport, b: OpenedExport): boolean {
  return (
    a.details.size === b.details.size &&
    a.details.transmissionFlags === b.details.transmissionFlags &&
    a.structuredReplies === b.structuredReplies &&
    a.extendedHeaders === b.extendedHeaders &&
    [...a.contexts.values()].join('\n') === [...b.contexts.values()].join('\n')
  );
}
