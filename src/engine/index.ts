/** bitback's engine: QEMU's block-layer model behind QMP (see engine.ts). */
export { createEngine, type CreateEngineOptions } from './create.js';
export { Engine, checkNodeName, type EngineOptions } from './engine.js';
export type { BlockDriver, BlockdevRef, OpenContext } from './drivers/driver.js';
export { BlockBackend, BlockNode, Edge, NodeGraph, type DriverInstance, type NodeBitmaps } from './graph/index.js';
