import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WriteOptions, WriteZeroesOptions } from '../../block/block-device.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { IoError, NotSupportedError } from '../../errors.js';
import { BlockNode } from '../graph/block-node.js';
import { NodeGraph } from '../graph/node-graph.js';
import type { BlkdebugLimits } from './blkdebug-cuts.js';
import { BlkdebugDevice } from './blkdebug-device.js';
import { FormatDebugEvents } from './blkdebug-events.js';
import { BlkdebugRules, errnoName, type InjectErrorRule, type SetStateRule } from './blkdebug-rules.js';

const MiB = 1024 * 1024;

/** A memory disk that logs what reaches it: `read 0+4096`, `zero 0+8192`, `flush`. */
class LoggingDisk extends MemoryBlockDevice {
  readonly log: string[] = [];

  override read(offset: number, length: number): Promise<Uint8Array> {
    this.log.push(`read ${offset}+${length}`);
    return super.read(offset, length);
  }

  override write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.log.push(`write ${offset}+${data.length}`);
    return super.write(offset, data, options);
  }

  override writeZeroes(offset: number, length: number, options?: WriteZeroesOptions): Promise<void> {
    this.log.push(`zero ${offset}+${length}`);
    return super.writeZeroes(offset, length, options);
  }

  override trim(offset: number, length: number): Promise<void> {
    this.log.push(`trim ${offset}+${length}`);
    return super.trim(offset, length);
  }

  override flush(): Promise<void> {
    this.log.push('flush');
    return super.flush();
  }
}

interface Setup {
  injects?: InjectErrorRule[];
  sets?: SetStateRule[];
  limits?: Partial<BlkdebugLimits>;
  readOnly?: boolean;
}

/** A blkdebug device over a 1 MiB logging disk; `none` has fired, as when a node opens. */
function blkdebug(setup: Setup = {}, size = MiB): { device: BlkdebugDevice; disk: LoggingDisk } {
  const disk = new LoggingDisk(size);
  const rules = new BlkdebugRules(setup.injects ?? [], setup.sets ?? []);
  const limits: BlkdebugLimits = { align: 1, maxTransfer: 0, optWriteZero: 0, maxWriteZero: 0, optDiscard: 0, maxDiscard: 0, ...setup.limits };
  const device = new BlkdebugDevice(disk, rules, limits, { name: 'bd', readOnly: () => setup.readOnly ?? false, unmap: () => true });
  rules.event('none');
  return { device, disk };
}

function errno(name: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof IoError && e.errno === name;
}

test('errnoName() names Linux errno numbers as the rest of bitback does', () => {
  assert.equal(errnoName(5), 'EIO');
  assert.equal(errnoName(28), 'ENOSPC');
  assert.equal(errnoName(95), 'ENOTSUP');
  assert.equal(errnoName(11), 'EAGAIN');
  assert.equal(errnoName(1000), 'E1000');
});

test('a read is cut into max-transfer pieces, each checked on its own: a once rule fails the first, a sector rule the one covering it', async () => {
  const { device, disk } = blkdebug({
    injects: [
      { event: 'read_aio', errno: 28, once: true },
      { event: 'read_aio', errno: 1, sector: 24 },
    ],
    limits: { maxTransfer: 4096 },
  });
  device.debugEvent('read_aio');
  await assert.rejects(device.read(0, 16384), errno('ENOSPC'));
  assert.deepEqual(disk.log, []);
  await assert.rejects(device.read(0, 16384), errno('EPERM'));
  assert.deepEqual(disk.log, ['read 0+4096', 'read 4096+4096', 'read 8192+4096']);
  assert.equal((await device.read(0, 12288)).length, 12288);
});

test('an unaligned read is widened to the alignment; the widened range is what a sector rule sees', async () => {
  const { device, disk } = blkdebug({ injects: [{ event: 'none', errno: 28, sector: 9 }], limits: { align: 4096 } });
  await device.read(0, 512);
  assert.deepEqual(disk.log, ['read 0+4096']);
  await assert.rejects(device.read(4096, 1), errno('ENOSPC'));
});

