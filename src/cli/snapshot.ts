/**
 * `bitback snapshot`: internal snapshots of a qcow2 image, like `qemu-img snapshot`, as a thin
 * call into `qcow2/snapshots/`. Both forms are accepted: `create|list|apply|delete IMAGE [NAME]`
 * and qemu-img's flags `-c NAME`, `-l`, `-a NAME`, `-d NAME`.
 */
import { parseArgs } from 'node:util';
import {
  applySnapshot,
  createSnapshot,
  deleteSnapshot,
  formatSnapshotTable,
  listSnapshots,
  snapshotInfo,
  type Qcow2Snapshot,
} from '../qcow2/snapshots/index.js';
import { UsageError } from './usage-error.js';

type Out = (line: string) => void;
type Verb = 'create' | 'list' | 'apply' | 'delete';

export const SNAPSHOT_USAGE = `Usage: bitback snapshot VERB [OPTIONS] IMAGE [NAME]
       bitback snapshot [-l | -c NAME | -a NAME | -d NAME] [OPTIONS] IMAGE

  create IMAGE NAME   (-c NAME)  make a disk-only internal snapshot [--id ID]
  list IMAGE          (-l)       list the snapshots as qemu-img does, or --json [-U]
  apply IMAGE NAME    (-a NAME)  revert the disk to the snapshot (NAME: id or name)
  delete IMAGE NAME   (-d NAME)  delete the snapshot (NAME: id or name)

The image must not be in use by another process: one that a VM or another program has open
for writing is refused (exit 6, "Failed to get shared "write" lock"). list reads it anyway
with -U (--force-share), as qemu-img snapshot -U -l. --json prints the snapshot(s) with the
fields of qemu-img info --output=json.`;

const VERBS: readonly Verb[] = ['create', 'list', 'apply', 'delete'];

/** Runs `bitback snapshot ...`. Returns the exit status. */
export async function snapshotCommand(argv: string[], out: Out): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      create: { type: 'string', short: 'c' },
      list: { type: 'boolean', short: 'l' },
      apply: { type: 'string', short: 'a' },
      delete: { type: 'string', short: 'd' },
      id: { type: 'string' },
      json: { type: 'boolean' },
      format: { type: 'string', short: 'f' },
      'force-share': { type: 'boolean', short: 'U' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help === true || (argv.length === 0)) {
    out(SNAPSHOT_USAGE);
    return values.help === true ? 0 : 2;
  }
  if (values.format !== undefined && values.format !== 'qcow2') throw new UsageError('snapshot', `-f ${values.format}: only qcow2 images have internal snapshots`);
  const { verb, image, name } = request(values, positionals);
  if (values.id !== undefined && verb !== 'create') throw new UsageError('snapshot', '--id applies to create only');
  const forceShare = values['force-share'] === true;
  if (forceShare && verb !== 'list') throw new UsageError('snapshot', '-U applies to list only: force-share=on can only be used with read-only images');
  const print = (s: Qcow2Snapshot): void => {
    if (values.json === true) out(JSON.stringify(snapshotInfo(s), null, 4));
  };
  switch (verb) {
    case 'list': {
      const snapshots = await listSnapshots(image, forceShare ? { lock: { forceShare } } : {});
      if (values.json === true) out(JSON.stringify(snapshots.map(snapshotInfo), null, 4));
      else for (const line of formatSnapshotTable(snapshots)) out(line);
      return 0;
    }
    case 'create':
      print(await createSnapshot(image, name!, values.id === undefined ? {} : { id: values.id }));
      return 0;
    case 'apply':
      print(await applySnapshot(image, name!));
      return 0;
    case 'delete':
      print(await deleteSnapshot(image, name!));
      return 0;
    default: {
      const never: never = verb;
      throw new UsageError('snapshot', `unknown verb ${String(never)}`);
    }
  }
}

/** The verb, image and name from either form; exactly one verb. */
function request(
  values: { create?: string; list?: boolean; apply?: string; delete?: string },
  positionals: string[],
): { verb: Verb; image: string; name: string | undefined } {
  const flags: Array<[Verb, string | undefined]> = [];
  if (values.create !== undefined) flags.push(['create', values.create]);
  if (values.list === true) flags.push(['list', undefined]);
  if (values.apply !== undefined) flags.push(['apply', values.apply]);
  if (values.delete !== undefined) flags.push(['delete', values.delete]);
  if (flags.length > 1) throw new UsageError('snapshot', 'give only one of -c, -l, -a, -d');
  if (flags.length === 1) {
    const [verb, name] = flags[0]!;
    if (positionals.length !== 1) throw new UsageError('snapshot', `expected exactly one IMAGE after -${verb[0]}`);
    return { verb, image: positionals[0]!, name };
  }
  const [verb, image, name, ...extra] = positionals;
  if (verb === undefined || !(VERBS as readonly string[]).includes(verb)) {
    throw new UsageError('snapshot', `expected a verb (${VERBS.join(', ')}) or one of -c, -l, -a, -d`);
  }
  if (image === undefined) throw new UsageError('snapshot', `${verb}: expected IMAGE`);
  const needsName = verb !== 'list';
  if (needsName && name === undefined) throw new UsageError('snapshot', `${verb}: expected IMAGE NAME`);
  if ((!needsName && name !== undefined) || extra.length > 0) throw new UsageError('snapshot', `${verb}: too many arguments`);
  return { verb: verb as Verb, image, name };
}
