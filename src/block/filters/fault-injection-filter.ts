/**
 * Makes chosen requests fail, for tests of error paths — what nbdkit's `error` filter does for
 * end-to-end tests, in process and deterministic.
 */
import { InvalidArgumentError, IoError } from '../../errors.js';
import { type BlockDevice, type BlockExtent, type WriteOptions, type WriteZeroesOptions } from '../block-device.js';
import { BlockFilter, type FilterOptions } from './filter.js';

/** The operations a rule can select (the `BlockDevice` method names). */
export type FaultOperation = 'read' | 'write' | 'writeZeroes' | 'trim' | 'flush' | 'blockStatus';

/** Every {@link FaultOperation}. */
export const FAULT_OPERATIONS: readonly FaultOperation[] = ['read', 'write', 'writeZeroes', 'trim', 'flush', 'blockStatus'];

/** A byte range, in bytes; `length` may be `Infinity` for "up to the end of the device". */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * When to fail a request. Every condition given must hold for a request to *match*; the rule
 * then lets the first `skip` matching requests through and fails the following ones, at most
 * `times` times.
 *
 * The request's length is the bytes read or written (`data.length` for `write`), the length of
 * the range for `writeZeroes`, `trim` and `blockStatus`, and 0 for `flush`, which has no range.
 *
 * @example Fail the 3rd read: `{ operations: ['read'], skip: 2, times: 1 }`
 * @example Fail every write once 1 MiB has been written: `{ operations: ['write'], afterBytes: 1048576 }`
 * @example Disk full past X: `{ operations: ['write'], errno: 'ENOSPC', overlapping: [{ offset: X, length: Infinity }] }`
 */
export interface FaultRule {
  /** Operations the rule applies to (at least one). */
  operations: readonly FaultOperation[];
  /** POSIX error name of the injected `IoError` (`EIO`, `ENOSPC`, ...). Default `EIO`. */
  errno?: string;
  /**
   * Match only requests that would take the bytes this filter has passed to the inner device for
   * that operation past `afterBytes`: a request matches when passed + its length > afterBytes.
   */
  afterBytes?: number;
  /** Match only requests that overlap one of these ranges (so never `flush` or empty requests). */
  overlapping?: readonly ByteRange[];
  /** Let this many matching requests through before failing any. Default 0. */
  skip?: number;
  /** Fail at most this many requests (1: only once). Default: no limit. */
  times?: number;
}

interface ActiveRule {
  rule: FaultRule;
  matched: number;
  injected: number;
}

/**
 * Wraps a device and fails the requests that its rules select with an `IoError` carrying the
 * rule's errno. A failed request is rejected before it reaches the inner device, so it changes
 * nothing. Rules are checked in order; the first that fires wins, and the rules after it do not
 * see the request. Rules can be replaced at any time; the counters of injected faults and of
 * bytes passed through are kept for the filter's life.
 *
 * Capabilities and block sizes are the inner device's. `close()` closes the inner device unless
 * `closeInner: false`.
 */
export class FaultInjectionFilter extends BlockFilter {
  #rules: ActiveRule[] = [];
  readonly #passed = countersOf(FAULT_OPERATIONS);
  readonly #injected = countersOf(FAULT_OPERATIONS);

  /** @throws InvalidArgumentError for a malformed rule */
  constructor(inner: BlockDevice, rules: readonly FaultRule[] = [], options: FilterOptions = {}) {
    super(
      inner,
      { name: 'fault injection filter', size: inner.size, capabilities: inner.capabilities, blockSize: inner.blockSize },
      options,
    );
    this.setRules(rules);
  }

  /**
   * Replaces every rule; the new rules start with no matched requests. Requests already past the
   * filter are not affected. @throws InvalidArgumentError for a malformed rule (rules unchanged)
   */
  setRules(rules: readonly FaultRule[]): void {
    rules.forEach(validateRule);
    this.#rules = rules.map((rule) => ({ rule: { ...rule }, matched: 0, injected: 0 }));
  }

  /** Adds a rule after the existing ones. @throws InvalidArgumentError for a malformed rule */
  addRule(rule: FaultRule): void {
    validateRule(rule);
    this.#rules.push({ rule: { ...rule }, matched: 0, injected: 0 });
  }

