import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { patternedContent } from '../block/testing/pattern.js';
import { convertImage } from './convert.js';
import { Qcow2Image } from './image/index.js';

const K = 1024;
let dir: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-convert-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('convertImage() with many small chunks in flight (buffers reused) copies raw to qcow2 and back byte for byte', async () => {
  const content = patternedContent(3 * K * K, 11);
  const source = join(dir, 'source.raw');
  await writeFile(source, content);
  const qcow2 = join(dir, 'copy.qcow2');
  const stats = await convertImage(source, qcow2, { sourceFormat: 'raw', targetFormat: 'qcow2', chunk: 48 * K, parallel: 5 });
  assert.equal(stats.virtualSize, content.length);
  const image = await Qcow2Image.open(qcow2, { readOnly: true });
  assert.deepEqual(await image.read(0, content.length), content);
  await image.close();

  const back = join(dir, 'back.raw');
  await convertImage(qcow2, back, { sourceFormat: 'qcow2', targetFormat: 'raw', chunk: 40 * K, parallel: 3 });
  assert.deepEqual(new Uint8Array(await readFile(back)), content);
});
