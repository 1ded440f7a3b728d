import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RawFileDevice } from '../../block/raw-file-device.js';
import { Random } from '../../block/testing/pattern.js';
import { NBD_CMD_READ } from '../protocol/index.js';
import { NbdServer } from './server.js';
import { duplexPair } from '../../util/duplex-pair.js';
import { startTestServer, type TestServer } from './testing/harness.js';
import { RawClient } from './testing/raw-client.js';
import { readReplyData } from './testing/replies.js';

const KiB = 1024;
const SIZE = 4 * 1024 * KiB;
const READS = 48;
const READ_LENGTH = 64 * KiB;

/**
 * Sends READS reads of distinct ranges at once, reads none of the replies until every one was
 * sent, then checks each reply's bytes: a read buffer reused too early would show another
 * range's bytes.
 */
async function readAllAtOnce(c: RawClient, content: Uint8Array, structured: boolean): Promise<void> {
  await c.hello();
  await c.negotiate({ structured });
  const random = new Random(structured ? 1 : 2);
  const offsets = new Map<bigint, number>();
  for (let i = 0; i < READS; i++) {
    const offset = random.below(SIZE / READ_LENGTH) * READ_LENGTH + random.below(4096);
    const length = Math.min(READ_LENGTH, SIZE - offset);
    offsets.set(c.request({ type: NBD_CMD_READ, offset, length }), offset);
  }
  for (let i = 0; i < READS; i++) {
    const reply = await c.reply();
    const offset = offsets.get(reply[0]!.cookie)!;
    const length = Math.min(READ_LENGTH, SIZE - offset);
    assert.deepEqual(readReplyData(reply, offset, length).data, content.subarray(offset, offset + length), `the read at ${offset}`);
  }
}

describe('NbdServer read buffers', () => {
  let dir: string;
  let content: Uint8Array;
  let device: RawFileDevice;
  let t: TestServer;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'bitback-nbd-read-buffers-'));
    content = new Random(7).nonZeroBytes(SIZE);
    await writeFile(join(dir, 'disk.raw'), content);
    // A device that reads into the server's buffers (raw files and qcow2 images do).
    device = await RawFileDevice.open(join(dir, 'disk.raw'), { readOnly: true });
    t = await startTestServer([{ name: '', device }]);
  });
  after(async () => {
    await t.close();
    await device.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('many reads in flight on a socket each get their own bytes, with and without structured replies', async () => {
    await readAllAtOnce(await t.connect(), content, true);
    await readAllAtOnce(await t.connect(), content, false);
    // Again, now that the buffers of the first reads are back in the pool.
    await readAllAtOnce(await t.connect(), content, true);
  });

  test('regression: reads on an in-process stream, which keeps written buffers unread, are not served from reused buffers', async () => {
    const server = new NbdServer();
    server.addExport({ name: '', device });
    const [serverEnd, clientEnd] = duplexPair();
    server.handleConnection(serverEnd);
    const c = new RawClient(clientEnd);
    const settled = async (): Promise<void> => {
      for (let i = 0; server.stats().requestsInFlight + server.stats().requestsWaiting > 0; i++) {
        if (i > 2000) throw new Error('the reads did not settle');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      await new Promise((resolve) => setTimeout(resolve, 5)); // the batch of replies is written
    };
    try {
      await c.hello();
      await c.negotiate({ structured: true });
      // The client takes nothing while two waves of reads are answered: the stream keeps the
      // first wave's reply buffers, unread, while the second wave is read from the device.
      clientEnd.pause();
      const offsets = new Map<bigint, number>();
      for (const wave of [0, 1]) {
        for (let i = 0; i < 8; i++) {
          const offset = (wave * 8 + i) * READ_LENGTH;
          offsets.set(c.request({ type: NBD_CMD_READ, offset, length: READ_LENGTH }), offset);
        }
        await settled();
      }
      clientEnd.resume();
      for (let i = 0; i < offsets.size; i++) {
        const reply = await c.reply();
        const offset = offsets.get(reply[0]!.cookie)!;
        assert.deepEqual(readReplyData(reply, offset, READ_LENGTH).data, content.subarray(offset, offset + READ_LENGTH), `the read at ${offset}`);
      }
    } finally {
      c.close();
      await server.close();
    }
  });
});
