/**
 * The `file` driver (QEMU's file-posix): a host file as a node. The file is opened at the first
 * request, so that a format node above it (qcow2, which reads its host file itself and takes
 * its image locks) does not hold a second descriptor and a second set of locks on the same
 * file; a `raw` node above opens it at once. The check at `blockdev-add` opens and closes it
 * with the locks, so an image in use elsewhere is refused there, as QEMU refuses it.
 */
import { open } from 'node:fs/promises';
import type { BlockDevice } from '../../block/block-device.js';
import { couldNotOpen } from '../qemu-errors.js';
import { RawFileDevice } from '../../block/raw-file-device.js';
import { LazyDevice } from './lazy-device.js';
import { requiredString, type BlockDriver } from './driver.js';

export const fileDriver: BlockDriver = {
  name: 'file',
  async open(options, context) {
    const filename = requiredString(options, 'filename');
    const readOnly = context.readOnly;
    // Open once now to report errors (missing file, permissions) at blockdev-add, as QEMU does.
    try {
      await (await open(filename, readOnly ? 'r' : 'r+')).close();
    } catch (e) {
      throw couldNotOpen(filename, e);
    }
    const probe = await RawFileDevice.open(filename, { readOnly });
    const shape = { size: probe.size, capabilities: probe.capabilities, blockSize: probe.blockSize };
    await probe.close();
    const device: BlockDevice = new LazyDevice(shape, () => RawFileDevice.open(filename, { readOnly }));
    return { device, filename };
  },
};
