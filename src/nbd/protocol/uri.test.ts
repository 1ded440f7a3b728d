import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { InvalidArgumentError } from '../../errors.js';
import { formatNbdUri, isNbdUri, parseNbdUri, type NbdUri } from './uri.js';

test('parseNbdUri() reads the URI forms libnbd and QEMU accept', () => {
  assert.deepEqual(parseNbdUri('nbd://localhost/disk'), { address: { transport: 'tcp', host: 'localhost', port: 10809 }, exportName: 'disk', tls: false });
  assert.deepEqual(parseNbdUri('nbd://127.0.0.1:10810'), { address: { transport: 'tcp', host: '127.0.0.1', port: 10810 }, exportName: '', tls: false });
  assert.deepEqual(parseNbdUri('nbd://h/..'), { address: { transport: 'tcp', host: 'h', port: 10809 }, exportName: '..', tls: false });
  assert.deepEqual(parseNbdUri('nbd://[::1]:7/a%2Fb'), { address: { transport: 'tcp', host: '::1', port: 7 }, exportName: 'a/b', tls: false });
  assert.deepEqual(parseNbdUri('nbd+unix:///vda?socket=/run/a+b.sock'), { address: { transport: 'unix', path: '/run/a+b.sock' }, exportName: 'vda', tls: false });
  assert.deepEqual(parseNbdUri('nbds+unix://alice@/?socket=/s&tls-psk-file=/k.psk'), {
    address: { transport: 'unix', path: '/s' }, exportName: '', tls: true, tlsPskFile: '/k.psk', tlsUsername: 'alice',
  });
  assert.deepEqual(parseNbdUri('nbds://h/e?tls-certificates=/etc/pki/qemu'), {
    address: { transport: 'tcp', host: 'h', port: 10809 }, exportName: 'e', tls: true, tlsCertificates: '/etc/pki/qemu',
  });
});

test('parseNbdUri() explains what is wrong with a bad URI', () => {
  const cases: Array<[string, RegExp]> = [
    ['/tmp/disk.qcow2', /does not start with/],
    ['nbd+vsock://1:2/x', /not supported/],
    ['nbd+unix:///x', /needs \?socket=PATH/],
    ['nbd+unix://host/x?socket=/s', /has no host/],
    ['nbd://h:0/x', /port/],
    ['nbd://h/x?socket=/s', /belongs to nbd\+unix/],
    ['nbd://h/x?tls-certificates=/d', /need an nbds/],
    ['nbd://h/x?frobnicate=1', /not supported/],
    ['nbd://user@h/x', /needs an nbds/],
    ['nbds://user:secret@h/x', /passwords/],
    ['nbd://h/%zz', /percent-escape/],
    ['nbds://h/?tls-certificates=/a&tls-psk-file=/b', /not both/],
  ];
  for (const [text, why] of cases) {
    assert.throws(() => parseNbdUri(text), (e: unknown) => e instanceof InvalidArgumentError && why.test(e.message), text);
  }
});

test('isNbdUri() tells URIs from file names', () => {
  assert.equal(isNbdUri('nbd+unix:///?socket=/s'), true);
  assert.equal(isNbdUri('NBDS://h/'), true);
  assert.equal(isNbdUri('nbd.qcow2'), false);
  assert.equal(isNbdUri('./nbd://x'), false);
});

test('formatNbdUri() output parses back to the same value', () => {
  const text = fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !s.includes('\0'));
  const uri: fc.Arbitrary<NbdUri> = fc.record({
    address: fc.oneof(
      fc.record({ transport: fc.constant('tcp' as const), host: fc.constantFrom('localhost', '127.0.0.1', '::1', 'backup.example'), port: fc.integer({ min: 1, max: 65535 }) }).map((a) => ({ ...a })),
      fc.record({ transport: fc.constant('unix' as const), path: text.map((s) => `/tmp/${s}`) }).map((a) => ({ ...a })),
    ),
    exportName: fc.string({ maxLength: 20 }).filter((s) => !s.includes('\0')),
    tls: fc.boolean(),
  }).chain((u) => (u.tls ? fc.option(fc.string({ minLength: 1, maxLength: 8 }), { nil: undefined }) : fc.constant(undefined)).map((user) => (user === undefined ? { ...u } : { ...u, tlsUsername: user })));
  fc.assert(fc.property(uri, (u) => assert.deepEqual(parseNbdUri(formatNbdUri(u)), u)));
});
