/**
 * The `snapshot-access` driver (QEMU 7.2 block/snapshot-access.c): a node over a
 * copy-before-write node (`file`) that presents the filter's frozen view — what the source held
 * when the filter started — for an export to read while writes go on through the filter.
 *
 * - Reads and block status come from the filter's snapshot API (copied clusters from the
 *   target, the others from the source); ranges outside the view fail with EACCES.
 * - A discard (which, as for every node, does something only with `discard: unmap`) tells the
 *   filter that the clusters are no longer needed: they leave the view and are no longer copied.
 * - Writes and zero-writes fail with ENOTSUP ("Operation not supported"); so do reads when
 *   `file` is not a copy-before-write node. A flush does nothing.
 * - The node takes no permission on its child and shares all (QEMU's
 *   `snapshot_access_child_perm`); but being a user of the filter, it makes the filter forbid
 *   other writers of the source.
 */
import type { BlockCapabilities, BlockDevice, BlockExtent, BlockSizeConstraints } from '../../block/block-device.js';
import { checkRange } from '../../block/range.js';
import { RequestGate } from '../../block/request-gate.js';
import { IoError } from '../../errors.js';
import { snapshotProviderOf, type SnapshotProvider } from '../fleecing/snapshot-provider.js';
import type { Edge } from '../graph/edge.js';
import { ALL_PERMISSIONS } from '../graph/permissions.js';
import { requiredChild, type BlockDriver } from './driver.js';

/** The device of a snapshot-access node; see the module comment. */
export class SnapshotAccessDevice implements BlockDevice {
  readonly size: number;
  readonly capabilities: BlockCapabilities;
  readonly blockSize: BlockSizeConstraints;
  readonly #file: Edge;
  readonly #name: string;
  readonly #gate = new RequestGate();

  constructor(name: string, file: Edge) {
    this.#name = name;
    this.#file = file;
    this.size = file.size;
    this.capabilities = {
      readOnly: false,
      canFlush: false,
      canFua: false,
      canTrim: true,
      trimZeroes: false,
      canFastZero: false,
      canBlockStatus: true,
      multiConn: true,
    };
    this.blockSize = file.blockSize;
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.#run('read', offset, length, (provider) => provider.snapshotRead(offset, length));
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.#run('write', offset, data.length, async () => this.#unsupported('write'));
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.#run('write zeroes', offset, length, async () => this.#unsupported('write zeroes'));
  }

  trim(offset: number, length: number): Promise<void> {
    // Without a provider QEMU's discard gets ENOTSUP, which a discard takes as success.
    return this.#run('discard', offset, length, async (provider) => provider?.snapshotDiscard(offset, length), true);
  }

  flush(): Promise<void> {
    return this.#gate.run(`flush node '${this.#name}'`, async () => undefined);
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.#run('get block status', offset, length, (provider) => provider.snapshotBlockStatus(offset, length));
  }

  close(): Promise<void> {
    return this.#gate.close();
  }

  #unsupported(verb: string): never {
    throw new IoError(`${verb} node '${this.#name}'`, 'Operation not supported', 'ENOTSUP');
  }

  #run<T>(verb: string, offset: number, length: number, body: (provider: SnapshotProvider) => Promise<T>): Promise<T>;
  #run<T>(verb: string, offset: number, length: number, body: (provider: SnapshotProvider | undefined) => Promise<T>, optional: true): Promise<T>;
  #run<T>(verb: string, offset: number, length: number, body: (provider: SnapshotProvider) => Promise<T>, optional = false): Promise<T> {
    const action = `${verb} ${length} bytes at ${offset} of node '${this.#name}'`;
    return this.#gate.run(action, async () => {
      checkRange(action, this.size, offset, length);
      const provider = snapshotProviderOf(this.#file.node.device);
      if (provider === undefined && !optional) this.#unsupported(verb);
      return body(provider!);
    });
  }
}

export const snapshotAccessDriver: BlockDriver = {
  name: 'snapshot-access',
  async open(options, context) {
    const file = await context.child('file', requiredChild(options, 'file'));
    file.setRule(() => ({ perm: 0, shared: ALL_PERMISSIONS }));
    return { device: new SnapshotAccessDevice(context.node.name, file), filename: file.node.filename };
  },
};
