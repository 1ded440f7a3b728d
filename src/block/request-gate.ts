/**
 * What every device and filter needs to honour the `close` contract of `BlockDevice`: requests
 * started after `close` reject with `ClosedError`; `close` waits for the requests in flight to
 * settle; a second `close` is harmless and waits for the first.
 */
import { ClosedError } from '../errors.js';

/** Tracks the requests in flight of one device and whether it is closed. */
export class RequestGate {
  #inFlight = 0;
  #closing: Promise<void> | undefined;
  #wakeDrained: (() => void) | undefined;

  /** True once `close` has been called (the requests in flight may still be settling). */
  get closed(): boolean {
    return this.#closing !== undefined;
  }

  /**
   * Runs `request` as one request in flight. Rejects with `ClosedError` (naming `action`) without
   * calling `request` when the gate is closed. Never throws synchronously.
   */
  async run<T>(action: string, request: () => Promise<T>): Promise<T> {
    if (this.#closing !== undefined) throw new ClosedError(action);
    this.#inFlight++;
    try {
      return await request();
    } finally {
      this.#inFlight--;
      if (this.#inFlight === 0) this.#wakeDrained?.();
    }
  }

  /**
   * Closes the gate and resolves once every request in flight has settled, then runs `release`
   * (closing files, inner devices) exactly once. Every later call returns the same promise, so
   * `release` never runs twice.
   */
  close(release: () => Promise<void> = async () => {}): Promise<void> {
    this.#closing ??= this.#drain().then(release);
    return this.#closing;
  }

  async #drain(): Promise<void> {
    if (this.#inFlight === 0) return;
    await new Promise<void>((resolve) => {
      this.#wakeDrained = resolve;
    });
  }
}
