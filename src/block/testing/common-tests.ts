/**
 * Conformance tests that hold for every device, writable or read-only: size and capabilities,
 * argument checking, empty requests, block status, flush, close, ownership of read buffers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hasCode, type ErrorCode } from '../../errors.js';
import { type BlockDevice } from '../block-device.js';
import { checkBlockStatus, expectRejects, readAll, track, walkBlockStatus } from './checks.js';
import { type SuiteContext } from './conformance.js';
import { type DiskModel } from './model.js';
import { Random } from './pattern.js';

/** One request of the bounds tests, and the error codes it may reject with. */
interface BadCall {
  what: string;
  call: (device: BlockDevice) => Promise<unknown>;
  codes: readonly ErrorCode[];
}

/** Registers the tests that every device must pass. */
export function registerCommonTests(context: SuiteContext): void {
  const { size, readOnly } = context;

  test('it reports the size it was made with, its capabilities and valid block sizes', () =>
    context.use(async (device) => {
      assert.equal(device.size, size);
      for (const [name, value] of Object.entries(device.capabilities)) {
        assert.equal(typeof value, 'boolean', `capabilities.${name}`);
      }
      assert.equal(device.capabilities.readOnly, readOnly);
      const { minimum, preferred, maximum } = device.blockSize;
      for (const value of [minimum, preferred, maximum]) {
        assert.ok(Number.isSafeInteger(value) && value > 0 && (value & (value - 1)) === 0, `${value} is a power of two`);
      }
      assert.ok(minimum <= preferred && preferred <= maximum, `${minimum} <= ${preferred} <= ${maximum}`);
    }));

  test(readOnly ? 'it reads the content it was made with' : 'a new device reads as zeroes', () =>
    context.use(async (device, model) => {
      const all = await readAll(device);
      assert.ok(all instanceof Uint8Array);
      assert.equal(all.length, size);
      model.check(0, all, 'read of the whole device');
    }));

  test('every method rejects a range past the end with OutOfRangeError and changes nothing', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const codes = writeCodes(readOnly, 'OUT_OF_RANGE');
      await expectAll(device, model, [
        ...rangeCalls(size - 10, 11, codes),
        ...rangeCalls(size, 1, codes),
        ...rangeCalls(size + 1, 0, codes),
        ...rangeCalls(0, size + 1, codes),
        ...rangeCalls(Number.MAX_SAFE_INTEGER, 1, codes),
      ]);
    }));

  test('every method rejects negative and non-integer offsets and lengths and changes nothing', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      // checkRange calls these INVALID_ARGUMENT; a device may also see them as out of range.
      const codes = writeCodes(readOnly, 'INVALID_ARGUMENT', 'OUT_OF_RANGE');
      const bad = [-1, 0.5, NaN, Infinity, -Infinity];
      const calls: BadCall[] = [];
      for (const value of bad) {
        // A write's length is that of its data, which cannot be negative or fractional.
        calls.push(...rangeCalls(value, 1, codes), ...rangeCalls(0, value, codes, false));
      }
      await expectAll(device, model, calls);
    }));

  test('blockStatus rejects a request of length 0', () =>
    context.use(async (device) => {
      for (const offset of [0, 4096, size]) {
        await expectRejects(`blockStatus(${offset}, 0)`, () => device.blockStatus(offset, 0), ['INVALID_ARGUMENT', 'OUT_OF_RANGE']);
      }
    }));

  test('requests of length 0 succeed and change nothing', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      for (const offset of [0, 4097, size]) {
        const data = await device.read(offset, 0);
        assert.ok(data instanceof Uint8Array && data.length === 0, `read(${offset}, 0) returns an empty Uint8Array`);
      }
      const empty = new Uint8Array(0);
      const writes: Array<[string, () => Promise<void>]> = [
        ['write(0, [])', () => device.write(0, empty)],
        [`write(${size}, [])`, () => device.write(size, empty)],
        ['writeZeroes(65535, 0)', () => device.writeZeroes(65535, 0)],
        [`writeZeroes(${size}, 0, mayTrim)`, () => device.writeZeroes(size, 0, { mayTrim: true })],
        ['trim(1, 0)', () => device.trim(1, 0)],
        [`trim(${size}, 0)`, () => device.trim(size, 0)],
      ];
      for (const [what, call] of writes) {
        try {
          await call();
        } catch (e) {
          // Whether an empty write to a read-only device is refused is up to the device.
          if (!readOnly || !hasCode(e, 'READ_ONLY')) assert.fail(`${what} rejected: ${String(e)}`);
        }
      }
      model.check(0, await readAll(device), 'device after empty requests');
    }));

  test('blockStatus describes the whole device within the contract', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const extents = await walkBlockStatus(device);
      assert.equal(extents[0]!.offset, 0);
    }));

  test('blockStatus at unaligned offsets and short lengths stays within the contract', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const requests: Array<[number, number]> = [
        [0, 1], [777, 1], [511, 2], [4095, 8193], [65535, 2], [65537, 131070], [size - 1, 1], [size - 4097, 4097],
        [123457, size - 123457], [1, size - 1],
      ];
      for (const [offset, length] of requests) await checkBlockStatus(device, offset, length);
    }));

  test('flush resolves and changes nothing', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      await device.flush();
      await Promise.all([device.flush(), device.flush()]);
      model.check(0, await readAll(device), 'device after flush');
    }));

  test('close waits for the requests in flight, then every method rejects with ClosedError', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const random = new Random(context.seed);
      const pending = [
        track(device.read(1, 70000)),
        track(device.read(size - 4096, 4096)),
        track(device.blockStatus(0, size)),
        track(device.flush()),
      ];
      if (!readOnly) pending.push(track(device.write(100000, random.nonZeroBytes(65536 + 13))));
      await device.close();
      pending.forEach((p, i) => assert.ok(p.settled(), `request ${i} in flight had not settled when close resolved`));
      await Promise.allSettled(pending.map((p) => p.promise));
      const calls: Array<[string, () => Promise<unknown>]> = [
        ['read', () => device.read(0, 1)],
        ['write', () => device.write(0, new Uint8Array(1))],
        ['writeZeroes', () => device.writeZeroes(0, 1)],
        ['trim', () => device.trim(0, 1)],
        ['flush', () => device.flush()],
        ['blockStatus', () => device.blockStatus(0, 1)],
      ];
      for (const [what, call] of calls) await expectRejects(`${what} after close`, call, ['CLOSED']);
    }));

  test('close can be called twice, also while the first call is pending', () =>
    context.use(async (device) => {
      await Promise.all([device.close(), device.close()]);
      await device.close();
      await expectRejects('read after close', () => device.read(0, 1), ['CLOSED']);
    }));

  test('a buffer returned by read belongs to the caller', () =>
    context.use(async (device, model) => {
      await prepare(context, device, model);
      const first = await device.read(4000, 70000);
      first.fill(0xab);
      const [second, third] = await Promise.all([device.read(4000, 70000), device.read(4000, 70000)]);
      second.fill(0xcd);
      model.check(4000, third, 'read after mutating the buffers of other reads');
      model.check(4000, await device.read(4000, 70000), 'read after mutating the buffer of an earlier read');
    }));
}

