/**
 * Asking a server what it serves without entering the transmission phase, as `nbdinfo --list`
 * and `nbdinfo URI` do: NBD_OPT_LIST, NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT, then
 * NBD_OPT_ABORT.
 */
import { NbdOptionError } from '../protocol/errors.js';
import { type NbdUri } from '../protocol/uri.js';
import { type TlsCredentials } from '../tls.js';
import { credentialsFor, describeAddress, resolveTarget, withDeadline } from './connect.js';
import { Handshake } from './negotiate.js';
import { DEFAULT_TIMEOUT_MS } from './settings.js';

/** What a server says about one export. */
export interface NbdExportInfo {
  name: string;
  description?: string;
  /** Bytes. */
  size: number;
  /** NBD transmission flags (NBD_FLAG_*). */
  transmissionFlags: number;
  /** NBD_INFO_BLOCK_SIZE, when the server sent it. */
  blockSize?: { minimum: number; preferred: number; maximum: number };
  /** Every meta context the server has for the export ([] without structured replies). */
  contexts: string[];
  /** The session used TLS. */
  tls: boolean;
}

/** Options of {@link listExports} and {@link describeExport}. */
export interface NbdListOptions {
  /** TLS credentials; else loaded from the URI's `tls-certificates` / `tls-psk-file`. */
  tls?: TlsCredentials;
  /** Time allowed for the whole exchange, in ms (default 30 s). */
  timeoutMs?: number;
}

/**
 * Lists the exports of the server `target` names (its export name is ignored): NBD_OPT_LIST, then
 * NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT for each export, like `nbdinfo --list`.
 *
 * @throws NbdOptionError when the server refuses to list (or requires TLS); the errors of
 *   `NbdClient.connect` for the connection itself
 */
export async function listExports(target: string | NbdUri, options: NbdListOptions = {}): Promise<NbdExportInfo[]> {
  const uri = resolveTarget(target);
  const credentials = await credentialsFor(uri, options.tls);
  const action = `list the exports of the NBD server at ${describeAddress(uri.address)}`;
  return withDeadline(action, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, async (onStream) => {
    const handshake = await Handshake.start(uri.address, credentials, onStream);
    try {
      await handshake.negotiateReplies(true, false);
      const exports: NbdExportInfo[] = [];
      for (const { name, description } of await handshake.list()) {
        const info = await describe(handshake, name);
        if (info.description === undefined && description !== '') info.description = description;
        exports.push(info);
      }
      await handshake.abort();
      return exports;
    } catch (e) {
      if (e instanceof NbdOptionError) await handshake.abort().catch(() => undefined);
      else handshake.destroy();
      throw e;
    }
  });
}

/**
 * Describes one export (the URI's, or `options.exportName`): NBD_OPT_INFO and
 * NBD_OPT_LIST_META_CONTEXT with no query (every context), like `nbdinfo URI`.
 *
 * @throws NbdOptionError with code NOT_FOUND for an unknown export; see {@link listExports}
 */
export async function describeExport(target: string | NbdUri, options: NbdListOptions & { exportName?: string } = {}): Promise<NbdExportInfo> {
  const uri = resolveTarget(target);
  const credentials = await credentialsFor(uri, options.tls);
  const name = options.exportName ?? uri.exportName;
  const action = `describe NBD export '${name}' at ${describeAddress(uri.address)}`;
  return withDeadline(action, options.timeoutMs ?? DEFAULT_TIMEOUT_MS, async (onStream) => {
    const handshake = await Handshake.start(uri.address, credentials, onStream);
    try {
      await handshake.negotiateReplies(true, false);
      const info = await describe(handshake, name);
      await handshake.abort();
      return info;
    } catch (e) {
      if (e instanceof NbdOptionError) await handshake.abort().catch(() => undefined);
      else handshake.destroy();
      throw e;
    }
  });
}

async function describe(handshake: Handshake, name: string): Promise<NbdExportInfo> {
  const details = await handshake.info(name);
  const contexts = await handshake.listMetaContexts(name);
  return {
    name,
    ...(details.description === undefined ? {} : { description: details.description }),
    size: details.size,
    transmissionFlags: details.transmissionFlags,
    ...(details.blockSize === undefined ? {} : { blockSize: details.blockSize }),
    contexts,
    tls: handshake.tls,
  };
}
