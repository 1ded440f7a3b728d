/**
 * `bitback serve IMAGE...` — serve disk images over NBD (like `qemu-nbd`), until SIGINT/SIGTERM.
 * Thin: opens the images (qcow2 with their persistent bitmaps, or raw), hands them to the NBD
 * server, and on a signal drains the server and closes the images (which stores the bitmaps).
 */
import { basename, extname } from 'node:path';
import { parseArgs } from 'node:util';
import { type BlockDevice } from '../block/block-device.js';
import { RawFileDevice } from '../block/raw-file-device.js';
import { type DirtyBitmap } from '../bitmap/dirty-bitmap.js';
import { InvalidArgumentError, NotFoundError } from '../errors.js';
import { formatNbdUri, type NbdAddress } from '../nbd/protocol/uri.js';
import { NbdServer, type NbdExport, type NbdListenAddress } from '../nbd/server/index.js';
import { loadPskCredentials, loadX509Credentials, type TlsCredentials } from '../nbd/tls.js';
import { Qcow2Bitmaps } from '../qcow2/bitmaps/index.js';
import { Qcow2Image } from '../qcow2/image/index.js';
import { probeImageFormat } from '../qcow2/info.js';
import { parseImageFormat } from '../qcow2/open-image.js';
import { UsageError } from './usage-error.js';

export const SERVE_USAGE = `Usage: bitback serve [OPTIONS] IMAGE...

Serves disk images (qcow2 or raw) over NBD until SIGINT or SIGTERM, to any number of clients.
  --socket PATH          listen on a Unix socket (mode 0600 unless --socket-mode)
  --port N               listen on TCP port N (default 10809 when no --socket)
  --bind ADDR            TCP address to bind (default 127.0.0.1)
  --name NAME            export name: once for one image (default ""), or once per image
                         (default: each file's name without its extension, e.g. vda for vda.qcow2)
  -r, --read-only        serve read-only
  -f, --format FMT       raw or qcow2 (default: probed)
  -B, --bitmap NAME      export the persistent bitmap NAME of each image that has it, as the
                         meta context qemu:dirty-bitmap:NAME (repeatable)
  --description TEXT     export description shown by nbdinfo --list
  --tls-creds DIR        require TLS with X.509 credentials (DIR: server-cert.pem, server-key.pem,
                         ca-cert.pem for client certificates)
  --tls-verify-peer      with --tls-creds: require a client certificate signed by ca-cert.pem
  --tls-psk FILE         require TLS with pre-shared keys (FILE: identity:hexkey lines)
  --socket-mode MODE     octal mode of the Unix socket (e.g. 0660)
  --socket-group GROUP   group (name or id) of the Unix socket`;

/** An opened image and the export made of it. */
interface Opened {
  export: NbdExport;
  close: () => Promise<void>;
}

