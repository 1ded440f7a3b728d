/**
 * The `BlockDevice` conformance suite through bitback's NBD client against nbdkit's memory
 * plugin: plain, with 4 connections (multi-conn), read-only, and behind nbdkit's
 * blocksize-policy filter with a 512-byte minimum block size (the client's read-modify-write).
 *
 * One nbdkit per suite serves every test: each device starts by zeroing the whole disk with a
 * trim-allowed WRITE_ZEROES, which nbdkit memory turns back into a hole.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { type DeviceFactory } from '../../src/block/testing/conformance.js';
import { testBlockDevice } from '../../src/block/testing/conformance.js';
import { NbdClient, type NbdConnectOptions } from '../../src/nbd/client/index.js';
import { startNbdkit, type NbdServerProcess } from '../helpers/nbd-peers.js';
import { needPeers } from '../helpers/peers.js';

const servers: NbdServerProcess[] = [];
after(async () => {
  for (const s of servers) await s.stop();
});

/**
 * A factory over one nbdkit `memory SIZE` (started on first use) with `filters` in front; the
 * client must see `minimum` as the minimum block size.
 */
function viaNbdkit(options: NbdConnectOptions, filters: string[] = [], minimum = 1): DeviceFactory {
  let server: Promise<NbdServerProcess> | undefined;
  return async (size, setup) => {
    server ??= startNbdkit([...filters.filter((f) => f.startsWith('--')), 'memory', String(size), ...filters.filter((f) => !f.startsWith('--'))]).then((s) => {
      servers.push(s);
      return s;
    });
    const uri = (await server).uri();
    const writer = await NbdClient.connect(uri, { ...options, readOnly: false });
    assert.equal(writer.blockSize.minimum, minimum, 'the minimum block size nbdkit announces');
    if (setup.content === undefined && !setup.readOnly) {
      await writer.writeZeroes(0, size, { mayTrim: true });
      return { device: writer };
    }
    try {
      await writer.writeZeroes(0, size, { mayTrim: true });
      if (setup.content !== undefined) await writer.write(0, setup.content);
    } finally {
      await writer.close();
    }
    return { device: await NbdClient.connect(uri, { ...options, readOnly: true }) };
  };
}

const skip = needPeers('nbdkit');
if (skip === false) {
  testBlockDevice('NbdClient over nbdkit memory', viaNbdkit({}));
  testBlockDevice('NbdClient over nbdkit memory, 4 connections', viaNbdkit({ connections: 4, requestSize: 64 * 1024, maxInFlight: 4 }));
  testBlockDevice('NbdClient over nbdkit memory, read-only', viaNbdkit({}), { readOnly: true });
  testBlockDevice(
    'NbdClient over nbdkit memory with a 512-byte minimum block size',
    viaNbdkit({ requestSize: 100_000 }, [
      '--filter=blocksize-policy',
      'blocksize-minimum=512',
      'blocksize-preferred=4096',
      'blocksize-maximum=1M',
      'blocksize-error-policy=error',
    ], 512),
  );
} else {
  test('NbdClient over nbdkit memory passes the BlockDevice conformance suite', { skip }, () => {});
}
