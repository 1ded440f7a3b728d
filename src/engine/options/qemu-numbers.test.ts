import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseQemuBool, parseQemuInt64, parseQemuNumber, parseQemuSize, parseQemuUint64 } from './qemu-numbers.js';

// Every spelling below was tried on QEMU 7.2.22: integers and booleans with `-blockdev null-co`
// (`size` is int, `latency-ns` uint64, `read-zeroes` bool), sizes with `-object
// memory-backend-ram,size=...` (qom-get for the values) and `qemu-storage-daemon --object`.

test('parseQemuInt64() reads decimal, hex and octal with leading space and a sign, like strtoll', () => {
  const accepted: [string, bigint][] = [
    ['12', 12n],
    [' 12', 12n],
    ['\t12', 12n],
    ['+5', 5n],
    ['-5', -5n],
    ['0x10', 16n],
    ['-0x10', -16n],
    ['0X1F', 31n],
    ['012', 10n],
    ['0', 0n],
    ['-9223372036854775808', -(2n ** 63n)],
    ['9223372036854775807', 2n ** 63n - 1n],
  ];
  for (const [text, value] of accepted) assert.equal(parseQemuInt64(text), value, text);
  for (const text of ['', '1k', '1.5', '12 ', '0x', '08', '- 5', '9223372036854775808', '-9223372036854775809', 'abc', '1e3'])
    assert.equal(parseQemuInt64(text), undefined, text);
});

test('parseQemuUint64() wraps negative values as strtoull does and refuses 2^64', () => {
  assert.equal(parseQemuUint64('-1'), 2n ** 64n - 1n);
  assert.equal(parseQemuUint64('-18446744073709551615'), 1n);
  assert.equal(parseQemuUint64('18446744073709551615'), 2n ** 64n - 1n);
  assert.equal(parseQemuUint64('-0'), 0n);
  assert.equal(parseQemuUint64('0X1F'), 31n);
  for (const text of ['18446744073709551616', '-18446744073709551616', '1k', '', ' '])
    assert.equal(parseQemuUint64(text), undefined, text);
});

test('parseQemuSize() takes suffixes, fractions with a suffix and hex, as qemu_strtosz', () => {
  const accepted: [string, bigint][] = [
    ['1', 1n],
    ['1k', 1024n],
    ['1K', 1024n],
    ['1b', 1n],
    ['1B', 1n],
    ['1.5k', 1536n],
    ['0.5M', 524288n],
    ['0x10', 16n],
    ['0x10k', 16384n],
    ['0X1F', 31n],
    ['010', 10n],
    [' 1k', 1024n],
    ['+1', 1n],
    ['  +1', 1n],
    ['1.0', 1n],
    ['1.0b', 1n],
    ['5.k', 5120n],
    ['1.0005k', 1025n],
    ['0.00048828125k', 1n],
    ['1.0000000000000000001k', 1024n],
    ['1.9999999999999999999k', 1024n],
    ['1E', 2n ** 60n],
    ['15E', 15n * 2n ** 60n],
    ['1e', 2n ** 60n],
    ['18446744073709551615', 2n ** 64n - 1n],
    ['9007199254740993', 9007199254740993n],
  ];
  for (const [text, value] of accepted) assert.equal(parseQemuSize(text), value, text);
  const refused = ['1.5', '1e3', '1k ', '1KiB', '1kB', '16E', '17179869184G', '-1', '', 'k', '0.5b', '1.5b', '18446744073709551616', '1.1e1', 'inf', 'nan', '.5k', '1..5', '0x1.5', '0x1.8k', '0x', '1.5e3k'];
  for (const text of refused) assert.equal(parseQemuSize(text), undefined, text);
});

test('parseQemuBool() takes exactly on/yes/true/y and off/no/false/n', () => {
  for (const text of ['on', 'yes', 'true', 'y']) assert.equal(parseQemuBool(text), true, text);
  for (const text of ['off', 'no', 'false', 'n']) assert.equal(parseQemuBool(text), false, text);
  for (const text of ['On', 'TRUE', '1', '0', '', ' on']) assert.equal(parseQemuBool(text), undefined, text);
});

test('parseQemuNumber() reads what strtod reads and refuses non-finite values', () => {
  assert.equal(parseQemuNumber('1.5'), 1.5);
  assert.equal(parseQemuNumber(' -2e3'), -2000);
  assert.equal(parseQemuNumber('.5'), 0.5);
  assert.equal(parseQemuNumber('0x1.8p1'), 3);
  for (const text of ['', 'inf', 'nan', '1e999', '1e-400', '1.5 ', '0x', '1e']) assert.equal(parseQemuNumber(text), undefined, text);
});
