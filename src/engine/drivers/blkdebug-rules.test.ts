import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BlkdebugRules } from './blkdebug-rules.js';

test('BlkdebugRules starts in state 1 and activates no rule before its event fires', () => {
  const rules = new BlkdebugRules([{ event: 'read_aio' }], []);
  assert.equal(rules.state, 1);
  assert.equal(rules.check('read', 0, 512), undefined);
  rules.event('write_aio');
  assert.equal(rules.check('read', 0, 512), undefined);
  rules.event('read_aio');
  assert.deepEqual(rules.check('read', 0, 512), { errno: 5, immediately: false });
});

test('an active rule keeps failing requests of every default kind but block status, after other events and state changes', () => {
  const rules = new BlkdebugRules([{ event: 'read_aio', errno: 28 }], [{ event: 'write_aio', new_state: 7 }]);
  rules.event('read_aio');
  rules.event('write_aio');
  assert.equal(rules.state, 7);
  for (const kind of ['read', 'write', 'write-zeroes', 'discard', 'flush'] as const) assert.equal(rules.check(kind, 0, kind === 'flush' ? 0 : 512)?.errno, 28, kind);
  assert.equal(rules.check('block-status', 0, 512), undefined);
});

test('a once rule fails one request and is gone for good, also when its event fires again', () => {
  const rules = new BlkdebugRules([{ event: 'read_aio', once: true }], []);
  rules.event('read_aio');
  assert.ok(rules.check('read', 0, 512));
  assert.equal(rules.check('read', 0, 512), undefined);
  rules.event('read_aio');
  assert.equal(rules.check('read', 0, 512), undefined);
  assert.equal(rules.ruleCount, 0);
});

test('a rule is activated only in its state, compared with the state from before the event', () => {
  const rules = new BlkdebugRules(
    [{ event: 'read_aio', state: 2, errno: 28 }],
    [
      { event: 'write_aio', state: 1, new_state: 2 },
      { event: 'read_aio', state: 2, new_state: 1 },
    ],
  );
  rules.event('read_aio');
  assert.equal(rules.check('read', 0, 512), undefined);
  rules.event('write_aio');
  assert.equal(rules.state, 2);
  rules.event('read_aio');
  assert.equal(rules.state, 1);
  assert.equal(rules.check('read', 0, 512)?.errno, 28);
});

test('of two set-state rules that take part, the first given wins (QEMU walks its list backwards)', () => {
  const rules = new BlkdebugRules(
    [],
    [
      { event: 'write_aio', new_state: 2 },
      { event: 'write_aio', new_state: 3 },
    ],
  );
  rules.event('write_aio');
  assert.equal(rules.state, 2);
});

test('the first active rule that matches decides, in the order given; errno 0 lets the request through and shadows later rules', () => {
  const rules = new BlkdebugRules(
    [
      { event: 'read_aio', errno: 0, once: true },
      { event: 'read_aio', errno: 28 },
    ],
    [],
  );
  rules.event('read_aio');
  assert.equal(rules.check('read', 0, 512), undefined);
  // The errno-0 rule is not "used up": it stays.
  assert.equal(rules.check('read', 0, 512), undefined);
  assert.equal(rules.ruleCount, 2);
});

test('an event whose rules do not take part leaves the active set as it is; one whose rules do replaces it', () => {
  const rules = new BlkdebugRules(
    [
      { event: 'read_aio', errno: 1 },
      { event: 'write_aio', state: 5, errno: 2 },
      { event: 'flush_to_disk', errno: 3, iotype: 'flush' },
    ],
    [],
  );
  rules.event('read_aio');
  rules.event('write_aio');
  assert.equal(rules.check('read', 0, 512)?.errno, 1);
  rules.event('flush_to_disk');
  assert.equal(rules.check('read', 0, 512), undefined);
  assert.equal(rules.check('flush', 0, 0)?.errno, 3);
});

test('a sector rule fails only requests covering its sector, never a flush; a negative sector other than -1 matches nothing', () => {
  const rules = new BlkdebugRules(
    [
      { event: 'none', errno: 28, sector: 130 },
      { event: 'none', errno: 1, sector: 131 },
      { event: 'none', errno: 2, sector: -2 },
      { event: 'none', errno: 3, sector: -1, iotype: 'write' },
    ],
    [],
  );
  rules.event('none');
  assert.equal(rules.check('read', 0, 65536), undefined);
  assert.equal(rules.check('read', 65536, 1024), undefined);
  assert.equal(rules.check('read', 66560, 512)?.errno, 28);
  assert.equal(rules.check('read', 65536, 4096)?.errno, 28);
  assert.equal(rules.check('read', 67072, 1)?.errno, 1);
  assert.equal(rules.check('read', 65535, 2), undefined);
  assert.equal(rules.check('flush', 0, 0), undefined);
  assert.equal(rules.check('write', 0, 1)?.errno, 3);
});

test('iotype restricts a rule to one kind of request, block status included', () => {
  const rules = new BlkdebugRules([{ event: 'none', iotype: 'block-status', immediately: true }], []);
  rules.event('none');
  assert.equal(rules.check('read', 0, 512), undefined);
  assert.deepEqual(rules.check('block-status', 0, 512), { errno: 5, immediately: true });
});
