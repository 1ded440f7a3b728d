/**
 * Conformance tests of requests in flight at the same time: many reads; for writable devices
 * disjoint writes, overlapping writes, and reads racing writes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readAll } from './checks.js';
import { prepare } from './common-tests.js';
import { type SuiteContext } from './conformance.js';
import { Random } from './pattern.js';

const CLUSTER = 64 * 1024;

/** Registers the concurrency tests (the writing ones only for writable devices). */
export function registerConcurrencyTests(context: SuiteContext): void {
  const { size, seed, readOnly } = context;

  test('many reads in flight at once each return their own bytes', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const random = new Random(seed + 10);
      const ranges = Array.from({ length: 64 }, () => {
        const offset = random.below(size);
        return [offset, Math.min(size - offset, random.between(1, 3 * CLUSTER))] as const;
      });
      const results = await Promise.all(ranges.map(([offset, length]) => device.read(offset, length)));
      results.forEach((data, i) => model.check(ranges[i]![0], data, `concurrent read ${i} at ${ranges[i]![0]}+${ranges[i]![1]}`));
    }));

  if (readOnly) return;

  test('many disjoint writes and zero-writes in flight at once all land', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const random = new Random(seed + 11);
      const requests: Array<Promise<void>> = [];
      let offset = random.below(1000);
      for (let i = 0; i < 64 && offset < size; i++) {
        const length = Math.min(size - offset, random.between(1, 40000));
        if (i % 5 === 4) {
          requests.push(device.writeZeroes(offset, length, { mayTrim: i % 2 === 0 }));
          model.zero(offset, length);
        } else {
          const data = random.nonZeroBytes(length);
          requests.push(device.write(offset, data));
          model.write(offset, data);
        }
        offset += length + random.below(3);
      }
      await Promise.all(requests);
      model.check(0, await readAll(device), 'device after concurrent disjoint writes');
    }));

  test('overlapping writes in flight leave each byte as one of the writers wrote it', () =>
    context.use(async (device, model) => {
      const base = CLUSTER - 4096 + 3;
      const length = 2 * CLUSTER + 1001;
      const shift = 333;
      const writers = Array.from({ length: 8 }, (_, k) => ({ offset: base + k * shift, fill: 0x11 * (k + 1) }));
      await Promise.all(writers.map((w) => device.write(w.offset, new Uint8Array(length).fill(w.fill))));
      const end = base + (writers.length - 1) * shift + length;
      const data = await device.read(base, end - base);
      for (let position = base; position < end; position++) {
        const byte = data[position - base]!;
        const covering = writers.filter((w) => w.offset <= position && position < w.offset + length);
        assert.ok(
          covering.some((w) => w.fill === byte),
          `byte ${position} reads 0x${byte.toString(16)}, not what any of the writers covering it wrote`,
        );
      }
      model.check(0, await device.read(0, base), 'bytes before the overlapping writes');
      model.check(end, await device.read(end, size - end), 'bytes after the overlapping writes');
    }));

  test('a read in flight with a write sees each byte old or new, and a later read sees it new', () =>
    context.use(async (device) => {
      const offset = 3 * CLUSTER - 5000;
      const length = 3 * CLUSTER + 7;
      await device.write(offset, new Uint8Array(length).fill(0x5a));
      const [, during] = await Promise.all([
        device.write(offset, new Uint8Array(length).fill(0xa5)),
        device.read(offset, length),
      ]);
      const bad = during.findIndex((byte) => byte !== 0x5a && byte !== 0xa5);
      assert.equal(bad, -1, `byte ${offset + bad} read during the write is neither old nor new`);
      const after = await device.read(offset, length);
      assert.ok(after.every((byte) => byte === 0xa5), 'a read started after the write resolved sees the new data');
    }));
}
