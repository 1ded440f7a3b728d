/**
 * The receiving end of a plain socket opened with `net.connect({ onread })`: the socket reads
 * into a buffer that the current consumer chooses (`nextBuffer`), then says how many bytes came
 * (`received`). No buffer is allocated per read, and the NBD connection can have READ data land
 * where its caller wants it. 'data' events do not fire on such a socket; 'end', 'close' and
 * 'error' do, and `pause()`/`resume()` stop and restart reading.
 *
 * Consumers change over a connection's life (the negotiation's reader, then the transmission
 * phase's); bytes that arrive while none is attached are kept (copied) and handed to the next.
 */

/** Who takes the bytes of a {@link SocketInput}. */
export interface InputConsumer {
  /** The buffer the next read fills (it stays the consumer's). */
  nextBuffer(): Uint8Array;
  /** `n` bytes were read into the buffer the last `nextBuffer()` returned. */
  received(n: number): void;
  /** Bytes that arrived elsewhere (a view valid during the call only: copy what must be kept). */
  feed(chunk: Uint8Array): void;
}

/** Size of the buffer reads go to while no consumer is attached. */
const SPARE_SIZE = 16 * 1024;

/** See the module comment. */
export class SocketInput {
  #consumer: InputConsumer | undefined;
  /** Bytes received while no consumer was attached. */
  #held: Uint8Array[] = [];
  #spare: Uint8Array | undefined;
  /** The buffer handed to the socket for its next read, and which consumer it came from (undefined: the spare). */
  #last: Uint8Array | undefined;
  #lastOwner: InputConsumer | undefined;
  #discarding = false;

  /** The `onread` option of `net.connect`. */
  readonly onread = {
    buffer: (): Uint8Array => this.#nextBuffer(),
    callback: (n: number): boolean => {
      this.#received(n);
      return true; // false would stop reading; pause() does that
    },
  };

  /** Makes `consumer` take every byte from now on, starting with the bytes kept meanwhile. */
  attach(consumer: InputConsumer): void {
    this.#consumer = consumer;
    const held = this.#held;
    this.#held = [];
    for (const chunk of held) consumer.feed(chunk);
  }

  /** Detaches the current consumer: bytes are kept until the next one attaches. */
  detach(): void {
    this.#consumer = undefined;
  }

  /** The socket is being closed: bytes kept or received from now on are dropped. */
  discard(): void {
    this.#consumer = undefined;
    this.#held = [];
    this.#discarding = true;
  }

  #nextBuffer(): Uint8Array {
    const consumer = this.#consumer;
    this.#lastOwner = consumer;
    this.#last = consumer !== undefined ? consumer.nextBuffer() : (this.#spare ??= new Uint8Array(SPARE_SIZE));
    return this.#last;
  }

  #received(n: number): void {
    const consumer = this.#consumer;
    if (consumer !== undefined && consumer === this.#lastOwner) {
      consumer.received(n);
      return;
    }
    // The read went to a buffer chosen before the consumer changed.
    const bytes = this.#last!.subarray(0, n);
    if (consumer !== undefined) consumer.feed(bytes);
    else if (!this.#discarding) this.#held.push(bytes.slice());
  }
}
