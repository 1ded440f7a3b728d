import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DirtyBitmap } from '../../bitmap/index.js';
import { ExtentFlags, type BlockExtent } from '../../block/block-device.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_EINVAL,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_META_CONTEXT,
  decodeMetaContextReply,
  encodeInfoRequest,
  encodeMetaContextRequest,
} from '../protocol/index.js';
import { contextExtents, exportContexts, listContexts, setContexts } from './meta-contexts.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { blockStatusOf, replyError } from './testing/replies.js';
import { type RawClient, type RawOptionReply } from './testing/raw-client.js';

const SIZE = 4 << 20;

function bitmap(name: string): DirtyBitmap {
  return new DirtyBitmap({ size: SIZE, granularity: 65536, name });
}

const contexts = exportContexts([bitmap('b0'), bitmap('b1')], true);
const names = (list: { name: string }[]): string[] => list.map((c) => c.name);

test('exportContexts() lists base:allocation, qemu:allocation-depth, then the bitmaps', () => {
  assert.deepEqual(names(contexts), ['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b1']);
  assert.deepEqual(names(exportContexts([], false)), ['base:allocation']);
});

test('listContexts() treats base:, qemu: and qemu:dirty-bitmap: as wildcards and ignores unknown queries', () => {
  assert.deepEqual(names(listContexts(contexts, [])), names(contexts));
  assert.deepEqual(names(listContexts(contexts, ['base:'])), ['base:allocation']);
  assert.deepEqual(names(listContexts(contexts, ['qemu:'])), ['qemu:allocation-depth', 'qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b1']);
  assert.deepEqual(names(listContexts(contexts, ['qemu:dirty-bitmap:'])), ['qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b1']);
  assert.deepEqual(names(listContexts(contexts, ['qemu:dirty-bitmap:b1', 'x-other:thing', 'nonsense', 'qemu:dirty'])), ['qemu:dirty-bitmap:b1']);
});

test('setContexts() selects exact names only, once each', () => {
  assert.deepEqual(names(setContexts(contexts, ['qemu:', 'base:', 'qemu:dirty-bitmap:'])), []);
  assert.deepEqual(names(setContexts(contexts, ['qemu:dirty-bitmap:b1', 'base:allocation', 'base:allocation'])), ['base:allocation', 'qemu:dirty-bitmap:b1']);
});

test('contextExtents() merges equal neighbours, clamps to the range and honours the extent limit', async () => {
  const pieces: BlockExtent[] = [
    { offset: 0, length: 4096, flags: 0, depth: 1 },
    { offset: 4096, length: 4096, flags: 0, depth: 2 },
    { offset: 8192, length: 8192, flags: ExtentFlags.HOLE | ExtentFlags.ZERO, depth: 0 },
  ];
  // A device that answers one extent per call, unmerged, as devices may.
  const oneAtATime = async (offset: number, length: number): Promise<BlockExtent[]> => {
    const piece = pieces.find((p) => p.offset <= offset && offset < p.offset + p.length)!;
    return [{ ...piece, offset, length: Math.min(piece.offset + piece.length - offset, length) }];
  };
  const device = Object.assign(new MemoryBlockDevice(16384), { blockStatus: oneAtATime });
  const limits = { maxExtents: 100, maxDeviceCalls: 100 };
  assert.deepEqual(await contextExtents({ kind: 'allocation' }, device, 0, 16384, limits), [
    { length: 8192, flags: 0 },
    { length: 8192, flags: 3 },
  ]);
  assert.deepEqual(await contextExtents({ kind: 'depth' }, device, 1000, 10000, limits), [
    { length: 3096, flags: 1 },
    { length: 4096, flags: 2 },
    { length: 2808, flags: 0 },
  ]);
  assert.deepEqual(await contextExtents({ kind: 'depth' }, device, 0, 16384, { maxExtents: 1, maxDeviceCalls: 100 }), [{ length: 4096, flags: 1 }]);
  const b = bitmap('b');
  b.set(65536, 65536);
  assert.deepEqual(await contextExtents({ kind: 'bitmap', bitmap: b }, new MemoryBlockDevice(SIZE), 4096, 200_000, limits), [
    { length: 61440, flags: 0 },
    { length: 65536, flags: 1 },
    { length: 73024, flags: 0 },
  ]);
});

