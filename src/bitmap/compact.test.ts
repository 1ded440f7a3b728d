import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32 as zlibCrc32 } from 'node:zlib';
import fc from 'fast-check';
import { decodeCompact, encodeCompact } from './compact.js';
import { crc32 } from './crc32.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { BitmapFormatError } from './errors.js';
import { ByteWriter, readVarint } from './varint.js';

/** Fields of a compact encoding, for building fixtures (see docs/bitmap-compact-format.md). */
interface Fixture {
  magic?: string;
  version?: number;
  flags?: number;
  granularityBits?: number;
  reserved?: number;
  sizeHigh?: number;
  sizeLow?: number;
  nameLength?: number;
  name?: number[];
  /** Raw varint values: run count, then gap, length pairs. */
  varints?: number[];
  extra?: number[];
  /** Trailer value; default the correct CRC-32. */
  crc?: number;
}

function leb128(value: number): number[] {
  const out: number[] = [];
  do {
    let b = value % 128;
    value = Math.floor(value / 128);
    if (value > 0) b |= 0x80;
    out.push(b);
  } while (value > 0);
  return out;
}

function u32(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

/** Builds compact bytes from fields; defaults: an empty anonymous enabled 64 KiB bitmap of 1 MiB. */
function build(f: Fixture = {}): Uint8Array {
  const name = f.name ?? [];
  const body = [
    ...Buffer.from(f.magic ?? 'BBBITMAP', 'latin1'),
    f.version ?? 1,
    f.flags ?? 1,
    f.granularityBits ?? 16,
    f.reserved ?? 0,
    ...u32(f.sizeHigh ?? 0),
    ...u32(f.sizeLow ?? 1 << 20),
    (f.nameLength ?? name.length) >> 8,
    (f.nameLength ?? name.length) & 0xff,
    ...name,
    ...(f.varints ?? [0]).flatMap(leb128),
    ...(f.extra ?? []),
  ];
  const bytes = new Uint8Array(body);
  return new Uint8Array([...body, ...u32(f.crc ?? zlibCrc32(bytes))]);
}

function decodeError(bytes: Uint8Array): BitmapFormatError {
  try {
    decodeCompact(bytes);
  } catch (e) {
    assert.ok(e instanceof BitmapFormatError, `expected a BitmapFormatError, got ${String(e)}`);
    assert.equal(e.code, 'CORRUPT');
    return e;
  }
  assert.fail('decodeCompact accepted the bytes');
}

test('crc32() has the standard check value and agrees with zlib', () => {
  assert.equal(crc32(new TextEncoder().encode('123456789')), 0xcbf43926);
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => assert.equal(crc32(bytes), zlibCrc32(bytes))));
});

test('varints round-trip from 0 to 2^32 and refuse truncated, non-minimal and too large encodings', () => {
  for (const value of [0, 1, 127, 128, 16383, 16384, 2 ** 31, 2 ** 32 - 1, 2 ** 32]) {
    const w = new ByteWriter(1);
    w.varint(value);
    assert.deepEqual([...w.finish()], leb128(value));
    assert.deepEqual(readVarint(w.finish(), 0, w.length, 'x'), { value, next: w.length });
  }
  const bad = (bytes: number[]) => assert.throws(() => readVarint(new Uint8Array(bytes), 0, bytes.length, 'x'), BitmapFormatError);
  bad([]);
  bad([0x80]);
  bad([0x80, 0x00]);
  bad([0x81, 0x80, 0x80, 0x80, 0x20]); // 2^33 + 1
  bad([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
});

test('encodeCompact() writes the documented layout', () => {
  const b = new DirtyBitmap({ size: 4096, granularity: 512, name: 'b', persistent: true });
  b.set(512, 1024);
  b.set(5 * 512, 1);
  const expected = build({ flags: 0b011, granularityBits: 9, sizeLow: 4096, name: [0x62], varints: [2, 1, 2, 2, 1] });
  assert.deepEqual(encodeCompact(b), expected);
});

test('the compact form grows with the number of runs, not with the disk', () => {
  const b = new DirtyBitmap({ size: 2 ** 40, granularity: 512 });
  b.set(0, 2 ** 39);
  b.set(2 ** 39 + 512, 1);
  b.set(2 ** 40 - 1, 1);
  const bytes = encodeCompact(b);
  assert.ok(bytes.length < 50, `${bytes.length} bytes`);
  assert.deepEqual([...decodeCompact(bytes).dirtyExtents()], [...b.dirtyExtents()]);
});

const bitmapArb = fc
  .record({
    granularityBits: fc.integer({ min: 9, max: 31 }),
    granules: fc.integer({ min: 0, max: 3000 }),
    shortBy: fc.nat(),
    name: fc.option(fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' }), { nil: undefined }),
    state: fc.constantFrom('enabled', 'disabled', 'inconsistent'),
    persistent: fc.boolean(),
    ranges: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 200 })), { maxLength: 10 }),
  })
  .map(({ granularityBits, granules, shortBy, name, state, persistent, ranges }) => {
    const granularity = 2 ** granularityBits;
    const size = granules === 0 ? 0 : granules * granularity - (shortBy % granularity);
    const b = new DirtyBitmap({ size, granularity, name, persistent, enabled: state === 'enabled', inconsistent: state === 'inconsistent' });
    for (const [start, len] of ranges) {
      const s = start % (granules + 1);
      b.set(Math.min(size, s * granularity), Math.max(0, Math.min(size - s * granularity, len * granularity)));
    }
    return b;
  });

