/**
 * Conformance tests of read-only devices: every writing request is refused and changes nothing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectRejects, readAll } from './checks.js';
import { type SuiteContext } from './conformance.js';

/** Registers the tests of read-only devices. */
export function registerReadOnlyTests(context: SuiteContext): void {
  const { size } = context;

  test('write, writeZeroes and trim reject with ReadOnlyError and change nothing', () =>
    context.use(async (device, model) => {
      assert.equal(device.capabilities.readOnly, true);
      const ranges: Array<[number, number]> = [[0, 1], [4095, 4098], [65536, 65536], [size - 1, 1], [0, size]];
      for (const [offset, length] of ranges) {
        const data = new Uint8Array(length).fill(0x3c);
        const calls: Array<[string, () => Promise<unknown>]> = [
          ['write', () => device.write(offset, data)],
          ['write with fua', () => device.write(offset, data, { fua: true })],
          ['writeZeroes', () => device.writeZeroes(offset, length)],
          ['writeZeroes with mayTrim', () => device.writeZeroes(offset, length, { mayTrim: true })],
          ['writeZeroes with fast', () => device.writeZeroes(offset, length, { fast: true, mayTrim: true })],
          ['trim', () => device.trim(offset, length)],
        ];
        for (const [what, call] of calls) await expectRejects(`${what} at ${offset}+${length}`, call, ['READ_ONLY']);
      }
      model.check(0, await readAll(device), 'device after refused writes');
    }));
}
