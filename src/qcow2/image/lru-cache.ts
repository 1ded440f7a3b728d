/**
 * A bounded least-recently-used cache, for L2 tables and refcount blocks.
 *
 * The image writes metadata through to the file, so cached values are never dirty: evicting
 * one only costs a later read. (Refcount blocks with a write still in flight are kept apart
 * from the cache until it lands, see `Refcounts`.)
 */

/** A map of at most `capacity` entries that forgets the least recently used one first. */
export class LruCache<K, V> {
  readonly capacity: number;
  readonly #entries = new Map<K, V>();

  /** @param capacity - the number of entries kept, at least 1 */
  constructor(capacity: number) {
    this.capacity = Math.max(1, Math.floor(capacity));
  }

  /** The value of `key`, marked as most recently used; undefined when absent. */
  get(key: K): V | undefined {
    const value = this.#entries.get(key);
    if (value === undefined) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, value);
    return value;
  }

  /** Stores `value` as the most recently used entry, evicting the oldest beyond the capacity. */
  set(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, value);
    while (this.#entries.size > this.capacity) {
      this.#entries.delete(this.#entries.keys().next().value as K);
    }
  }

  /** Forgets `key`. */
  delete(key: K): void {
    this.#entries.delete(key);
  }

  /** Forgets everything. */
  clear(): void {
    this.#entries.clear();
  }

  /** Number of entries held. */
  get size(): number {
    return this.#entries.size;
  }
}