test('pieces widened past the end of an image whose size is not aligned reach the image only up to its end', async () => {
  const { device, disk } = blkdebug({ limits: { align: 4096 } }, 6000);
  await disk.write(4096, new Uint8Array(1904).fill(0x11));
  disk.log.length = 0;
  assert.deepEqual(await device.read(5000, 1000), new Uint8Array(1000).fill(0x11));
  await device.write(5000, new Uint8Array(100).fill(0x22));
  await device.writeZeroes(4096, 10);
  assert.deepEqual(disk.log, ['read 4096+1904', 'read 4096+1904', 'write 4096+1904', 'read 4096+1904', 'write 4096+1904']);
  const tail = await disk.read(4096, 1904);
  assert.deepEqual([tail[0], tail[10], tail[904], tail[1003], tail[1004]], [0, 0x11, 0x22, 0x22, 0x11]);
});

test('an unaligned write reads its padding between the rmw events and writes whole blocks; a failed padding read is ignored and written as zeroes (QEMU 7.2)', async () => {
  const { device, disk } = blkdebug({ injects: [{ event: 'pwritev_rmw_head', errno: 28, iotype: 'read' }], limits: { align: 4096 } });
  await disk.write(0, new Uint8Array(8192).fill(0x11));
  disk.log.length = 0;
  await device.write(512, new Uint8Array(1024).fill(0x22));
  assert.deepEqual(disk.log, ['write 0+4096']);
  const block = await disk.read(0, 4096);
  assert.deepEqual([block[0], block[512], block[1535], block[1536], block[4095]], [0, 0x22, 0x22, 0, 0]);
  // The rule stays active for reads.
  await assert.rejects(device.read(0, 1), errno('ENOSPC'));
});

test('the head and tail of a write two blocks apart are read in one request when adjacent, in two otherwise', async () => {
  const { device, disk } = blkdebug({ limits: { align: 4096 } });
  await device.write(512, new Uint8Array(6144));
  await device.write(4096 - 512, new Uint8Array(8192));
  assert.deepEqual(disk.log, ['read 0+8192', 'write 0+8192', 'read 0+4096', 'read 8192+4096', 'write 0+12288']);
});

test('pwritev fires before the write pieces and pwritev_done after them, also after a failure', async () => {
  const { device, disk } = blkdebug({
    injects: [
      { event: 'pwritev', errno: 1, once: true },
      { event: 'pwritev_done', errno: 28, iotype: 'read' },
    ],
  });
  await assert.rejects(device.write(0, new Uint8Array(512)), errno('EPERM'));
  await assert.rejects(device.read(0, 512), errno('ENOSPC'));
  await device.write(0, new Uint8Array(512));
  assert.deepEqual(disk.log, ['write 0+512']);
});

test('a zero-write is cut at opt-write-zero and max-write-zero; a piece below the zero alignment is written as zeroes', async () => {
  const { device, disk } = blkdebug({
    injects: [
      { event: 'none', errno: 28, iotype: 'write' },
      { event: 'none', errno: 1, iotype: 'write-zeroes', sector: 40 },
    ],
    limits: { optWriteZero: 8192, maxWriteZero: 16384 },
  });
  await assert.rejects(device.writeZeroes(8192, 32768), errno('EPERM'));
  await device.writeZeroes(0, 8192);
  await assert.rejects(device.writeZeroes(512, 8192), errno('ENOSPC'));
  await device.writeZeroes(24576, 8192);
  assert.deepEqual(disk.log, ['zero 0+8192', 'zero 24576+8192']);
});

test('a zero-write that a rule fails with ENOTSUP is written as zeroes instead, unless it must be fast', async () => {
  const { device, disk } = blkdebug({ injects: [{ event: 'none', errno: 95, iotype: 'write-zeroes' }] });
  await disk.write(0, new Uint8Array(8192).fill(0x11));
  await device.writeZeroes(0, 8192);
  assert.deepEqual(await disk.read(0, 8192), new Uint8Array(8192));
  await assert.rejects(device.writeZeroes(0, 8192, { fast: true }), errno('ENOTSUP'));
});

test('an unaligned zero-write writes its padded blocks as data and the aligned middle as zeroes', async () => {
  const { device, disk } = blkdebug({ limits: { align: 4096 } });
  await disk.write(0, new Uint8Array(16384).fill(0x11));
  disk.log.length = 0;
  await device.writeZeroes(2048, 12288);
  assert.deepEqual(disk.log, ['read 0+4096', 'read 12288+4096', 'write 0+4096', 'zero 4096+8192', 'write 12288+4096']);
  const data = await disk.read(0, 16384);
  assert.deepEqual([data[2047], data[2048], data[14335], data[14336]], [0x11, 0, 0, 0x11]);
  await assert.rejects(device.writeZeroes(2048, 4096, { fast: true }), NotSupportedError);
});