/** Runs `bitback serve`. Resolves when the server has been stopped by a signal. */
export async function serveCommand(argv: string[], out: (line: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      socket: { type: 'string' },
      port: { type: 'string' },
      bind: { type: 'string' },
      name: { type: 'string', multiple: true },
      'read-only': { type: 'boolean', short: 'r' },
      format: { type: 'string', short: 'f' },
      bitmap: { type: 'string', short: 'B', multiple: true },
      description: { type: 'string' },
      'tls-creds': { type: 'string' },
      'tls-verify-peer': { type: 'boolean' },
      'tls-psk': { type: 'string' },
      'socket-mode': { type: 'string' },
      'socket-group': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    out(SERVE_USAGE);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('serve', 'give at least one IMAGE');
  const address = listenAddress(values);
  const names = exportNames(positionals, values.name ?? []);
  const tls = await tlsCredentials(values);
  const format = values.format === undefined ? undefined : parseImageFormat(values.format);
  const readOnly = values['read-only'] ?? false;
  const wanted = values.bitmap ?? [];

  const opened: Opened[] = [];
  const closeAll = async (): Promise<void> => {
    for (const o of opened.splice(0).reverse()) await o.close().catch((e: unknown) => process.stderr.write(`bitback serve: ${(e as Error).message}\n`));
  };
  let server: NbdServer | undefined;
  try {
    for (const [i, path] of positionals.entries()) {
      opened.push(await openForServing(path, names[i]!, { format, readOnly, bitmaps: wanted, description: values.description }));
    }
    for (const name of wanted) {
      if (!opened.some((o) => o.export.bitmaps?.some((b) => b.name === name))) {
        throw new NotFoundError(`export bitmap '${name}'`, positionals.length === 1 ? `${positionals[0]} has no such bitmap` : 'none of the images has such a bitmap');
      }
    }
    server = new NbdServer({
      ...(tls ? { tls, tlsRequired: true } : {}),
      onError: (e, context) => process.stderr.write(`bitback serve: ${context}: ${(e as Error)?.message ?? String(e)}\n`),
    });
    for (const o of opened) server.addExport(o.export);
    const bound = await server.listen(address);
    const nbdAddress: NbdAddress = bound.transport === 'unix' ? { transport: 'unix', path: bound.path } : { transport: 'tcp', host: bound.host, port: bound.port };
    for (const o of opened) out(`serving ${formatNbdUri({ address: nbdAddress, exportName: o.export.name, tls: tls !== undefined })}`);
    await waitForSignal();
    await server.close();
    return 0;
  } finally {
    await server?.close();
    await closeAll();
  }
}

function listenAddress(values: { socket?: string; port?: string; bind?: string; 'socket-mode'?: string; 'socket-group'?: string }): NbdListenAddress {
  if (values.socket !== undefined) {
    if (values.port !== undefined || values.bind !== undefined) throw new UsageError('serve', 'give --socket or --port/--bind, not both');
    const address: NbdListenAddress = { transport: 'unix', path: values.socket };
    if (values['socket-mode'] !== undefined) {
      if (!/^0?[0-7]{3}$/.test(values['socket-mode'])) throw new UsageError('serve', `--socket-mode '${values['socket-mode']}' is not an octal mode like 0660`);
      address.mode = parseInt(values['socket-mode'], 8);
    }
    if (values['socket-group'] !== undefined) {
      const g = values['socket-group'];
      address.group = /^\d+$/.test(g) ? Number(g) : g;
    }
    return address;
  }
  if (values['socket-mode'] !== undefined || values['socket-group'] !== undefined) throw new UsageError('serve', '--socket-mode and --socket-group need --socket');
  const port = values.port === undefined ? 10809 : Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError('serve', `--port '${values.port}' is not a port number`);
  return { transport: 'tcp', host: values.bind ?? '127.0.0.1', port };
}

/** The export name of each image (see the usage text). */
export function exportNames(images: string[], names: string[]): string[] {
  if (images.length === 1) {
    if (names.length > 1) throw new UsageError('serve', '--name is given more than once for one image');
    return [names[0] ?? ''];
  }
  if (names.length !== 0 && names.length !== images.length) {
    throw new UsageError('serve', `give --name once per image (${images.length} images, ${names.length} names) or not at all`);
  }
  const result = names.length !== 0 ? names : images.map((p) => basename(p, extname(p)));
  const seen = new Set<string>();
  for (const n of result) {
    if (seen.has(n)) throw new UsageError('serve', `two images would be exported as '${n}' (use --name once per image)`);
    seen.add(n);
  }
  return result;
}

async function tlsCredentials(values: { 'tls-creds'?: string; 'tls-psk'?: string; 'tls-verify-peer'?: boolean }): Promise<TlsCredentials | undefined> {
  if (values['tls-creds'] !== undefined && values['tls-psk'] !== undefined) throw new UsageError('serve', 'give --tls-creds or --tls-psk, not both');
  if (values['tls-verify-peer'] === true && values['tls-creds'] === undefined) throw new UsageError('serve', '--tls-verify-peer needs --tls-creds');
  if (values['tls-creds'] !== undefined) return loadX509Credentials(values['tls-creds'], 'server', values['tls-verify-peer'] === true);
  if (values['tls-psk'] !== undefined) return loadPskCredentials(values['tls-psk']);
  return undefined;
}

async function openForServing(
  path: string,
  name: string,
  options: { format: 'raw' | 'qcow2' | undefined; readOnly: boolean; bitmaps: string[]; description: string | undefined },
): Promise<Opened> {
  const format = options.format ?? (await probeImageFormat(path));
  const description = options.description === undefined ? {} : { description: options.description };
  if (format === 'raw') {
    const device: BlockDevice = await RawFileDevice.open(path, { readOnly: options.readOnly });
    return { export: { name, device, readOnly: options.readOnly, ...description }, close: () => device.close() };
  }
  const image = await Qcow2Image.open(path, { readOnly: options.readOnly });
  try {
    let bitmaps: DirtyBitmap[] = [];
    if (image.info.version >= 3) {
      // Writable: bitmaps are attached in track mode, so NBD writes land in the enabled ones.
      const attached = await Qcow2Bitmaps.attach(image, { mode: 'track' });
      bitmaps = options.bitmaps.map((b) => attached.get(b)).filter((b): b is DirtyBitmap => b !== undefined);
    } else if (options.bitmaps.length > 0) {
      throw new InvalidArgumentError(`export bitmaps of ${path}`, 'a version 2 qcow2 image has no persistent bitmaps');
    }
    return { export: { name, device: image, readOnly: options.readOnly, bitmaps, ...description }, close: () => image.close() };
  } catch (e) {
    await image.close().catch(() => undefined);
    throw e;
  }
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}
