import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QmpDispatcher } from '../../qmp/server/dispatcher.js';
import { blockdevAddSchema, type BlockdevOptions, type BlockdevOptionsOf, type BlockdevRef } from './blockdev-schema.js';
import { parseBlockdevSpec } from './blockdev-spec.js';
import { BlockdevSpecError } from './errors.js';
import { BLOCKDEV_CASES } from './testing/blockdev-cases.js';

function descOf(spec: string): string {
  try {
    parseBlockdevSpec(spec);
  } catch (e) {
    assert.ok(e instanceof BlockdevSpecError, String(e));
    return e.desc;
  }
  return 'accepted';
}

test('parseBlockdevSpec() accepts and refuses what QEMU 7.2 did, with its texts', () => {
  for (const c of BLOCKDEV_CASES) assert.equal(descOf(c.spec), c.desc ?? 'accepted', c.spec);
});

test('parseBlockdevSpec() converts keyval strings to the declared types', () => {
  assert.deepEqual(parseBlockdevSpec('qcow2,node-name=disk0,file.driver=file,file.filename=/a,,b.qcow2,backing=,read-only=on'), {
    driver: 'qcow2',
    'node-name': 'disk0',
    'read-only': true,
    file: { driver: 'file', filename: '/a,b.qcow2' },
    backing: '',
  });
  assert.deepEqual(parseBlockdevSpec('driver=null-co,size=0x100000,latency-ns=-1,read-zeroes=y,cache.direct=off'), {
    driver: 'null-co',
    cache: { direct: false },
    size: 1048576,
    'latency-ns': 2 ** 64 - 1,
    'read-zeroes': true,
  });
  assert.deepEqual(
    parseBlockdevSpec('driver=blkdebug,image=disk0,inject-error.0.event=read_aio,inject-error.0.errno=5,inject-error.0.once=on,set-state.0.event=flush_to_disk,set-state.0.new_state=2'),
    {
      driver: 'blkdebug',
      image: 'disk0',
      'inject-error': [{ event: 'read_aio', errno: 5, once: true }],
      'set-state': [{ event: 'flush_to_disk', new_state: 2 }],
    },
  );
  assert.deepEqual(parseBlockdevSpec('driver=qcow2,file=f,overlap-check=none'), { driver: 'qcow2', file: 'f', 'overlap-check': 'none' });
  assert.deepEqual(parseBlockdevSpec('driver=qcow2,file=f,overlap-check.template=all,overlap-check.active-l1=off'), {
    driver: 'qcow2',
    file: 'f',
    'overlap-check': { template: 'all', 'active-l1': false },
  });
});

test('parseBlockdevSpec() gives the same options for the JSON and the keyval form', () => {
  const json = parseBlockdevSpec(
    '{"driver":"copy-before-write","node-name":"cbw","file":"disk0","target":{"driver":"qcow2","file":{"driver":"file","filename":"/f.qcow2"},"backing":"disk0"},"bitmap":{"node":"disk0","name":"b0"},"cbw-timeout":30}',
  );
  const keyval = parseBlockdevSpec(
    'copy-before-write,node-name=cbw,file=disk0,target.driver=qcow2,target.file.driver=file,target.file.filename=/f.qcow2,target.backing=disk0,bitmap.node=disk0,bitmap.name=b0,cbw-timeout=30',
  );
  assert.deepEqual(keyval, json);
  assert.deepEqual(parseBlockdevSpec('{"driver":"qcow2","file":"f","backing":null}'), { driver: 'qcow2', file: 'f', backing: null });
});

test('parseBlockdevSpec() throws a BlockdevSpecError that names the spec and keeps QEMU\'s text', () => {
  try {
    parseBlockdevSpec('driver=null-co,size=1k');
    assert.fail('accepted');
  } catch (e) {
    assert.ok(e instanceof BlockdevSpecError);
    assert.equal(e.code, 'INVALID_ARGUMENT');
    assert.equal(e.spec, 'driver=null-co,size=1k');
    assert.equal(e.desc, "Parameter 'size' expects integer");
    assert.equal(e.message, "Cannot parse --blockdev driver=null-co,size=1k: Parameter 'size' expects integer");
  }
});

test('parseBlockdevSpec() refuses drivers the engine does not support, as a QEMU built without them', () => {
  assert.equal(descOf('driver=vmdk,file=x'), "Parameter 'driver' does not accept value 'vmdk'");
  assert.equal(descOf('{"driver":"throttle","file":"x"}'), "Parameter 'driver' does not accept value 'throttle'");
});

test('BlockdevOptions is a union on driver whose children are options or node names', async () => {
  const options: BlockdevOptions = { driver: 'qcow2', file: { driver: 'file', filename: '/x' }, backing: null };
  const child: BlockdevRef = options.driver === 'qcow2' ? options.file : '';
  const raw: BlockdevOptionsOf<'raw'> = { driver: 'raw', file: child, offset: 512 };
  // @ts-expect-error -- qcow2 needs `file`
  const missing: BlockdevOptions = { driver: 'qcow2' };
  // @ts-expect-error -- null-co has no `file`
  const extra: BlockdevOptionsOf<'null-co'> = { driver: 'null-co', file: 'x' };
  assert.ok(raw.file !== undefined && missing !== undefined && extra !== undefined);

  // The same schema serves blockdev-add: the handler gets typed, checked options.
  const seen: string[] = [];
  const dispatcher = new QmpDispatcher().register(
    'blockdev-add',
    (args) => {
      if (args.driver === 'nbd') seen.push(args.server.type);
      else seen.push(args.driver);
    },
    blockdevAddSchema,
  );
  await dispatcher.dispatch('blockdev-add', { driver: 'nbd', server: { type: 'unix', path: '/s' } }, { monitorId: 1 });
  await assert.rejects(dispatcher.dispatch('blockdev-add', { driver: 'nbd', server: { type: 'unix' } }, { monitorId: 1 }), {
    desc: "Parameter 'server.path' is missing",
  });
  assert.deepEqual(seen, ['unix']);
});
