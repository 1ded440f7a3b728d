/** The `raw` format driver: its `file` child as it is, or a window of it (`offset`, `size`). */
import { SliceFilter } from '../../block/filters/slice-filter.js';
import { requiredChild, type BlockDriver } from './driver.js';

export const rawDriver: BlockDriver = {
  name: 'raw',
  async open(options, context) {
    const file = await context.child('file', requiredChild(options, 'file'));
    // Opens a lazily opened file node now, so that its image locks are held from here on.
    await file.read(0, 0);
    const offset = typeof options.offset === 'number' ? options.offset : 0;
    const size = typeof options.size === 'number' ? options.size : file.size - offset;
    const device = offset === 0 && size === file.size ? file : new SliceFilter(file, offset, size, { closeInner: false });
    return { device, filename: file.node.filename };
  },
};
