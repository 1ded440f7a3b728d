import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatIoSize, formatSize, parseSize } from './size.js';
import { BitbackError } from '../../errors.js';

test('parseSize() reads plain numbers and every suffix as powers of 1024', () => {
  assert.equal(parseSize('0'), 0);
  assert.equal(parseSize('512'), 512);
  assert.equal(parseSize('4b'), 4);
  assert.equal(parseSize('64k'), 65536);
  assert.equal(parseSize('64K'), 65536);
  assert.equal(parseSize('1M'), 1048576);
  assert.equal(parseSize('3g'), 3 * 1073741824);
  assert.equal(parseSize('2T'), 2 * 2 ** 40);
  assert.equal(parseSize('1P'), 2 ** 50);
  assert.equal(parseSize('0x1000'), 4096);
});

test('parseSize() accepts a fraction with a suffix when the result is whole bytes', () => {
  assert.equal(parseSize('1.5K'), 1536);
  assert.equal(parseSize('0.5M'), 524288);
  assert.throws(() => parseSize('1.5'), /fractional size needs a suffix/);
  assert.throws(() => parseSize('1.001K'), /not a whole number of bytes/);
});

test('parseSize() rejects malformed, negative and huge sizes with a typed error', () => {
  for (const bad of ['', '-1', 'abc', '12Q', '1MM', '0x', '0x10K', '1e3', '8E', '9999999999999999999']) {
    assert.throws(
      () => parseSize(bad),
      (e: unknown) => e instanceof BitbackError && e.code === 'INVALID_ARGUMENT' && e.message.includes(`'${bad}'`),
      bad,
    );
  }
});

test('parseSize() inverts a decimal rendering of any safe integer', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => {
      assert.equal(parseSize(String(n)), n);
    }),
  );
});

test('formatSize() prints qemu-io style units', () => {
  assert.equal(formatSize(512), '512 bytes');
  assert.equal(formatSize(65536), '64 KiB');
  assert.equal(formatSize(1536), '1.5 KiB');
  assert.equal(formatSize(1048576), '1 MiB');
  assert.equal(formatSize(0xf0000), '960 KiB');
  assert.equal(formatSize(1000 * 1024 * 1024), '1000 MiB');
  assert.equal(formatSize(5 * 2 ** 30), '5 GiB');
});

test('formatIoSize prints as qemu-io does: three decimals unless whole, ties to even', () => {
  assert.equal(formatIoSize(65536), '64 KiB');
  assert.equal(formatIoSize(0xf0000), '960 KiB');
  assert.equal(formatIoSize(1536), '1.500 KiB');
  assert.equal(formatIoSize(1.0625 * 1024 * 1024), '1.062 MiB');
  assert.equal(formatIoSize(512), '512 bytes');
});
