import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeHeaderExtensions, encodeHeaderExtensions, type ExtensionContext } from './extensions.js';
import { extensionsArb } from './testing/arbitraries.js';
import { assertCorrupt, assertInvalidArgument, assertUnsupported } from './testing/assertions.js';
import { ByteBuilder, bitmapsExtensionBytes, concat, extensionBytes, featureTableBytes, headerCluster } from './testing/builder.js';

const BACKING_FORMAT = 0xe2792aca;
const FEATURE_NAMES = 0x6803f857;
const BITMAPS = 0x23852875;
const ENCRYPTION = 0x0537be77;
const DATA_FILE = 0x44415441;

const CTX: ExtensionContext = { headerLength: 112, backingFileOffset: 0, clusterBits: 16, cryptMethod: 0 };
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

/** The extension area as it would sit in a 64 KiB first cluster after a 112-byte header. */
function area(...records: Uint8Array[]): Uint8Array {
  return headerCluster({ extensions: records });
}

test('decodeHeaderExtensions() decodes every known extension type', () => {
  const bytes = area(
    extensionBytes(BACKING_FORMAT, text('qcow2')),
    extensionBytes(FEATURE_NAMES, featureTableBytes([{ type: 0, bit: 0, name: 'dirty bit' }, { type: 2, bit: 1, name: 'raw external data' }])),
    extensionBytes(BITMAPS, bitmapsExtensionBytes(2, 64, 0x50000)),
    extensionBytes(DATA_FILE, text('data.raw')),
  );
  assert.deepEqual(decodeHeaderExtensions(bytes, CTX, 0x60000), {
    backingFormat: 'qcow2',
    featureNames: [
      { type: 0, bit: 0, name: 'dirty bit' },
      { type: 2, bit: 1, name: 'raw external data' },
    ],
    bitmaps: { nbBitmaps: 2, bitmapDirectorySize: 64, bitmapDirectoryOffset: 0x50000 },
    externalDataFile: 'data.raw',
  });
});

test('decodeHeaderExtensions() decodes the encryption header pointer of a LUKS image', () => {
  const bytes = area(extensionBytes(ENCRYPTION, new ByteBuilder().u64(0x20000).u64(2068).build()));
  assert.deepEqual(decodeHeaderExtensions(bytes, { ...CTX, cryptMethod: 2 }), { encryption: { offset: 0x20000, length: 2068 } });
  assertCorrupt(() => decodeHeaderExtensions(bytes, CTX), 'header_extension[0]', /LUKS/);
  const unaligned = area(extensionBytes(ENCRYPTION, new ByteBuilder().u64(0x20200).u64(2068).build()));
  assertCorrupt(() => decodeHeaderExtensions(unaligned, { ...CTX, cryptMethod: 2 }), 'header_extension[0].offset');
  const short = area(extensionBytes(ENCRYPTION, new ByteBuilder().u64(0x20000).build()));
  assertCorrupt(() => decodeHeaderExtensions(short, { ...CTX, cryptMethod: 2 }), 'header_extension[0]', /length 8/);
});

test('decodeHeaderExtensions() keeps unknown extensions in order, without padding', () => {
  const bytes = area(extensionBytes(0x12345678, [1, 2, 3]), extensionBytes(BACKING_FORMAT, text('raw')), extensionBytes(0xabcdef01, []));
  assert.deepEqual(decodeHeaderExtensions(bytes, CTX), {
    backingFormat: 'raw',
    unknown: [
      { type: 0x12345678, data: new Uint8Array([1, 2, 3]) },
      { type: 0xabcdef01, data: new Uint8Array(0) },
    ],
  });
});

test('decodeHeaderExtensions() stops at the end marker and ignores what follows', () => {
  const bytes = headerCluster({ extensions: [extensionBytes(BACKING_FORMAT, text('raw'))] });
  bytes.set(extensionBytes(DATA_FILE, text('ignored')), 112 + 16 + 8);
  assert.deepEqual(decodeHeaderExtensions(bytes, CTX), { backingFormat: 'raw' });
});

test('decodeHeaderExtensions() ends the list at the backing file name', () => {
  const bytes = headerCluster({ extensions: [extensionBytes(BACKING_FORMAT, text('raw'))], noEndMarker: true, backingFile: 'base.img' });
  // the area ends where the name starts, after one 16-byte record
  assert.deepEqual(decodeHeaderExtensions(bytes, { ...CTX, backingFileOffset: 112 + 16 }), { backingFormat: 'raw' });
  assertCorrupt(() => decodeHeaderExtensions(bytes, { ...CTX, backingFileOffset: 112 + 10 }), 'header_extension[0]', /length 3 .* runs past the end of the extension area/);
  assertCorrupt(() => decodeHeaderExtensions(bytes, { ...CTX, backingFileOffset: 112 + 4 }), 'header_extension[0]', /type and length/);
});

