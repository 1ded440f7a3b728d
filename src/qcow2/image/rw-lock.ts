/**
 * An asynchronous readers-writer lock, first come first served, with detached work.
 *
 * The qcow2 image takes it
 * - shared for lookups that only read metadata (reads, writes into clusters that are already
 *   allocated and owned), which may run together;
 * - for metadata (`metadata`) to allocate clusters and update L2 entries: alone among the
 *   holders, but while the data writes of earlier allocations are still running (detached);
 * - exclusive for everything else that changes metadata (zeroing, trimming, compressed writes,
 *   the internals): alone, and only once no detached work is left, so it sees every mapping
 *   settled.
 *
 * Detached work ({@link RwLock.detach}) is what an allocating write does after it released the
 * lock: writing the data into its new clusters. It ends with {@link DetachedWork.finish}, which
 * takes the lock ahead of every queued waiter (so that an exclusive waiter, which waits for the
 * detached work, cannot deadlock with it).
 *
 * Waiters are served in arrival order: a waiting exclusive or metadata request holds back
 * shared requests that arrive after it, so a stream of reads cannot starve an allocation.
 */

type Mode = 'shared' | 'metadata' | 'exclusive';

interface Waiter {
  mode: Mode;
  grant: () => void;
}

/**
 * Work registered under the lock that goes on after the lock is released; `exclusive` waits
 * until it has finished. Finish it exactly once, with {@link DetachedWork.finish} or
 * {@link DetachedWork.end}.
 */
export interface DetachedWork {
  /**
   * Takes the lock in metadata mode ahead of every queued waiter, runs `body`, and ends the
   * work (also when `body` rejects).
   */
  finish<T>(body: () => Promise<T>): Promise<T>;
  /** Ends the work without taking the lock. */
  end(): void;
}

/** A readers-writer lock for promises. Not reentrant: never take it again while holding it. */
export class RwLock {
  #readers = 0;
  #writer = false;
  #detached = 0;
  readonly #queue: Waiter[] = [];
  /** Detached work waiting to finish: served before the queue. */
  readonly #finishing: Waiter[] = [];

  /** Runs `body` while holding the lock shared (other shared holders may run at the same time). */
  shared<T>(body: () => Promise<T>): Promise<T> {
    return this.#hold('shared', body);
  }

  /**
   * Runs `body` alone among the holders of the lock, while detached work may still run: for
   * changes that detached work cannot be affected by (allocating clusters, L2 entries of
   * clusters that no detached work is writing).
   */
  metadata<T>(body: () => Promise<T>): Promise<T> {
    return this.#hold('metadata', body);
  }

  /** Runs `body` while holding the lock alone, once no detached work is left. */
  exclusive<T>(body: () => Promise<T>): Promise<T> {
    return this.#hold('exclusive', body);
  }

  /** Registers detached work. Call it while holding the lock (in any mode). */
  detach(): DetachedWork {
    this.#detached++;
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      this.#detached--;
      this.#dispatch();
    };
    return {
      finish: async <T>(body: () => Promise<T>): Promise<T> => {
        if (ended) throw new Error('detached work finished twice');
        await new Promise<void>((grant) => {
          if (this.#free('metadata')) {
            this.#take('metadata');
            grant();
          } else {
            this.#finishing.push({ mode: 'metadata', grant });
          }
        });
        try {
          return await body();
        } finally {
          this.#writer = false;
          end();
        }
      },
      end,
    };
  }

  async #hold<T>(mode: Mode, body: () => Promise<T>): Promise<T> {
    await this.#acquire(mode);
    try {
      return await body();
    } finally {
      if (mode === 'shared') this.#readers--;
      else this.#writer = false;
      this.#dispatch();
    }
  }

  #acquire(mode: Mode): Promise<void> {
    if (this.#queue.length === 0 && this.#finishing.length === 0 && this.#free(mode)) {
      this.#take(mode);
      return Promise.resolve();
    }
    return new Promise((grant) => this.#queue.push({ mode, grant }));
  }

  #free(mode: Mode): boolean {
    if (this.#writer) return false;
    if (mode === 'shared') return true;
    return this.#readers === 0 && (mode === 'metadata' || this.#detached === 0);
  }

  #take(mode: Mode): void {
    if (mode === 'shared') this.#readers++;
    else this.#writer = true;
  }

  #dispatch(): void {
    if (this.#finishing.length > 0) {
      if (this.#free('metadata')) {
        this.#take('metadata');
        this.#finishing.shift()!.grant();
      }
      return;
    }
    while (this.#queue.length > 0 && this.#free(this.#queue[0]!.mode)) {
      const waiter = this.#queue.shift()!;
      this.#take(waiter.mode);
      waiter.grant();
      if (waiter.mode !== 'shared') return;
    }
  }
}
