/**
 * `bitback image SUBCOMMAND ...`: image tools like qemu-img's, each a thin call into `qcow2/`.
 */
import { parseArgs } from 'node:util';
import { parseSize, formatSize } from '../block/io/size.js';
import { InvalidArgumentError } from '../errors.js';
import { compareDevices } from '../qcow2/compare.js';
import { convertImage } from '../qcow2/convert.js';
import { commitImage } from '../qcow2/commit.js';
import { rebaseImage } from '../qcow2/rebase.js';
import { imageInfo, imageInfoChain, type ImageInfo } from '../qcow2/info.js';
import { formatMap, mapDevice } from '../qcow2/map.js';
import { createImage, openImage, parseImageFormat, type CreateImageOptions } from '../qcow2/open-image.js';
import { UsageError } from './usage-error.js';

type Out = (line: string) => void;

export const IMAGE_USAGE = `Usage: bitback image SUBCOMMAND [OPTIONS] ARGS

  create [-f qcow2|raw] [-b BACKING [-F FMT]] [-o OPTIONS] FILE [SIZE]
         OPTIONS: cluster_size=SIZE, refcount_bits=N, compat=1.1|0.10, preallocation=off|metadata
  info [--json] [--backing-chain] [-f FMT] [-U] FILE
  check [--json] [-r leaks|all] [-U] FILE exit 0 clean, 2 corruptions, 3 leaks only
  map [--json] [-f FMT] [-U] FILE
  compare [-f FMT] [-F FMT] [-s] [-U] FILE1 FILE2     exit 0 identical, 1 different
  convert [-f FMT] -O qcow2|raw [-c] [-o OPTIONS] [-p] [-m N] [-U] SOURCE TARGET
  rebase [-u] -b BACKING [-F FMT] FILE   (-b '' removes the backing file; safe unless -u)
  commit [-d] FILE                        (-d: keep the overlay's data)

Images are locked as QEMU locks them: an image that another process (a VM, qemu-img, bitback)
has open for writing cannot be opened, exit status 6 ("Failed to get shared "write" lock").
-U (--force-share) reads it anyway, as qemu-img -U: read-only commands only, and what it reads
may be inconsistent while the other process writes.`;

/** The -U / --force-share option of the read-only subcommands (qemu-img's spelling). */
const FORCE_SHARE = { 'force-share': { type: 'boolean', short: 'U' } } as const;

/** The `lock` option for `-U`: share every permission (qemu-img -U); nothing: the defaults. */
function lockFor(values: { 'force-share'?: boolean }): { lock?: { forceShare: true } } {
  return values['force-share'] === true ? { lock: { forceShare: true } } : {};
}

/** Runs `bitback image ...`. Returns the exit status. */
export async function imageCommand(argv: string[], out: Out): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'create':
      return create(rest, out);
    case 'info':
      return info(rest, out);
    case 'check':
      return (await import('./image-check.js')).checkCommand(rest, out);
    case 'map':
      return map(rest, out);
    case 'compare':
      return compare(rest, out);
    case 'convert':
      return convert(rest, out);
    case 'rebase':
      return rebase(rest, out);
    case 'commit':
      return commit(rest, out);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      out(IMAGE_USAGE);
      return sub === undefined ? 2 : 0;
    default:
      throw new UsageError('image', `unknown subcommand '${sub}' (create, info, check, map, compare, convert, rebase, commit)`);
  }
}

/** Parses `-o key=value,...` creation options. */
export function parseCreateOptions(text: string | undefined): CreateImageOptions {
  const options: CreateImageOptions = {};
  if (text === undefined) return options;
  for (const pair of text.split(',')) {
    const [key, value] = pair.split('=', 2) as [string, string | undefined];
    if (value === undefined) throw new UsageError('image', `option '${pair}' has no value (expected key=value)`);
    switch (key) {
      case 'cluster_size':
        options.clusterSize = parseSize(value, 'cluster_size');
        break;
      case 'refcount_bits':
        options.refcountBits = Number.parseInt(value, 10);
        break;
      case 'compat':
        if (value !== '1.1' && value !== '0.10' && value !== 'v3' && value !== 'v2') throw new UsageError('image', `compat=${value}: expected 1.1 or 0.10`);
        options.compat = value === '0.10' || value === 'v2' ? '0.10' : '1.1';
        break;
      case 'preallocation':
        if (value !== 'off' && value !== 'metadata') throw new UsageError('image', `preallocation=${value}: expected off or metadata`);
        options.preallocation = value;
        break;
      default:
        throw new UsageError('image', `unknown option '${key}' (cluster_size, refcount_bits, compat, preallocation)`);
    }
  }
  return options;
}

