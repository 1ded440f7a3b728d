/**
 * The node commands: `blockdev-add`, `blockdev-del`, `query-named-block-nodes`, `query-block`
 * (the engine has no guest devices: it lists the top-level nodes, those no other node uses as
 * a child), and `quit`.
 */
import type { JsonObject } from '../../qmp/protocol/messages.js';
import type { Engine } from '../engine.js';
import { blockdevAddSchema } from '../options/index.js';
import { nodeInfo } from './node-info.js';

/** Registers the node commands on `engine`; `onQuit` runs after `quit` is answered. */
export function registerBlockdevCommands(engine: Engine, onQuit: () => void = () => undefined): void {
  engine.register(
    'blockdev-add',
    async (args) => {
      await engine.addNode(args as JsonObject);
    },
    blockdevAddSchema,
  );
  engine.register('blockdev-del', (args) => engine.deleteNode(args['node-name']), { 'node-name': 'str' });
  engine.register(
    'query-named-block-nodes',
    // Newest first, as QEMU lists them. `flat` only drops backing images from `image` in QEMU;
    // bitback's `image` has none.
    () => engine.graph.nodes.reverse().map(nodeInfo),
    { '*flat': 'bool' },
  );
  engine.register(
    'query-block',
    () =>
      engine.graph
        .topLevel()
        .reverse()
        .map((node) => ({
          device: '',
          qdev: node.name,
          locked: false,
          removable: false,
          inserted: nodeInfo(node),
          type: 'unknown',
        })),
    {},
  );
  engine.register(
    'quit',
    () => {
      // After the reply, as QEMU: the return, then SHUTDOWN, then the exit.
      setImmediate(() => {
        engine.emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
        setImmediate(onQuit);
      });
    },
    {},
  );
}
