/** bitback's QMP client: against QEMU, qemu-storage-daemon, or bitback's engine. */
export { QmpClient, type QmpClientOptions, type QmpExecuteOptions, type QmpWaitOptions } from './qmp-client.js';
export { type QmpEventPredicate } from './event-history.js';
export { connectInProcess } from './in-process.js';
