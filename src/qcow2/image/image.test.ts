/**
 * The BlockDevice conformance suite against qcow2 images of every shape we write: cluster sizes
 * from 512 B to 2 MiB, versions 2 and 3, 1- and 64-bit refcounts, a backing file, a backing
 * chain three deep, and read-only images whose content sits in compressed clusters or in the
 * backing file.
 */
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testBlockDevice, type DeviceFactory } from '../../block/testing/conformance.js';
import { createQcow2, type CreateQcow2Options } from '../create.js';
import { Qcow2Image, type Qcow2OpenOptions } from './image.js';

/** How a test image is made: its own options, and the layers below it. */
interface Shape {
  options?: Omit<CreateQcow2Options, 'size' | 'backingFile' | 'backingFormat'>;
  /** Build the backing files in `dir` and return the top image's backing file name and format. */
  below?: (dir: string, size: number) => Promise<{ name: string; format: 'raw' | 'qcow2' }>;
  /** For read-only suites: how the content gets in (default: written through a writable image). */
  fill?: 'write' | 'compressed' | 'backing';
}

function factory(shape: Shape): DeviceFactory {
  return async (size, setup) => {
    const dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-'));
    const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
    try {
      const path = join(dir, 'disk.qcow2');
      const content = setup.content;
      if (content !== undefined && shape.fill === 'backing') {
        await createQcow2(join(dir, 'content.qcow2'), { size });
        await writeThrough(join(dir, 'content.qcow2'), content, {});
        await createQcow2(path, { ...shape.options, backingFile: 'content.qcow2', backingFormat: 'qcow2' });
      } else {
        const below = await shape.below?.(dir, size);
        await createQcow2(path, { ...shape.options, size, ...(below === undefined ? {} : { backingFile: below.name, backingFormat: below.format }) });
        if (content !== undefined) await writeThrough(path, content, { compress: shape.fill === 'compressed' });
      }
      const device = await Qcow2Image.open(path, { readOnly: setup.readOnly });
      return { device, cleanup };
    } catch (e) {
      await cleanup();
      throw e;
    }
  };
}

/** Writes `content` into the image through a writable `Qcow2Image`, in 1 MiB requests. */
async function writeThrough(path: string, content: Uint8Array, options: Qcow2OpenOptions): Promise<void> {
  const image = await Qcow2Image.open(path, options);
  const step = 1024 * 1024;
  for (let offset = 0; offset < content.length; offset += step) {
    await image.write(offset, content.subarray(offset, Math.min(content.length, offset + step)));
  }
  await image.close();
}

/**
 * A backing qcow2 image that reads as zeroes but is not empty: explicit zero data, zero
 * clusters and unallocated clusters, over a raw base file half the disk's size (past which
 * reads are zero because the base ends).
 */
async function zeroChain(dir: string, size: number, depth: 2 | 3): Promise<{ name: string; format: 'qcow2' }> {
  await writeFile(join(dir, 'base.raw'), new Uint8Array(0));
  await truncate(join(dir, 'base.raw'), Math.floor(size / 2));
  let below: { name: string; format: 'raw' | 'qcow2' } = { name: 'base.raw', format: 'raw' };
  for (let layer = 1; layer < depth; layer++) {
    const name = `layer${layer}.qcow2`;
    await createQcow2(join(dir, name), { size, backingFile: below.name, backingFormat: below.format, compat: layer === 1 ? '0.10' : '1.1' });
    const image = await Qcow2Image.open(join(dir, name));
    await image.write(layer * 70000, new Uint8Array(200000));
    await image.writeZeroes(600000 + layer * 4096, 300000);
    await image.close();
    below = { name, format: 'qcow2' };
  }
  return below as { name: string; format: 'qcow2' };
}

testBlockDevice('Qcow2Image, version 3, 64 KiB clusters', factory({}));
testBlockDevice('Qcow2Image, version 3, 512-byte clusters', factory({ options: { clusterSize: 512 } }));
testBlockDevice('Qcow2Image, version 3, 2 MiB clusters', factory({ options: { clusterSize: 2 * 1024 * 1024 } }));
testBlockDevice('Qcow2Image, version 2', factory({ options: { compat: '0.10' } }));
testBlockDevice('Qcow2Image, 1-bit refcounts', factory({ options: { refcountBits: 1 } }));
testBlockDevice('Qcow2Image, 64-bit refcounts, 4 KiB clusters', factory({ options: { refcountBits: 64, clusterSize: 4096 } }));
testBlockDevice('Qcow2Image over a backing file', factory({ below: (dir, size) => zeroChain(dir, size, 2) }));
testBlockDevice('Qcow2Image over a backing chain three deep', factory({ below: (dir, size) => zeroChain(dir, size, 3) }));
testBlockDevice('Qcow2Image, read-only', factory({ fill: 'write' }), { readOnly: true });
testBlockDevice('Qcow2Image, read-only, content in compressed clusters', factory({ fill: 'compressed' }), { readOnly: true });
testBlockDevice('Qcow2Image, read-only, content in the backing file', factory({ fill: 'backing' }), { readOnly: true });
