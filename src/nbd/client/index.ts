/** The NBD client: an export as a `BlockDevice`, and listing what a server serves. */
export { NbdClient } from './nbd-client.js';
export { type NbdConnectOptions } from './settings.js';
export { describeExport, listExports, type NbdExportInfo, type NbdListOptions } from './list.js';
export { type ContextExtent } from './extents.js';
export { DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_SIZE, DEFAULT_TIMEOUT_MS } from './settings.js';
