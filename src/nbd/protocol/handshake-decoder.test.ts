import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NBD_FLAG_C_FIXED_NEWSTYLE, NBD_OPT_GO, NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY, NBD_REQUEST_MAGIC } from './constants.js';
import { NbdProtocolError } from './errors.js';
import { NegotiationDecoder } from './handshake-decoder.js';
import { encodeClientFlags, encodeInfoRequest, encodeOptionRequest } from './handshake.js';
import { concat, framesEverySplit } from './testing/split.js';

test('NegotiationDecoder yields client flags and options, whatever the chunking', () => {
  const go = encodeInfoRequest({ name: 'vda', infos: [3] });
  const bytes = concat(
    encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE),
    encodeOptionRequest(NBD_OPT_STRUCTURED_REPLY),
    encodeOptionRequest(NBD_OPT_LIST),
    encodeOptionRequest(NBD_OPT_GO, go),
  );
  const frames = framesEverySplit(() => new NegotiationDecoder(), bytes);
  assert.deepEqual(frames, [
    { kind: 'client-flags', flags: NBD_FLAG_C_FIXED_NEWSTYLE },
    { kind: 'option', option: NBD_OPT_STRUCTURED_REPLY, data: new Uint8Array(0) },
    { kind: 'option', option: NBD_OPT_LIST, data: new Uint8Array(0) },
    { kind: 'option', option: NBD_OPT_GO, data: go },
  ]);
});

test('NegotiationDecoder skips an option longer than its limit without buffering it', () => {
  const d = new NegotiationDecoder(100);
  assert.deepEqual(d.feed(encodeClientFlags(1)), [{ kind: 'client-flags', flags: 1 }]);
  const header = encodeOptionRequest(NBD_OPT_GO, new Uint8Array(0)).slice();
  new DataView(header.buffer).setUint32(12, 1_000_000);
  assert.deepEqual(d.feed(header), []);
  let frames: unknown[] = [];
  for (let sent = 0; sent < 1_000_000; sent += 65536) {
    frames = d.feed(new Uint8Array(Math.min(65536, 1_000_000 - sent)));
    assert.ok(d.buffered <= 65536, 'the skipped data is not kept');
  }
  assert.deepEqual(frames, [{ kind: 'option-too-big', option: NBD_OPT_GO, length: 1_000_000 }]);
  assert.deepEqual(d.feed(encodeOptionRequest(NBD_OPT_LIST)), [{ kind: 'option', option: NBD_OPT_LIST, data: new Uint8Array(0) }]);
});

test('NegotiationDecoder rejects an option with a bad magic', () => {
  const d = new NegotiationDecoder();
  d.feed(encodeClientFlags(1));
  const bad = encodeOptionRequest(NBD_OPT_LIST).slice();
  bad[3] ^= 0xff;
  assert.throws(() => d.feed(bad), NbdProtocolError);
});

test('NegotiationDecoder.takeRest() hands over requests pipelined after NBD_OPT_GO', () => {
  const d = new NegotiationDecoder();
  const request = new Uint8Array(28);
  new DataView(request.buffer).setUint32(0, NBD_REQUEST_MAGIC);
  const frames = d.feed(concat(encodeClientFlags(1), encodeOptionRequest(NBD_OPT_GO, encodeInfoRequest({ name: '', infos: [] })), request));
  assert.equal(frames.length, 2);
  assert.deepEqual(d.takeRest(), request);
});

test('NegotiationDecoder stops after NBD_OPT_GO and goes on with what is queued at the next feed', () => {
  const d = new NegotiationDecoder();
  const go = encodeOptionRequest(NBD_OPT_GO, encodeInfoRequest({ name: 'missing', infos: [] }));
  const frames = d.feed(concat(encodeClientFlags(1), go, encodeOptionRequest(NBD_OPT_LIST)));
  assert.deepEqual(frames.map((f) => f.kind === 'option' ? f.option : f.kind), ['client-flags', NBD_OPT_GO]);
  assert.deepEqual(d.feed(new Uint8Array(0)), [{ kind: 'option', option: NBD_OPT_LIST, data: new Uint8Array(0) }]);
});
