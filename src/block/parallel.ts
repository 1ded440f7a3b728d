/**
 * Runs `worker` on every item of `items` with at most `limit` calls in flight, pulling items
 * lazily (so a generator of millions of chunks costs nothing up front). Resolves when every call
 * has resolved; on the first rejection it stops pulling new items, waits for the calls in flight
 * to settle and rejects with that first error.
 */
export async function forEachParallel<T>(items: Iterable<T> | AsyncIterable<T>, limit: number, worker: (item: T) => Promise<void>): Promise<void> {
  const iterator = Symbol.asyncIterator in items ? (items as AsyncIterable<T>)[Symbol.asyncIterator]() : (items as Iterable<T>)[Symbol.iterator]();
  let failed = false;
  let firstError: unknown;
  let pulling: Promise<void> = Promise.resolve();
  // Pulling is serialized so that an async iterator is never asked for two items at once.
  const next = (): Promise<IteratorResult<T>> => {
    const result = pulling.then(() => iterator.next());
    pulling = result.then(() => undefined, () => undefined);
    return result;
  };
  const lane = async (): Promise<void> => {
    while (!failed) {
      const { value, done } = await next();
      if (done) return;
      try {
        await worker(value);
      } catch (e) {
        if (!failed) {
          failed = true;
          firstError = e;
        }
        return;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, limit) }, lane));
  if (failed) throw firstError;
}
