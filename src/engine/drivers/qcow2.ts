/**
 * The `qcow2` driver: a qcow2 image as a node, with its persistent bitmaps (loaded, marked in
 * use and recording writes while the node is open, stored when it closes, as QEMU does).
 *
 * bitback's qcow2 code reads and writes its host file itself, so the `file` child must be a
 * node of driver `file` (whose file name is used); a filter between a qcow2 node and its file
 * (QEMU allows blkdebug there) is refused with a clear error. `backing`: absent → the backing
 * file the header names is opened with the image (not as a separate node); `null` → none for
 * now (a {@link BackingSlot} that `blockdev-snapshot` can fill); a node → that node.
 */
import type { BlockDevice } from '../../block/block-device.js';
import { NotSupportedError } from '../../errors.js';
import { Qcow2Bitmaps } from '../../qcow2/bitmaps/index.js';
import { Qcow2Image } from '../../qcow2/image/index.js';
import type { DriverInstance } from '../graph/block-node.js';
import { Qcow2NodeBitmaps } from '../graph/node-bitmaps.js';
import { storageRule } from '../graph/permissions.js';
import { BackingSlot } from './backing-slot.js';
import { childRef, requiredChild, type BlockDriver } from './driver.js';

/** The virtual size of the qcow2 image at `path`, read from its header. */
async function imageSize(path: string): Promise<number> {
  const image = await Qcow2Image.open(path, { readOnly: true, backing: 'none' });
  try {
    return image.size;
  } finally {
    await image.close();
  }
}

export const qcow2Driver: BlockDriver = {
  name: 'qcow2',
  async open(options, context) {
    const file = await context.child('file', requiredChild(options, 'file'));
    // A format node unshares writes on its host file, as QEMU's qcow2 does.
    file.setRule(storageRule);
    if (file.node.driver !== 'file') {
      throw new NotSupportedError(
        `open qcow2 node '${context.node.name}'`,
        `its 'file' child '${file.node.name}' has driver '${file.node.driver}'; bitback's qcow2 driver needs a 'file' node`,
      );
    }
    let backing: 'follow' | BlockDevice = 'follow';
    let slot: BackingSlot | undefined;
    if (options.backing === null) {
      // No backing for now; blockdev-snapshot may give it one later.
      slot = new BackingSlot(await imageSize(file.node.filename));
      backing = slot;
    } else {
      const ref = childRef(options, 'backing');
      if (ref !== undefined) backing = await context.child('backing', ref);
    }
    const path = file.node.filename;
    return openInstance(path, context.readOnly, backing, slot);
  },
};

/** Opens the image and its bitmaps as the node's driver instance; `reopen` does it again. */
async function openInstance(path: string, readOnly: boolean, backing: 'follow' | BlockDevice, slot: BackingSlot | undefined): Promise<DriverInstance> {
  const image = await Qcow2Image.open(path, { readOnly, backing });
  try {
    const store = image.info.version >= 3 ? await Qcow2Bitmaps.attach(image, { mode: 'track' }) : undefined;
    return {
      device: image,
      ...(store !== undefined ? { bitmaps: new Qcow2NodeBitmaps(store) } : {}),
      filename: path,
      ...(slot !== undefined ? { backingSlot: slot } : {}),
      describe: () => ({ 'backing-file': slot === undefined ? (image.info.backingFile ?? null) : null, 'cluster-size': image.info.clusterSize }),
      reopen: () => openInstance(path, readOnly, backing, slot),
    };
  } catch (e) {
    await image.close().catch(() => undefined);
    throw e;
  }
}
