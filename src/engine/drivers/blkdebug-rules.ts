/**
 * The rule engine of the `blkdebug` driver, as QEMU 7.2's block/blkdebug.c runs it: a state
 * number (1 when the node opens), `set-state` rules that change it when their event fires, and
 * `inject-error` rules that become *active* when their event fires and then fail the requests
 * they match until another event activates a new set.
 *
 * When an event fires ({@link BlkdebugRules.event}):
 * - only the rules of that event whose `state` is 0 or the current state take part; the state
 *   they compare with is the one from before the event (a `set-state` rule never enables another
 *   rule of the same event);
 * - if at least one `inject-error` rule takes part, the active set is replaced by exactly those
 *   rules, in the order they were given; otherwise the active set stays as it was — rules stay
 *   active after the state moved on, and after the event that activated them;
 * - the state becomes the `new_state` of the first `set-state` rule that takes part (in the order
 *   the rules were given), if any.
 *
 * A request ({@link BlkdebugRules.check}) is failed by the first active rule whose `iotype`
 * matches (default: everything but block status) and whose `sector` lies in the request (a rule
 * without a sector matches any request; a request of no bytes, a flush, matches only those). If
 * that rule has errno 0 the request goes through, and no later rule is looked at. A `once` rule
 * that fails a request is removed for good.
 *
 * Rules from a config file come before those of the options, `inject-error` rules before
 * `set-state` rules. No I/O (`node:os` only for the errno names).
 */
import { constants } from 'node:os';
import type { BLKDEBUG_EVENTS } from '../options/blockdev-schema.js';

/** A point of the block layer where rules can fire (QAPI `BlkdebugEvent`). */
export type BlkdebugEvent = (typeof BLKDEBUG_EVENTS)[number];

/** The kinds of request a rule can fail (QAPI `BlkdebugIOType`). */
export const BLKDEBUG_IO_TYPES = ['read', 'write', 'write-zeroes', 'discard', 'flush', 'block-status'] as const;

/** A kind of request. */
export type BlkdebugIoType = (typeof BLKDEBUG_IO_TYPES)[number];

/** What an `iotype`-less rule fails: every kind but block status (blkdebug.c `add_rule`). */
const DEFAULT_IO_TYPES: readonly BlkdebugIoType[] = ['read', 'write', 'write-zeroes', 'discard', 'flush'];

/** Bytes of a QEMU sector (`BDRV_SECTOR_SIZE`): `sector` counts in these. */
const SECTOR_SIZE = 512;

/** Linux's EIO, the default `errno` of a rule. */
export const EIO = 5;

/** Linux errno numbers → names (the first name of each: `ENOTSUP` for 95, `EAGAIN` for 11). */
const ERRNO_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) if (!ERRNO_NAMES.has(value)) ERRNO_NAMES.set(value, name);

/** The POSIX name of a rule's errno number, as `IoError` carries it; `E<number>` for one the system does not name. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

/** One `inject-error` rule as given (QAPI `BlkdebugInjectErrorOptions`). */
export interface InjectErrorRule {
  event: BlkdebugEvent;
  /** Active only when the event fires in this state; 0 (default): in any state. */
  state?: number;
  /** The one kind of request it fails; default: all but block status. */
  iotype?: BlkdebugIoType;
  /** The error number (Linux's), default 5 (EIO); 0 lets matching requests through. */
  errno?: number;
  /** Fails only requests that cover this 512-byte sector; default -1: any request. */
  sector?: number;
  /** Removed after it failed one request. */
  once?: boolean;
  /** Fails at once, rather than after a turn of the event loop (QEMU: after yielding once). */
  immediately?: boolean;
}

/** One `set-state` rule as given (QAPI `BlkdebugSetStateOptions`). */
export interface SetStateRule {
  event: BlkdebugEvent;
  /** Applies only in this state; 0 (default): in any state. */
  state?: number;
  new_state: number;
}

