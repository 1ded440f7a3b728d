/**
 * The `qcow2` driver: a qcow2 image as a node, with its persistent bitmaps (loaded, marked in
 * use and recording writes while the node is open, stored when it closes, as QEMU does).
 *
 * bitback's qcow2 code reads and writes its host file itself, so the `file` child must be a
 * node of driver `file` (whose file name is used); a filter between a qcow2 node and its file
 * (QEMU allows blkdebug there) is refused with a clear error. `backing`: absent → the backing
 * file the header names is opened with the image (not as a separate node); `null` → none; a
 * node → that node.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { NotSupportedError } from '../../errors.js';
import { Qcow2Bitmaps } from '../../qcow2/bitmaps/index.js';
import { Qcow2Image } from '../../qcow2/image/index.js';
import { Qcow2NodeBitmaps } from '../graph/node-bitmaps.js';
import { childRef, requiredChild, type BlockDriver } from './driver.js';

export const qcow2Driver: BlockDriver = {
  name: 'qcow2',
  async open(options, context) {
    const file = await context.child('file', requiredChild(options, 'file'));
    if (file.node.driver !== 'file') {
      throw new NotSupportedError(
        `open qcow2 node '${context.node.name}'`,
        `its 'file' child '${file.node.name}' has driver '${file.node.driver}'; bitback's qcow2 driver needs a 'file' node`,
      );
    }
    let backing: 'follow' | 'none' | BlockDevice = 'follow';
    if (options.backing === null) backing = 'none';
    else {
      const ref = childRef(options, 'backing');
      if (ref !== undefined) backing = await context.child('backing', ref);
    }
    const path = file.node.filename;
    const image = await Qcow2Image.open(path, { readOnly: context.readOnly, backing });
    try {
      const store = image.info.version >= 3 ? await Qcow2Bitmaps.attach(image, { mode: 'track' }) : undefined;
      return {
        device: image,
        ...(store !== undefined ? { bitmaps: new Qcow2NodeBitmaps(store) } : {}),
        filename: path,
        describe: () => ({ 'backing-file': image.info.backingFile ?? null, 'cluster-size': image.info.clusterSize }),
      };
    } catch (e) {
      await image.close().catch(() => undefined);
      throw e;
    }
  },
};