test('decodeHeaderExtensions() accepts an area that fills the cluster without an end marker', () => {
  const filler = extensionBytes(0x11111111, new Uint8Array(512 - 112 - 8));
  const bytes = headerCluster({ header: { clusterBits: 9, size: 512, l1Size: 1, l1TableOffset: 0x400, refcountTableOffset: 0x200 }, extensions: [filler], noEndMarker: true });
  assert.equal(bytes.length, 512);
  assert.equal(decodeHeaderExtensions(bytes, { ...CTX, clusterBits: 9 }).unknown?.length, 1);
});

test('decodeHeaderExtensions() rejects a length that runs past the first cluster', () => {
  const bytes = area(extensionBytes(0x11111111, [], 65536));
  assertCorrupt(() => decodeHeaderExtensions(bytes, CTX), 'header_extension[0]', /length 65536/);
  const huge = area(extensionBytes(0x11111111, [], 0xffffffff));
  assertCorrupt(() => decodeHeaderExtensions(huge, CTX), 'header_extension[0]', /length 4294967295/);
});

test('decodeHeaderExtensions() rejects bytes that end before the area does', () => {
  const bytes = area(extensionBytes(BACKING_FORMAT, text('qcow2')));
  assertCorrupt(() => decodeHeaderExtensions(bytes.subarray(0, 112 + 4), CTX), 'header_extension[0]', /needs 8 bytes/);
  assertCorrupt(() => decodeHeaderExtensions(bytes.subarray(0, 112 + 10), CTX), 'header_extension[0]', /needs 5 bytes/);
  assertCorrupt(() => decodeHeaderExtensions(bytes.subarray(0, 112 + 16), CTX), 'header_extension[1]');
});

test('decodeHeaderExtensions() rejects a known extension that appears twice', () => {
  for (const [type, data] of [
    [BACKING_FORMAT, text('raw')],
    [FEATURE_NAMES, featureTableBytes([])],
    [BITMAPS, bitmapsExtensionBytes(1, 32, 0x50000)],
    [DATA_FILE, text('x')],
  ] as const) {
    assertCorrupt(() => decodeHeaderExtensions(area(extensionBytes(type, data), extensionBytes(type, data)), CTX), 'header_extension[1]', /more than once/);
  }
});

test('decodeHeaderExtensions() checks the bitmaps extension', () => {
  const decode = (data: Uint8Array, fileSize?: number) => decodeHeaderExtensions(area(extensionBytes(BITMAPS, data)), CTX, fileSize);
  assertCorrupt(() => decode(bitmapsExtensionBytes(1, 32, 0x50000).subarray(0, 16)), 'header_extension[0]', /length 16/);
  assertCorrupt(() => decode(bitmapsExtensionBytes(1, 32, 0x50000, 1)), 'header_extension[0].reserved');
  assertCorrupt(() => decode(bitmapsExtensionBytes(0, 32, 0x50000)), 'header_extension[0].nb_bitmaps', /is 0/);
  assertUnsupported(() => decode(bitmapsExtensionBytes(65536, 65536 * 32, 0x50000)), 'header_extension[0].nb_bitmaps', /65535/);
  assertCorrupt(() => decode(bitmapsExtensionBytes(1, 32, 0x50200)), 'header_extension[0].bitmap_directory_offset', /multiple of the cluster size/);
  assertCorrupt(() => decode(bitmapsExtensionBytes(1, 32, 0)), 'header_extension[0].bitmap_directory_offset');
  assertUnsupported(() => decode(bitmapsExtensionBytes(1, 1024 * 65535 + 8, 0x50000)), 'header_extension[0].bitmap_directory_size', /limit/);
  assertCorrupt(() => decode(bitmapsExtensionBytes(2, 56, 0x50000)), 'header_extension[0].bitmap_directory_size', /cannot hold 2/);
  assertCorrupt(() => decode(bitmapsExtensionBytes(1, 36, 0x50000)), 'header_extension[0].bitmap_directory_size');
  assertCorrupt(() => decode(bitmapsExtensionBytes(1, 32, 0x50000), 0x50010), 'header_extension[0].bitmap_directory_offset', /past the end/);
  assertUnsupported(() => decode(new ByteBuilder().u32(1).u32(0).u64(32).u64(2n ** 60n).build()), 'header_extension[0].bitmap_directory_offset', /2\^53/);
});