async function create(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      format: { type: 'string', short: 'f', default: 'qcow2' },
      backing: { type: 'string', short: 'b' },
      'backing-format': { type: 'string', short: 'F' },
      options: { type: 'string', short: 'o' },
      quiet: { type: 'boolean', short: 'q' },
    },
    allowPositionals: true,
  });
  const [file, sizeText, ...extra] = positionals;
  if (file === undefined || extra.length > 0) throw new UsageError('image create', 'expected FILE [SIZE]');
  const format = parseImageFormat(values.format);
  const size = sizeText === undefined ? undefined : parseSize(sizeText, 'size');
  if (size === undefined && values.backing === undefined) throw new UsageError('image create', 'a SIZE is required without a backing file');
  const options = parseCreateOptions(values.options);
  if (values.backing !== undefined) options.backingFile = values.backing;
  if (values['backing-format'] !== undefined) options.backingFormat = parseImageFormat(values['backing-format']);
  await createImage(file, format, size, options);
  if (!values.quiet) {
    const created = await imageInfo(file, format);
    out(`Formatting '${file}', fmt=${format} size=${created['virtual-size']}${values.backing ? ` backing_file=${values.backing}` : ''}`);
  }
  return 0;
}

/** qemu-img info's text form. */
export function formatInfo(info: ImageInfo): string[] {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${formatSize(info['virtual-size'])} (${info['virtual-size']} bytes)`,
    `disk size: ${formatSize(info['actual-size'])}`,
  ];
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${info['cluster-size']}`);
  if (info['backing-filename'] !== undefined) {
    lines.push(`backing file: ${info['backing-filename']}` + (info['full-backing-filename'] !== info['backing-filename'] ? ` (actual path: ${info['full-backing-filename']})` : ''));
  }
  if (info['backing-filename-format'] !== undefined) lines.push(`backing file format: ${info['backing-filename-format']}`);
  if (info.snapshots !== undefined) {
    lines.push('Snapshot list:', 'ID        TAG               VM SIZE                DATE        VM CLOCK     ICOUNT');
    for (const s of info.snapshots) {
      const date = new Date(s['date-sec'] * 1000).toISOString().replace('T', ' ').slice(0, 19);
      const clock = new Date(s['vm-clock-sec'] * 1000 + Math.floor(s['vm-clock-nsec'] / 1e6)).toISOString().slice(11, 23);
      lines.push(`${s.id.padEnd(10)}${s.name.padEnd(18)}${formatSize(s['vm-state-size']).padStart(7)} ${date.padStart(22)} ${clock} ${String(s.icount ?? '').padStart(10)}`);
    }
  }
  const specific = info['format-specific'];
  if (specific !== undefined) {
    lines.push('Format specific information:');
    for (const [key, value] of Object.entries(specific.data)) {
      if (key === 'bitmaps' && Array.isArray(value)) {
        lines.push('    bitmaps:');
        for (const b of value) {
          lines.push(`        [${value.indexOf(b)}]:`, `            flags:`, ...b.flags.map((f: string, i: number) => `                [${i}]: ${f}`), `            name: ${b.name}`, `            granularity: ${b.granularity}`);
        }
      } else {
        lines.push(`    ${key}: ${String(value)}`);
      }
    }
  }
  lines.push(`dirty flag: ${info['dirty-flag']}`);
  return lines;
}

async function info(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      json: { type: 'boolean' },
      'backing-chain': { type: 'boolean' },
      format: { type: 'string', short: 'f' },
      output: { type: 'string' },
      ...FORCE_SHARE,
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw new UsageError('image info', 'expected exactly one FILE');
  const file = positionals[0] as string;
  const format = values.format === undefined ? undefined : parseImageFormat(values.format);
  const json = values.json || values.output === 'json';
  if (values['backing-chain']) {
    const chain = await imageInfoChain(file, format, lockFor(values));
    if (json) out(JSON.stringify(chain, null, 4));
    else chain.forEach((i, n) => out((n > 0 ? '\n' : '') + formatInfo(i).join('\n')));
  } else {
    const result = await imageInfo(file, format, lockFor(values));
    out(json ? JSON.stringify(result, null, 4) : formatInfo(result).join('\n'));
  }
  return 0;
}

async function map(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { json: { type: 'boolean' }, format: { type: 'string', short: 'f' }, output: { type: 'string' }, ...FORCE_SHARE },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw new UsageError('image map', 'expected exactly one FILE');
  const image = await openImage(positionals[0] as string, { readOnly: true, ...lockFor(values), ...(values.format ? { format: parseImageFormat(values.format) } : {}) });
  try {
    const entries = await mapDevice(image.device, image.chainLength);
    if (values.json || values.output === 'json') out(JSON.stringify(entries));
    else out(formatMap(entries).join('\n'));
  } finally {
    await image.device.close();
  }
  return 0;
}

