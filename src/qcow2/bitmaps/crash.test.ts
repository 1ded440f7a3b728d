/**
 * Crash safety of the bitmap stores, checked at every point: a scripted sequence (mode `track`:
 * attach, guest writes, add, remove, close; mode `edit`: add, merge, clear, remove) runs again
 * and again with every file write after the n-th failing, as if the process died there. For
 * every n, `qemu-img check` must find no corruption (leaks are allowed), the bitmaps must load,
 * and each one must be either inconsistent or hold exactly the bits of a state it really had —
 * never a bitmap marked consistent with other data.
 */
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { needPeers } from '../../../test/helpers/peers.js';
import { createQcow2 } from '../create.js';
import { ImageFile } from '../image/image-file.js';
import { checkImage } from '../image/testing/qemu-tools.js';
import { Qcow2Bitmaps } from './index.js';
import { GranuleModel } from './testing/granule-model.js';

const K = 1024;
const SIZE = 2 * K * K + 512;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-bitmaps-crash-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

type Extents = Array<{ offset: number; length: number }>;

/** Guest writes of the template and of the script. */
const BEFORE: Array<[number, number]> = [[0, 700], [300 * K, 20 * K], [SIZE - 1, 1]];
const DURING: Array<[number, number]> = [[1500 * K, 5 * K], [64 * K, 512]];

function model(granularity: number, ...writes: Array<Array<[number, number]>>): Extents {
  const m = new GranuleModel(SIZE, granularity);
  for (const list of writes) for (const [o, l] of list) m.write(o, l);
  return m.extents();
}

/** The template: bitmaps `a` (512 B) and `b` (64 KiB) stored consistent, with BEFORE recorded. */
async function makeTemplate(path: string): Promise<void> {
  await createQcow2(path, { size: SIZE, clusterSize: 512 });
  const editor = await Qcow2Bitmaps.open(path, { mode: 'edit' });
  await editor.add('a', { granularity: 512 });
  await editor.add('b', { granularity: 65536 });
  await editor.close();
  const tracking = await Qcow2Bitmaps.open(path);
  for (const [o, l] of BEFORE) await tracking.image.write(o, new Uint8Array(l).fill(7));
  await tracking.close();
}

const scripts: Record<'track' | 'edit', { run: (path: string) => Promise<void>; allowed: Record<string, Extents[]> }> = {
  track: {
    async run(path) {
      const bitmaps = await Qcow2Bitmaps.open(path);
      try {
        for (const [o, l] of DURING.slice(0, 1)) await bitmaps.image.write(o, new Uint8Array(l).fill(8));
        await bitmaps.add('c', { granularity: 4096 });
        await bitmaps.remove('b');
        for (const [o, l] of DURING.slice(1)) await bitmaps.image.write(o, new Uint8Array(l).fill(9));
      } finally {
        await bitmaps.close();
      }
    },
    allowed: {
      a: [model(512, BEFORE), model(512, BEFORE, DURING)],
      b: [model(65536, BEFORE)],
      c: [model(4096, DURING.slice(1))],
    },
  },
  edit: {
    async run(path) {
      const bitmaps = await Qcow2Bitmaps.open(path, { mode: 'edit' });
      try {
        await bitmaps.add('c', { granularity: 4096 });
        await bitmaps.merge('c', 'a');
        await bitmaps.clear('a');
        await bitmaps.remove('b');
      } finally {
        await bitmaps.close();
      }
    },
    allowed: {
      a: [model(512, BEFORE), []],
      b: [model(65536, BEFORE)],
      c: [[], model(4096, BEFORE)],
    },
  },
};

/** Runs `script` with every file write after the `limit`-th failing; returns how many writes were attempted. */
async function runUntil(script: (path: string) => Promise<void>, path: string, limit: number): Promise<number> {
  const original = ImageFile.prototype.write;
  let writes = 0;
  ImageFile.prototype.write = function (this: ImageFile, position: number, data: Uint8Array): Promise<void> {
    writes++;
    if (writes > limit) return Promise.reject(new Error('simulated crash'));
    return original.call(this, position, data);
  };
  try {
    await script(path);
  } catch (e) {
    if (!/simulated crash/.test(String(e) + String((e as Error).cause))) throw e;
  } finally {
    ImageFile.prototype.write = original;
  }
  return writes;
}

for (const [mode, script] of Object.entries(scripts)) {
  test(`a crash after any write of a ${mode}-mode sequence leaves no corruption and no bitmap marked consistent with wrong bits`, { skip: needPeers('qemu-img') }, async () => {
    const template = join(dir, `template-${mode}.qcow2`);
    await makeTemplate(template);
    const full = join(dir, `full-${mode}.qcow2`);
    await copyFile(template, full);
    const total = await runUntil(script.run, full, Infinity);
    assert.ok(total > 10, `the script writes (${total})`);
    const seen = new Set<string>();
    for (let limit = 0; limit <= total; limit++) {
      const path = join(dir, `${mode}-${limit}.qcow2`);
      await copyFile(template, path);
      await runUntil(script.run, path, limit);
      const report = await checkImage(path);
      assert.deepEqual([report.checkErrors, report.corruptions], [0, 0], `after ${limit} writes: ${report.text}`);
      const loaded = await Qcow2Bitmaps.open(path, { readOnly: true });
      for (const info of loaded.list()) {
        const allowed = script.allowed[info.name];
        assert.ok(allowed !== undefined, `after ${limit} writes: unexpected bitmap ${info.name}`);
        if (info.inconsistent) {
          seen.add(`${info.name}:inconsistent`);
          continue;
        }
        const extents = loaded.dirtyExtents(info.name);
        const match = allowed.findIndex((a) => JSON.stringify(a) === JSON.stringify(extents));
        assert.ok(match >= 0, `after ${limit} writes: ${info.name} is consistent with bits it never had: ${JSON.stringify(extents)}`);
        seen.add(`${info.name}:${match}`);
      }
      await loaded.close();
      await rm(path);
    }
    // The sequence really passed through its states (so the checks above were not vacuous).
    const expectSeen = mode === 'track' ? ['a:0', 'a:1', 'a:inconsistent', 'b:0', 'c:0'] : ['a:0', 'a:1', 'c:0', 'c:1', 'b:0'];
    for (const state of expectSeen) assert.ok(seen.has(state), `state ${state} seen (${[...seen].join(', ')})`);
  });
}
