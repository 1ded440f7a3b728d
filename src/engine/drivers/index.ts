/**
 * The drivers `blockdev-add` knows. Each driver lives in its own file; add it to this list.
 */
import { copyBeforeWriteDriver } from './copy-before-write.js';
import type { BlockDriver } from './driver.js';
import { blkdebugDriver } from './blkdebug.js';
import { fileDriver } from './file.js';
import { nbdDriver } from './nbd.js';
import { nullCoDriver } from './null-co.js';
import { qcow2Driver } from './qcow2.js';
import { rawDriver } from './raw.js';
import { snapshotAccessDriver } from './snapshot-access.js';

/** Every built-in driver. */
export const BUILTIN_DRIVERS: readonly BlockDriver[] = [fileDriver, qcow2Driver, rawDriver, nullCoDriver, copyBeforeWriteDriver, snapshotAccessDriver, blkdebugDriver, nbdDriver];

export { childRef, requiredChild, requiredString, type BlockDriver, type BlockdevRef, type OpenContext } from './driver.js';
