/**
 * The conformance suite of the `BlockDevice` interface: one set of `node:test` tests that every
 * implementation runs (memory, raw file, qcow2, the NBD client, every filter), as restic runs
 * one backend test suite against each backend.
 *
 * Import it by path from a test file (it is not part of the public API):
 * ```ts
 * testBlockDevice('MemoryBlockDevice', async (size) => ({ device: new MemoryBlockDevice(size) }));
 * ```
 * What is tested follows the device's `capabilities`: trim must zero only when `trimZeroes`,
 * fast zeroing must succeed only when it is possible at all, block status must report flags only
 * when `canBlockStatus`.
 */
import { describe } from 'node:test';
import { InvalidArgumentError } from '../../errors.js';
import { type BlockDevice } from '../block-device.js';
import { registerCommonTests } from './common-tests.js';
import { DiskModel } from './model.js';
import { patternedContent } from './pattern.js';
import { registerReadOnlyTests } from './read-only-tests.js';
import { registerWritableTests } from './writable-tests.js';
import { registerConcurrencyTests } from './concurrency-tests.js';

/** A device made for one test, and how to dispose of what it used. */
export interface DeviceUnderTest {
  device: BlockDevice;
  /**
   * Removes what the device used (temporary files, processes). Called after the suite has closed
   * the device — also when the test failed.
   */
  cleanup?(): Promise<void>;
}

/** What the suite asks of the factory besides the size. */
export interface DeviceSetup {
  /** True in a read-only suite: the device must be read-only and hold `content`. */
  readOnly: boolean;
  /**
   * In a read-only suite, the bytes the device must hold (`size` bytes, data and zero runs;
   * the factory must not change them). Undefined otherwise: the device must read as zeroes.
   */
  content?: Uint8Array;
}

/** Makes a fresh device of `size` bytes for each test. */
export type DeviceFactory = (size: number, setup: DeviceSetup) => Promise<DeviceUnderTest>;

/** Options of {@link testBlockDevice}. */
export interface ConformanceOptions {
  /**
   * Size of the devices asked for, in bytes, at least 1 MiB. Default 2 MiB + 192 KiB + 512: not a
   * power of two, not a multiple of 4 KiB, a few 64 KiB clusters.
   */
  size?: number;
  /** Test read-only devices, created holding a known content. Default false. */
  readOnly?: boolean;
  /** Seed of the pseudo-random data and request sequences (named in failure messages). */
  seed?: number;
}

/** Everything a group of conformance tests needs. */
export interface SuiteContext {
  readonly size: number;
  readonly readOnly: boolean;
  readonly seed: number;
  /**
   * Makes a device, runs `body` with it and a model of its expected content, then closes the
   * device and runs its cleanup, whatever happened.
   */
  use(body: (device: BlockDevice, model: DiskModel) => Promise<void>): Promise<void>;
}

const DEFAULT_SIZE = 2 * 1024 * 1024 + 192 * 1024 + 512;
const MINIMUM_SIZE = 1024 * 1024;

/**
 * Registers the conformance tests of the `BlockDevice` contract in a `describe(name)` block.
 * The factory is called once per test, with `options.size` and a {@link DeviceSetup}.
 *
 * @throws InvalidArgumentError when `options.size` is below 1 MiB or not an integer
 */
export function testBlockDevice(name: string, factory: DeviceFactory, options: ConformanceOptions = {}): void {
  const size = options.size ?? DEFAULT_SIZE;
  if (!Number.isSafeInteger(size) || size < MINIMUM_SIZE) {
    throw new InvalidArgumentError('register block device conformance tests', `size ${size} is below 1 MiB`);
  }
  const readOnly = options.readOnly ?? false;
  const seed = options.seed ?? 0x5eed;
  const content = readOnly ? patternedContent(size, seed) : undefined;
  const context: SuiteContext = {
    size,
    readOnly,
    seed,
    use: (body) => useDevice(factory, size, { readOnly, content }, body),
  };
  describe(name, () => {
    registerCommonTests(context);
    registerConcurrencyTests(context);
    if (readOnly) registerReadOnlyTests(context);
    else registerWritableTests(context);
  });
}

async function useDevice(
  factory: DeviceFactory,
  size: number,
  setup: DeviceSetup,
  body: (device: BlockDevice, model: DiskModel) => Promise<void>,
): Promise<void> {
  const { device, cleanup } = await factory(size, setup);
  let failure: { error: unknown } | undefined;
  try {
    await body(device, new DiskModel(size, setup.content));
  } catch (error) {
    failure = { error };
  }
  try {
    await device.close();
  } catch (error) {
    failure ??= { error };
  }
  try {
    await cleanup?.();
  } catch (error) {
    failure ??= { error };
  }
  if (failure !== undefined) throw failure.error;
}