test('a discard is cut at opt-discard; a piece below the alignment is skipped, a rule\'s error fails it', async () => {
  const { device, disk } = blkdebug({ injects: [{ event: 'none', errno: 28, iotype: 'discard', sector: 80 }], limits: { align: 4096, optDiscard: 8192, maxDiscard: 16384 } });
  await device.trim(512, 2048);
  assert.deepEqual(disk.log, []);
  await assert.rejects(device.trim(0, 65536), errno('ENOSPC'));
  assert.deepEqual(disk.log, ['trim 0+16384', 'trim 16384+16384']);
  await device.trim(4096, 8192);
  assert.deepEqual(disk.log.slice(2), ['trim 4096+4096', 'trim 8192+4096']);
});

test('a flush reaches the rules and flushes the image twice only when something was written since the last successful flush', async () => {
  const { device, disk } = blkdebug({ injects: [{ event: 'none', iotype: 'flush', once: true }] });
  await device.flush();
  assert.deepEqual(disk.log, ['flush']);
  await device.write(0, new Uint8Array(1));
  await assert.rejects(device.flush(), errno('EIO'));
  // The failed flush did not count: the next one still reaches the (now spent) rules.
  await device.flush();
  await device.flush();
  assert.deepEqual(disk.log, ['flush', 'write 0+1', 'flush', 'flush', 'flush']);
});

test('a flush of a read-only node does nothing', async () => {
  const { device, disk } = blkdebug({ injects: [{ event: 'none' }], readOnly: true });
  await device.flush();
  assert.deepEqual(disk.log, []);
});

test('a negative errno makes a request succeed without reaching the image; a read gives zeroes', async () => {
  const { device, disk } = blkdebug({ injects: [{ event: 'none', errno: -5, immediately: true }] });
  await disk.write(0, new Uint8Array(16).fill(0x11));
  disk.log.length = 0;
  await device.write(0, new Uint8Array(16).fill(0x22));
  assert.deepEqual(await device.read(0, 16), new Uint8Array(16));
  assert.deepEqual(disk.log, []);
});

test('block status fails only for a block-status rule, then passes the image\'s extents through', async () => {
  const { device } = blkdebug({ injects: [{ event: 'none', iotype: 'block-status', once: true }] });
  await assert.rejects(device.blockStatus(0, MiB), errno('EIO'));
  assert.deepEqual(await device.blockStatus(0, MiB), await new MemoryBlockDevice(MiB).blockStatus(0, MiB));
});

test('a format node over a blkdebug node fires read_aio, write_aio and the flush events on it, flush_to_disk only after a write', async () => {
  const graph = new NodeGraph();
  const disk = new BlockNode({ name: 'disk', driver: 'memory', readOnly: false, implicit: false, options: {}, unmap: true });
  disk.setDriver({ device: new LoggingDisk(MiB), filename: 'disk' });
  graph.add(disk);
  const bd = new BlockNode({ name: 'bd', driver: 'blkdebug', readOnly: false, implicit: false, options: {}, unmap: true });
  const rules = new BlkdebugRules(
    [
      { event: 'read_aio', state: 2, errno: 1 },
      { event: 'flush_to_disk', errno: 28, iotype: 'read' },
    ],
    [
      { event: 'write_aio', new_state: 2 },
      { event: 'flush_to_os', state: 2, new_state: 3 },
    ],
  );
  const limits = { align: 1, maxTransfer: 0, optWriteZero: 0, maxWriteZero: 0, optDiscard: 0, maxDiscard: 0 };
  bd.setDriver({ device: new BlkdebugDevice(bd.attachChild('image', disk), rules, limits, { name: 'bd', readOnly: () => false, unmap: () => true }), filename: 'bd' });
  graph.add(bd);
  const raw = new BlockNode({ name: 'raw', driver: 'raw', readOnly: false, implicit: false, options: {}, unmap: true });
  const format = new FormatDebugEvents(raw.attachChild('file', bd));
  await format.read(0, 512);
  await format.flush();
  assert.equal(rules.state, 1);
  await format.write(0, new Uint8Array(512));
  assert.equal(rules.state, 2);
  await assert.rejects(format.read(0, 512), errno('EPERM'));
  await format.flush();
  assert.equal(rules.state, 3);
  await assert.rejects(format.read(0, 512), errno('ENOSPC'));
  await graph.close();
});
