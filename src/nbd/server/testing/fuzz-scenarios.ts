/**
 * Test-only: the scenarios of the server fuzz test. Each iteration is one connection driven by
 * a seeded generator: a handshake with valid, mutated and random options, then (often) a run of
 * random and mutated requests, or an abrupt end. Every reply is checked against
 * `fuzz-oracle.ts` and a model of the disk; a mismatch throws with the steps taken.
 */
import assert from 'node:assert/strict';
import { type DirtyBitmap } from '../../../bitmap/index.js';
import { Random } from '../../../block/testing/pattern.js';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_PAYLOAD_LEN,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_EXTENDED_HEADERS,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_PEEK_EXPORT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_META_CONTEXT,
  decodeMetaContextReply,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOptionRequest,
  encodeRequest,
  type NbdRequest,
} from '../../protocol/index.js';
import { expectedContexts, expectedErrors, type FuzzSession } from './fuzz-oracle.js';
import { type RawClient, type RawOptionReply, type RawReply } from './raw-client.js';
import { blockStatusOf, readReplyData, replyError } from './replies.js';

/** The server under test, as the scenarios see it. */
export interface FuzzWorld {
  size: number;
  maxPayload: number;
  /** Longest option data the server accepts. */
  maxOption: number;
  /** What the device holds (kept up to date by the scenarios). */
  model: Uint8Array;
  /** The bitmap served as `qemu:dirty-bitmap:b0` on the export "". */
  bitmap: DirtyBitmap;
  /** Export name → read-only and context names. */
  exports: Record<string, { readOnly: boolean; contexts: string[] }>;
  connect(): Promise<RawClient>;
}

const WATCHDOG_MS = 20_000;

