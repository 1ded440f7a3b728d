/**
 * `bitback bitmap ...`: the persistent dirty bitmaps of a qcow2 image, like `qemu-img bitmap`.
 * A thin front end over `Qcow2Bitmaps` (src/qcow2/bitmaps/): changes are stored at once
 * (mode `edit`), listing and dumping open the image read-only.
 *
 * Two spellings: `bitback bitmap add [-g G] [--disable] IMAGE NAME` (one verb first), and
 * qemu-img's `bitback bitmap --add [-g G] --disable IMAGE NAME` (any number of action flags,
 * applied in command-line order).
 */
import { parseArgs } from 'node:util';
import { parseSize } from '../block/io/size.js';
import { type DirtyBitmap } from '../bitmap/index.js';
import { NotFoundError } from '../errors.js';
import { Qcow2Bitmaps } from '../qcow2/bitmaps/index.js';
import { parseImageFormat } from '../qcow2/open-image.js';
import { type ImageFormat } from '../qcow2/info.js';
import { UsageError } from './usage-error.js';

type Out = (line: string) => void;

export const BITMAP_USAGE = `Usage: bitback bitmap VERB [OPTIONS] IMAGE [NAME]

  add [-g GRANULARITY] [--disable] IMAGE NAME   add a persistent bitmap (default granularity:
                                                the cluster size clamped to 4K..64K)
  remove IMAGE NAME                             remove it (also an inconsistent one)
  clear IMAGE NAME                              clear every bit
  enable IMAGE NAME | disable IMAGE NAME        start or stop recording writes
  merge --merge SRC [-b SRCIMG [-F FMT]] IMAGE NAME
                                                NAME |= SRC (SRC from SRCIMG when given)
  list [--json] [-U] IMAGE                      name, granularity, flags, count
  dump [--json] [-U] IMAGE NAME                 dirty extents: "OFFSET LENGTH" per line

An image that another process (a VM, qemu-img, bitback) has open for writing is refused
(exit 6, "Failed to get shared "write" lock"); list and dump read it anyway with -U
(--force-share), as qemu-img -U does: what they show may then be out of date.

qemu-img's spelling works too: bitback bitmap [--add] [--remove] [--clear] [--enable]
[--disable] [--merge SRC [-b SRCIMG [-F FMT]]] [-g GRANULARITY] [-f qcow2] IMAGE NAME
(actions are applied in the order given). Raw images cannot hold bitmaps.`;

const VERBS = ['add', 'remove', 'clear', 'enable', 'disable', 'merge', 'list', 'dump'] as const;
type Verb = (typeof VERBS)[number];

/** One change, in the order the command line gives them. */
type Action = { kind: 'add'; disabled: boolean } | { kind: 'remove' | 'clear' | 'enable' | 'disable' } | { kind: 'merge'; source: string };

