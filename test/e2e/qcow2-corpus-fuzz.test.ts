/**
 * A bounded mutation fuzzer of checkQcow2 and the qcow2 decoders, over images qemu-img made:
 * metadata bytes flipped, table entries overwritten with boundary values, metadata clusters
 * zeroed or swapped, files truncated. Only results with well-formed findings and typed errors
 * may come out. Runs for BITBACK_FUZZ_SECONDS (default 5); seeded by BITBACK_FUZZ_SEED
 * (default: the clock). A failure prints the seed of the failing iteration: run again with
 * BITBACK_FUZZ_SEED set to it to replay that iteration first.
 *
 * Also a differential run with a fixed seed (mutants that qemu-img can check must get the same
 * counts from checkQcow2, apart from the differences docs/qcow2-check.md lists), and the corpus
 * builder checked against qemu-img: its images are clean for qemu-img too.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeImageHeader, geometryOf } from '../../src/qcow2/format/index.js';
import { readStatistics } from '../../src/qcow2/check/image-file.js';
import { buildImage } from '../../src/qcow2/check/testing/image-builder.js';
import { iterationSeed, metadataRanges, mutate, prng, type Range } from '../../src/qcow2/check/testing/fuzz.js';
import { checkTyped, decodeAllTyped } from '../../src/qcow2/check/testing/outcome.js';
import { makeQcow2, mustRun, qemuImgCheckJson, type MakeImageOptions } from '../../src/qcow2/check/testing/qemu-tools.js';
import { checkQcow2 } from '../../src/qcow2/check/index.js';
import { needPeers } from '../helpers/peers.js';

const skip = needPeers('qemu-img', 'qemu-io');
const SECONDS = Number(process.env.BITBACK_FUZZ_SECONDS ?? '5');
const SEED = process.env.BITBACK_FUZZ_SEED === undefined ? Date.now() >>> 0 : Number(process.env.BITBACK_FUZZ_SEED) >>> 0;

const BASES: Array<{ name: string; image: MakeImageOptions; compress?: string }> = [
  {
    name: 'snapshots and a bitmap',
    image: { size: '8M', bitmaps: ['b0'], io: ['write -P 0x11 0 256k', 'write -P 0x12 4M 64k'], snapshots: [{ name: 's1', io: ['write -P 0x13 64k 64k'] }] },
  },
  { name: '512-byte clusters', image: { size: '1M', options: ['cluster_size=512'], io: ['write -P 0x11 0 8k', 'write -P 0x12 300k 2k'], snapshots: [{ name: 's', io: ['write -P 0x13 0 512'] }] } },
  { name: '1-bit refcounts', image: { size: '4M', options: ['cluster_size=4096', 'refcount_bits=1'], io: ['write -P 0x11 0 64k', 'write -z 1M 8k'] } },
  { name: 'a version 2 image', image: { size: '4M', options: ['compat=0.10', 'cluster_size=4096'], io: ['write -P 0x11 0 32k'], snapshots: [{ name: 's' }] } },
  { name: 'extended L2 entries', image: { size: '4M', options: ['extended_l2=on', 'cluster_size=16384'], io: ['write -P 0x11 0 2k', 'write -P 0x12 1M 64k'] } },
  { name: 'compressed clusters', image: { size: '4M', io: ['write -P 0x11 0 64k', 'write -P 0x12 1M 12k'] }, compress: '4096' },
];

describe('fuzzing checkQcow2() with mutated qemu-img images', { skip }, () => {
  let dir: string;
  const bases: Array<{ name: string; bytes: Uint8Array; ranges: Range[]; clusterSize: number }> = [];
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-qcow2-fuzz-'));
    for (const [i, base] of BASES.entries()) {
      let path = join(dir, `base-${i}.qcow2`);
      await makeQcow2(path, base.image);
      if (base.compress !== undefined) {
        const compressed = join(dir, `base-${i}-c.qcow2`);
        await mustRun('qemu-img', ['convert', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', `cluster_size=${base.compress}`, path, compressed]);
        path = compressed;
      }
      const bytes = new Uint8Array(await readFile(path));
      const clusterSize = geometryOf(decodeImageHeader(bytes).header).clusterSize;
      bases.push({ name: base.name, bytes, ranges: metadataRanges(bytes), clusterSize });
    }
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('the corpus builder makes images that qemu-img check finds clean', async () => {
    for (const options of [{}, { snapshot: true }, { bitmap: true }, { clusterBits: 9, snapshot: true, bitmap: true }, { refcountOrder: 0 }, { refcountOrder: 6, clusterBits: 16, snapshot: true }]) {
      const path = join(dir, 'built.qcow2');
      await writeFile(path, buildImage(options).bytes);
      const check = await qemuImgCheckJson(path);
      assert.equal(check.status, 0, `${JSON.stringify(options)}: ${check.stderr}`);
    }
  });

  test('mutants that qemu-img can check get the same counts from checkQcow2 (fixed seed)', async (t) => {
    const path = join(dir, 'differential.qcow2');
    let compared = 0;
    for (let n = 0; n < 20 * bases.length; n++) {
      const seed = iterationSeed(0xb17bac, n);
      const base = bases[n % bases.length]!;
      const mutation = mutate(base.bytes, base.ranges, base.clusterSize, seed);
      await writeFile(path, mutation.bytes);
      const theirs = await qemuImgCheckJson(path);
      if (theirs.json === undefined || theirs.status === 1) continue; // qemu-img cannot check it
      let ours;
      try {
        ours = await checkQcow2(path, { maxFindings: 1_000_000 });
      } catch {
        continue; // a typed error where qemu-img reads on: a known difference (docs/qcow2-check.md)
      }
      // Known differences: overlaps are extra corruptions; bad snapshot tables and bitmap
      // directories are read differently.
      if (ours.findings.some((f) => f.kind === 'snapshot' || f.kind === 'bitmap')) continue;
      const overlaps = ours.findings.filter((f) => f.kind === 'overlap').length;
      const what = `seed ${seed} (base image: ${base.name}; ${mutation.description.join('; ')})`;
      const q = (key: string): unknown => theirs.json![key] ?? 0;
      assert.equal(ours.corruptions - overlaps, q('corruptions'), `corruptions of ${what}\n${theirs.stderr}`);
      assert.equal(ours.leaks, q('leaks'), `leaks of ${what}\n${theirs.stderr}`);
      assert.equal(ours['check-errors'], q('check-errors'), `check errors of ${what}`);
      for (const key of ['image-end-offset', 'allocated-clusters', 'fragmented-clusters', 'compressed-clusters', 'total-clusters'] as const) {
        assert.equal(ours[key], q(key), `${key} of ${what}`);
      }
      compared++;
    }
    t.diagnostic(`${compared} of ${20 * bases.length} mutants compared with qemu-img`);
    assert.ok(compared >= 20, `only ${compared} mutants could be compared`);
  });

  test(`mutated images give only findings or typed errors (${SECONDS} s, seed ${SEED})`, { timeout: (SECONDS + 120) * 1000 }, async (t) => {
    t.diagnostic(`BITBACK_FUZZ_SEED=${SEED} BITBACK_FUZZ_SECONDS=${SECONDS}`);
    const deadline = Date.now() + SECONDS * 1000;
    const path = join(dir, 'mutant.qcow2');
    let iterations = 0;
    const outcomes = { results: 0, errors: 0 };
    for (let n = 0; n === 0 || Date.now() < deadline; n++) {
      const seed = iterationSeed(SEED, n);
      const base = bases[Math.floor(prng(seed ^ 0x5bd1e995)() * bases.length)]!;
      const mutation = mutate(base.bytes, base.ranges, base.clusterSize, seed);
      try {
        decodeAllTyped(mutation.bytes);
        await writeFile(path, mutation.bytes);
        readStatistics.largestBuffer = 0;
        const outcome = await checkTyped(path);
        // Never a buffer larger than the file, or than one (at most 2 MiB) cluster.
        assert.ok(readStatistics.largestBuffer <= Math.max(mutation.bytes.length, 2 * 1024 * 1024), `a read allocated ${readStatistics.largestBuffer} bytes`);
        if ('result' in outcome) outcomes.results++;
        else outcomes.errors++;
        if (n % 4 === 3) {
          await checkTyped(path, { repair: n % 8 === 3 ? 'leaks' : 'all' });
          await checkTyped(path);
        }
      } catch (e) {
        const why = e instanceof Error ? (e.stack ?? e.message) : String(e);
        assert.fail(`fuzz iteration failed; replay with BITBACK_FUZZ_SEED=${seed} (base image: ${base.name}; ${mutation.description.join('; ')}):\n${why}`);
      }
      iterations++;
    }
    t.diagnostic(`${iterations} iterations: ${outcomes.results} results, ${outcomes.errors} typed errors`);
  });
});