/** Awaits `promise`, failing if it takes longer than the watchdog allows (a hang, not a slow run). */
async function within<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer to ${what}: the server hangs`)), WATCHDOG_MS)));
  try {
    return await Promise.race([promise, hang]);
  } finally {
    clearTimeout(timer);
  }
}

interface HandshakeState {
  fixed: boolean;
  structured: boolean;
  extended: boolean;
  /** The last SET_META_CONTEXT: export and the context ids by name. */
  meta: { exportName: string; ids: Map<number, string> } | undefined;
}

const QUERIES = ['base:', 'base:allocation', 'qemu:', 'qemu:dirty-bitmap:', 'qemu:dirty-bitmap:b0', 'qemu:dirty-bitmap:zz', 'qemu:allocation-depth', 'x-y:z', 'nocolon', ''];
const NAMES = ['', 'ro', 'nope'];

function final(replies: RawOptionReply[]): number {
  return replies[replies.length - 1]!.type;
}

function mutate(random: Random, data: Uint8Array): Uint8Array {
  if (data.length > 0 && random.chance(0.5)) return data.subarray(0, random.below(data.length));
  const out = new Uint8Array(data.length + 1 + random.below(8));
  out.set(data);
  out.set(random.nonZeroBytes(out.length - data.length), data.length);
  return out;
}

/** Runs one iteration; throws (with `log` telling the steps) when the server deviates. */
export async function runIteration(world: FuzzWorld, seed: number, log: string[]): Promise<void> {
  const random = new Random(seed);
  const c = await world.connect();
  try {
    await within(c.greeting(), 'the greeting');
    const state: HandshakeState = { fixed: true, structured: false, extended: false, meta: undefined };
    if (random.chance(0.05)) {
      log.push('client flags with an unknown bit');
      c.send(encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | (1 << (2 + random.below(30)))));
      return await within(c.closed, 'the close after unknown client flags');
    }
    state.fixed = !random.chance(0.05);
    c.send(encodeClientFlags(state.fixed ? NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES : 0));
    if (!state.fixed) {
      log.push('plain newstyle client sends NBD_OPT_LIST');
      c.send(encodeOptionRequest(NBD_OPT_LIST));
      return await within(c.closed, 'the close of a plain newstyle client');
    }
    for (let steps = random.between(0, 6); steps > 0; steps--) {
      if (!(await optionStep(world, c, random, state, log))) return;
    }
    if (random.chance(0.1)) {
      log.push('NBD_OPT_ABORT');
      assert.equal(final(await within(c.option(NBD_OPT_ABORT), 'ABORT')), NBD_REP_ACK);
      return await within(c.closed, 'the close after ABORT');
    }
    await transmission(world, c, random, state, log);
  } finally {
    c.close();
  }
}

/** One option; false when the connection is over (as expected). */
async function optionStep(world: FuzzWorld, c: RawClient, random: Random, state: HandshakeState, log: string[]): Promise<boolean> {
  const choice = random.below(13);
  const expectFinal = async (option: number, data: Uint8Array, expected: number, what: string): Promise<RawOptionReply[]> => {
    log.push(`${what} (${data.length} bytes)`);
    const replies = await within(c.option(option, data), what);
    for (const r of replies) assert.equal(r.option, option, `${what}: a reply names option ${r.option}`);
    assert.equal(final(replies), expected, `${what}: final reply 0x${final(replies).toString(16)}, expected 0x${expected.toString(16)}`);
    return replies;
  };
  switch (choice) {
    case 0: {
      log.push('an option with a bad magic');
      const bytes = encodeOptionRequest(NBD_OPT_LIST).slice();
      bytes[random.below(8)] ^= 1 + random.below(255);
      c.send(bytes);
      await within(c.closed, 'the close after a bad option magic');
      return false;
    }
    case 1: {
      const option = random.chance(0.3) ? NBD_OPT_PEEK_EXPORT : 12 + random.below(0xfff0);
      await expectFinal(option, random.nonZeroBytes(random.below(40)), NBD_REP_ERR_UNSUP, `unknown option ${option}`);
      return true;
    }
    case 2:
      await expectFinal(NBD_OPT_LIST, new Uint8Array(world.maxOption + 1 + random.below(5000)), NBD_REP_ERR_TOO_BIG, 'an option past the limit');
      return true;
    case 3: {
      const option = [NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_EXTENDED_HEADERS, NBD_OPT_STARTTLS][random.below(4)]!;
      await expectFinal(option, random.nonZeroBytes(1 + random.below(20)), NBD_REP_ERR_INVALID, `option ${option} with data`);
      return true;
    }
    case 4:
      await expectFinal(NBD_OPT_STRUCTURED_REPLY, new Uint8Array(0), state.extended ? NBD_REP_ERR_INVALID : NBD_REP_ACK, 'STRUCTURED_REPLY');
      state.structured = true;
      return true;
    case 5:
      await expectFinal(NBD_OPT_EXTENDED_HEADERS, new Uint8Array(0), NBD_REP_ACK, 'EXTENDED_HEADERS');
      if (!state.extended) state.meta = undefined;
      state.extended = state.structured = true;
      return true;
    case 6: {
      const name = NAMES[random.below(NAMES.length)]!;
      const data = encodeInfoRequest({ name, infos: [random.below(5), random.below(5)] });
      if (random.chance(0.4)) await expectFinal(NBD_OPT_INFO, mutate(random, data), NBD_REP_ERR_INVALID, 'a mutated INFO');
      else await expectFinal(NBD_OPT_INFO, data, name in world.exports ? NBD_REP_ACK : NBD_REP_ERR_UNKNOWN, `INFO '${name}'`);
      return true;
    }
    case 7:
    case 8: {
      const list = choice === 7;
      const option = list ? NBD_OPT_LIST_META_CONTEXT : NBD_OPT_SET_META_CONTEXT;
      const exportName = NAMES[random.below(NAMES.length)]!;
      const queries = Array.from({ length: random.below(4) }, () => QUERIES[random.below(QUERIES.length)]!);
      const data = encodeMetaContextRequest({ exportName, queries });
      if (!list) state.meta = undefined; // SET replaces the contexts even when it fails
      if (random.chance(0.3)) {
        await expectFinal(option, mutate(random, data), NBD_REP_ERR_INVALID, `a mutated ${list ? 'LIST' : 'SET'}_META_CONTEXT`);
        return true;
      }
      const known = world.exports[exportName];
      const expected = !state.structured ? NBD_REP_ERR_INVALID : known === undefined ? NBD_REP_ERR_UNKNOWN : NBD_REP_ACK;
      const replies = await expectFinal(option, data, expected, `${list ? 'LIST' : 'SET'}_META_CONTEXT '${exportName}' ${JSON.stringify(queries)}`);
      if (expected !== NBD_REP_ACK) return true;
      const got = replies.filter((r) => r.type === NBD_REP_META_CONTEXT).map((r) => decodeMetaContextReply(r.data));
      assert.deepEqual(got.map((g) => g.name).sort(), expectedContexts(known!.contexts, queries, list).sort());
      if (list) assert.ok(got.every((g) => g.id === 0), 'LIST replies carry id 0');
      else state.meta = { exportName, ids: new Map(got.map((g) => [g.id, g.name])) };
      return true;
    }
    case 9: {
      // Random data never decodes (its bytes are non-zero, so any length field is huge).
      const option = [NBD_OPT_INFO, NBD_OPT_LIST, NBD_OPT_LIST_META_CONTEXT, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_EXTENDED_HEADERS, NBD_OPT_STARTTLS, NBD_OPT_PEEK_EXPORT][random.below(7)]!;
      const expected = option === NBD_OPT_PEEK_EXPORT ? NBD_REP_ERR_UNSUP : NBD_REP_ERR_INVALID;
      await expectFinal(option, random.nonZeroBytes(1 + random.below(40)), expected, `option ${option} with random data`);
      return true;
    }
    case 10: {
      log.push('EXPORT_NAME of an unknown export');
      c.send(encodeOptionRequest(NBD_OPT_EXPORT_NAME, new TextEncoder().encode('nope')));
      await within(c.closed, 'the close after EXPORT_NAME of an unknown export');
      return false;
    }
    case 11: {
      log.push('GO of an unknown export');
      await expectFinal(NBD_OPT_GO, encodeInfoRequest({ name: 'nope', infos: [] }), NBD_REP_ERR_UNKNOWN, 'GO nope');
      return true;
    }
    default: {
      log.push('disconnect in the middle of an option');
      c.send(encodeOptionRequest(NBD_OPT_LIST, new Uint8Array(100)).subarray(0, 5 + random.below(100)));
      return false;
    }
  }
}

const TYPES = [NBD_CMD_READ, NBD_CMD_READ, NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_CMD_TRIM, NBD_CMD_FLUSH, NBD_CMD_CACHE, NBD_CMD_BLOCK_STATUS, NBD_CMD_BLOCK_STATUS];

function randomRequest(world: FuzzWorld, random: Random, extended: boolean): { request: Omit<NbdRequest, 'cookie'>; payload: Uint8Array | undefined } {
  const type = random.chance(0.04) ? [8, 9, 42, 0xffff][random.below(4)]! : TYPES[random.below(TYPES.length)]!;
  let offset: number;
  let length: number;
  const shape = random.below(10);
  if (shape < 6) {
    offset = random.below(world.size);
    length = random.below(Math.min(world.size - offset, 70_000) + 1);
  } else if (shape < 8) {
    offset = world.size - random.below(4096);
    length = random.below(8192);
  } else if (shape === 8) {
    offset = random.below(world.size);
    length = world.maxPayload + 1 + random.below(2 * world.maxPayload);
  } else {
    offset = random.chance(0.5) ? 2 ** 40 : 0;
    length = random.below(3) * 512;
  }
  if (type === NBD_CMD_FLUSH && random.chance(0.8)) offset = length = 0;
  let flags = random.chance(0.3) ? random.below(0x40) : 0;
  if (random.chance(0.05)) flags |= 1 << (6 + random.below(10));
  if (type === NBD_CMD_READ && random.chance(0.2)) flags |= NBD_CMD_FLAG_DF;
  if (type === NBD_CMD_BLOCK_STATUS && random.chance(0.3)) flags |= NBD_CMD_FLAG_REQ_ONE;
  let payload: Uint8Array | undefined;
  if (type === NBD_CMD_WRITE) {
    length = Math.min(length, 3 * world.maxPayload);
    payload = random.nonZeroBytes(length);
  } else if (extended && (flags & NBD_CMD_FLAG_PAYLOAD_LEN) !== 0) {
    length = random.below(200);
    payload = random.nonZeroBytes(length);
  }
  return { request: { type, flags, offset, length }, payload };
}

async function transmission(world: FuzzWorld, c: RawClient, random: Random, state: HandshakeState, log: string[]): Promise<void> {
  const exportName = random.chance(0.7) ? '' : 'ro';
  log.push(`GO '${exportName}'`);
  const replies = await within(c.option(NBD_OPT_GO, encodeInfoRequest({ name: exportName, infos: [] })), 'GO');
  assert.equal(final(replies), NBD_REP_ACK);
  c.startTransmission();
  c.extended = state.extended;
  const contexts = state.meta !== undefined && state.meta.exportName === exportName ? state.meta.ids : new Map<number, string>();
  const session: FuzzSession = {
    size: world.size,
    maxPayload: world.maxPayload,
    readOnly: world.exports[exportName]!.readOnly,
    structured: state.structured,
    extended: state.extended,
    contexts: contexts.size,
  };
  for (let n = random.between(1, 25); n > 0; n--) {
    const ending = random.below(100);
    if (ending < 2) {
      log.push('a request with a bad magic');
      const bytes = encodeRequest({ type: NBD_CMD_READ, flags: 0, cookie: 1n, offset: 0, length: 512 }, state.extended).slice();
      bytes[random.below(4)] ^= 1 + random.below(255);
      c.send(bytes);
      await within(c.closed, 'the close after a bad request magic');
      return;
    }
    if (ending < 4) {
      log.push('disconnect in the middle of a WRITE payload');
      c.send(encodeRequest({ type: NBD_CMD_WRITE, flags: 0, cookie: 1n, offset: 0, length: 4096 }, state.extended), new Uint8Array(random.below(4096)));
      return;
    }
    const { request, payload } = randomRequest(world, random, state.extended);
    const description = `request type ${request.type} flags 0x${request.flags.toString(16)} ${request.offset}+${request.length}${payload ? ` payload ${payload.length}` : ''}`;
    log.push(description);
    const cookie = c.request(request, payload);
    const reply = await within(c.reply(), description);
    assert.equal(reply[0]!.cookie, cookie, `${description}: the reply names another cookie`);
    check(world, session, contexts, { ...request, cookie }, payload, reply, description);
  }
  if (random.chance(0.5)) {
    log.push('NBD_CMD_DISC');
    c.request({ type: NBD_CMD_DISC });
    await within(c.closed, 'the close after NBD_CMD_DISC');
  }
}

function check(world: FuzzWorld, session: FuzzSession, contexts: Map<number, string>, request: NbdRequest, payload: Uint8Array | undefined, reply: RawReply, what: string): void {
  if (session.extended) assert.ok(reply.every((f) => f.kind === 'chunk' && f.offset === request.offset), `${what}: extended replies are chunks echoing the offset`);
  else if (!session.structured) assert.ok(reply.length === 1 && reply[0]!.kind === 'simple', `${what}: simple replies only`);
  const allowed = expectedErrors(session, request, payload?.length ?? 0);
  const { errno } = replyError(reply);
  if (allowed.size > 0) {
    assert.ok(allowed.has(errno), `${what}: error ${errno}, expected one of ${[...allowed].join(', ')}`);
    return;
  }
  assert.equal(errno, 0, `${what}: error ${errno}, expected success`);
  const { offset, length, type } = request;
  switch (type) {
    case NBD_CMD_READ: {
      const { data, chunks } = readReplyData(reply, offset, length);
      assert.deepEqual(data, world.model.subarray(offset, offset + length), `${what}: the data read differs from the model`);
      if ((request.flags & NBD_CMD_FLAG_DF) !== 0 && length > 0) assert.equal(chunks.length, 1, `${what}: DF allows one content chunk`);
      return;
    }
    case NBD_CMD_WRITE:
      world.model.set(payload ?? new Uint8Array(0), offset);
      return;
    case NBD_CMD_WRITE_ZEROES:
    case NBD_CMD_TRIM:
      world.model.fill(0, offset, offset + length);
      return;
    case NBD_CMD_BLOCK_STATUS: {
      const status = blockStatusOf(reply);
      assert.deepEqual([...status.keys()].sort(), [...contexts.keys()].sort(), `${what}: one chunk per context`);
      for (const [id, extents] of status) {
        const name = contexts.get(id)!;
        const total = extents.reduce((sum, e) => sum + e.length, 0);
        assert.ok(extents.length > 0 && extents.every((e) => e.length > 0) && total <= length, `${what}: bad extents for ${name}`);
        if ((request.flags & NBD_CMD_FLAG_REQ_ONE) !== 0) assert.equal(extents.length, 1, `${what}: REQ_ONE gives one extent`);
        let at = offset;
        for (const e of extents) {
          if (name === 'base:allocation' && (e.flags & 2) !== 0) assert.ok(world.model.subarray(at, at + e.length).every((b) => b === 0), `${what}: ZERO over data`);
          if (name === 'qemu:dirty-bitmap:b0') assert.equal(world.bitmap.get(at), e.flags === 1, `${what}: dirty flag at ${at}`);
          at += e.length;
        }
      }
      return;
    }
    case NBD_CMD_FLUSH:
    case NBD_CMD_CACHE:
      return;
    default:
      assert.fail(`${what}: an unknown command succeeded`);
  }
}