describe('NbdServer meta contexts', () => {
  let t: TestServer;
  const b0 = bitmap('b0');
  b0.set(1 << 20, 65536);
  before(async () => {
    const disk = new MemoryBlockDevice(SIZE);
    await disk.write(0, new Uint8Array(65536).fill(1));
    t = await startTestServer([
      { name: 'a', device: disk, bitmaps: [b0, bitmap('b1')] },
      { name: 'plain', device: new MemoryBlockDevice(SIZE), allocationDepth: false },
    ]);
  });
  after(() => t.close());

  async function structuredClient(): Promise<RawClient> {
    const c = await t.connect();
    await c.hello();
    assert.equal((await c.option(NBD_OPT_STRUCTURED_REPLY)).at(-1)!.type, NBD_REP_ACK);
    return c;
  }

  const contextReplies = (replies: RawOptionReply[]): Array<{ id: number; name: string }> =>
    replies.filter((r) => r.type === NBD_REP_META_CONTEXT).map((r) => decodeMetaContextReply(r.data));

  test('LIST and SET need structured replies', async () => {
    const c = await t.connect();
    await c.hello();
    const request = encodeMetaContextRequest({ exportName: 'a', queries: [] });
    assert.equal((await c.option(NBD_OPT_LIST_META_CONTEXT, request))[0]!.type, NBD_REP_ERR_INVALID);
    assert.equal((await c.option(NBD_OPT_SET_META_CONTEXT, request))[0]!.type, NBD_REP_ERR_INVALID);
  });

  test('LIST without queries lists every context of the export with id 0', async () => {
    const c = await structuredClient();
    const replies = await c.option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: [] }));
    assert.equal(replies.at(-1)!.type, NBD_REP_ACK);
    assert.deepEqual(contextReplies(replies), [
      { id: 0, name: 'base:allocation' },
      { id: 0, name: 'qemu:allocation-depth' },
      { id: 0, name: 'qemu:dirty-bitmap:b0' },
      { id: 0, name: 'qemu:dirty-bitmap:b1' },
    ]);
    const plain = await c.option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ exportName: 'plain', queries: ['qemu:'] }));
    assert.deepEqual(contextReplies(plain), []);
    assert.equal(plain.at(-1)!.type, NBD_REP_ACK);
  });

  test('LIST with the qemu:dirty-bitmap: wildcard lists the bitmaps; unknown exports and bad data are errors', async () => {
    const c = await structuredClient();
    const replies = await c.option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: ['qemu:dirty-bitmap:'] }));
    assert.deepEqual(contextReplies(replies).map((r) => r.name), ['qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b1']);
    assert.equal((await c.option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest({ exportName: 'x', queries: [] })))[0]!.type, NBD_REP_ERR_UNKNOWN);
    const bad = await c.option(NBD_OPT_LIST_META_CONTEXT, new Uint8Array([0, 0, 0, 1, 97, 0, 0, 0, 9]));
    assert.equal(bad[0]!.type, NBD_REP_ERR_INVALID);
  });

  test('SET gives each selected context an id unique on the connection; wildcards select nothing', async () => {
    const c = await structuredClient();
    const first = contextReplies(await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: ['base:allocation', 'qemu:dirty-bitmap:b0'] })));
    assert.deepEqual(first.map((r) => r.name), ['base:allocation', 'qemu:dirty-bitmap:b0']);
    const second = contextReplies(await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: ['base:allocation', 'qemu:'] })));
    assert.deepEqual(second.map((r) => r.name), ['base:allocation']);
    const ids = [...first, ...second].map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length);
    assert.ok(!ids.includes(0));
  });

  test('block status answers one chunk per context selected by the last SET', async () => {
    const c = await structuredClient();
    await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: ['qemu:dirty-bitmap:b1'] }));
    const negotiated = await c.negotiate({ exportName: 'a', contexts: ['base:allocation', 'qemu:dirty-bitmap:b0', 'qemu:allocation-depth'] });
    const byName = new Map([...negotiated.contexts].map(([id, name]) => [name, id]));
    const status = blockStatusOf(await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 2 << 20 }));
    assert.deepEqual([...status.keys()].sort(), [...negotiated.contexts.keys()].sort());
    assert.deepEqual(status.get(byName.get('base:allocation')!), [{ length: 65536, flags: 0 }, { length: (2 << 20) - 65536, flags: 3 }]);
    assert.deepEqual(status.get(byName.get('qemu:allocation-depth')!), [{ length: 65536, flags: 1 }, { length: (2 << 20) - 65536, flags: 0 }]);
    assert.deepEqual(status.get(byName.get('qemu:dirty-bitmap:b0')!), [{ length: 1 << 20, flags: 0 }, { length: 65536, flags: 1 }, { length: (1 << 20) - 65536, flags: 0 }]);
  });

  test('a failed SET leaves no context selected', async () => {
    const c = await structuredClient();
    await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: ['base:allocation'] }));
    assert.equal((await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'gone', queries: ['base:allocation'] })))[0]!.type, NBD_REP_ERR_UNKNOWN);
    await c.negotiate({ exportName: 'a' });
    assert.equal(replyError(await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).errno, NBD_EINVAL);
  });

  test('contexts set for one export are dropped when GO names another', async () => {
    const c = await structuredClient();
    await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: ['base:allocation'] }));
    assert.equal((await c.option(NBD_OPT_GO, encodeInfoRequest({ name: 'plain', infos: [] }))).at(-1)!.type, NBD_REP_ACK);
    c.startTransmission();
    assert.equal(replyError(await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).errno, NBD_EINVAL);
  });

  test('negotiating extended headers drops the contexts selected before', async () => {
    const c = await structuredClient();
    await c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'a', queries: ['base:allocation'] }));
    assert.equal((await c.option(NBD_OPT_EXTENDED_HEADERS)).at(-1)!.type, NBD_REP_ACK);
    c.extended = true;
    await c.negotiate({ exportName: 'a' });
    assert.equal(replyError(await c.call({ type: NBD_CMD_BLOCK_STATUS, offset: 0, length: 4096 })).errno, NBD_EINVAL);
  });
});