async function compare(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      format: { type: 'string', short: 'f' },
      'second-format': { type: 'string', short: 'F' },
      strict: { type: 'boolean', short: 's' },
      quiet: { type: 'boolean', short: 'q' },
      ...FORCE_SHARE,
    },
    allowPositionals: true,
  });
  if (positionals.length !== 2) throw new UsageError('image compare', 'expected FILE1 FILE2');
  const [first, second] = positionals as [string, string];
  const a = await openImage(first, { readOnly: true, ...lockFor(values), ...(values.format ? { format: parseImageFormat(values.format) } : {}) });
  try {
    const b = await openImage(second, { readOnly: true, ...lockFor(values), ...(values['second-format'] ? { format: parseImageFormat(values['second-format']) } : {}) });
    try {
      const result = await compareDevices(a.device, b.device, { strict: values.strict ?? false });
      if (result.identical) {
        if (!values.quiet) out('Images are identical.');
        return 0;
      }
      if (!values.quiet) {
        out(result.reason === 'size' ? `Strict mode: Image size mismatch! (${a.device.size} vs ${b.device.size})` : `Content mismatch at offset ${result.offset}!`);
      }
      return 1;
    } finally {
      await b.device.close();
    }
  } finally {
    await a.device.close();
  }
}

async function convert(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      format: { type: 'string', short: 'f' },
      'output-format': { type: 'string', short: 'O' },
      compress: { type: 'boolean', short: 'c' },
      options: { type: 'string', short: 'o' },
      progress: { type: 'boolean', short: 'p' },
      parallel: { type: 'string', short: 'm' },
      ...FORCE_SHARE,
    },
    allowPositionals: true,
  });
  if (positionals.length !== 2) throw new UsageError('image convert', 'expected SOURCE TARGET');
  if (values['output-format'] === undefined) throw new UsageError('image convert', '-O FORMAT is required');
  const targetFormat = parseImageFormat(values['output-format']);
  if (values.compress && targetFormat !== 'qcow2') throw new InvalidArgumentError('convert to raw with -c', 'only qcow2 targets can be compressed');
  const parallel = values.parallel === undefined ? 8 : Number.parseInt(values.parallel, 10);
  if (!Number.isInteger(parallel) || parallel < 1 || parallel > 64) throw new UsageError('image convert', `-m ${values.parallel}: expected 1..64 requests in flight`);
  let lastPercent = -1;
  await convertImage(positionals[0] as string, positionals[1] as string, {
    targetFormat,
    compress: values.compress ?? false,
    create: parseCreateOptions(values.options),
    parallel,
    forceShare: values['force-share'] === true,
    ...(values.format ? { sourceFormat: parseImageFormat(values.format) } : {}),
    ...(values.progress
      ? {
          onProgress: (done: number, total: number) => {
            const percent = Math.floor((100 * done) / Math.max(1, total));
            if (percent !== lastPercent) {
              lastPercent = percent;
              process.stderr.write(`\r    (${percent.toFixed(2)}/100%)`);
            }
          },
        }
      : {}),
  });
  if (values.progress) process.stderr.write(`\r    (100.00/100%)\n`);
  return 0;
}

async function rebase(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      backing: { type: 'string', short: 'b' },
      'backing-format': { type: 'string', short: 'F' },
      unsafe: { type: 'boolean', short: 'u' },
      format: { type: 'string', short: 'f' },
      quiet: { type: 'boolean', short: 'q' },
    },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw new UsageError('image rebase', 'expected exactly one FILE');
  if (values.backing === undefined) throw new UsageError('image rebase', "-b BACKING is required (-b '' removes the backing file)");
  if (values.format !== undefined && values.format !== 'qcow2') throw new UsageError('image rebase', 'only qcow2 images have a backing file');
  const format = values['backing-format'] === undefined ? undefined : parseImageFormat(values['backing-format']);
  const stats = await rebaseImage(positionals[0] as string, values.backing === '' ? undefined : values.backing, {
    unsafe: values.unsafe ?? false,
    ...(format ? { backingFormat: format } : {}),
  });
  if (!values.quiet && !values.unsafe) out(`Rebased; ${formatSize(stats.bytesCopied)} copied where the old and new backing differ.`);
  return 0;
}

async function commit(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { keep: { type: 'boolean', short: 'd' }, quiet: { type: 'boolean', short: 'q' }, format: { type: 'string', short: 'f' } },
    allowPositionals: true,
  });
  if (positionals.length !== 1) throw new UsageError('image commit', 'expected exactly one FILE');
  const stats = await commitImage(positionals[0] as string, { keep: values.keep ?? false });
  if (!values.quiet) {
    out(`Image committed (${formatSize(stats.bytesCommitted)}).${stats.emptied ? '' : values.keep ? '' : ' The overlay was kept: it has internal snapshots or bitmaps.'}`);
  }
  return 0;
}
