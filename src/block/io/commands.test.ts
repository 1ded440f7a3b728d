import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIoCommand, splitWords, DEFAULT_WRITE_PATTERN } from './commands.js';
import { BitbackError } from '../../errors.js';

test('parseIoCommand() reads a pattern write with qemu-io syntax', () => {
  assert.deepEqual(parseIoCommand('write -P 0x5a 1M 64k'), {
    kind: 'write', offset: 1048576, length: 65536, pattern: 0x5a, zero: false, mayTrim: false, fua: false, quiet: false,
  });
});

test('parseIoCommand() defaults the write pattern to 0xcd like qemu-io', () => {
  const c = parseIoCommand('write 0 512');
  assert.equal(c.kind, 'write');
  assert.equal(c.kind === 'write' && c.pattern, DEFAULT_WRITE_PATTERN);
});

test('parseIoCommand() reads zero writes, unmap, FUA and grouped flags', () => {
  assert.deepEqual(parseIoCommand('write -zu 0 4k'), {
    kind: 'write', offset: 0, length: 4096, pattern: DEFAULT_WRITE_PATTERN, zero: true, mayTrim: true, fua: false, quiet: false,
  });
  const fua = parseIoCommand('write -f -q -P90 512 512');
  assert.equal(fua.kind === 'write' && fua.fua && fua.quiet && fua.pattern === 90, true);
});

test('parseIoCommand() reads read, discard, trim, flush, map and length', () => {
  assert.deepEqual(parseIoCommand('read -P 0x5a 1M 64k'), {
    kind: 'read', offset: 1048576, length: 65536, pattern: 0x5a, dump: false, quiet: false,
  });
  assert.deepEqual(parseIoCommand('read -v 0 16'), { kind: 'read', offset: 0, length: 16, dump: true, quiet: false });
  assert.deepEqual(parseIoCommand('discard 0 1M'), { kind: 'discard', offset: 0, length: 1048576, quiet: false });
  assert.deepEqual(parseIoCommand('trim -q 0 1M'), { kind: 'discard', offset: 0, length: 1048576, quiet: true });
  assert.deepEqual(parseIoCommand('  flush '), { kind: 'flush' });
  assert.deepEqual(parseIoCommand('map'), { kind: 'map' });
  assert.deepEqual(parseIoCommand('length'), { kind: 'length' });
});

test('parseIoCommand() rejects malformed commands with a message naming the problem', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['frobnicate 0 1', /unknown command 'frobnicate'/],
    ['write -P 0x5a 1M', /expected OFFSET LENGTH, got 1/],
    ['write -P 0x5a 1M 2M 3M', /expected OFFSET LENGTH, got 3/],
    ['write -P 300 0 1', /pattern '300' is not a byte/],
    ['write -P zz 0 1', /pattern 'zz'/],
    ['write -P', /option -P needs a value/],
    ['write -x 0 1', /unknown option -x/],
    ['write -z -P 1 0 1', /cannot be combined/],
    ['write -u 0 1', /requires -z/],
    ['read 0 -5', /length '-5'|unknown option -5|expected OFFSET/],
    ['read 1Q 5', /offset '1Q'/],
    ['flush now', /takes no arguments/],
    ['write "0 1', /unterminated/],
  ];
  for (const [line, pattern] of cases) {
    assert.throws(
      () => parseIoCommand(line),
      (e: unknown) => e instanceof BitbackError && e.code === 'INVALID_ARGUMENT' && pattern.test(e.message),
      line,
    );
  }
});

test('splitWords() groups quoted words', () => {
  assert.deepEqual(splitWords(`write -P 0x5a "1M" '64k'`), ['write', '-P', '0x5a', '1M', '64k']);
  assert.deepEqual(splitWords('  a   b '), ['a', 'b']);
  assert.deepEqual(splitWords(`''`), ['']);
});
