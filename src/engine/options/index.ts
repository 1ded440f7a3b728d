/**
 * Option strings of the engine: QEMU's `key=value,...` syntax and `--blockdev` values with the
 * `BlockdevOptions` schema of the supported drivers.
 */
export { BlockdevSpecError, KeyvalError } from './errors.js';
export { parseKeyval, type KeyvalOptions } from './keyval.js';
export { formatKeyval } from './keyval-format.js';
export { visitKeyval } from './keyval-visit.js';
export { parseQemuBool, parseQemuInt64, parseQemuNumber, parseQemuSize, parseQemuUint64 } from './qemu-numbers.js';
export {
  BLKDEBUG_EVENTS,
  BLOCKDEV_DRIVERS,
  blockdevAddSchema,
  blockdevOptions,
  type BlockdevDriver,
  type BlockdevOptions,
  type BlockdevOptionsOf,
  type BlockdevRef,
  type BlockdevRefOrNull,
} from './blockdev-schema.js';
export { parseBlockdevSpec } from './blockdev-spec.js';
