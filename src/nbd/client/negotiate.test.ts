import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { MemoryBlockDevice } from '../../block/memory-device.js';
import { InvalidArgumentError, IoError, NotFoundError, hasCode } from '../../errors.js';
import {
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNSUP,
} from '../protocol/constants.js';
import { NbdOptionError, NbdProtocolError } from '../protocol/errors.js';
import { encodeExportNameReply } from '../protocol/handshake.js';
import { NbdClient, describeExport, listExports } from './index.js';
import { FAKE_FLAGS, negotiate, serveDevice, startFakeServer, type FakeConnection, type FakeServer } from './testing/fake-server.js';

const SIZE = 1024 * 1024;

/** Runs `body` against a fake server running `script`, then checks that the script saw no unexpected error. */
async function withServer(script: (c: FakeConnection) => Promise<void>, body: (server: FakeServer) => Promise<void>): Promise<void> {
  const server = await startFakeServer(script);
  try {
    await body(server);
  } finally {
    await server.close();
  }
  assert.deepEqual(server.errors, [], 'the fake server script failed');
}

function patterned(size: number): MemoryBlockDevice {
  return MemoryBlockDevice.fromBytes(new Uint8Array(size).map((_, i) => (i * 13 + 7) & 0xff));
}

describe('NbdClient.connect() negotiation', () => {
  test('it negotiates extended headers when the server accepts them and reads through extended chunks', async () => {
    const device = patterned(SIZE);
    const options: string[] = [];
    await withServer(async (c) => {
      const session = await negotiate(c, { size: SIZE, extendedHeaders: true, description: 'a disk', blockSize: { minimum: 1, preferred: 4096, maximum: 1 << 20 } });
      options.push(session!.extended ? 'extended' : 'compact');
      await serveDevice(c, session!, device);
    }, async (server) => {
      const client = await NbdClient.connect(server.uri());
      try {
        assert.equal(client.extendedHeaders, true);
        assert.equal(client.structuredReplies, true);
        assert.equal(client.description, 'a disk');
        assert.equal(client.size, SIZE);
        assert.equal(client.transmissionFlags, NBD_FLAG_HAS_FLAGS | FAKE_FLAGS);
        assert.deepEqual(client.blockSize, { minimum: 1, preferred: 4096, maximum: 1 << 20 });
        assert.deepEqual(client.contexts, ['base:allocation']);
        assert.equal(client.capabilities.canBlockStatus, true);
        assert.deepEqual(await client.read(1000, 70000), await device.read(1000, 70000));
        assert.deepEqual(await client.blockStatus(0, SIZE), [{ offset: 0, length: SIZE, flags: 0 }]);
      } finally {
        await client.close();
      }
    });
    assert.deepEqual(options, ['extended']);
  });

  test('it falls back to structured replies when the server refuses extended headers', async () => {
    const device = patterned(SIZE);
    await withServer(async (c) => serveDevice(c, (await negotiate(c, { size: SIZE }))!, device), async (server) => {
      const client = await NbdClient.connect(server.uri());
      try {
        assert.equal(client.extendedHeaders, false);
        assert.equal(client.structuredReplies, true);
        assert.deepEqual(await client.read(SIZE - 5000, 5000), await device.read(SIZE - 5000, 5000));
      } finally {
        await client.close();
      }
    });
  });

  test('with structuredReplies false it asks for neither and reads simple replies', async () => {
    const device = patterned(SIZE);
    const seen: number[] = [];
    await withServer(async (c) => {
      const session = await negotiate(c, { size: SIZE, extendedHeaders: true });
      await serveDevice(c, session!, device, { log: [] });
      seen.push(session!.structured ? 1 : 0);
    }, async (server) => {
      const client = await NbdClient.connect(server.uri(), { structuredReplies: false });
      try {
        assert.equal(client.structuredReplies, false);
        assert.equal(client.extendedHeaders, false);
        assert.deepEqual(client.contexts, []);
        assert.equal(client.capabilities.canBlockStatus, false);
        assert.deepEqual(await client.read(3, 100000), await device.read(3, 100000));
        assert.deepEqual(await client.blockStatus(10, 20), [{ offset: 10, length: 20, flags: 0 }]);
      } finally {
        await client.close();
      }
    });
    assert.deepEqual(seen, [0]);
  });

  test('a server that refuses structured replies leaves simple replies and no meta contexts', async () => {
    const device = patterned(SIZE);
    await withServer(async (c) => {
      const session = await negotiate(c, { size: SIZE, structuredReplies: false });
      if (session !== undefined) await serveDevice(c, session, device);
    }, async (server) => {
      const client = await NbdClient.connect(server.uri());
      try {
        assert.equal(client.structuredReplies, false);
        assert.deepEqual(client.contexts, []);
        assert.deepEqual(await client.read(0, 4096), await device.read(0, 4096));
      } finally {
        await client.close();
      }
      await assert.rejects(NbdClient.connect(server.uri(), { contexts: ['qemu:dirty-bitmap:b0'] }), (e: unknown) => e instanceof NotFoundError && /structured replies/.test(e.message));
    });
  });

  test('a server without fixed newstyle gets NBD_OPT_EXPORT_NAME at once, and the 124 zero bytes', async () => {
    const device = patterned(SIZE);
    await withServer(async (c) => {
      assert.equal(await c.greet(0), 0, 'the client sets no flag the server did not offer');
      const { option, data } = await c.option();
      assert.equal(option, NBD_OPT_EXPORT_NAME);
      assert.equal(new TextDecoder().decode(data), 'disk');
      c.send(encodeExportNameReply(SIZE, NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY, false));
      await serveDevice(c, { extended: false, structured: false, contexts: new Map(), noZeroes: false }, device);
    }, async (server) => {
      const client = await NbdClient.connect(server.uri('disk'));
      try {
        assert.equal(client.size, SIZE);
        assert.equal(client.capabilities.readOnly, true);
        assert.equal(client.structuredReplies, false);
        assert.deepEqual(await client.read(77, 7777), await device.read(77, 7777));
        await assert.rejects(client.write(0, new Uint8Array(1)), (e: unknown) => hasCode(e, 'READ_ONLY'));
      } finally {
        await client.close();
      }
    });
  });

  test('NBD_OPT_GO refused with ERR_UNSUP falls back to NBD_OPT_EXPORT_NAME', async () => {
    const device = patterned(SIZE);
    const flags: number[] = [];
    await withServer(async (c) => {
      const session = await negotiate(c, { size: SIZE, noGo: true });
      flags.push(session!.noZeroes ? 1 : 0);
      await serveDevice(c, session!, device);
    }, async (server) => {
      const client = await NbdClient.connect(server.uri());
      try {
        assert.equal(client.structuredReplies, true);
        assert.deepEqual(await client.read(0, 65536), await device.read(0, 65536));
      } finally {
        await client.close();
      }
    });
    assert.deepEqual(flags, [1], 'NO_ZEROES was agreed');
  });

  test('the client sends FIXED_NEWSTYLE|NO_ZEROES, EXTENDED_HEADERS then STRUCTURED_REPLY, SET_META_CONTEXT, GO', async () => {
    const options: number[] = [];
    let clientFlags = -1;
    await withServer(async (c) => {
      clientFlags = await c.greet();
      for (;;) {
        const { option } = await c.option();
        options.push(option);
        if (option === NBD_OPT_EXPORT_NAME) {
          c.socket.end();
          return;
        }
        c.reply(option, NBD_REP_ERR_UNSUP);
      }
    }, async (server) => {
      // GO is refused with ERR_UNSUP, so the client falls back to EXPORT_NAME, and this server hangs up.
      await assert.rejects(NbdClient.connect(server.uri('x')), (e: unknown) => e instanceof NotFoundError);
    });
    assert.equal(clientFlags, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    assert.deepEqual(options.slice(0, 4), [NBD_OPT_EXTENDED_HEADERS, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_GO, NBD_OPT_EXPORT_NAME]);
    assert.ok(!options.includes(NBD_OPT_SET_META_CONTEXT), 'no SET_META_CONTEXT without structured replies');
  });

  test('an unknown export is an NbdOptionError with code NOT_FOUND', async () => {
    await withServer(async (c) => {
      await negotiate(c, { name: 'disk', size: SIZE });
    }, async (server) => {
      await assert.rejects(NbdClient.connect(server.uri('nope')), (e: unknown) => e instanceof NbdOptionError && e.code === 'NOT_FOUND' && /'nope'/.test(e.message));
    });
  });

  test('requested meta contexts are selected, and one the server lacks is a NotFoundError naming it', async () => {
    const contexts = ['base:allocation', 'qemu:dirty-bitmap:b0', 'qemu:allocation-depth'];
    await withServer(async (c) => {
      const session = await negotiate(c, { size: SIZE, contexts });
      if (session !== undefined) await serveDevice(c, session, new MemoryBlockDevice(SIZE));
    }, async (server) => {
      const client = await NbdClient.connect(server.uri(), { contexts: ['qemu:dirty-bitmap:b0'] });
      try {
        assert.deepEqual(client.contexts, ['base:allocation', 'qemu:dirty-bitmap:b0']);
        await assert.rejects(client.contextStatus('qemu:dirty-bitmap:other', 0, 10), (e: unknown) => hasCode(e, 'NOT_FOUND'));
      } finally {
        await client.close();
      }
      await assert.rejects(
        NbdClient.connect(server.uri(), { contexts: ['qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:b9'] }),
        (e: unknown) => e instanceof NotFoundError && /'qemu:dirty-bitmap:b9'/.test(e.message) && !/'qemu:dirty-bitmap:b0'/.test(e.message),
      );
    });
  });

  test('a peer that is not an NBD server is reported as such', async () => {
    await withServer(async (c) => {
      c.send(new TextEncoder().encode('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n'));
      await c.read(1).catch(() => undefined);
    }, async (server) => {
      await assert.rejects(NbdClient.connect(server.uri()), (e: unknown) => e instanceof NbdProtocolError && /not an NBD server/.test(e.message));
    });
  });

  test('garbage instead of an option reply is an NbdProtocolError', async () => {
    await withServer(async (c) => {
      await c.greet();
      await c.option();
      c.send(new Uint8Array(20).fill(0x41));
      await c.read(1).catch(() => undefined);
    }, async (server) => {
      await assert.rejects(NbdClient.connect(server.uri()), (e: unknown) => e instanceof NbdProtocolError && /bad magic/.test(e.message));
    });
  });

  test('a server that hangs up during negotiation gives a retryable IoError, not a hang', async () => {
    await withServer(async (c) => {
      await c.greet();
      await c.option();
      c.socket.destroy();
    }, async (server) => {
      await assert.rejects(NbdClient.connect(server.uri()), (e: unknown) => e instanceof IoError && e.errno === 'ECONNRESET' && e.retryable);
    });
  });

  test('a server that says nothing fails the connection with ETIMEDOUT after timeoutMs', async () => {
    await withServer(async (c) => {
      await c.read(1).catch(() => undefined);
    }, async (server) => {
      await assert.rejects(NbdClient.connect(server.uri(), { timeoutMs: 200 }), (e: unknown) => e instanceof IoError && e.errno === 'ETIMEDOUT');
    });
  });

  test('a server that requires TLS gets a clear NbdOptionError', async () => {
    await withServer(async (c) => {
      await c.greet();
      for (;;) {
        const { option } = await c.option();
        if (option === NBD_OPT_ABORT) {
          c.reply(option, NBD_REP_ACK);
          c.socket.end();
          return;
        }
        c.reply(option, NBD_REP_ERR_TLS_REQD, new TextEncoder().encode('TLS is required'));
      }
    }, async (server) => {
      await assert.rejects(NbdClient.connect(server.uri()), (e: unknown) =>
        e instanceof NbdOptionError && e.replyType === NBD_REP_ERR_TLS_REQD && /requires TLS/.test(e.message) && /nbds/.test(e.message));
    });
  });

  test('an nbds URI without credentials says what to add, before connecting', async () => {
    await assert.rejects(NbdClient.connect('nbds+unix:///x?socket=/nonexistent/nbd.sock'), (e: unknown) =>
      e instanceof InvalidArgumentError && /tls-certificates/.test(e.message) && /tls-psk-file/.test(e.message));
  });

  test('a missing socket is an IoError with the system errno', async () => {
    await assert.rejects(NbdClient.connect('nbd+unix:///x?socket=/nonexistent/nbd.sock'), (e: unknown) => e instanceof IoError && e.errno === 'ENOENT');
  });

  test('bad options are refused with InvalidArgumentError', async () => {
    for (const options of [{ connections: 0 }, { maxInFlight: 1.5 }, { requestSize: -1 }, { timeoutMs: 0 }]) {
      await assert.rejects(NbdClient.connect('nbd+unix:///x?socket=/nonexistent/nbd.sock', options), (e: unknown) => hasCode(e, 'INVALID_ARGUMENT'), JSON.stringify(options));
    }
  });

  test('connections: 4 opens 4 connections only when the server advertises CAN_MULTI_CONN', async () => {
    for (const multi of [true, false]) {
      let accepted = 0;
      const device = patterned(SIZE);
      await withServer(async (c) => {
        accepted++;
        const session = await negotiate(c, { size: SIZE, flags: FAKE_FLAGS | (multi ? NBD_FLAG_CAN_MULTI_CONN : 0) });
        await serveDevice(c, session!, device);
      }, async (server) => {
        const client = await NbdClient.connect(server.uri(), { connections: 4, requestSize: 4096 });
        try {
          assert.equal(client.connectionCount, multi ? 4 : 1);
          assert.equal(client.capabilities.multiConn, multi);
          assert.deepEqual(await client.read(0, SIZE), await device.read(0, SIZE));
          await client.write(5, new Uint8Array(100000).fill(9));
          await client.flush();
          assert.deepEqual(await device.read(5, 100000), new Uint8Array(100000).fill(9));
        } finally {
          await client.close();
        }
      });
      assert.equal(accepted, multi ? 4 : 1);
    }
  });
});

describe('listExports() and describeExport()', () => {
  test('they report what NBD_OPT_LIST, NBD_OPT_INFO and NBD_OPT_LIST_META_CONTEXT say, then abort', async () => {
    const contexts = ['base:allocation', 'qemu:dirty-bitmap:b0'];
    const ends: string[] = [];
    await withServer(async (c) => {
      const session = await negotiate(c, { name: 'vda', size: SIZE, description: 'the disk', contexts, blockSize: { minimum: 512, preferred: 65536, maximum: 1 << 25 } });
      ends.push(session === undefined ? 'abort' : 'go');
    }, async (server) => {
      const expected = {
        name: 'vda',
        description: 'the disk',
        size: SIZE,
        transmissionFlags: NBD_FLAG_HAS_FLAGS | FAKE_FLAGS,
        blockSize: { minimum: 512, preferred: 65536, maximum: 1 << 25 },
        contexts,
        tls: false,
      };
      assert.deepEqual(await listExports(server.uri()), [expected]);
      assert.deepEqual(await describeExport(server.uri('vda')), expected);
      await assert.rejects(describeExport(server.uri('other')), (e: unknown) => hasCode(e, 'NOT_FOUND'));
    });
    assert.deepEqual(ends, ['abort', 'abort', 'abort']);
  });
});
