/** The engine's block graph: nodes, edges, backends, bitmaps per node, drained sections. */
export { BlockBackend, type BackendPermissions, type DrainGate } from './backend.js';
export { BlockNode, type BlockNodeInit, type DriverInstance } from './block-node.js';
export { Edge, type EdgeParent } from './edge.js';
export { DEFAULT_GRANULARITY, MemoryNodeBitmaps, Qcow2NodeBitmaps, type NodeBitmapAddOptions, type NodeBitmaps } from './node-bitmaps.js';
export { NodeGraph } from './node-graph.js';
export {
  ALL_PERMISSIONS,
  BlockPermission,
  backingRule,
  cumulativePermissions,
  passThroughRule,
  PermissionConflictError,
  refreshPermissions,
  storageRule,
  type PermissionRule,
} from './permissions.js';