test('decodeHeaderExtensions() checks the feature name table', () => {
  assertCorrupt(() => decodeHeaderExtensions(area(extensionBytes(FEATURE_NAMES, new Uint8Array(47))), CTX), 'header_extension[0]', /multiple of 48/);
  assertCorrupt(() => decodeHeaderExtensions(area(extensionBytes(FEATURE_NAMES, featureTableBytes([{ type: 3, bit: 0, name: 'x' }]))), CTX), 'header_extension[0].feature[0]', /type 3/);
  assertCorrupt(() => decodeHeaderExtensions(area(extensionBytes(FEATURE_NAMES, featureTableBytes([{ type: 0, bit: 1, name: 'a' }, { type: 0, bit: 64, name: 'x' }]))), CTX), 'header_extension[0].feature[1]', /bit 64/);
  const full = 'n'.repeat(46);
  assert.deepEqual(decodeHeaderExtensions(area(extensionBytes(FEATURE_NAMES, featureTableBytes([{ type: 1, bit: 63, name: full }]))), CTX).featureNames, [{ type: 1, bit: 63, name: full }]);
});

test('decodeHeaderExtensions() refuses a backing format name QEMU cannot hold', () => {
  assertUnsupported(() => decodeHeaderExtensions(area(extensionBytes(BACKING_FORMAT, text('x'.repeat(16)))), CTX), 'header_extension[0].backing_format', /15/);
  assert.equal(decodeHeaderExtensions(area(extensionBytes(BACKING_FORMAT, text('x'.repeat(15)))), CTX).backingFormat, 'x'.repeat(15));
});

test('decodeHeaderExtensions() rejects names that are not UTF-8', () => {
  assertCorrupt(() => decodeHeaderExtensions(area(extensionBytes(DATA_FILE, [0x61, 0xff, 0x62])), CTX), 'header_extension[0].external_data_file', /UTF-8/);
});

test('decodeHeaderExtensions(encodeHeaderExtensions(x)) is x', () => {
  fc.assert(
    fc.property(extensionsArb, (ext) => {
      const encoded = encodeHeaderExtensions(ext, 16);
      assert.equal(encoded.length % 8, 0);
      const cluster = new Uint8Array(65536);
      cluster.set(encoded, 112);
      assert.deepEqual(decodeHeaderExtensions(cluster, CTX), ext);
    }),
    { numRuns: 300 },
  );
});

test('encodeHeaderExtensions() writes QEMU order, padding and the end marker', () => {
  const encoded = encodeHeaderExtensions(
    {
      unknown: [{ type: 0x99, data: new Uint8Array([7]) }],
      bitmaps: { nbBitmaps: 1, bitmapDirectorySize: 32, bitmapDirectoryOffset: 0x50000 },
      featureNames: [{ type: 0, bit: 0, name: 'dirty bit' }],
      externalDataFile: 'd',
      backingFormat: 'raw',
    },
    16,
  );
  const expected = concat(
    extensionBytes(BACKING_FORMAT, text('raw')),
    extensionBytes(DATA_FILE, text('d')),
    extensionBytes(FEATURE_NAMES, featureTableBytes([{ type: 0, bit: 0, name: 'dirty bit' }])),
    extensionBytes(BITMAPS, bitmapsExtensionBytes(1, 32, 0x50000)),
    extensionBytes(0x99, [7]),
    new Uint8Array(8),
  );
  assert.deepEqual(encoded, expected);
  assert.deepEqual(encodeHeaderExtensions({}, 16), new Uint8Array(8));
});

test('encodeHeaderExtensions() refuses what the decoder would reject', () => {
  assertInvalidArgument(() => encodeHeaderExtensions({ backingFormat: 'a-very-long-format' }, 16), /backing_format/);
  assertInvalidArgument(() => encodeHeaderExtensions({ featureNames: [{ type: 3, bit: 0, name: 'x' }] }, 16), /type/);
  assertInvalidArgument(() => encodeHeaderExtensions({ featureNames: [{ type: 0, bit: 0, name: 'x'.repeat(47) }] }, 16), /46/);
  assertInvalidArgument(() => encodeHeaderExtensions({ bitmaps: { nbBitmaps: 0, bitmapDirectorySize: 32, bitmapDirectoryOffset: 0x50000 } }, 16), /nb_bitmaps/);
  assertInvalidArgument(() => encodeHeaderExtensions({ bitmaps: { nbBitmaps: 1, bitmapDirectorySize: 32, bitmapDirectoryOffset: 0x50200 } }, 16), /bitmap_directory_offset/);
  assertInvalidArgument(() => encodeHeaderExtensions({ unknown: [{ type: BITMAPS, data: new Uint8Array(0) }] }, 16), /known extension type/);
  assertInvalidArgument(() => encodeHeaderExtensions({ unknown: [{ type: 0, data: new Uint8Array(0) }] }, 16), /end marker/);
  assertInvalidArgument(() => encodeHeaderExtensions({ encryption: { offset: 0x100, length: 1 } }, 16), /cluster-aligned/);
});
