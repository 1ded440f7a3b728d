/**
 * `--blockdev` against QEMU 7.2's `-blockdev`: the same arguments given to qemu-system-x86_64 and
 * to `parseBlockdevSpec` are accepted or refused alike, with the same texts; and for options that
 * QEMU reports back (`query-named-block-nodes`), the values bitback reads are the ones QEMU used.
 *
 * QEMU checks a `-blockdev` while it reads its command line, before it opens anything: a second
 * `-blockdev` with an unknown member (the sentinel) fails at that stage, so "the sentinel's error"
 * means "the first one was accepted", and no node is ever opened.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BLOCKDEV_DRIVERS, blockdevOptions, parseBlockdevSpec, type BlockdevOptions } from '../../src/engine/options/index.js';
import { BlockdevSpecError } from '../../src/engine/options/errors.js';
import { BLOCKDEV_CASES } from '../../src/engine/options/testing/blockdev-cases.js';
import { digestIntrospection, digestSchema, type SchemaInfo } from '../../src/engine/options/testing/schema-digest.js';
import { runProgram } from '../helpers/cli.js';
import { needPeers } from '../helpers/peers.js';
import { startQemu, type QemuInstance } from '../helpers/qemu.js';

const skip = needPeers('qemu-system-x86_64');
const QEMU = 'qemu-system-x86_64';
const BASE_ARGS = ['-M', 'none', '-nodefaults', '-display', 'none'];
const SENTINEL = 'driver=null-co,bitback-sentinel=1';

/** QEMU's verdict on `spec`: 'accepted', or its text after the `-blockdev SPEC: ` prefix. */
async function qemuVerdict(spec: string): Promise<string> {
  const r = await runProgram(QEMU, [...BASE_ARGS, '-blockdev', spec, '-blockdev', SENTINEL]);
  assert.notEqual(r.status, 0, `QEMU ran with ${spec}`);
  if (r.stderr.includes(`-blockdev ${SENTINEL}: `)) return 'accepted';
  const prefix = `${QEMU}: -blockdev ${spec}: `;
  assert.ok(r.stderr.startsWith(prefix), `unexpected QEMU output for ${spec}: ${r.stderr}`);
  return r.stderr.slice(prefix.length).trimEnd();
}

function ourVerdict(spec: string): string {
  try {
    parseBlockdevSpec(spec);
    return 'accepted';
  } catch (e) {
    assert.ok(e instanceof BlockdevSpecError, String(e));
    return e.desc;
  }
}

/** Runs `fn` on every item, `width` at a time. */
async function eachLimited<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

test('QEMU and parseBlockdevSpec() accept and refuse the same -blockdev arguments, with the same texts', { skip, timeout: 300_000 }, async () => {
  const differences: string[] = [];
  await eachLimited(BLOCKDEV_CASES, 2, async (c) => {
    const theirs = await qemuVerdict(c.spec);
    const ours = ourVerdict(c.spec);
    if (theirs !== ours) differences.push(`${JSON.stringify(c.spec)}\n  QEMU: ${theirs}\n  ours: ${ours}`);
    // The recorded text still matches this QEMU (the unit test checks ours against it).
    else if (theirs !== (c.desc ?? 'accepted')) differences.push(`${JSON.stringify(c.spec)}: recorded ${c.desc ?? 'accepted'}, QEMU now ${theirs}`);
  });
  assert.deepEqual(differences, []);
});

test('the BlockdevOptions schema has the members, order and types QEMU introspects for blockdev-add', { skip, timeout: 120_000 }, async () => {
  let qemu: QemuInstance | undefined;
  try {
    qemu = await startQemu(BASE_ARGS);
    const entries = await qemu.qmp<SchemaInfo[]>('query-qmp-schema');
    const schema = new Map(entries.map((e) => [e.name, e]));
    const argType = (schema.get('blockdev-add') as unknown as { 'arg-type': string })['arg-type'];
    const theirs = digestIntrospection(schema, argType, argType, BLOCKDEV_DRIVERS);
    // bitback's driver enum is QEMU's, cut down to the supported drivers.
    const driverEnum = /^\{driver:enum\(([^)]*)\)/.exec(theirs);
    assert.ok(driverEnum !== null, theirs.slice(0, 200));
    for (const d of BLOCKDEV_DRIVERS) assert.ok(driverEnum[1]!.split(',').includes(d), `QEMU has no driver ${d}`);
    const ours = digestSchema(blockdevOptions, (t) => t === blockdevOptions);
    assert.equal(ours, theirs.replace(driverEnum[0], `{driver:enum(${BLOCKDEV_DRIVERS.join(',')})`));
  } finally {
    await qemu?.kill();
  }
});

interface NamedNode {
  'node-name': string;
  drv: string;
  ro: boolean;
  detect_zeroes: string;
  cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  image: { 'virtual-size': number };
}

test('the values parseBlockdevSpec() reads are the ones QEMU opened the nodes with', { skip, timeout: 120_000 }, async () => {
  const specs = [
    'null-co,node-name=n1,size=0x100000,read-only=on,cache.direct=on,cache.no-flush=yes',
    'driver=null-co,node-name=n2,size=+012345,discard=unmap,detect-zeroes=unmap,read-only=n',
    'driver=raw,node-name=r1,file.driver=null-co,file.node-name=r1-file,file.size=1048576,offset=0x1000,size=4096,force-share=on,read-only=y',
    '{"driver":"null-co","node-name":"j1","size":12345,"detect-zeroes":"on","cache":{"no-flush":true}}',
  ];
  const parsed = specs.map(parseBlockdevSpec);
  let qemu: QemuInstance | undefined;
  try {
    qemu = await startQemu([...BASE_ARGS, ...specs.flatMap((s) => ['-blockdev', s])]);
    const nodes = await qemu.qmp<NamedNode[]>('query-named-block-nodes', { flat: true });
    for (const options of parsed) {
      const name = options['node-name']!;
      const node = nodes.find((n) => n['node-name'] === name);
      assert.ok(node !== undefined, `QEMU has no node ${name}`);
      assert.deepEqual(summary(node), expectedSummary(options), name);
    }
  } finally {
    await qemu?.kill();
  }
});

/** What QEMU reports of a node, in terms of the options it was given. */
function summary(node: NamedNode): unknown {
  return {
    driver: node.drv,
    readOnly: node.ro,
    detectZeroes: node.detect_zeroes,
    direct: node.cache.direct,
    noFlush: node.cache['no-flush'],
    size: node.image['virtual-size'],
  };
}

/** What those reports should be for `options` (QEMU's defaults where an option is absent). */
function expectedSummary(options: BlockdevOptions): unknown {
  // QEMU reports sizes in whole 512-byte sectors: octal 012345 (5349) shows as 5632.
  const bytes = options.driver === 'null-co' ? (options.size ?? 2 ** 30) : options.driver === 'raw' ? options.size : undefined;
  const size = bytes === undefined ? undefined : Math.ceil(bytes / 512) * 512;
  return {
    driver: options.driver,
    readOnly: options['read-only'] ?? false,
    detectZeroes: options['detect-zeroes'] ?? 'off',
    direct: options.cache?.direct ?? false,
    noFlush: options.cache?.['no-flush'] ?? false,
    size,
  };
}
