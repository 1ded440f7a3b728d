/**
 * A bounded mutation fuzzer of the qcow2 reader and writer (Qcow2Image): mutants of images that
 * qemu-img made are opened, read whole, mapped and written to; only typed BitbackErrors may come
 * out, and no mutant may hang. The iterations run in a worker thread watched from here, so even a
 * synchronous endless loop is caught (the worker is terminated and the seed printed).
 * BITBACK_FUZZ_SECONDS (default 4) bounds the run; BITBACK_FUZZ_SEED replays a seed first.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { needPeers } from '../helpers/peers.js';
import { makeQcow2 } from '../../src/qcow2/check/testing/qemu-tools.js';

const skip = needPeers('qemu-img', 'qemu-io');
const SECONDS = Number(process.env.BITBACK_FUZZ_SECONDS ?? '4');
const SEED = (Date.now() >>> 0);
const REPLAY = process.env.BITBACK_FUZZ_SEED === undefined ? undefined : Number(process.env.BITBACK_FUZZ_SEED) >>> 0;
/** No progress for this long means a mutant hangs the reader. */
const WATCHDOG_MS = 30_000;

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bitback-open-fuzz-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('mutated qcow2 images give typed errors or data, never a crash or a hang', { skip }, async () => {
  const bases = [join(dir, 'a.qcow2'), join(dir, 'b.qcow2'), join(dir, 'c.qcow2'), join(dir, 'd.qcow2')];
  await makeQcow2(bases[0]!, { size: '4M', io: ['write -P 0x11 0 256k', 'write -z 1M 64k', 'write -P 0x12 3M 64k'], snapshots: [{ name: 's', io: ['write -P 0x13 0 64k'] }] });
  await makeQcow2(bases[1]!, { size: '1M', options: ['cluster_size=512'], io: ['write -P 0x11 0 8k', 'write -P 0x12 300k 2k'] });
  await makeQcow2(bases[2]!, { size: '2M', options: ['compat=0.10', 'cluster_size=4096', ], io: ['write -P 0x11 0 32k'] });
  await makeQcow2(bases[3]!, { size: '2M', options: ['cluster_size=4096', 'refcount_bits=64'], bitmaps: ['b0'], io: ['write -P 0x11 4k 40k'] });
  const worker = new Worker(new URL('../helpers/qcow2-open-fuzz-worker.js', import.meta.url), {
    workerData: { bases, scratch: dir, seed: SEED, seconds: SECONDS, ...(REPLAY !== undefined ? { replay: REPLAY } : {}) },
  });
  const failures: string[] = [];
  let last = { n: -1, seed: -1 };
  const outcome = await new Promise<{ iterations: number; completed: number } | { hung: true }>((resolve, reject) => {
    let watchdog = setTimeout(() => resolve({ hung: true }), WATCHDOG_MS);
    worker.on('message', (m: { kind: string; n?: number; seed?: number; description?: string[]; error?: string; iterations?: number; completed?: number }) => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => resolve({ hung: true }), WATCHDOG_MS);
      if (m.kind === 'progress') last = { n: m.n!, seed: m.seed! };
      else if (m.kind === 'failure') failures.push(`BITBACK_FUZZ_SEED=${m.seed}: ${m.description?.join('; ')}\n${m.error}`);
      else if (m.kind === 'done') {
        clearTimeout(watchdog);
        resolve({ iterations: m.iterations!, completed: m.completed! });
      }
    });
    worker.on('error', (e) => {
      clearTimeout(watchdog);
      reject(e);
    });
  });
  await worker.terminate();
  assert.ok(!('hung' in outcome), `mutant hung the reader: BITBACK_FUZZ_SEED=${last.seed} (iteration ${last.n})`);
  assert.deepEqual(failures.slice(0, 3), []);
  assert.ok('iterations' in outcome && outcome.iterations > 0, 'the fuzzer ran no iteration');
  // A fuzzer whose every mutant dies at the header tests nothing deeper: many must get through.
  assert.ok('completed' in outcome && outcome.completed > outcome.iterations / 10, `only ${'completed' in outcome ? outcome.completed : 0} mutants got past opening`);
  if ('iterations' in outcome) process.stdout.write(`# qcow2 reader fuzz: ${outcome.iterations} mutants (${outcome.completed} opened, read and written without error), seed ${SEED}\n`);
});
