/** The `raw` format driver: its `file` child as it is, or a window of it (`offset`, `size`). */
import { SliceFilter } from '../../block/filters/slice-filter.js';
import { FormatDebugEvents } from './blkdebug-events.js';
import { requiredChild, type BlockDriver } from './driver.js';

export const rawDriver: BlockDriver = {
  name: 'raw',
  async open(options, context) {
    const file = await context.child('file', requiredChild(options, 'file'));
    // Opens a lazily opened file node now, so that its image locks are held from here on.
    await file.read(0, 0);
    const offset = typeof options.offset === 'number' ? options.offset : 0;
    const size = typeof options.size === 'number' ? options.size : file.size - offset;
    // A format node fires blkdebug's read_aio/write_aio/flush events on its file child, as QEMU's raw does.
    const events = new FormatDebugEvents(file, () => context.node.readOnly);
    const device = offset === 0 && size === file.size ? events : new SliceFilter(events, offset, size, { closeInner: false });
    return { device, filename: file.node.filename };
  },
};