/** How a request is to fail. */
export interface Injection {
  /** The error number; never 0. A negative one makes the request "succeed" without any I/O (QEMU returns `-errno`, a positive value). */
  errno: number;
  immediately: boolean;
}

interface InjectEntry {
  readonly kind: 'inject';
  readonly event: BlkdebugEvent;
  readonly state: number;
  readonly ioTypes: ReadonlySet<BlkdebugIoType>;
  readonly errno: number;
  /** Byte offset of the sector, or -1 for any request. */
  readonly offset: number;
  readonly once: boolean;
  readonly immediately: boolean;
}

interface SetStateEntry {
  readonly kind: 'set-state';
  readonly event: BlkdebugEvent;
  readonly state: number;
  readonly newState: number;
}

type Entry = InjectEntry | SetStateEntry;

/** The rules and state of one blkdebug node; see the module comment. */
export class BlkdebugRules {
  #state = 1;
  /** Per event, the rules in the order QEMU walks them: the reverse of the order they were added. */
  readonly #byEvent = new Map<BlkdebugEvent, Entry[]>();
  #active: InjectEntry[] = [];

  /** @param injects - `inject-error` rules (config file first); @param sets - `set-state` rules */
  constructor(injects: readonly InjectErrorRule[], sets: readonly SetStateRule[]) {
    for (const r of injects) {
      const sector = r.sector ?? -1;
      this.#add({
        kind: 'inject',
        event: r.event,
        state: r.state ?? 0,
        ioTypes: new Set(r.iotype === undefined ? DEFAULT_IO_TYPES : [r.iotype]),
        errno: r.errno ?? EIO,
        // A negative sector other than -1 is, as in QEMU's unsigned comparison, past every request.
        offset: sector === -1 ? -1 : sector < 0 ? Number.POSITIVE_INFINITY : sector * SECTOR_SIZE,
        once: r.once ?? false,
        immediately: r.immediately ?? false,
      });
    }
    for (const r of sets) this.#add({ kind: 'set-state', event: r.event, state: r.state ?? 0, newState: r.new_state });
  }

  /** The current state. */
  get state(): number {
    return this.#state;
  }

  /** Rules that have not been removed (`once` rules that fired are gone), for tests and queries. */
  get ruleCount(): number {
    let n = 0;
    for (const list of this.#byEvent.values()) n += list.length;
    return n;
  }

  /** Fires `event`: activates its `inject-error` rules and applies its `set-state` rules. */
  event(event: BlkdebugEvent): void {
    const list = this.#byEvent.get(event);
    if (list === undefined) return;
    let newState = this.#state;
    let injected = false;
    for (const rule of list) {
      if (rule.state !== 0 && rule.state !== this.#state) continue;
      if (rule.kind === 'inject') {
        if (!injected) {
          this.#active = [];
          injected = true;
        }
        this.#active.unshift(rule);
      } else {
        newState = rule.newState;
      }
    }
    this.#state = newState;
  }

  /**
   * The error for a request of `ioType` on `[offset, offset + bytes)` (bytes; 0 for a flush), or
   * undefined when it goes through. Removes a `once` rule that fails it.
   */
  check(ioType: BlkdebugIoType, offset: number, bytes: number): Injection | undefined {
    const rule = this.#active.find((r) => r.ioTypes.has(ioType) && (r.offset === -1 || (bytes > 0 && r.offset >= offset && r.offset < offset + bytes)));
    if (rule === undefined || rule.errno === 0) return undefined;
    if (rule.once) {
      this.#active = this.#active.filter((r) => r !== rule);
      const list = this.#byEvent.get(rule.event)!;
      list.splice(list.indexOf(rule), 1);
    }
    return { errno: rule.errno, immediately: rule.immediately };
  }

  #add(entry: Entry): void {
    let list = this.#byEvent.get(entry.event);
    if (list === undefined) this.#byEvent.set(entry.event, (list = []));
    list.unshift(entry);
  }
}
