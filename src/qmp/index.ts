/**
 * QMP, the QEMU Machine Protocol: the wire codec (`protocol/`), a client (`client/`) and a
 * server with a dispatcher that checks arguments like QEMU 7.2 (`server/`).
 */
export * from './protocol/index.js';
export * from './client/index.js';
export * from './server/index.js';
