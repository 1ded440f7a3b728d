/**
 * Test-only: records the events a job manager sends, waits for one, and reduces a sequence to
 * what can be compared with QEMU (statuses, event names and members, never offsets that
 * depend on timing).
 */
import type { JsonObject } from '../../../qmp/protocol/messages.js';

/** One recorded event. */
export interface LoggedEvent {
  event: string;
  data: JsonObject;
}

type Predicate = (e: LoggedEvent) => boolean;

/** See the module comment. */
export class EventLog {
  readonly events: LoggedEvent[] = [];
  #waiters: Array<{ predicate: Predicate; from: number; resolve: (e: LoggedEvent) => void }> = [];

  /** The `emit` to give a `JobManager`. */
  readonly emit = (event: string, data: JsonObject): void => {
    const logged = { event, data: structuredClone(data) };
    this.events.push(logged);
    const index = this.events.length - 1;
    this.#waiters = this.#waiters.filter((w) => {
      if (index < w.from || !w.predicate(logged)) return true;
      w.resolve(logged);
      return false;
    });
  };

  /** The first event from index `from` on (default 0) that matches; waits for it if needed. */
  waitFor(predicate: Predicate, from = 0): Promise<LoggedEvent> {
    const found = this.events.slice(from).find(predicate);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => this.#waiters.push({ predicate, from, resolve }));
  }

  /** Waits for the `nth` (1-based) JOB_STATUS_CHANGE of job `id` to `status`. */
  waitForStatus(id: string, status: string, nth = 1): Promise<LoggedEvent> {
    let seen = 0;
    return this.waitFor((e) => e.event === 'JOB_STATUS_CHANGE' && e.data.id === id && e.data.status === status && ++seen === nth);
  }

  /** Waits for event `name` (of job `id` when given). */
  waitForEvent(name: string, id?: string): Promise<LoggedEvent> {
    return this.waitFor((e) => e.event === name && (id === undefined || e.data.device === id || e.data.id === id));
  }

  /**
   * The sequence in compact form: `id:status` for a status change, `EVENT k=v ...` for others,
   * with `offset` left out (it depends on timing) and `len` kept.
   */
  summary(id?: string): string[] {
    return summarize(this.events, id);
  }

  /** Forgets what was recorded. */
  clear(): void {
    this.events.length = 0;
  }
}

/** The compact form of {@link EventLog.summary} for any list of events (e.g. QEMU's). */
export function summarize(events: readonly { event: string; data?: JsonObject }[], id?: string): string[] {
  const out: string[] = [];
  for (const { event, data = {} } of events) {
    const owner = data.id ?? data.device;
    if (id !== undefined && owner !== id) continue;
    if (event === 'JOB_STATUS_CHANGE') {
      out.push(`${String(data.id)}:${String(data.status)}`);
      continue;
    }
    const members = Object.keys(data)
      .filter((k) => k !== 'offset')
      .sort()
      .map((k) => `${k}=${String(data[k])}`);
    out.push([event, ...members].join(' '));
  }
  return out;
}
