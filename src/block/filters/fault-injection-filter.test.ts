import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { IoError } from '../../errors.js';
import { MemoryBlockDevice } from '../memory-device.js';
import { testBlockDevice } from '../testing/conformance.js';
import { FaultInjectionFilter, type FaultOperation } from './fault-injection-filter.js';

const MiB = 1024 * 1024;

testBlockDevice('FaultInjectionFilter without rules over a MemoryBlockDevice', async (size) => ({
  device: new FaultInjectionFilter(new MemoryBlockDevice(size)),
}));

/** Expects `promise` to reject with an IoError carrying `errno`. */
async function rejectsWith(promise: Promise<unknown>, errno: string): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof IoError, `expected an IoError, got ${String(e)}`);
    assert.equal(e.errno, errno);
    return true;
  });
}

describe('FaultInjectionFilter specifics', () => {
  test('a rule with skip 2 and times 1 fails the 3rd read only', async () => {
    const filter = new FaultInjectionFilter(new MemoryBlockDevice(4096), [{ operations: ['read'], skip: 2, times: 1 }]);
    await filter.read(0, 1);
    await filter.write(0, new Uint8Array(1));
    await filter.read(0, 1);
    await rejectsWith(filter.read(0, 1), 'EIO');
    await filter.read(0, 1);
    assert.equal(filter.injectedCount('read'), 1);
    assert.equal(filter.injectedCount(), 1);
  });

  test('a rule with afterBytes fails every write that would pass 1 MiB written', async () => {
    const inner = new MemoryBlockDevice(4 * MiB);
    const filter = new FaultInjectionFilter(inner, [{ operations: ['write'], afterBytes: MiB, errno: 'ENOSPC' }]);
    const chunk = new Uint8Array(256 * 1024).fill(7);
    for (let i = 0; i < 4; i++) await filter.write(i * chunk.length, chunk);
    assert.equal(filter.passedBytes('write'), MiB);
    await rejectsWith(filter.write(MiB, chunk), 'ENOSPC');
    await rejectsWith(filter.write(MiB, new Uint8Array(1).fill(1)), 'ENOSPC');
    await filter.write(MiB, new Uint8Array(0));
    assert.ok((await inner.read(MiB, 256 * 1024)).every((b) => b === 0), 'the failed writes changed nothing');
    await filter.read(0, 2 * MiB);
    assert.equal(filter.injectedCount('write'), 2);
  });

  test('a rule with an overlapping range fails only the writes that touch it', async () => {
    const inner = new MemoryBlockDevice(MiB);
    const X = 512 * 1024;
    const filter = new FaultInjectionFilter(inner, [
      { operations: ['write', 'writeZeroes'], errno: 'ENOSPC', overlapping: [{ offset: X, length: Infinity }] },
    ]);
    await filter.write(X - 10, new Uint8Array(10).fill(1));
    await rejectsWith(filter.write(X - 10, new Uint8Array(11).fill(2)), 'ENOSPC');
    await rejectsWith(filter.writeZeroes(MiB - 1, 1), 'ENOSPC');
    await filter.read(X, 100);
    await filter.trim(X, 100);
    assert.deepEqual(await inner.read(X - 10, 11), new Uint8Array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]));
    assert.equal(filter.injectedCount(), 2);
    assert.equal(filter.injectedCount('writeZeroes'), 1);
  });

  test('every operation can be failed, each with its own errno', async () => {
    const filter = new FaultInjectionFilter(new MemoryBlockDevice(4096));
    const calls: Record<FaultOperation, () => Promise<unknown>> = {
      read: () => filter.read(0, 1),
      write: () => filter.write(0, new Uint8Array(1)),
      writeZeroes: () => filter.writeZeroes(0, 1),
      trim: () => filter.trim(0, 1),
      flush: () => filter.flush(),
      blockStatus: () => filter.blockStatus(0, 1),
    };
    const errnos = ['EIO', 'ENOSPC', 'EROFS', 'EINVAL', 'EPERM', 'ESHUTDOWN'];
    for (const [i, [operation, call]] of Object.entries(calls).entries()) {
      filter.setRules([{ operations: [operation as FaultOperation], errno: errnos[i] }]);
      await rejectsWith(call(), errnos[i]!);
      for (const [other, otherCall] of Object.entries(calls)) if (other !== operation) await otherCall();
      assert.equal(filter.injectedCount(operation as FaultOperation), 1);
    }
    assert.equal(filter.injectedCount(), 6);
  });

  test('rules can be added, replaced and cleared while requests run', async () => {
    const filter = new FaultInjectionFilter(new MemoryBlockDevice(4096));
    await filter.read(0, 1);
    filter.addRule({ operations: ['read'], times: 1 });
    filter.addRule({ operations: ['read'], errno: 'EAGAIN' });
    await rejectsWith(filter.read(0, 1), 'EIO');
    await rejectsWith(filter.read(0, 1), 'EAGAIN');
    filter.setRules([{ operations: ['flush'] }]);
    await filter.read(0, 1);
    await rejectsWith(filter.flush(), 'EIO');
    filter.clearRules();
    await filter.flush();
    assert.equal(filter.injectedCount(), 3);
  });

  test('malformed rules are refused and leave the rules as they were', async () => {
    const filter = new FaultInjectionFilter(new MemoryBlockDevice(4096), [{ operations: ['read'] }]);
    const bad: unknown[] = [
      { operations: [] },
      { operations: ['append'] },
      { operations: ['read'], errno: 'oops' },
      { operations: ['read'], skip: -1 },
      { operations: ['read'], times: 1.5 },
      { operations: ['read'], afterBytes: NaN },
      { operations: ['read'], overlapping: [{ offset: -1, length: 1 }] },
      { operations: ['read'], overlapping: [{ offset: 0, length: 0 }] },
    ];
    for (const rule of bad) {
      assert.throws(() => filter.setRules([rule as never]), { code: 'INVALID_ARGUMENT' }, JSON.stringify(rule));
      assert.throws(() => filter.addRule(rule as never), { code: 'INVALID_ARGUMENT' }, JSON.stringify(rule));
    }
    await rejectsWith(filter.read(0, 1), 'EIO');
  });

  test('a range past the end is refused before any rule sees it', async () => {
    const filter = new FaultInjectionFilter(new MemoryBlockDevice(4096), [{ operations: ['read'], times: 1 }]);
    await assert.rejects(filter.read(4000, 100), { code: 'OUT_OF_RANGE' });
    await rejectsWith(filter.read(0, 1), 'EIO');
  });
});
