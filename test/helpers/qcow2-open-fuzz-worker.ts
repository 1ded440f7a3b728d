/**
 * Worker of the qcow2 reader fuzzer (test/e2e/qcow2-open-fuzz.test.ts): mutates base images,
 * opens each mutant with Qcow2Image, reads it whole, walks its block status and (every other
 * mutant) writes to it. Posts `{ kind: 'progress', n, seed }` before each iteration so the
 * parent's watchdog knows which seed hung, and `{ kind: 'failure', ... }` for any error that is
 * not a typed BitbackError. Never exits on its own before the time budget is spent.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readFile, writeFile, rm } from 'node:fs/promises';
import { BitbackError } from '../../src/errors.js';
import { Qcow2Image } from '../../src/qcow2/image/index.js';
import { decodeImageHeader, geometryOf } from '../../src/qcow2/format/index.js';
import { iterationSeed, metadataRanges, mutate } from '../../src/qcow2/check/testing/fuzz.js';

interface Input {
  bases: string[];
  scratch: string;
  seed: number;
  seconds: number;
  /** Replay only this iteration seed first. */
  replay?: number;
}

const input = workerData as Input;
const post = (message: unknown): void => parentPort!.postMessage(message);

async function exercise(path: string, writable: boolean): Promise<void> {
  const image = await Qcow2Image.open(path, { readOnly: !writable, backing: 'none' });
  try {
    for (let offset = 0; offset < image.size; ) {
      const [first] = await image.blockStatus(offset, image.size - offset);
      offset = first === undefined ? image.size : first.offset + first.length;
    }
    const chunk = 1024 * 1024;
    for (let offset = 0; offset < Math.min(image.size, 64 * chunk); offset += chunk) {
      await image.read(offset, Math.min(chunk, image.size - offset));
    }
    if (writable) {
      await image.write(0, new Uint8Array(4096).fill(0x5a));
      await image.writeZeroes(Math.min(65536, image.size - 512), 512);
      await image.write(Math.max(0, image.size - 70000), new Uint8Array(70000 > image.size ? image.size : 70000).fill(1));
      await image.flush();
    }
  } finally {
    await image.close();
  }
}

async function main(): Promise<void> {
  const bases = await Promise.all(input.bases.map(async (path) => {
    const bytes = new Uint8Array(await readFile(path));
    const { header } = decodeImageHeader(bytes, bytes.length);
    return { bytes, ranges: metadataRanges(bytes), clusterSize: geometryOf(header).clusterSize };
  }));
  const deadline = Date.now() + input.seconds * 1000;
  const seeds = function* (): Generator<number> {
    if (input.replay !== undefined) yield input.replay;
    for (let n = 0; ; n++) yield iterationSeed(input.seed, n);
  };
  let n = 0;
  let completed = 0;
  for (const seed of seeds()) {
    if (Date.now() > deadline) break;
    const base = bases[seed % bases.length]!;
    const mutation = mutate(base.bytes, base.ranges, base.clusterSize, seed);
    const path = `${input.scratch}/mutant-${n % 2}.qcow2`;
    await writeFile(path, mutation.bytes);
    post({ kind: 'progress', n, seed });
    try {
      await exercise(path, seed % 2 === 0);
      completed++;
    } catch (e) {
      if (!(e instanceof BitbackError)) {
        post({ kind: 'failure', seed, description: mutation.description, error: (e as Error)?.stack ?? String(e) });
      } else if (!/qcow2|image|Cannot/.test(e.message)) {
        post({ kind: 'failure', seed, description: mutation.description, error: `typed error without context: ${e.message}` });
      }
    }
    await rm(path, { force: true });
    n++;
  }
  post({ kind: 'done', iterations: n, completed });
}

main().catch((e: unknown) => post({ kind: 'failure', seed: -1, description: ['worker crashed'], error: (e as Error)?.stack ?? String(e) }));
