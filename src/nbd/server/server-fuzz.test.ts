/**
 * Fuzzes the NBD server with random and mutated handshakes and requests (bad magic, unknown
 * options and commands, lengths past the limits, out-of-range offsets, disconnects in the middle
 * of a message, writes to read-only exports). Every input must get the reply proto.md prescribes
 * (testing/fuzz-oracle.ts) or a clean disconnect; a well-behaved client is served afterwards; and
 * a client that floods requests without reading replies holds a bounded amount of server memory.
 *
 * BITBACK_FUZZ_SECONDS (default 3) bounds the run; the run seed is printed, and a failure names
 * the seed of its iteration: BITBACK_FUZZ_SEED=<seed> replays that iteration first.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { DirtyBitmap } from '../../bitmap/index.js';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { Random } from '../../block/testing/pattern.js';
import { MAX_OPTION_LENGTH, NBD_CMD_READ, encodeRequest } from '../protocol/index.js';
import { runIteration, type FuzzWorld } from './testing/fuzz-scenarios.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { readReplyData } from './testing/replies.js';

const SECONDS = Number(process.env.BITBACK_FUZZ_SECONDS ?? '3');
const RUN_SEED = Date.now() >>> 0;
const REPLAY = process.env.BITBACK_FUZZ_SEED === undefined ? undefined : Number(process.env.BITBACK_FUZZ_SEED) >>> 0;
const MAX_PAYLOAD = 65536;
const SIZE = (1 << 20) + 4096 + 512;

function iterationSeed(seed: number, n: number): number {
  return (seed + Math.imul(n, 0x9e3779b9)) >>> 0;
}

/** Waits (asserting no duration) until `condition` holds. */
async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; !condition(); i++) {
    if (i > 4000) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('NbdServer fuzzing', () => {
  let t: TestServer;
  let world: FuzzWorld;
  before(async () => {
    const random = new Random(RUN_SEED ^ 0x5eed);
    const model = new Uint8Array(SIZE);
    for (let i = 0; i < 20; i++) {
      const offset = random.below(SIZE - 70_000);
      model.set(random.nonZeroBytes(random.below(70_000)), offset);
    }
    const device = MemoryBlockDevice.fromBytes(model);
    const bitmap = new DirtyBitmap({ size: SIZE, granularity: 65536, name: 'b0' });
    bitmap.set(65536, 3 * 65536);
    bitmap.set(SIZE - 100, 100);
    t = await startTestServer(
      [
        { name: '', device, bitmaps: [bitmap] },
        { name: 'ro', device, readOnly: true },
      ],
      { maxPayload: MAX_PAYLOAD, maxInFlight: 8 },
    );
    world = {
      size: SIZE,
      maxPayload: MAX_PAYLOAD,
      maxOption: MAX_OPTION_LENGTH,
      model,
      bitmap,
      exports: {
        '': { readOnly: false, contexts: ['base:allocation', 'qemu:allocation-depth', 'qemu:dirty-bitmap:b0'] },
        ro: { readOnly: true, contexts: ['base:allocation', 'qemu:allocation-depth'] },
      },
      connect: () => t.connect(),
    };
  });
  after(() => t.close());

  async function wellBehavedRead(): Promise<void> {
    const c = await t.connect();
    try {
      await c.hello();
      await c.negotiate({ structured: true });
      const offset = 1000;
      const { data } = readReplyData(await c.call({ type: NBD_CMD_READ, offset, length: MAX_PAYLOAD }), offset, MAX_PAYLOAD);
      assert.deepEqual(data, world.model.subarray(offset, offset + MAX_PAYLOAD));
    } finally {
      c.close();
    }
  }

  test('random and mutated handshakes and requests get the prescribed replies or a clean disconnect', async () => {
    process.stdout.write(`# NBD server fuzz: run seed ${RUN_SEED}${REPLAY !== undefined ? `, replaying ${REPLAY}` : ''}\n`);
    const deadline = Date.now() + SECONDS * 1000;
    const seeds = function* (): Generator<number> {
      if (REPLAY !== undefined) yield REPLAY;
      for (let n = 0; ; n++) yield iterationSeed(RUN_SEED, n);
    };
    let iterations = 0;
    for (const seed of seeds()) {
      if (iterations > 0 && Date.now() > deadline) break;
      const log: string[] = [];
      try {
        await runIteration(world, seed, log);
        if (iterations % 20 === 0) await wellBehavedRead();
      } catch (e) {
        const steps = log.slice(-15).join('\n  ');
        assert.fail(`BITBACK_FUZZ_SEED=${seed} failed: ${e instanceof Error ? e.message : String(e)}\n  ${steps}`);
      }
      iterations++;
    }
    await wellBehavedRead();
    assert.deepEqual(t.errors.filter((e) => e.startsWith('NBD request')), [], 'no request handler may fail unexpectedly');
    process.stdout.write(`# NBD server fuzz: ${iterations} connections, ${t.errors.length} protocol violations reported\n`);
  });

  test('a client that floods requests without reading replies holds bounded server memory', async () => {
    const c = await t.connect();
    try {
      await c.hello();
      await c.negotiate({ structured: true });
      const count = 600;
      const requests = Array.from({ length: count }, (_, i) => encodeRequest({ type: NBD_CMD_READ, flags: 0, cookie: BigInt(i + 1), offset: (i * 4096) % (SIZE - MAX_PAYLOAD), length: MAX_PAYLOAD }, false));
      c.send(...requests);
      // The replies pile up unread until the server stops reading requests.
      await until(() => {
        const s = t.server.stats();
        return s.pausedConnections === 1 && s.requestsInFlight === 0;
      }, 'the server to stop reading the flooding client');
      const stats = t.server.stats();
      // Bounded by the flow control: unsent replies past one maximum payload stop reading, and
      // what was in flight then (at most twice the maximum payload) may still be written.
      assert.ok(stats.maxConnectionBytes <= 5 * MAX_PAYLOAD, `the connection holds ${stats.maxConnectionBytes} bytes: ${JSON.stringify(stats)}`);
      assert.ok(stats.requestsWaiting <= (2 * 65536) / 28, `${stats.requestsWaiting} requests wait`);
      // Reading the replies lets the server go on; every request is answered.
      const seen = new Set<bigint>();
      for (let i = 0; i < count; i++) {
        const reply = await c.reply();
        seen.add(reply[0]!.cookie);
      }
      assert.equal(seen.size, count);
    } finally {
      c.close();
    }
  });
});
