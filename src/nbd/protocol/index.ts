/** The NBD wire protocol: constants, codecs and push decoders. No I/O. */
export * from './constants.js';
export * from './errors.js';
export * from './handshake.js';
export * from './handshake-decoder.js';
export * from './transmission.js';
export * from './transmission-decoder.js';
export * from './uri.js';
export { ByteQueue } from './byte-queue.js';
export { WireReader, WireWriter } from './wire.js';
