/** The NBD server: serves `BlockDevice`s to NBD clients (qemu, libnbd, the kernel, bitback's client). */
export { NbdServer } from './server.js';
export type { NbdExport, NbdListenAddress, NbdListening, NbdServerOptions, NbdServerStats } from './types.js';
export { nbdFailureOf, type NbdFailure } from './errors-map.js';
