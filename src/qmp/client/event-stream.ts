/**
 * An async iterator over events, fed by a push source. It buffers at most `maxBuffered` events
 * for a slow reader; past that the iteration fails with a BUSY error rather than grow.
 */
import { BitbackError } from '../../errors.js';
import { type QmpEvent } from '../protocol/messages.js';

/** The feeding side of an {@link EventStream}. */
export interface EventSink {
  push(event: QmpEvent): void;
  /** Ends the iteration: normally, or with `error` after the buffered events. */
  end(error?: Error): void;
}

/** Creates an iterator and its sink; `detach` is called once the iteration is over. */
export function createEventStream(maxBuffered: number, detach: (sink: EventSink) => void): { iterator: AsyncIterableIterator<QmpEvent>; sink: EventSink } {
  const buffer: QmpEvent[] = [];
  let waiting: { resolve: (r: IteratorResult<QmpEvent>) => void; reject: (e: Error) => void } | undefined;
  let ended = false;
  let failure: Error | undefined;

  const finish = (error?: Error): void => {
    if (ended) return;
    ended = true;
    failure = error;
    detach(sink);
    if (waiting !== undefined && buffer.length === 0) {
      const w = waiting;
      waiting = undefined;
      if (error === undefined) w.resolve({ value: undefined, done: true });
      else w.reject(error);
    }
  };

  const sink: EventSink = {
    push(event) {
      if (ended) return;
      if (waiting !== undefined) {
        const w = waiting;
        waiting = undefined;
        w.resolve({ value: event, done: false });
        return;
      }
      if (buffer.length >= maxBuffered) {
        finish(new BitbackError('BUSY', 'read QMP events', `more than ${maxBuffered} events were waiting to be read`));
        return;
      }
      buffer.push(event);
    },
    end: finish,
  };

  const iterator: AsyncIterableIterator<QmpEvent> = {
    next() {
      if (buffer.length > 0) return Promise.resolve({ value: buffer.shift()!, done: false });
      if (ended) {
        if (failure === undefined) return Promise.resolve({ value: undefined, done: true });
        const e = failure;
        failure = undefined; // reported once; later calls just end
        return Promise.reject(e);
      }
      return new Promise((resolve, reject) => (waiting = { resolve, reject }));
    },
    return() {
      buffer.length = 0;
      failure = undefined;
      finish();
      return Promise.resolve({ value: undefined, done: true });
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
  return { iterator, sink };
}
