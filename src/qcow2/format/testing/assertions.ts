/**
 * Assertions for the typed errors of the qcow2 codecs. Test-only.
 */
import assert from 'node:assert/strict';
import { BitbackError, InvalidArgumentError, NotSupportedError } from '../../../errors.js';
import { Qcow2FormatError, Qcow2UnsupportedError } from '../errors.js';

/** Runs `fn` and returns what it threw (fails when it does not throw). */
export function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  assert.fail('expected an error, got none');
}

/**
 * Asserts that `fn` throws a {@link Qcow2FormatError} (code CORRUPT) about `field`, whose
 * message names the field and matches `message` when given.
 */
export function assertCorrupt(fn: () => unknown, field: string | RegExp, message?: RegExp): Qcow2FormatError {
  const e = thrown(fn);
  assert.ok(e instanceof Qcow2FormatError, `expected Qcow2FormatError, got ${String(e)}`);
  assert.equal(e.code, 'CORRUPT');
  checkField(e, e.field, field, message);
  return e;
}

/** Asserts that `fn` throws a {@link Qcow2UnsupportedError} (a NotSupportedError) about `field`. */
export function assertUnsupported(fn: () => unknown, field: string | RegExp, message?: RegExp): Qcow2UnsupportedError {
  const e = thrown(fn);
  assert.ok(e instanceof Qcow2UnsupportedError, `expected Qcow2UnsupportedError, got ${String(e)}`);
  assert.ok(e instanceof NotSupportedError);
  assert.equal(e.code, 'NOT_SUPPORTED');
  checkField(e, e.field, field, message);
  return e;
}

/** Asserts that `fn` throws an InvalidArgumentError whose message matches `message`. */
export function assertInvalidArgument(fn: () => unknown, message: RegExp): void {
  const e = thrown(fn);
  assert.ok(e instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(e)}`);
  assert.match(e.message, message);
}

/** Asserts that `fn` either returns or throws a BitbackError (never another exception). */
export function returnsOrThrowsTyped(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof BitbackError)) throw e;
  }
}

function checkField(e: BitbackError, actual: string, expected: string | RegExp, message?: RegExp): void {
  if (typeof expected === 'string') assert.equal(actual, expected);
  else assert.match(actual, expected);
  assert.ok(e.message.includes(actual), `message "${e.message}" does not name the field ${actual}`);
  assert.match(e.message, /^Cannot decode qcow2 /);
  if (message !== undefined) assert.match(e.message, message);
}
