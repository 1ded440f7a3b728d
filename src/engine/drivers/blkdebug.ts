/**
 * The `blkdebug` driver (QEMU 7.2 block/blkdebug.c): a filter over its `image` child that fails
 * chosen requests, so that a failure can be placed at exactly the same point on QEMU and on the
 * engine. Rules come from `inject-error` and `set-state` (and a `config` file); see
 * {@link BlkdebugRules} for their semantics and {@link BlkdebugDevice} for the requests and
 * events. `none` fires once when the node opens.
 *
 * bitback's qcow2 node reads its host file itself, so a blkdebug node can sit above a format
 * node, a `file`, `raw` or `null-co` node (or another blkdebug node), never between a qcow2
 * node and its file. The events QEMU's qcow2 driver fires on its file (`l1_*`, `l2_*`,
 * `refblock_*`, `cluster_*`, `cow_*`, `read_backing_aio`, `read_compressed`, `write_compressed`,
 * `vmstate_*`, `empty_image_prepare`, ...) and `cor_write` (copy-on-read) therefore never fire;
 * rules on them are accepted and stay inert. Those that do: `none`; `pwritev*` for writes
 * through the node; `read_aio`, `write_aio`, `flush_to_os`, `flush_to_disk` from a `raw` node
 * above (or, the flush events, from a blkdebug node above).
 *
 * `take-child-perms` and `unshare-child-perms` change the permissions the node takes on its
 * image and shares, over those of a filter (its users' own), as blkdebug.c `blkdebug_child_perm`.
 */
import { readFile } from 'node:fs/promises';
import { InvalidArgumentError } from '../../errors.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import { BlockPermission } from '../graph/permissions.js';
import { errnoOf, strerror } from '../qemu-errors.js';
import { parseBlkdebugConfig } from './blkdebug-config.js';
import type { BlkdebugLimits } from './blkdebug-cuts.js';
import { BlkdebugDevice } from './blkdebug-device.js';
import { BlkdebugRules, type InjectErrorRule, type SetStateRule } from './blkdebug-rules.js';
import { requiredChild, type BlockDriver } from './driver.js';

/** The size options, in the order they are checked. */
const SIZE_OPTIONS = ['align', 'max-transfer', 'opt-write-zero', 'max-write-zero', 'opt-discard', 'max-discard'] as const;

/** QEMU's INT_MAX, the bound of every limit. */
const INT_MAX = 0x7fffffff;

/** Options that keep QEMU's short `blkdebug:CONFIG:IMAGE` file name (blkdebug.c `blkdebug_refresh_filename`). */
const PLAIN_NAME_OPTIONS = new Set(['driver', 'image', 'config']);

/** Members every node has, not part of the driver's own options. */
const COMMON_OPTIONS = new Set(['node-name', 'discard', 'cache', 'read-only', 'auto-read-only', 'force-share', 'detect-zeroes']);

function fail(reason: string): never {
  throw new InvalidArgumentError('open blkdebug node', reason);
}

/** A size option as QEMU's option parser takes it: absent → 0, negative → its error. */
function sizeOption(options: JsonObject, key: string): number {
  const value = options[key];
  if (value === undefined) return 0;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) fail(`Parameter '${key}' expects a non-negative number below 2^64`);
  return value;
}

/** The rules given as options (already checked against the QAPI schema). */
function optionRules(options: JsonObject): { injects: InjectErrorRule[]; sets: SetStateRule[] } {
  const list = (key: string): JsonObject[] => (Array.isArray(options[key]) ? (options[key] as JsonObject[]) : []);
  return {
    injects: list('inject-error').map((r) => ({ ...r }) as unknown as InjectErrorRule),
    sets: list('set-state').map((r) => ({ ...r }) as unknown as SetStateRule),
  };
}

/** QAPI `BlockPermission` names as permission bits. */
const PERMISSIONS: Record<string, number> = {
  'consistent-read': BlockPermission.CONSISTENT_READ,
  write: BlockPermission.WRITE,
  'write-unchanged': BlockPermission.WRITE_UNCHANGED,
  resize: BlockPermission.RESIZE,
};

/** The permission bits of a `take-child-perms` / `unshare-child-perms` list. */
function permissionBits(options: JsonObject, key: string): number {
  const names = Array.isArray(options[key]) ? (options[key] as string[]) : [];
  return names.reduce((bits, name) => bits | (PERMISSIONS[name] ?? 0), 0);
}

