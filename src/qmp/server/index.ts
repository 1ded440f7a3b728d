/** bitback's QMP server: monitors, a dispatcher with QEMU-exact argument checking, events. */
export { QmpServer, type QmpListenOptions, type QmpServerErrorInfo, type QmpServerOptions } from './qmp-server.js';
export { QmpDispatcher, type QmpCommandContext, type QmpHandler } from './dispatcher.js';
export { type QmpMonitor } from './monitor.js';
export { validateArguments } from './validate.js';
export * from './schema.js';
