import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { BlockNode } from './block-node.js';
import { NodeGraph } from './node-graph.js';
import { ALL_PERMISSIONS, BlockPermission, type PermissionRule } from './permissions.js';

const MiB = 1024 * 1024;
const { CONSISTENT_READ, WRITE, RESIZE } = BlockPermission;

function node(graph: NodeGraph, name: string, children: Record<string, BlockNode> = {}, options: { readOnly?: boolean } = {}): BlockNode {
  const n = new BlockNode({ name, driver: 'test', readOnly: options.readOnly ?? false, implicit: false, options: {}, unmap: true });
  for (const [role, child] of Object.entries(children)) n.attachChild(role, child);
  n.setDriver({ device: new MemoryBlockDevice(MiB), filename: name });
  graph.add(n);
  return n;
}

/** QEMU's copy-before-write rule for its source child. */
const unshareWriteWhenUsed: PermissionRule = (n, perm, shared) =>
  n.parents.size === 0 ? { perm, shared } : { perm: perm | CONSISTENT_READ, shared: shared & ~(WRITE | RESIZE) };

const conflict = (user: string, holder: string): string =>
  `Permission conflict on node 'disk0': permissions 'write' are both required by ${user} (uses node 'disk0' as '${user.startsWith('node') ? 'file' : 'root'}' child) ` +
  `and unshared by ${holder} (uses node 'disk0' as 'file' child).`;

function fleecing(graph: NodeGraph): { disk: BlockNode; filter: BlockNode } {
  const disk = node(graph, 'disk0');
  const filter = node(graph, 'cbw', { file: disk });
  filter.child('file')!.setRule(unshareWriteWhenUsed);
  return { disk, filter };
}

test('a writer of a node is refused with QEMU\'s text while a used filter above it unshares write, and nothing is attached', () => {
  const graph = new NodeGraph();
  const { disk, filter } = fleecing(graph);
  const writer = graph.attachBackend('first', disk, { perm: WRITE });
  writer.setPermissions({ perm: 0, shared: ALL_PERMISSIONS });
  graph.attachBackend('snapshot user', filter);
  assert.equal(filter.child('file')!.shared & WRITE, 0);
  assert.throws(() => graph.attachBackend('qemu-io', disk, { perm: WRITE }), { code: 'BUSY', reason: conflict('an unnamed block device', "node 'cbw'") });
  assert.equal(disk.parents.size, 2);
  assert.throws(() => writer.setPermissions({ perm: WRITE, shared: ALL_PERMISSIONS }), { reason: conflict('an unnamed block device', "node 'cbw'") });
  assert.equal(writer.root.perm, 0);
  graph.attachBackend('reader', disk, { perm: CONSISTENT_READ });
  const viaFilter = graph.attachBackend('through the filter', filter, { perm: WRITE });
  assert.equal(filter.child('file')!.perm, WRITE | CONSISTENT_READ);
  assert.equal(viaFilter.root.perm, WRITE);
});

test('a new user of the filter is refused while someone else writes the node below it; the filter stays unused', () => {
  const graph = new NodeGraph();
  const { disk, filter } = fleecing(graph);
  node(graph, 'raw', { file: disk });
  graph.attachBackend('export', graph.require('raw'), { perm: CONSISTENT_READ | WRITE });
  assert.throws(() => node(graph, 'snap', { file: filter }), {
    reason:
      "Permission conflict on node 'disk0': permissions 'write' are both required by node 'raw' (uses node 'disk0' as 'file' child) " +
      "and unshared by node 'cbw' (uses node 'disk0' as 'file' child).",
  });
  assert.equal(filter.parents.size, 0);
  assert.equal(filter.child('file')!.shared, ALL_PERMISSIONS);
});

test('when the filter\'s last user goes, the node below can be written again', async () => {
  const graph = new NodeGraph();
  const { disk, filter } = fleecing(graph);
  const user = graph.attachBackend('user', filter);
  assert.throws(() => graph.attachBackend('qemu-io', disk, { perm: WRITE }));
  await graph.detachBackend(user);
  graph.attachBackend('qemu-io', disk, { perm: WRITE });
});

test('write permission on a read-only node is refused with "Block node is read-only"', () => {
  const graph = new NodeGraph();
  const ro = node(graph, 'ro', {}, { readOnly: true });
  assert.throws(() => graph.attachBackend('writer', ro, { perm: WRITE }), { reason: 'Block node is read-only' });
  const filter = node(graph, 'f', { target: ro });
  assert.throws(() => filter.child('target')!.setRule(() => ({ perm: WRITE, shared: ALL_PERMISSIONS })), { reason: 'Block node is read-only' });
  assert.equal(filter.child('target')!.rule, undefined);
});

test('a backing edge passes only consistent reads, and shares writes only when every user of the overlay does', () => {
  const graph = new NodeGraph();
  const base = node(graph, 'base');
  const overlay = node(graph, 'overlay', { backing: base });
  const user = graph.attachBackend('user', overlay, { perm: WRITE | CONSISTENT_READ, shared: CONSISTENT_READ });
  const backing = overlay.child('backing')!;
  assert.equal(backing.perm, CONSISTENT_READ);
  assert.equal(backing.shared & WRITE, 0);
  user.setPermissions({ perm: WRITE | CONSISTENT_READ, shared: ALL_PERMISSIONS });
  assert.notEqual(backing.shared & WRITE, 0);
});

test('replace() leaves the edges below the new node (a fleecing image\'s backing edge) pointing at the old one', () => {
  const graph = new NodeGraph();
  const disk = node(graph, 'disk0');
  const fleece = node(graph, 'fleece', { backing: disk });
  const user = graph.attachBackend('device', disk, { perm: WRITE | CONSISTENT_READ });
  const filter = node(graph, 'cbw', { file: disk, target: fleece });
  filter.child('file')!.setRule(unshareWriteWhenUsed);
  graph.replace(disk, filter);
  assert.equal(user.node, filter);
  assert.equal(fleece.child('backing')!.node, disk);
  assert.equal(filter.child('file')!.node, disk);
  assert.equal(filter.child('file')!.perm, WRITE | CONSISTENT_READ);
  assert.throws(() => graph.attachBackend('qemu-io', disk, { perm: WRITE }), { reason: conflict('an unnamed block device', "node 'cbw'") });
});

test('replace() moves nothing when the moved users would conflict at the new node', () => {
  const graph = new NodeGraph();
  const disk = node(graph, 'disk0');
  const other = node(graph, 'other');
  graph.attachBackend('writer', other, { perm: WRITE });
  graph.attachBackend('exclusive', disk, { perm: CONSISTENT_READ, shared: CONSISTENT_READ });
  assert.throws(() => graph.replace(disk, other), { code: 'BUSY' });
  assert.equal(disk.parents.size, 1);
  assert.equal(other.parents.size, 1);
});
