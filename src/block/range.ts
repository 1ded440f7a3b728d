import { InvalidArgumentError, OutOfRangeError } from '../errors.js';

/**
 * Validates a byte range against a device size, as every `BlockDevice` method must before it does
 * anything. Throws `InvalidArgumentError` for values that are not non-negative safe integers and
 * `OutOfRangeError` when `offset + length > size`.
 *
 * @param action - what is being attempted, for the message ("read 4096 bytes at 0 of disk.raw")
 */
export function checkRange(action: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new InvalidArgumentError(action, `offset ${offset} is not a non-negative integer`);
  }
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new InvalidArgumentError(action, `length ${length} is not a non-negative integer`);
  }
  if (offset + length > size) {
    throw new OutOfRangeError(action, `range ${offset}+${length} ends past the device size ${size}`);
  }
}
