/**
 * `bitback nbd list|info|map|copy` — inspect NBD servers and copy disks over NBD, like
 * `nbdinfo` and `nbdcopy`. Thin: every subcommand is a call into `nbd/client/` or `block/copy.ts`.
 */
import { stat, unlink } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { type BlockDevice } from '../block/block-device.js';
import { copyDevice } from '../block/copy.js';
import { RawFileDevice } from '../block/raw-file-device.js';
import { parseSize, formatSize } from '../block/io/size.js';
import { NbdClient, describeExport, listExports, type NbdExportInfo } from '../nbd/client/index.js';
import {
  BASE_ALLOCATION,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_ROTATIONAL,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  QEMU_ALLOCATION_DEPTH,
  QEMU_DIRTY_BITMAP_PREFIX,
} from '../nbd/protocol/constants.js';
import { isNbdUri } from '../nbd/protocol/uri.js';
import { UsageError } from './usage-error.js';

type Out = (line: string) => void;

/**
 * `nbd copy` defaults, measured against qemu-nbd on a 2-core machine (bench/nbd.ts): 1 MiB
 * requests (half the per-request work of 512 KiB ones; qemu-nbd serves 2 MiB ones slower), and
 * few of them in flight (more only add contention for the CPUs).
 */
const COPY_CONNECTIONS = 4;
const COPY_REQUESTS = 4;
const COPY_REQUEST_SIZE = 1024 * 1024;

export const NBD_USAGE = `Usage: bitback nbd SUBCOMMAND [OPTIONS] ARGS

  list [--json] URI                 list the exports of a server (like nbdinfo --list)
  info [--json] URI                 describe one export: size, flags, block sizes, meta contexts
  map [--context CTX] [--json] URI  print the extents of a meta context (default base:allocation),
                                    e.g. --context qemu:dirty-bitmap:NAME (like nbdinfo --map)
  copy [OPTIONS] SOURCE TARGET      copy a disk (URIs or image files), sparse and parallel,
                                    flushed at the end (like nbdcopy --flush)
        --connections N             NBD connections per URI when the server allows multi-conn (4)
        --requests N                requests in flight (4)
        --request-size SIZE         bytes per request (1M)
        --target-is-zero            the target already reads as zeroes: skip zero ranges
        -p, --progress              print progress to stderr

URIs: nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, and nbds:// / nbds+unix:// with
?tls-certificates=DIR or ?tls-psk-file=FILE. A TARGET file that does not exist is created (raw).`;

/** Runs `bitback nbd ...`. Returns the exit status. */
export async function nbdCommand(argv: string[], out: Out): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'list':
      return list(rest, out);
    case 'info':
      return info(rest, out);
    case 'map':
      return map(rest, out);
    case 'copy':
      return copy(rest, out);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      out(NBD_USAGE);
      return sub === undefined ? 2 : 0;
    default:
      throw new UsageError('nbd', `unknown subcommand '${sub}' (list, info, map, copy)`);
  }
}

function oneUri(positionals: string[], sub: string): string {
  if (positionals.length !== 1) throw new UsageError(`nbd ${sub}`, `expected exactly one URI, got ${positionals.length}`);
  const uri = positionals[0]!;
  if (!isNbdUri(uri)) throw new UsageError(`nbd ${sub}`, `'${uri}' is not an NBD URI (nbd://..., nbd+unix://...)`);
  return uri;
}

async function list(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  const exports = await listExports(oneUri(positionals, 'list'));
  if (values.json) {
    out(JSON.stringify(exports.map(exportJson), null, 2));
    return 0;
  }
  for (const e of exports) {
    out(`export="${e.name}":`);
    for (const line of describeLines(e)) out(`\t${line}`);
  }
  return 0;
}

async function info(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  const e = await describeExport(oneUri(positionals, 'info'));
  if (values.json) {
    out(JSON.stringify(exportJson(e), null, 2));
    return 0;
  }
  out(`export="${e.name}":`);
  for (const line of describeLines(e)) out(`\t${line}`);
  return 0;
}

