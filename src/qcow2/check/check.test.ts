import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InvalidArgumentError, NotFoundError } from '../../errors.js';
import { checkQcow2 } from './check.js';
import { buildImage, withInteger } from './testing/image-builder.js';

/** A built image followed by `extra` zero clusters whose refcounts are set to 1: `extra` leaks. */
function leakyImage(extra: number): Uint8Array {
  const { bytes, layout } = buildImage();
  const cs = layout.clusterSize;
  let out: Uint8Array = new Uint8Array(bytes.length + extra * cs);
  out.set(bytes);
  for (let k = 0; k < extra; k++) out = withInteger(out, layout.refcountBlock + (bytes.length / cs + k) * 2, 2, 1);
  return out;
}

describe('checkQcow2()', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-check-unit-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('checkQcow2() of a missing file throws NotFoundError naming it', async () => {
    const path = join(dir, 'missing.qcow2');
    await assert.rejects(checkQcow2(path), (e: unknown) => e instanceof NotFoundError && e.message.includes(path));
  });

  test('checkQcow2() rejects an unknown repair mode and a negative maxFindings', async () => {
    const path = join(dir, 'args.qcow2');
    await writeFile(path, buildImage().bytes);
    await assert.rejects(checkQcow2(path, { repair: 'everything' as 'all' }), InvalidArgumentError);
    await assert.rejects(checkQcow2(path, { maxFindings: -1 }), InvalidArgumentError);
  });

  test('checkQcow2() counts every leak but keeps at most maxFindings findings', async () => {
    const path = join(dir, 'leaky.qcow2');
    await writeFile(path, leakyImage(5));
    const result = await checkQcow2(path, { maxFindings: 2 });
    assert.equal(result.leaks, 5);
    assert.equal(result.corruptions, 0);
    assert.equal(result.findings.length, 2);
    assert.equal(result['findings-omitted'], 3);
    assert.deepEqual(result.findings.map((f) => f.kind), ['leak', 'leak']);
  });

  test('checkQcow2() does not write to the image without repair', async () => {
    const path = join(dir, 'untouched.qcow2');
    const bytes = leakyImage(3);
    await writeFile(path, bytes);
    await checkQcow2(path);
    assert.deepEqual(new Uint8Array(await readFile(path)), bytes);
  });

  test("repair 'leaks' frees the leaked clusters, keeps the file length, and reports them fixed", async () => {
    const path = join(dir, 'repair.qcow2');
    const bytes = leakyImage(4);
    await writeFile(path, bytes);
    const result = await checkQcow2(path, { repair: 'leaks' });
    assert.equal(result['leaks-fixed'], 4);
    assert.equal(result.leaks, 0);
    assert.equal(result.corruptions, 0);
    assert.equal(result.findings.filter((f) => f.repaired === true).length, 4);
    const after = await readFile(path);
    assert.equal(after.length, bytes.length);
    const again = await checkQcow2(path);
    assert.equal(again.leaks + again.corruptions + again['check-errors'], 0);
  });

  test("repair 'leaks' clears the dirty bit once nothing is wrong", async () => {
    const path = join(dir, 'dirty.qcow2');
    await writeFile(path, withInteger(leakyImage(1), 72, 8, 1n)); // incompatible_features: dirty
    await checkQcow2(path, { repair: 'leaks' });
    const after = await readFile(path);
    assert.equal(after.readBigUInt64BE(72), 0n);
  });
});