test('decodeCompact(encodeCompact(b)) is b, and encoding is canonical', () => {
  fc.assert(
    fc.property(bitmapArb, (b) => {
      const bytes = encodeCompact(b);
      const d = decodeCompact(bytes);
      assert.deepEqual(
        [d.size, d.granularity, d.name, d.enabled, d.persistent, d.inconsistent, d.busy],
        [b.size, b.granularity, b.name, b.enabled, b.persistent, b.inconsistent, false],
      );
      assert.deepEqual([...d.extents()], [...b.extents()]);
      assert.deepEqual(encodeCompact(d), bytes);
    }),
    { numRuns: 200 },
  );
});

test('decodeCompact() refuses every proper prefix of a valid encoding with a BitmapFormatError', () => {
  const b = new DirtyBitmap({ size: 10 << 20, granularity: 4096, name: 'carry-over' });
  for (let i = 0; i < 20; i++) b.set(i * 300_000, 5000);
  const bytes = encodeCompact(b);
  for (let n = 0; n < bytes.length; n++) decodeError(bytes.subarray(0, n));
});

test('decodeCompact() of randomly mutated bytes gives a BitmapFormatError or a valid bitmap, never a crash', () => {
  fc.assert(
    fc.property(
      bitmapArb,
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
      fc.boolean(),
      (b, flips, fixCrc) => {
        const bytes = encodeCompact(b).slice();
        for (const [at, value] of flips) bytes[at % bytes.length] = value;
        if (fixCrc) {
          // Recompute the trailer so that the field checks, not the CRC, see the damage.
          const body = bytes.length - 4;
          new DataView(bytes.buffer).setUint32(body, zlibCrc32(bytes.subarray(0, body)));
        }
        try {
          const d = decodeCompact(bytes);
          assert.equal(d.count(), [...d.dirtyExtents()].reduce((n, e) => n + Math.ceil(e.length / d.granularity), 0) * d.granularity);
        } catch (e) {
          if (!(e instanceof BitmapFormatError)) throw e;
        }
      },
    ),
    { numRuns: 500 },
  );
});

test('decodeCompact() names the field that is wrong', () => {
  const cases: [string, Fixture | Uint8Array][] = [
    ['magic', { magic: 'BBBITMAQ' }],
    ['magic', new Uint8Array([0x42, 0x42])],
    ['version', { version: 2 }],
    ['length', build().subarray(0, 26)],
    ['crc32', { crc: 0 }],
    ['flags', { flags: 0x08 }],
    ['flags', { flags: 0b101 }],
    ['granularity_bits', { granularityBits: 8 }],
    ['granularity_bits', { granularityBits: 32 }],
    ['reserved', { reserved: 1 }],
    ['size', { sizeHigh: 2 ** 21 }],
    ['size', { granularityBits: 9, sizeHigh: 512, sizeLow: 1 }],
    ['name_length', { nameLength: 1024, name: new Array<number>(1024).fill(0x61) }],
    ['name', { nameLength: 200, name: [0x61] }],
    ['name', { name: [0xc3, 0x28] }],
    ['run_count', { varints: [9, 0, 1] }],
    ['run_count', { name: [0x61], varints: [] }],
    ['runs', { varints: [1, 0, 0] }],
    ['runs', { varints: [2, 0, 1, 0, 1] }],
    ['runs', { varints: [1, 10, 7] }],
    ['runs', { varints: [1, 0, 17] }],
    ['runs', { varints: [1, 0, 1], extra: [0] }],
    ['runs', { varints: [2, 0, 1] }],
    ['runs', { varints: [1, 0], extra: [0x80] }],
  ];
  for (const [field, fixture] of cases) {
    const bytes = fixture instanceof Uint8Array ? fixture : build(fixture);
    const e = decodeError(bytes);
    assert.equal(e.field, field, `${JSON.stringify(fixture)}: ${e.message}`);
    assert.match(e.message, new RegExp(`^Cannot decode compact bitmap: ${field}: `));
  }
  // The default fixture itself is valid: 16 granules of 64 KiB, all clean.
  assert.equal(decodeCompact(build()).granuleCount, 16);
  assert.equal(decodeCompact(build({ varints: [1, 0, 16] })).count(), 1 << 20);
});
