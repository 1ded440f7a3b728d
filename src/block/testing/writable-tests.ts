/**
 * Conformance tests of writable devices: writes at any offset and length, zero-writes, trims,
 * block status after changes, FUA, ownership of written buffers. Every result is compared with a
 * `DiskModel`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BitbackError } from '../../errors.js';
import { type BlockDevice } from '../block-device.js';
import { checkBlockStatus, readAll, walkBlockStatus } from './checks.js';
import { prepare } from './common-tests.js';
import { type SuiteContext } from './conformance.js';
import { type DiskModel } from './model.js';
import { Random } from './pattern.js';

const K = 1024;
const CLUSTER = 64 * K;

/** Registers the tests of writable devices. */
export function registerWritableTests(context: SuiteContext): void {
  const { size, seed } = context;

  test('unaligned writes crossing sector, block and cluster boundaries read back as written', () =>
    context.use(async (device, model) => {
      const random = new Random(seed + 2);
      const writes: Array<[number, number]> = [
        [0, 1], [511, 2], [1000, 3000], [4095, 4098], [CLUSTER - 1, 2], [CLUSTER - 7, CLUSTER + 14],
        [3 * CLUSTER + 100, 5 * CLUSTER + 33], [size - 1, 1], [size - CLUSTER - 5, CLUSTER + 5], [777777, 1],
        [2 * CLUSTER, CLUSTER], [513, 511],
      ];
      for (const [offset, length] of writes) {
        const data = random.nonZeroBytes(length);
        await device.write(offset, data);
        model.write(offset, data);
        model.check(offset, await device.read(offset, length), `read back of write(${offset}, ${length})`);
      }
      const reads: Array<[number, number]> = [
        [0, 4096], [510, 4], [CLUSTER - 3, 6], [4000, 200], [3 * CLUSTER, 6 * CLUSTER], [size - 3, 3], [777776, 3],
      ];
      for (const [offset, length] of reads) {
        model.check(offset, await device.read(offset, length), `read(${offset}, ${length})`);
      }
      model.check(0, await readAll(device), 'read of the whole device');
    }));

  test('a random sequence of writes, zero-writes, trims and reads agrees with a model', () =>
    context.use(async (device, model) => {
      const random = new Random(seed + 3);
      for (let step = 0; step < 150; step++) {
        const [offset, length] = randomRange(random, size);
        const what = `step ${step} (seed ${seed + 3}) at ${offset}+${length}`;
        const choice = random.below(100);
        if (choice < 45) {
          const data = random.nonZeroBytes(length);
          await device.write(offset, data, { fua: random.chance(0.1) });
          model.write(offset, data);
        } else if (choice < 60) {
          await device.writeZeroes(offset, length, { mayTrim: random.chance(0.5), fua: random.chance(0.1) });
          model.zero(offset, length);
        } else if (choice < 70) {
          await device.trim(offset, length);
          model.trim(offset, length, device.capabilities.trimZeroes);
        } else if (choice < 95) {
          const data = await device.read(offset, length);
          assert.ok(data instanceof Uint8Array && data.length === length, `${what}: read returns ${length} bytes`);
          model.check(offset, data, `${what}: read`);
        } else if (length > 0) {
          await checkBlockStatus(device, offset, length);
        }
      }
      model.check(0, await readAll(device), `whole device after the sequence (seed ${seed + 3})`);
    }));

  test('writeZeroes zeroes exactly its range, with and without mayTrim', () =>
    context.use(async (device, model) => {
      await fillNonZero(context, device, model);
      const ranges: Array<[number, number]> = [
        [1, 510], [4095, 4098], [CLUSTER - 7, 14], [3 * CLUSTER, CLUSTER], [5 * CLUSTER - 100, 2 * CLUSTER + 200],
        [size - 1000, 1000], [200000, 2 * CLUSTER + 3], [0, 1],
      ];
      for (const [i, [offset, length]] of ranges.entries()) {
        await device.writeZeroes(offset, length, { mayTrim: i % 2 === 1, fua: i % 3 === 0 });
        model.zero(offset, length);
        model.check(0, await readAll(device), `device after writeZeroes(${offset}, ${length}, mayTrim ${i % 2 === 1})`);
      }
      await walkBlockStatus(device);
      await device.writeZeroes(0, size, { mayTrim: true });
      model.zero(0, size);
      model.check(0, await readAll(device), 'device after zeroing all of it');
    }));

  test('writeZeroes with fast zeroes the range or rejects with NotSupportedError and changes nothing', () =>
    context.use(async (device, model) => {
      await fillNonZero(context, device, model);
      const ranges: Array<[number, number, boolean]> = [
        [CLUSTER, 2 * CLUSTER, true], [CLUSTER, 2 * CLUSTER, false], [4097, 10000, true], [size - 513, 513, false],
        [0, size, true],
      ];
      for (const [offset, length, mayTrim] of ranges) {
        const what = `writeZeroes(${offset}, ${length}, fast, mayTrim ${mayTrim})`;
        try {
          await device.writeZeroes(offset, length, { fast: true, mayTrim });
          assert.ok(device.capabilities.canFastZero, `${what} succeeded although canFastZero is false`);
          model.zero(offset, length);
        } catch (e) {
          if (!(e instanceof BitbackError) || e.code !== 'NOT_SUPPORTED') throw e;
        }
        model.check(0, await readAll(device), `device after ${what}`);
      }
    }));

  test('trim leaves its range reading as old data or zeroes, and zeroes when trimZeroes', () =>
    context.use(async (device, model) => {
      await fillNonZero(context, device, model);
      const ranges: Array<[number, number]> = [
        [0, 1], [4095, 4098], [CLUSTER - 7, 14], [2 * CLUSTER, CLUSTER], [5 * CLUSTER - 100, 3 * CLUSTER + 200], [size - 999, 999],
      ];
      for (const [offset, length] of ranges) {
        await device.trim(offset, length);
        model.trim(offset, length, device.capabilities.trimZeroes);
        model.check(0, await readAll(device), `device after trim(${offset}, ${length})`);
      }
      // Data written over a trimmed range is data again.
      const data = new Random(seed + 4).nonZeroBytes(3 * CLUSTER);
      await device.write(2 * CLUSTER - 50, data);
      model.write(2 * CLUSTER - 50, data);
      model.check(0, await readAll(device), 'device after a write over trimmed ranges');
      await walkBlockStatus(device);
    }));

  test('blockStatus stays within the contract after writes, zero-writes and trims', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const random = new Random(seed + 5);
      for (let i = 0; i < 12; i++) {
        const [offset, length] = randomRange(random, size);
        if (i % 3 === 0) await device.trim(offset, length);
        else await device.writeZeroes(offset, length, { mayTrim: i % 3 === 1 });
      }
      await walkBlockStatus(device);
      await walkBlockStatus(device, 12345, size - 999);
    }));

  test('writes, zero-writes and trims with fua, and flush, keep the data', () =>
    context.use(async (device, model) => {
      const random = new Random(seed + 6);
      const data = random.nonZeroBytes(3 * CLUSTER + 1);
      await device.write(CLUSTER - 1, data, { fua: true });
      model.write(CLUSTER - 1, data);
      await device.writeZeroes(2 * CLUSTER, 1000, { fua: true });
      model.zero(2 * CLUSTER, 1000);
      await device.trim(3 * CLUSTER, 100, { fua: true });
      model.trim(3 * CLUSTER, 100, device.capabilities.trimZeroes);
      await device.flush();
      model.check(0, await readAll(device), 'device after fua requests and flush');
    }));

  test('changing a buffer after its write resolved does not change the device', () =>
    context.use(async (device, model) => {
      const data = new Random(seed + 7).nonZeroBytes(CLUSTER + 3000);
      await device.write(CLUSTER - 1000, data);
      model.write(CLUSTER - 1000, data);
      data.fill(0xee);
      const small = new Uint8Array([1, 2, 3]);
      await device.write(5, small);
      model.write(5, small);
      small.fill(9);
      model.check(0, await readAll(device), 'device after the written buffers were changed');
    }));
}

/** Fills the whole device with non-zero bytes, so that any zeroing shows. */
async function fillNonZero(context: SuiteContext, device: BlockDevice, model: DiskModel): Promise<void> {
  const data = new Random(context.seed + 8).nonZeroBytes(context.size);
  await device.write(0, data);
  model.write(0, data);
}

/**
 * A range inside `[0, size]`, biased to start and end near 512-byte, 4 KiB and 64 KiB
 * boundaries and to be short; sometimes empty.
 */
export function randomRange(random: Random, size: number): [number, number] {
  const boundary = [512, 4096, CLUSTER][random.below(3)]!;
  const near = random.below(Math.floor(size / boundary) + 1) * boundary + random.between(-3, 3);
  const offset = Math.min(size, Math.max(0, random.chance(0.7) ? near : random.below(size + 1)));
  const roll = random.below(10);
  const wanted = roll === 0 ? 0 : roll < 6 ? random.between(1, 600) : roll < 9 ? random.between(1, 2 * CLUSTER) : random.between(1, 5 * CLUSTER);
  return [offset, Math.min(wanted, size - offset)];
}
