/**
 * Validation of `BlockSizeConstraints` given by callers (device options).
 */
import { InvalidArgumentError } from '../errors.js';
import { type BlockSizeConstraints } from './block-device.js';

/** Largest request most devices handle in one go: 32 MiB, the NBD maximum payload (proto.md). */
export const DEFAULT_MAXIMUM_REQUEST = 32 * 1024 * 1024;

/**
 * Completes `partial` with `defaults` and checks that each value is a power of two and that
 * `minimum <= preferred <= maximum`. Throws `InvalidArgumentError` naming `action` otherwise.
 */
export function resolveBlockSize(
  action: string,
  defaults: BlockSizeConstraints,
  partial: Partial<BlockSizeConstraints> = {},
): BlockSizeConstraints {
  const blockSize = { ...defaults, ...partial };
  for (const [name, value] of Object.entries(blockSize)) {
    if (!isPowerOfTwo(value)) {
      throw new InvalidArgumentError(action, `block size ${name} ${value} is not a power of two`);
    }
  }
  if (blockSize.minimum > blockSize.preferred || blockSize.preferred > blockSize.maximum) {
    throw new InvalidArgumentError(
      action,
      `block sizes must satisfy minimum <= preferred <= maximum (got ${blockSize.minimum}, ` +
        `${blockSize.preferred}, ${blockSize.maximum})`,
    );
  }
  return blockSize;
}

/** True for 1, 2, 4, ... up to 2^52 (integers only). */
export function isPowerOfTwo(value: number): boolean {
  if (!Number.isSafeInteger(value) || value < 1) return false;
  while (value % 2 === 0) value /= 2;
  return value === 1;
}