/** Reads and parses the config file, with QEMU's texts for a file that cannot be read. */
async function configRules(path: string): Promise<{ injects: InjectErrorRule[]; sets: SetStateRule[] }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const errno = errnoOf(e);
    // fopen() of a directory succeeds in C; reading it is what fails.
    if (errno === 'EISDIR') fail(`Cannot read config file: ${strerror(errno)}`);
    fail(`Could not read blkdebug config file: ${strerror(errno)}`);
  }
  return parseBlkdebugConfig(text);
}

/** Checks the limits against the alignment as blkdebug.c `blkdebug_open` does. */
function checkLimits(sizes: Record<(typeof SIZE_OPTIONS)[number], number>, childAlign: number): void {
  const { align } = sizes;
  if (align !== 0 && (align >= INT_MAX || (align & (align - 1)) !== 0)) fail(`Cannot meet constraints with align ${align}`);
  const base = Math.max(align, childAlign);
  const check = (key: (typeof SIZE_OPTIONS)[number], multipleOf: number): void => {
    const value = sizes[key];
    if (value !== 0 && (value >= INT_MAX || value % multipleOf !== 0)) fail(`Cannot meet constraints with ${key} ${value}`);
  };
  check('max-transfer', base);
  check('opt-write-zero', base);
  check('max-write-zero', Math.max(sizes['opt-write-zero'], base));
  check('opt-discard', base);
  check('max-discard', Math.max(sizes['opt-discard'], base));
}

/**
 * QEMU's name of the node: `blkdebug:CONFIG:IMAGE` when nothing else is set and the image has a
 * plain name, else `json:{...}` — where QEMU puts the image's full options and its own key order
 * (a hash order), this one names the image by its file name.
 */
function nodeFilename(options: JsonObject, imageFilename: string): string {
  const own = Object.keys(options).filter((k) => !COMMON_OPTIONS.has(k));
  const config = typeof options.config === 'string' ? options.config : '';
  if (own.every((k) => PLAIN_NAME_OPTIONS.has(k)) && !imageFilename.startsWith('json:')) return `blkdebug:${config}:${imageFilename}`;
  const rest = Object.fromEntries(own.filter((k) => k !== 'image' && k !== 'driver').map((k) => [k, options[k]!]));
  return `json:${JSON.stringify({ image: imageFilename, driver: 'blkdebug', ...rest })}`;
}

export const blkdebugDriver: BlockDriver = {
  name: 'blkdebug',
  async open(options, context) {
    const sizes = Object.fromEntries(SIZE_OPTIONS.map((key) => [key, sizeOption(options, key)])) as Record<(typeof SIZE_OPTIONS)[number], number>;
    // Rules first (a bad config file is reported before the image is looked at), config file first.
    const fromConfig = typeof options.config === 'string' ? await configRules(options.config) : { injects: [], sets: [] };
    const fromOptions = optionRules(options);
    const rules = new BlkdebugRules([...fromConfig.injects, ...fromOptions.injects], [...fromConfig.sets, ...fromOptions.sets]);
    const take = permissionBits(options, 'take-child-perms');
    const unshare = permissionBits(options, 'unshare-child-perms');
    const image = await context.child('image', requiredChild(options, 'image'));
    if (take !== 0 || unshare !== 0) image.setRule((_node, perm, shared) => ({ perm: perm | take, shared: shared & ~unshare }));
    const below = image.node.device instanceof BlkdebugDevice ? image.node.device.limits : undefined;
    checkLimits(sizes, below?.align ?? 1);
    const limits: BlkdebugLimits = {
      align: sizes.align === 0 ? 1 : sizes.align,
      // QEMU takes the child's max_transfer unless the node sets its own.
      maxTransfer: sizes['max-transfer'] !== 0 ? sizes['max-transfer'] : (below?.maxTransfer ?? 0),
      optWriteZero: sizes['opt-write-zero'],
      maxWriteZero: sizes['max-write-zero'],
      optDiscard: sizes['opt-discard'],
      maxDiscard: sizes['max-discard'],
    };
    const { node } = context;
    const device = new BlkdebugDevice(image, rules, limits, { name: node.name, readOnly: () => node.readOnly, unmap: () => node.unmap });
    rules.event('none');
    return {
      device,
      filename: nodeFilename(options, image.node.filename),
      // QEMU reports the filtered image's cluster size for a filter (block.c `bdrv_get_info`).
      describe: () => {
        const clusterSize = image.node.describe()['cluster-size'];
        return typeof clusterSize === 'number' ? { 'cluster-size': clusterSize } : {};
      },
    };
  },
};
