/**
 * Test-only: compares a `checkQcow2` result with what `qemu-img check --output=json` printed.
 */
import assert from 'node:assert/strict';
import type { Qcow2CheckResult } from '../result.js';

/** The fields of `qemu-img check --output=json`; qemu-img leaves out the counters that are 0. */
export const QEMU_CHECK_FIELDS = [
  'filename',
  'format',
  'check-errors',
  'image-end-offset',
  'total-clusters',
  'allocated-clusters',
  'fragmented-clusters',
  'compressed-clusters',
  'leaks',
  'corruptions',
  'leaks-fixed',
  'corruptions-fixed',
] as const;

/**
 * Asserts that `ours` and qemu-img's JSON agree on every field (absent counters are 0), and
 * that qemu-img printed no field this module does not know.
 */
export function assertSameAsQemu(ours: Qcow2CheckResult, theirs: Record<string, unknown> | undefined, what: string): void {
  assert.ok(theirs !== undefined, `${what}: qemu-img printed no JSON`);
  for (const key of Object.keys(theirs)) {
    assert.ok((QEMU_CHECK_FIELDS as readonly string[]).includes(key), `${what}: qemu-img has a field ${key} we do not know`);
  }
  for (const key of QEMU_CHECK_FIELDS) {
    const expected: unknown = theirs[key] ?? (key === 'filename' || key === 'format' ? undefined : 0);
    assert.deepEqual(ours[key], expected, `${what}: ${key}`);
  }
}