/**
 * Gives a writable device data and zero runs to check against (a read-only one has them
 * already): writes them, and records them in `model`.
 */
export async function prepare(context: SuiteContext, device: BlockDevice, model: DiskModel): Promise<void> {
  if (context.readOnly) return;
  const random = new Random(context.seed + 1);
  for (let offset = 0; offset < context.size; ) {
    const length = Math.min(context.size - offset, random.between(1, 200000));
    if (random.chance(0.7)) {
      const data = random.nonZeroBytes(length);
      await device.write(offset, data);
      model.write(offset, data);
    }
    offset += length;
  }
}

/** The codes each kind of call may reject with; writes to a read-only device may also say READ_ONLY. */
function writeCodes(readOnly: boolean, ...codes: ErrorCode[]): { read: ErrorCode[]; write: ErrorCode[] } {
  return { read: codes, write: readOnly ? [...codes, 'READ_ONLY'] : codes };
}

/** One call of each method with the range `offset`, `length` (`write` writes `length` bytes). */
function rangeCalls(
  offset: number,
  length: number,
  codes: { read: ErrorCode[]; write: ErrorCode[] },
  withWrite = true,
): BadCall[] {
  const write: BadCall[] = withWrite
    ? [{ what: `write(${offset}, ${length} bytes)`, call: (d) => d.write(offset, new Uint8Array(length).fill(0x77)), codes: codes.write }]
    : [];
  return [
    { what: `read(${offset}, ${length})`, call: (d) => d.read(offset, length), codes: codes.read },
    ...write,
    { what: `writeZeroes(${offset}, ${length})`, call: (d) => d.writeZeroes(offset, length), codes: codes.write },
    {
      what: `writeZeroes(${offset}, ${length}, mayTrim, fast)`,
      call: (d) => d.writeZeroes(offset, length, { mayTrim: true, fast: true }),
      codes: codes.write,
    },
    { what: `trim(${offset}, ${length})`, call: (d) => d.trim(offset, length), codes: codes.write },
    { what: `blockStatus(${offset}, ${length})`, call: (d) => d.blockStatus(offset, length), codes: codes.read },
  ];
}

/** Expects every call to reject as described, then the device to still hold what `model` says. */
async function expectAll(device: BlockDevice, model: DiskModel, calls: BadCall[]): Promise<void> {
  for (const { what, call, codes } of calls) await expectRejects(what, () => call(device), codes);
  model.check(0, await readAll(device), 'device after rejected requests');
}
