import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeImageHeader, encodeImageHeader, readBackingFileName } from './image-header.js';
import { extensionsArb, headerArbFor, nameArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument } from './testing/assertions.js';
import { extensionBytes, headerCluster } from './testing/builder.js';

test('decodeImageHeader() decodes header, extensions and backing file name', () => {
  const bytes = headerCluster({ extensions: [extensionBytes(0xe2792aca, new TextEncoder().encode('qcow2'))], backingFile: 'base.qcow2' });
  const image = decodeImageHeader(bytes, 0x40000);
  assert.equal(image.backingFile, 'base.qcow2');
  assert.equal(image.header.backingFileOffset, 112 + 16 + 8);
  assert.equal(image.header.backingFileSize, 10);
  assert.deepEqual(image.extensions, { backingFormat: 'qcow2' });
  assert.deepEqual(encodeImageHeader(image), bytes);
});

test('decodeImageHeader() of an image without a backing file has no backingFile', () => {
  const image = decodeImageHeader(headerCluster({}));
  assert.equal('backingFile' in image, false);
  assert.deepEqual(image.extensions, {});
});

test('readBackingFileName() rejects a name past the bytes given or not UTF-8', () => {
  const bytes = headerCluster({ backingFile: 'base.qcow2' });
  const image = decodeImageHeader(bytes);
  assertCorrupt(() => readBackingFileName(bytes.subarray(0, 125), image.header), 'header.backing_file_name', /needs 10 bytes but only 5/);
  bytes[image.header.backingFileOffset] = 0xff;
  assertCorrupt(() => readBackingFileName(bytes, image.header), 'header.backing_file_name', /UTF-8/);
});

test('decodeImageHeader(encodeImageHeader(x)) is x, the backing name placed after the extensions', () => {
  fc.assert(
    // 64 KiB clusters: room for every extension extensionsArb makes, and its offsets are aligned
    fc.property(headerArbFor(fc.constant(16)), extensionsArb, fc.option(nameArb(200), { nil: undefined }), (header, extensions, backingFile) => {
      // no auto-clear bits: bit 0 needs a bitmaps extension, bit 1 excludes a backing file
      header = { ...header, autoclearFeatures: header.autoclearFeatures & ~3n };
      const image = backingFile === undefined ? { header, extensions } : { header, extensions, backingFile };
      const bytes = encodeImageHeader(image);
      assert.equal(bytes.length, 65536);
      const decoded = decodeImageHeader(bytes);
      const nameLength = backingFile === undefined ? 0 : new TextEncoder().encode(backingFile).length;
      assert.equal(decoded.header.backingFileSize, nameLength);
      assert.deepEqual(decoded, {
        ...image,
        header: { ...header, backingFileOffset: decoded.header.backingFileOffset, backingFileSize: nameLength },
      });
      if (backingFile !== undefined) {
        assert.ok(decoded.header.backingFileOffset >= header.headerLength + 8);
        assert.equal(bytes.subarray(decoded.header.backingFileOffset - 8, decoded.header.backingFileOffset).every((b) => b === 0), true);
      }
    }),
    { numRuns: 200 },
  );
});

test('encodeImageHeader() refuses parts that do not fit in one cluster', () => {
  const { header } = decodeImageHeader(headerCluster({ header: { clusterBits: 9, size: 512, l1Size: 1, l1TableOffset: 0x400, refcountTableOffset: 0x200 } }));
  assertInvalidArgument(() => encodeImageHeader({ header, extensions: {}, backingFile: 'x'.repeat(400) }), /512-byte cluster/);
  assertInvalidArgument(() => encodeImageHeader({ header, extensions: { externalDataFile: 'y'.repeat(400) } }), /512-byte cluster/);
  assert.equal(encodeImageHeader({ header, extensions: {}, backingFile: 'x'.repeat(392) }).length, 512);
});

test('encodeImageHeader() refuses an empty or over-long backing file name', () => {
  const { header } = decodeImageHeader(headerCluster({}));
  assertInvalidArgument(() => encodeImageHeader({ header, extensions: {}, backingFile: '' }), /backing_file/);
  assertInvalidArgument(() => encodeImageHeader({ header, extensions: {}, backingFile: 'x'.repeat(1024) }), /1023/);
});

test('encodeImageHeader() refuses the bitmaps auto-clear bit without a bitmaps extension', () => {
  const { header } = decodeImageHeader(headerCluster({}));
  assertInvalidArgument(() => encodeImageHeader({ header: { ...header, autoclearFeatures: 1n }, extensions: {} }), /bitmaps/);
  const ok = encodeImageHeader({
    header: { ...header, autoclearFeatures: 1n },
    extensions: { bitmaps: { nbBitmaps: 1, bitmapDirectorySize: 32, bitmapDirectoryOffset: 0x50000 } },
  });
  assert.equal(decodeImageHeader(ok).extensions.bitmaps?.nbBitmaps, 1);
});
