import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { BlockFilter } from '../../block/filters/filter.js';
import type { BlockDevice, WriteOptions } from '../../block/block-device.js';
import { BlockNode } from './block-node.js';
import { NodeGraph } from './node-graph.js';

const MiB = 1024 * 1024;

function memoryNode(graph: NodeGraph, name: string, options: { unmap?: boolean; implicit?: boolean } = {}): BlockNode {
  const node = new BlockNode({ name, driver: 'memory', readOnly: false, implicit: options.implicit ?? false, options: {}, unmap: options.unmap ?? true });
  node.setDriver({ device: new MemoryBlockDevice(MiB), filename: name });
  graph.add(node);
  return node;
}

/** A filter node over `child` that counts the writes passing through it. */
function countingNode(graph: NodeGraph, name: string, child: BlockNode): { node: BlockNode; writes: () => number } {
  let writes = 0;
  class Counting extends BlockFilter {
    constructor(inner: BlockDevice) {
      super(inner, { name, size: inner.size, capabilities: inner.capabilities, blockSize: inner.blockSize }, { closeInner: false });
    }
    protected override doWrite(_action: string, offset: number, data: Uint8Array, options: WriteOptions): Promise<void> {
      writes++;
      return this.inner.write(offset, data, options);
    }
  }
  const node = new BlockNode({ name, driver: 'counting', readOnly: false, implicit: false, options: {}, unmap: true });
  const edge = node.attachChild('file', child);
  node.setDriver({ device: new Counting(edge), filename: name });
  graph.add(node);
  return { node, writes: () => writes };
}

test('a write through a backend is recorded by the enabled bitmaps of the node it passes, not by disabled ones', async () => {
  const graph = new NodeGraph();
  const disk = memoryNode(graph, 'disk');
  const on = await disk.bitmaps.add('on', { granularity: 65536 });
  const off = await disk.bitmaps.add('off', { granularity: 65536, disabled: true });
  const backend = graph.attachBackend('test', disk);
  await backend.write(70000, new Uint8Array(10));
  assert.deepEqual([...on.dirtyExtents()], [{ offset: 65536, length: 65536 }]);
  assert.equal(off.count(), 0);
  await graph.close();
});

test('a filter put in a node\'s place takes over every parent, backends included, and its own edge keeps pointing at the node', async () => {
  const graph = new NodeGraph();
  const disk = memoryNode(graph, 'disk');
  const user = graph.attachBackend('user', disk);
  const { node: filter, writes } = countingNode(graph, 'filter', disk);
  graph.replace(disk, filter);
  assert.equal(user.node, filter);
  assert.equal(filter.child('file')?.node, disk);
  await user.write(0, new Uint8Array([1, 2, 3]));
  assert.equal(writes(), 1);
  assert.deepEqual(await disk.read(0, 3), new Uint8Array([1, 2, 3]));
  assert.deepEqual(graph.topLevel().map((n) => n.name), ['filter']);
  await graph.close();
});

test('trim on a node without discard=unmap changes nothing and is not recorded, as QEMU\'s default discard=ignore', async () => {
  const graph = new NodeGraph();
  const disk = memoryNode(graph, 'disk', { unmap: false });
  const bitmap = await disk.bitmaps.add('b', { granularity: 65536 });
  await disk.write(0, new Uint8Array(65536).fill(7));
  bitmap.clear();
  await disk.trim(0, 65536);
  assert.equal(bitmap.count(), 0);
  assert.equal((await disk.read(0, 1))[0], 7);
  await assert.rejects(disk.trim(MiB, 1), { code: 'OUT_OF_RANGE' });
  await graph.close();
});

test('a drained section waits for the requests in flight and holds new ones back until it ends', async () => {
  const graph = new NodeGraph();
  const disk = memoryNode(graph, 'disk');
  const backend = graph.attachBackend('user', disk);
  const order: string[] = [];
  const first = backend.write(0, new Uint8Array(4096));
  assert.equal(backend.inFlight, 1);
  const section = graph.drained(async () => {
    order.push(`section, ${backend.inFlight} in flight`);
    const held = backend.write(4096, new Uint8Array(4096)).then(() => order.push('held done'));
    await new Promise((r) => setImmediate(r));
    order.push(`section end, ${backend.inFlight} in flight`);
    return { held };
  });
  await first;
  const { held } = await section;
  await held;
  assert.deepEqual(order, ['section, 0 in flight', 'section end, 0 in flight', 'held done']);
  await graph.close();
});

test('removing a node removes its implicit children with no other parent and keeps explicit ones', async () => {
  const graph = new NodeGraph();
  const implicit = memoryNode(graph, '#block001', { implicit: true });
  const explicit = memoryNode(graph, 'shared');
  const top = new BlockNode({ name: 'top', driver: 'pair', readOnly: false, implicit: false, options: {}, unmap: true });
  top.attachChild('file', implicit);
  top.attachChild('backing', explicit);
  top.setDriver({ device: new MemoryBlockDevice(MiB), filename: 'top' });
  graph.add(top);
  await graph.remove(top);
  assert.deepEqual(graph.nodes.map((n) => n.name), ['shared']);
  assert.equal(explicit.parents.size, 0);
  await graph.close();
  assert.deepEqual(graph.nodes, []);
});
