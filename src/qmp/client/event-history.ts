/**
 * The events a client received lately, and the callers waiting for one. An event that a waiter
 * takes is consumed: two waits for `STOP` need two `STOP` events. Events nobody waited for are
 * kept (the newest `limit` ones), so that a wait finds an event that arrived just before it.
 */
import { BitbackError, IoError } from '../../errors.js';
import { type QmpEvent } from '../protocol/messages.js';

/** Decides whether a waiter wants an event (its name already matched). */
export type QmpEventPredicate = (event: QmpEvent) => boolean;

interface Waiter {
  name: string;
  predicate: QmpEventPredicate | undefined;
  resolve: (event: QmpEvent) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/** Bounded history of events plus the waiters for them. */
export class EventHistory {
  readonly #limit: number;
  #events: QmpEvent[] = [];
  readonly #waiters = new Set<Waiter>();
  #failure: Error | undefined;

  /** Keeps at most `limit` unconsumed events (oldest dropped first). */
  constructor(limit: number) {
    this.#limit = limit;
  }

  /** Unconsumed events, oldest first (a copy). */
  get events(): QmpEvent[] {
    return [...this.#events];
  }

  /** Forgets every unconsumed event. */
  clear(): void {
    this.#events = [];
  }

  /** Hands `event` to the oldest waiter that wants it, or keeps it. */
  push(event: QmpEvent): void {
    for (const waiter of this.#waiters) {
      if (matches(waiter, event)) {
        this.#settle(waiter);
        waiter.resolve(event);
        return;
      }
    }
    this.#events.push(event);
    if (this.#events.length > this.#limit) this.#events.splice(0, this.#events.length - this.#limit);
  }

  /**
   * Resolves with the oldest kept event named `name` that `predicate` accepts, or with the next
   * one to arrive; `timeoutMs` (0 = none) bounds the wait. With `includeHistory` false only
   * events arriving after the call count.
   */
  wait(name: string, predicate: QmpEventPredicate | undefined, timeoutMs: number, includeHistory: boolean): Promise<QmpEvent> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (includeHistory) {
      const i = this.#events.findIndex((e) => e.event === name && (predicate === undefined || predicate(e)));
      if (i >= 0) return Promise.resolve(this.#events.splice(i, 1)[0]!);
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = { name, predicate, resolve, reject, timer: undefined };
      if (timeoutMs > 0) {
        waiter.timer = setTimeout(() => {
          this.#settle(waiter);
          reject(new IoError(`wait for QMP event ${name}`, `it did not arrive within ${timeoutMs} ms`, 'ETIMEDOUT', { retryable: true }));
        }, timeoutMs);
      }
      this.#waiters.add(waiter);
    });
  }

  /** Rejects every waiter, and every later wait, with `error` (the connection is gone). */
  fail(error: BitbackError): void {
    this.#failure ??= error;
    for (const waiter of [...this.#waiters]) {
      this.#settle(waiter);
      waiter.reject(error);
    }
  }

  #settle(waiter: Waiter): void {
    clearTimeout(waiter.timer);
    this.#waiters.delete(waiter);
  }
}

function matches(waiter: Waiter, event: QmpEvent): boolean {
  if (waiter.name !== event.event) return false;
  try {
    return waiter.predicate === undefined || waiter.predicate(event);
  } catch {
    return false;
  }
}