const FLAG_NAMES: Array<[number, string]> = [
  [NBD_FLAG_READ_ONLY, 'read_only'],
  [NBD_FLAG_SEND_FLUSH, 'flush'],
  [NBD_FLAG_SEND_FUA, 'fua'],
  [NBD_FLAG_ROTATIONAL, 'rotational'],
  [NBD_FLAG_SEND_TRIM, 'trim'],
  [NBD_FLAG_SEND_WRITE_ZEROES, 'zero'],
  [NBD_FLAG_SEND_DF, 'df'],
  [NBD_FLAG_CAN_MULTI_CONN, 'multi_conn'],
  [NBD_FLAG_SEND_CACHE, 'cache'],
  [NBD_FLAG_SEND_FAST_ZERO, 'fast_zero'],
];

function exportJson(e: NbdExportInfo): Record<string, unknown> {
  return {
    name: e.name,
    ...(e.description !== undefined ? { description: e.description } : {}),
    size: e.size,
    tls: e.tls,
    flags: Object.fromEntries(FLAG_NAMES.map(([bit, name]) => [name, (e.transmissionFlags & bit) !== 0])),
    ...(e.blockSize ? { 'block-size': e.blockSize } : {}),
    contexts: e.contexts,
  };
}

function describeLines(e: NbdExportInfo): string[] {
  const lines: string[] = [];
  if (e.description !== undefined && e.description !== '') lines.push(`description: ${e.description}`);
  lines.push(`export-size: ${e.size} (${formatSize(e.size)})`);
  lines.push(`tls: ${e.tls}`);
  if (e.contexts.length > 0) lines.push('contexts:', ...e.contexts.map((c) => `\t${c}`));
  for (const [bit, name] of FLAG_NAMES) lines.push(`can_${name === 'read_only' ? 'write' : name}: ${name === 'read_only' ? (e.transmissionFlags & bit) === 0 : (e.transmissionFlags & bit) !== 0}`);
  if (e.blockSize) {
    lines.push(`block_size_minimum: ${e.blockSize.minimum}`, `block_size_preferred: ${e.blockSize.preferred}`, `block_size_maximum: ${e.blockSize.maximum}`);
  }
  return lines;
}

/** nbdinfo's words for a context's flags, so that `map` output reads the same. */
export function describeStatus(context: string, flags: number): string {
  if (context === BASE_ALLOCATION) {
    const words = [];
    if (flags & 1) words.push('hole');
    if (flags & 2) words.push('zero');
    if (flags & ~3) words.push(`unknown (0x${(flags & ~3).toString(16)})`);
    return words.length === 0 ? 'data' : words.join(',');
  }
  if (context.startsWith(QEMU_DIRTY_BITMAP_PREFIX)) {
    const word = flags & 1 ? 'dirty' : 'clean';
    return flags & ~1 ? `${word},unknown (0x${(flags & ~1).toString(16)})` : word;
  }
  if (context === QEMU_ALLOCATION_DEPTH) {
    return flags === 0 ? 'absent' : flags === 1 ? 'local' : `backing depth ${flags}`;
  }
  return '';
}

/** One `map` line in nbdinfo's layout: offset, length, flags, description. */
export function formatMapLine(offset: number, length: number, flags: number, description: string): string {
  return `${String(offset).padStart(10)}  ${String(length).padStart(10)}  ${String(flags).padStart(3)}  ${description}`;
}

