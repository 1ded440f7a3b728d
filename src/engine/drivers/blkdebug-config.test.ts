import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseBlkdebugConfig } from './blkdebug-config.js';

test('parseBlkdebugConfig() reads inject-error and set-state groups with QEMU option numbers and booleans', () => {
  const config = parseBlkdebugConfig(
    [
      '# rules',
      '',
      '[set-state]',
      'event = "write_aio"',
      'new_state = "2"',
      '[inject-error "first"]',
      '  event = "read_aio"',
      'errno = "0x1c"',
      'state = "-1"',
      'sector = "130"',
      'once = "on"',
      'immediately = "yes"',
      'iotype = "read"',
      '[inject-error]',
      'event = "flush_to_disk"',
    ].join('\n'),
  );
  assert.deepEqual(config, {
    injects: [
      { event: 'read_aio', iotype: 'read', state: -1, errno: 28, sector: 130, once: true, immediately: true },
      { event: 'flush_to_disk' },
    ],
    sets: [{ event: 'write_aio', new_state: 2 }],
  });
});

test('parseBlkdebugConfig() reads an unquoted value, or a key glued to its value, the way QEMU\'s sscanf does', () => {
  assert.throws(() => parseBlkdebugConfig('[inject-error]\nevent = read_aio\n'), { reason: 'invalid parameter value: ' });
  assert.throws(() => parseBlkdebugConfig('[inject-error]\nevent = "read_aio"\nstate="2"\n'), { reason: 'Invalid parameter \'state="2"\'' });
});

test('parseBlkdebugConfig() fails with QEMU\'s texts', () => {
  const cases: Array<[string, string]> = [
    ['garbage\n', 'no group defined'],
    ['[inject-error]\n   \n', 'parse error'],
    ['[bogus]\nevent = "read_aio"\n', "There is no option group 'bogus'"],
    ['[inject-error]\nevent = "read_aio"\nfoo = "1"\n', "Invalid parameter 'foo'"],
    ['[inject-error]\nevent = "read_aio"\nerrno = "abc"\n', "Parameter 'errno' expects a number"],
    ['[inject-error]\nevent = "read_aio"\nonce = "maybe"\n', "Parameter 'once' expects 'on' or 'off'"],
    ['[inject-error]\nerrno = "5"\n', 'Missing event name for rule'],
    ['[set-state]\nnew_state = "5"\n', 'Missing event name for rule'],
    ['[inject-error]\nevent = "bogus"\n', 'invalid parameter value: bogus'],
    ['[inject-error]\nevent = "read_aio"\niotype = "x"\n', 'invalid parameter value: x'],
    ['[inject-error "a"]\nevent = "read_aio"\n[inject-error "a"]\nevent = "read_aio"\n', "Duplicate ID 'a' for inject-error"],
  ];
  for (const [text, reason] of cases) assert.throws(() => parseBlkdebugConfig(text), { reason }, JSON.stringify(text));
});

test('parseBlkdebugConfig() puts every inject-error rule before the set-state rules, each in file order', () => {
  const config = parseBlkdebugConfig('[set-state]\nevent = "none"\nnew_state = "3"\n[inject-error]\nevent = "none"\n[set-state]\nevent = "read_aio"\nnew_state = "4"\n');
  assert.deepEqual(config.sets.map((r) => r.new_state), [3, 4]);
  assert.equal(config.injects.length, 1);
});