  /** Removes every rule: requests pass through from now on. */
  clearRules(): void {
    this.#rules = [];
  }

  /** How many requests were failed on purpose, of one operation or of all. */
  injectedCount(operation?: FaultOperation): number {
    if (operation !== undefined) return this.#injected.get(operation) ?? 0;
    let total = 0;
    for (const n of this.#injected.values()) total += n;
    return total;
  }

  /** Bytes of requests of `operation` that were passed to the inner device (succeeded or not). */
  passedBytes(operation: FaultOperation): number {
    return this.#passed.get(operation) ?? 0;
  }

  protected override doRead(action: string, offset: number, length: number): Promise<Uint8Array> {
    this.#admit(action, 'read', offset, length);
    return this.inner.read(offset, length);
  }

  protected override doWrite(action: string, offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
    this.#admit(action, 'write', offset, data.length);
    return this.inner.write(offset, data, options);
  }

  protected override doWriteZeroes(
    action: string,
    offset: number,
    length: number,
    options: WriteZeroesOptions,
  ): Promise<void> {
    this.#admit(action, 'writeZeroes', offset, length);
    return this.inner.writeZeroes(offset, length, options);
  }

  protected override doTrim(action: string, offset: number, length: number, options: WriteOptions): Promise<void> {
    this.#admit(action, 'trim', offset, length);
    return this.inner.trim(offset, length, options);
  }

  protected override doFlush(action: string): Promise<void> {
    this.#admit(action, 'flush', 0, 0);
    return this.inner.flush();
  }

  protected override doBlockStatus(action: string, offset: number, length: number): Promise<BlockExtent[]> {
    this.#admit(action, 'blockStatus', offset, length);
    return this.inner.blockStatus(offset, length);
  }

  /** Throws the injected error if a rule fires; otherwise counts the request as passed. */
  #admit(action: string, operation: FaultOperation, offset: number, length: number): void {
    const passed = this.#passed.get(operation) ?? 0;
    for (const active of this.#rules) {
      const { rule } = active;
      if (!rule.operations.includes(operation)) continue;
      if (rule.afterBytes !== undefined && passed + length <= rule.afterBytes) continue;
      if (rule.overlapping !== undefined && !rule.overlapping.some((r) => overlaps(r, offset, length))) continue;
      active.matched++;
      if (active.matched <= (rule.skip ?? 0)) continue;
      if (active.injected >= (rule.times ?? Infinity)) continue;
      active.injected++;
      this.#injected.set(operation, (this.#injected.get(operation) ?? 0) + 1);
      const errno = rule.errno ?? 'EIO';
      throw new IoError(action, `injected fault (${errno})`, errno);
    }
    this.#passed.set(operation, passed + length);
  }
}

function overlaps(range: ByteRange, offset: number, length: number): boolean {
  return length > 0 && offset < range.offset + range.length && range.offset < offset + length;
}

function countersOf(operations: readonly FaultOperation[]): Map<FaultOperation, number> {
  return new Map(operations.map((op) => [op, 0]));
}

function validateRule(rule: FaultRule): void {
  const action = 'add fault injection rule';
  if (!Array.isArray(rule.operations) || rule.operations.length === 0) {
    throw new InvalidArgumentError(action, 'operations must list at least one operation');
  }
  for (const op of rule.operations) {
    if (!FAULT_OPERATIONS.includes(op)) throw new InvalidArgumentError(action, `unknown operation '${String(op)}'`);
  }
  if (rule.errno !== undefined && !/^E[A-Z0-9]+$/.test(rule.errno)) {
    throw new InvalidArgumentError(action, `errno '${rule.errno}' is not a POSIX error name like EIO`);
  }
  for (const key of ['afterBytes', 'skip', 'times'] as const) {
    const value = rule[key];
    if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
      throw new InvalidArgumentError(action, `${key} ${value} is not a non-negative integer`);
    }
  }
  for (const range of rule.overlapping ?? []) {
    const lengthOk = range.length === Infinity || (Number.isSafeInteger(range.length) && range.length > 0);
    if (!Number.isSafeInteger(range.offset) || range.offset < 0 || !lengthOk) {
      throw new InvalidArgumentError(action, `range ${range.offset}+${range.length} is not a valid byte range`);
    }
  }
}
