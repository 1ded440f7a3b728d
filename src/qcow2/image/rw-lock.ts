/**
 * An asynchronous readers-writer lock, first come first served.
 *
 * The qcow2 image takes it shared for lookups that only read metadata (reads, writes into
 * clusters that are already allocated and owned) and exclusive for anything that changes
 * metadata (allocation, L2 and refcount updates, freeing clusters). Waiters are served in
 * arrival order: a waiting exclusive request holds back shared requests that arrive after it,
 * so a stream of reads cannot starve an allocation.
 */

interface Waiter {
  exclusive: boolean;
  grant: () => void;
}

/** A readers-writer lock for promises. Not reentrant: never take it again while holding it. */
export class RwLock {
  #readers = 0;
  #writer = false;
  readonly #queue: Waiter[] = [];

  /** Runs `body` while holding the lock shared (other shared holders may run at the same time). */
  async shared<T>(body: () => Promise<T>): Promise<T> {
    await this.#acquire(false);
    try {
      return await body();
    } finally {
      this.#readers--;
      this.#dispatch();
    }
  }

  /** Runs `body` while holding the lock alone. */
  async exclusive<T>(body: () => Promise<T>): Promise<T> {
    await this.#acquire(true);
    try {
      return await body();
    } finally {
      this.#writer = false;
      this.#dispatch();
    }
  }

  #acquire(exclusive: boolean): Promise<void> {
    if (this.#queue.length === 0 && this.#canGrant(exclusive)) {
      this.#take(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#queue.push({ exclusive, grant: resolve }));
  }

  #canGrant(exclusive: boolean): boolean {
    return exclusive ? !this.#writer && this.#readers === 0 : !this.#writer;
  }

  #take(exclusive: boolean): void {
    if (exclusive) this.#writer = true;
    else this.#readers++;
  }

  #dispatch(): void {
    while (this.#queue.length > 0 && this.#canGrant(this.#queue[0]!.exclusive)) {
      const waiter = this.#queue.shift()!;
      this.#take(waiter.exclusive);
      waiter.grant();
      if (waiter.exclusive) return;
    }
  }
}