async function map(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { context: { type: 'string' }, json: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
  const uri = oneUri(positionals, 'map');
  const context = values.context ?? BASE_ALLOCATION;
  const client = await NbdClient.connect(uri, { contexts: [context], readOnly: true });
  const entries: Array<{ offset: number; length: number; type: number; description: string }> = [];
  try {
    for (let offset = 0; offset < client.size; ) {
      const extents = await client.contextStatus(context, offset, client.size - offset);
      for (const e of extents) {
        const last = entries[entries.length - 1];
        // Consecutive replies may cut one run in two: print it once, as nbdinfo does.
        if (last !== undefined && last.type === e.flags && last.offset + last.length === e.offset) last.length += e.length;
        else entries.push({ offset: e.offset, length: e.length, type: e.flags, description: describeStatus(context, e.flags) });
        offset = e.offset + e.length;
      }
    }
  } finally {
    await client.close();
  }
  if (values.json) {
    out(JSON.stringify(entries, null, 2));
  } else {
    for (const e of entries) out(formatMapLine(e.offset, e.length, e.type, e.description));
  }
  return 0;
}

async function copy(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      connections: { type: 'string' },
      requests: { type: 'string' },
      'request-size': { type: 'string' },
      'target-is-zero': { type: 'boolean' },
      progress: { type: 'boolean', short: 'p' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length !== 2) throw new UsageError('nbd copy', `expected SOURCE and TARGET, got ${positionals.length} arguments`);
  const [sourceSpec, targetSpec] = positionals as [string, string];
  const count = (text: string | undefined, fallback: number, what: string): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new UsageError('nbd copy', `${what} '${text}' is not a number from 1 to 64`);
    return n;
  };
  const connections = count(values.connections, COPY_CONNECTIONS, '--connections');
  const requests = count(values.requests, COPY_REQUESTS, '--requests');
  const requestSize = values['request-size'] === undefined ? COPY_REQUEST_SIZE : parseSize(values['request-size'], '--request-size');
  if (requestSize < 4096 || requestSize > 32 * 1024 * 1024 || (requestSize & (requestSize - 1)) !== 0) {
    throw new UsageError('nbd copy', '--request-size must be a power of two from 4K to 32M');
  }
  const open = async (spec: string, readOnly: boolean): Promise<BlockDevice> => {
    if (isNbdUri(spec)) return NbdClient.connect(spec, { readOnly, connections, requestSize });
    // Loaded on demand: the image layers cost tens of ms to load, and a new target does not need them.
    const { openTarget } = await import('./open-target.js');
    return openTarget(spec, { readOnly });
  };
  const source = await open(sourceSpec, true);
  try {
    let targetIsZero = values['target-is-zero'] ?? false;
    let target: BlockDevice;
    // A target file the copy creates is removed when the copy fails; an existing one is the user's.
    const created = !isNbdUri(targetSpec) && !(await exists(targetSpec));
    if (created) {
      // A new raw file, filled once: written behind (see block/write-behind.ts).
      target = await RawFileDevice.open(targetSpec, { create: { size: source.size }, writeBehind: true });
      targetIsZero = true;
    } else {
      target = await open(targetSpec, false);
    }
    let copied = false;
    try {
      let shown = -1;
      const stats = await copyDevice(source, target, {
        targetIsZero,
        parallel: requests,
        chunk: requestSize,
        granule: Math.max(4096, target.blockSize.minimum),
        // Write-behind already writes the data back as it comes; without it, periodic flushes do.
        ...(target instanceof RawFileDevice && target.writesBehind ? { syncInterval: 0 } : {}),
        ...(values.progress
          ? {
              onProgress: (done: number, total: number) => {
                const percent = Math.floor((100 * done) / Math.max(1, total));
                if (percent !== shown) process.stderr.write(`\r${(shown = percent)}%`);
              },
            }
          : {}),
      });
      if (values.progress) process.stderr.write('\n');
      out(`copied ${formatSize(stats.size)}: ${formatSize(stats.bytesRead)} read, ${formatSize(stats.bytesWritten)} written, ${formatSize(stats.bytesZeroed)} zeroed`);
      copied = true;
    } finally {
      try {
        await target.close();
      } finally {
        if (created && !copied) await unlink(targetSpec).catch(() => undefined);
      }
    }
  } finally {
    await source.close();
  }
  return 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}