/** Runs `bitback bitmap ...`. Returns the exit status. */
export async function bitmapCommand(argv: string[], out: Out): Promise<number> {
  const first = argv[0];
  if (first === undefined || first === 'help') {
    out(BITMAP_USAGE);
    return first === undefined ? 2 : 0;
  }
  const verb = (VERBS as readonly string[]).includes(first) ? (first as Verb) : undefined;
  const { values, positionals, tokens } = parseArgs({
    args: verb === undefined ? argv : argv.slice(1),
    options: {
      add: { type: 'boolean' },
      remove: { type: 'boolean' },
      clear: { type: 'boolean' },
      enable: { type: 'boolean' },
      disable: { type: 'boolean' },
      merge: { type: 'string' },
      granularity: { type: 'string', short: 'g' },
      'source-image': { type: 'string', short: 'b' },
      'source-format': { type: 'string', short: 'F' },
      format: { type: 'string', short: 'f' },
      json: { type: 'boolean' },
      output: { type: 'string' },
      'force-share': { type: 'boolean', short: 'U' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    tokens: true,
  });
  if (values.help) {
    out(BITMAP_USAGE);
    return 0;
  }
  const format = values.format === undefined ? undefined : parseImageFormat(values.format);
  const json = values.json === true || values.output === 'json';
  const forceShare = values['force-share'] === true;
  if (verb === 'list') {
    const [image, ...extra] = positionals;
    if (image === undefined || extra.length > 0) throw new UsageError('bitmap', 'list expects IMAGE');
    return list(image, format, forceShare, json, out);
  }
  if (verb === 'dump') {
    const [image, name, ...extra] = positionals;
    if (image === undefined || name === undefined || extra.length > 0) throw new UsageError('bitmap', 'dump expects IMAGE NAME');
    return dump(image, name, format, forceShare, json, out);
  }
  if (forceShare) throw new UsageError('bitmap', '-U applies to list and dump only: the other verbs change the image');

  const actions = actionsOf(verb, tokens);
  const [image, name, ...extra] = positionals;
  if (image === undefined || name === undefined || extra.length > 0) throw new UsageError('bitmap', 'expected IMAGE NAME');
  if (actions.length === 0) throw new UsageError('bitmap', 'nothing to do: give a verb (add, remove, clear, enable, disable, merge, list, dump) or an action flag');
  if (values.granularity !== undefined && !actions.some((a) => a.kind === 'add')) throw new UsageError('bitmap', '-g is only valid with add');
  const merges = actions.filter((a) => a.kind === 'merge');
  if (values['source-image'] !== undefined && merges.length === 0) throw new UsageError('bitmap', '-b is only valid with merge');
  if (values['source-format'] !== undefined && values['source-image'] === undefined) throw new UsageError('bitmap', '-F is only valid with -b');
  const granularity = values.granularity === undefined ? undefined : parseSize(values.granularity, 'granularity');
  const sourceFormat = values['source-format'] === undefined ? undefined : parseImageFormat(values['source-format']);

  const bitmaps = await Qcow2Bitmaps.open(image, { mode: 'edit', ...(format === undefined ? {} : { format }) });
  try {
    for (const action of actions) {
      switch (action.kind) {
        case 'add':
          await bitmaps.add(name, { disabled: action.disabled, ...(granularity === undefined ? {} : { granularity }) });
          break;
        case 'remove':
          await bitmaps.remove(name);
          break;
        case 'clear':
          await bitmaps.clear(name);
          break;
        case 'enable':
          await bitmaps.enable(name);
          break;
        case 'disable':
          await bitmaps.disable(name);
          break;
        case 'merge':
          await merge(bitmaps, name, action.source, values['source-image'], sourceFormat);
          break;
        default: {
          const never: never = action;
          throw new UsageError('bitmap', `unknown action ${String((never as Action).kind)}`);
        }
      }
    }
  } finally {
    await bitmaps.close();
  }
  return 0;
}

/** The changes a command line asks for, in order. `add` directly followed by `disable` adds a disabled bitmap. */
function actionsOf(verb: Exclude<Verb, 'list' | 'dump'> | undefined, tokens: ReturnType<typeof parseArgs>['tokens'] & object): Action[] {
  const flags: Action[] = [];
  for (const token of tokens) {
    if (token.kind !== 'option') continue;
    switch (token.name) {
      case 'add':
        flags.push({ kind: 'add', disabled: false });
        break;
      case 'remove':
      case 'clear':
      case 'enable':
      case 'disable':
        flags.push({ kind: token.name });
        break;
      case 'merge':
        flags.push({ kind: 'merge', source: token.value ?? '' });
        break;
      default:
        break;
    }
  }
  if (verb === 'merge' && !flags.some((a) => a.kind === 'merge')) throw new UsageError('bitmap', 'merge needs --merge SRC');
  // The verb spelling: `add --disable` means a disabled bitmap, as in qemu-img.
  const actions: Action[] = verb === undefined || verb === 'merge' || flags.some((a) => a.kind === verb) ? flags : [verbAction(verb), ...flags];
  const folded: Action[] = [];
  for (const action of actions) {
    const previous = folded[folded.length - 1];
    if (action.kind === 'disable' && previous?.kind === 'add' && !previous.disabled) previous.disabled = true;
    else folded.push(action);
  }
  return folded;
}

function verbAction(verb: Exclude<Verb, 'merge' | 'list' | 'dump'>): Action {
  return verb === 'add' ? { kind: 'add', disabled: false } : { kind: verb };
}

/** Merges bitmap `source` (of `sourceImage` when given, else of the same image) into `target`. */
async function merge(bitmaps: Qcow2Bitmaps, target: string, source: string, sourceImage: string | undefined, sourceFormat: ImageFormat | undefined): Promise<void> {
  if (source === '') throw new UsageError('bitmap', '--merge needs a source bitmap name');
  if (sourceImage === undefined) {
    await bitmaps.merge(target, source);
    return;
  }
  const other = await Qcow2Bitmaps.open(sourceImage, { readOnly: true, ...(sourceFormat === undefined ? {} : { format: sourceFormat }) });
  try {
    const from: DirtyBitmap | undefined = other.get(source);
    if (from === undefined) throw new NotFoundError(`merge into bitmap '${target}' of ${bitmaps.image.path}`, `Dirty bitmap '${source}' not found in ${sourceImage}`);
    await bitmaps.merge(target, from);
  } finally {
    await other.close();
  }
}

async function list(image: string, format: ImageFormat | undefined, forceShare: boolean, json: boolean, out: Out): Promise<number> {
  const bitmaps = await Qcow2Bitmaps.open(image, { readOnly: true, ...(forceShare ? { lock: { forceShare } } : {}), ...(format === undefined ? {} : { format }) });
  try {
    const rows = bitmaps.list();
    if (json) {
      out(JSON.stringify(rows.map(({ name, granularity, flags, count, recording, persistent, inconsistent }) => ({ name, granularity, flags, count, recording, persistent, inconsistent })), null, 4));
      return 0;
    }
    const table = [['NAME', 'GRANULARITY', 'FLAGS', 'COUNT'], ...rows.map((r) => [r.name, String(r.granularity), r.flags.join(',') || '-', String(r.count)])];
    const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
    for (const row of table) out(row.map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  '));
  } finally {
    await bitmaps.close();
  }
  return 0;
}

async function dump(image: string, name: string, format: ImageFormat | undefined, forceShare: boolean, json: boolean, out: Out): Promise<number> {
  const bitmaps = await Qcow2Bitmaps.open(image, { readOnly: true, ...(forceShare ? { lock: { forceShare } } : {}), ...(format === undefined ? {} : { format }) });
  try {
    const extents = bitmaps.dirtyExtents(name);
    if (json) out(JSON.stringify(extents));
    else for (const e of extents) out(`${e.offset} ${e.length}`);
  } finally {
    await bitmaps.close();
  }
  return 0;
}
