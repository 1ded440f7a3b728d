/**
 * Two connected in-process streams, like the ends of a socket pair: what one end writes the
 * other reads. Ending one end's writable side ends the other's readable side; destroying one
 * end destroys the other. (Node 20 has no `stream.duplexPair`.)
 */
import { Duplex } from 'node:stream';

/** Returns two connected duplex streams. */
export function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (other: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _encoding, callback) {
        other().push(chunk);
        callback();
      },
      final(callback) {
        other().push(null);
        callback();
      },
      destroy(error, callback) {
        const peer = other();
        if (!peer.destroyed) peer.destroy();
        callback(error);
      },
    });
  ends.push(make(() => ends[1]!), make(() => ends[0]!));
  return [ends[0]!, ends[1]!];
}
