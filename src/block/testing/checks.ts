/**
 * Assertions on `BlockDevice` behaviour shared by the conformance tests.
 */
import assert from 'node:assert/strict';
import { BitbackError, type ErrorCode } from '../../errors.js';
import { ExtentFlags, type BlockDevice, type BlockExtent } from '../block-device.js';
import { isZero } from '../is-zero.js';

/**
 * Calls `call` and asserts that it returns a promise (a device never throws synchronously) that
 * rejects with a `BitbackError` whose code is one of `codes`. Returns the error.
 */
export async function expectRejects(
  what: string,
  call: () => Promise<unknown>,
  codes: readonly ErrorCode[],
): Promise<BitbackError> {
  let pending: Promise<unknown>;
  try {
    pending = call();
  } catch (e) {
    assert.fail(`${what} threw synchronously instead of rejecting: ${String(e)}`);
  }
  assert.equal(typeof pending?.then, 'function', `${what} did not return a promise`);
  try {
    await pending;
  } catch (e) {
    assert.ok(e instanceof BitbackError, `${what} rejected with something that is not a BitbackError: ${String(e)}`);
    assert.ok(codes.includes(e.code), `${what} rejected with ${e.code} (${e.message}); expected ${codes.join(' or ')}`);
    return e;
  }
  assert.fail(`${what} resolved; expected a rejection with ${codes.join(' or ')}`);
}

/** Reads the whole device in one request. */
export function readAll(device: BlockDevice): Promise<Uint8Array> {
  return device.read(0, device.size);
}

/**
 * Asks `blockStatus(offset, length)` once and checks the reply against the contract: a non-empty
 * list of contiguous, non-empty extents starting at `offset`, not past `offset + length`, with
 * only the HOLE and ZERO flags (all 0 without `canBlockStatus`), a valid `depth` if any, and
 * every ZERO or HOLE extent reading back as zeroes. Returns the extents.
 */
export async function checkBlockStatus(device: BlockDevice, offset: number, length: number): Promise<BlockExtent[]> {
  const what = `blockStatus(${offset}, ${length})`;
  const extents = await device.blockStatus(offset, length);
  assert.ok(Array.isArray(extents) && extents.length > 0, `${what} returned no extents`);
  let position = offset;
  for (const extent of extents) {
    const where = `${what} extent ${JSON.stringify(extent)}`;
    assert.equal(extent.offset, position, `${where} does not start where the previous one ended (${position})`);
    assert.ok(Number.isSafeInteger(extent.length) && extent.length > 0, `${where} has a bad length`);
    assert.ok(Number.isInteger(extent.flags) && (extent.flags & ~(ExtentFlags.HOLE | ExtentFlags.ZERO)) === 0, `${where} has unknown flags`);
    if (!device.capabilities.canBlockStatus) assert.equal(extent.flags, 0, `${where}: flags without canBlockStatus`);
    if (extent.depth !== undefined) assert.ok(Number.isSafeInteger(extent.depth) && extent.depth >= 0, `${where} has a bad depth`);
    position += extent.length;
  }
  assert.ok(position <= offset + length, `${what} describes bytes up to ${position}, past the end of the request`);
  for (const extent of extents) {
    if (extent.flags === 0) continue;
    const data = await device.read(extent.offset, extent.length);
    assert.ok(isZero(data), `${what} extent ${JSON.stringify(extent)} is flagged HOLE or ZERO but holds data`);
  }
  return extents;
}

/** Checks `blockStatus` over `[offset, end)` the way a client walks a device: asking again from where each reply ends. */
export async function walkBlockStatus(device: BlockDevice, offset = 0, end = device.size): Promise<BlockExtent[]> {
  const all: BlockExtent[] = [];
  for (let position = offset; position < end; ) {
    const extents = await checkBlockStatus(device, position, end - position);
    all.push(...extents);
    const last = extents[extents.length - 1]!;
    position = last.offset + last.length;
  }
  return all;
}

/** Records whether a promise has settled, without handling its rejection for the caller. */
export function track<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  const mark = (): void => {
    done = true;
  };
  promise.then(mark, mark);
  return { promise, settled: () => done };
}
