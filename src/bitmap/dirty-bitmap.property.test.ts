/**
 * Model-based property test: random sequences of every DirtyBitmap operation, applied both to a
 * DirtyBitmap and to a naive model (a boolean[] of granules plus the state flags), comparing
 * everything observable after each step.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { decodeCompact, encodeCompact } from './compact.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { BitmapStateError } from './errors.js';
import { bytesAreClean, serializeBytes, serializedByteLength, sha256Qemu } from './serialize.js';

interface Model {
  size: number;
  granularity: number;
  bits: boolean[];
  enabled: boolean;
  persistent: boolean;
  inconsistent: boolean;
  busyMark: boolean;
  successor: Model | undefined;
  enabledBefore: boolean;
}

function newModel(size: number, granularity: number, enabled = true): Model {
  const bits = new Array<boolean>(Math.ceil(size / granularity)).fill(false);
  return { size, granularity, bits, enabled, persistent: false, inconsistent: false, busyMark: false, successor: undefined, enabledBefore: false };
}

/** Granules `[first, end)` that the byte range overlaps (nothing for an empty range). */
function touched(m: Model, offset: number, length: number): [number, number] {
  if (length === 0) return [0, 0];
  return [Math.floor(offset / m.granularity), Math.floor((offset + length - 1) / m.granularity) + 1];
}

function modelFill(m: Model, offset: number, length: number, value: boolean): void {
  const [first, end] = touched(m, offset, length);
  for (let g = first; g < end; g++) m.bits[g] = value;
}

function modelRecord(m: Model, offset: number, length: number): void {
  if (m.successor !== undefined) modelRecord(m.successor, offset, length);
  else if (m.enabled) modelFill(m, offset, length, true);
}

/** Source granules overlapping target granule `t`, as [first, last] inclusive. */
function sourceGranules(target: Model, source: Model, t: number): [number, number] {
  const start = t * target.granularity;
  const end = Math.min(target.size, start + target.granularity);
  return [Math.floor(start / source.granularity), Math.floor((end - 1) / source.granularity)];
}

/** Expected runs of the whole bitmap, in bytes, derived granule by granule. */
function modelRuns(m: Model): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  for (let g = 0; g < m.bits.length; g++) {
    const start = g * m.granularity;
    const end = Math.min(m.size, start + m.granularity);
    const last = out[out.length - 1];
    if (last !== undefined && last[2] === m.bits[g]) last[1] = end - last[0];
    else out.push([start, end - start, m.bits[g]!]);
  }
  return out;
}

/** The model's runs clipped to `[offset, offset + length)` and split at `maxLength`. */
function clippedRuns(m: Model, offset: number, length: number, maxLength: number): [number, number, boolean][] {
  const out: [number, number, boolean][] = [];
  for (const [start, len, dirty] of modelRuns(m)) {
    const from = Math.max(start, offset);
    const to = Math.min(start + len, offset + length);
    for (let o = from; o < to; o += maxLength) out.push([o, Math.min(maxLength, to - o), dirty]);
  }
  return out;
}

function modelBytes(m: Model, byteLength = Math.ceil(m.bits.length / 8)): Uint8Array {
  const bytes = new Uint8Array(byteLength);
  m.bits.forEach((bit, g) => {
    if (bit && g < byteLength * 8) bytes[g >> 3]! |= 1 << (g & 7);
  });
  return bytes;
}

function checkBits(b: DirtyBitmap, m: Model, probes: number[]): void {
  const dirtyGranules = m.bits.filter(Boolean).length;
  assert.equal(b.granuleCount, m.bits.length);
  assert.equal(b.count(), dirtyGranules * m.granularity, 'count');
  assert.equal(b.isEmpty(), dirtyGranules === 0);
  assert.deepEqual([...b.extents()].map((e) => [e.offset, e.length, e.dirty]), modelRuns(m), 'extents');
  for (const raw of probes) {
    const at = raw % (m.size + 1);
    const len = (raw >>> 3) % (m.size - at + 1);
    const maxLength = 1 + (raw % (3 * m.granularity));
    assert.deepEqual([...b.extents(at, len, maxLength)].map((e) => [e.offset, e.length, e.dirty]), clippedRuns(m, at, len, maxLength));
    assert.deepEqual(
      [...b.dirtyExtents(at, len, maxLength)].map((e) => [e.offset, e.length]),
      clippedRuns(m, at, len, maxLength).filter((r) => r[2]).map((r) => [r[0], r[1]]),
    );
    const g = Math.floor(at / m.granularity);
    const nextDirty = m.bits.findIndex((bit, i) => i >= g && bit);
    const nextClean = m.bits.findIndex((bit, i) => i >= g && !bit);
    assert.equal(b.nextDirty(at), nextDirty < 0 ? -1 : nextDirty === g ? at : nextDirty * m.granularity, `nextDirty(${at})`);
    assert.equal(b.nextClean(at), nextClean < 0 ? -1 : nextClean === g ? at : nextClean * m.granularity, `nextClean(${at})`);
    if (at < m.size) assert.equal(b.get(at), m.bits[g], `get(${at})`);
  }
}

function checkAll(b: DirtyBitmap, m: Model, probes: number[]): void {
  checkBits(b, m, probes);
  assert.equal(b.enabled, m.enabled, 'enabled');
  assert.equal(b.busy, m.busyMark || m.successor !== undefined, 'busy');
  assert.equal(b.inconsistent, m.inconsistent, 'inconsistent');
  assert.equal(b.persistent, m.persistent, 'persistent');
  assert.equal(b.successor === undefined, m.successor === undefined, 'successor');
  if (b.successor !== undefined) checkBits(b.successor, m.successor!, probes.slice(0, 2));

  const bytes = modelBytes(m);
  assert.equal(serializedByteLength(b), bytes.length);
  assert.deepEqual(serializeBytes(b, 0, bytes.length), bytes, 'serializeBytes');
  const padded = modelBytes(m, Math.max(1, Math.ceil(m.bits.length / 64)) * 8);
  assert.equal(sha256Qemu(b), createHash('sha256').update(padded).digest('hex'), 'sha256Qemu');
  for (const raw of probes.slice(0, 2)) {
    const at = raw % (bytes.length + 1);
    const len = (raw >>> 5) % 40;
    const chunk = modelBytes(m, at + len).subarray(at);
    assert.deepEqual(serializeBytes(b, at, len), chunk);
    assert.equal(bytesAreClean(b, at, len), chunk.every((x) => x === 0), `bytesAreClean(${at}, ${len})`);
  }

  const decoded = decodeCompact(encodeCompact(b));
  assert.deepEqual([...decoded.extents()], [...b.extents()], 'compact round trip');
  assert.deepEqual(
    [decoded.size, decoded.granularity, decoded.name, decoded.enabled, decoded.persistent, decoded.inconsistent],
    [b.size, b.granularity, b.name, b.enabled, b.persistent, b.inconsistent],
  );
}

/** A byte position: raw, or near a granule boundary (where the bugs live). */
const posArb = fc.tuple(fc.constantFrom('byte', 'granule', 'before', 'after'), fc.nat());
type Pos = [string, number];

type Op =
  | { kind: 'set' | 'reset' | 'recordWrite'; a: Pos; b: Pos }
  | { kind: 'merge' | 'andNot'; shift: number; ranges: [Pos, Pos][] }
  | { kind: 'setBusy'; busy: boolean }
  | { kind: 'persistent'; value: boolean }
  | { kind: 'enable' | 'disable' | 'createSuccessor' | 'abdicate' | 'reclaim' | 'clear' | 'copy' | 'markInconsistent' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constantFrom('set' as const, 'reset' as const, 'recordWrite' as const), a: posArb, b: posArb }), weight: 8 },
  { arbitrary: fc.record({ kind: fc.constantFrom('merge' as const, 'andNot' as const), shift: fc.integer({ min: -2, max: 2 }), ranges: fc.array(fc.tuple(posArb, posArb), { maxLength: 3 }) }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('setBusy' as const), busy: fc.boolean() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('persistent' as const), value: fc.boolean() }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constantFrom('enable' as const, 'disable' as const, 'createSuccessor' as const, 'abdicate' as const, 'reclaim' as const) }), weight: 6 },
  { arbitrary: fc.record({ kind: fc.constantFrom('clear' as const, 'copy' as const) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('markInconsistent' as const) }), weight: 1 },
);

function position(m: Model, [kind, raw]: Pos): number {
  const granules = m.bits.length;
  const boundary = Math.min(m.size, (raw % (granules + 1)) * m.granularity);
  switch (kind) {
    case 'granule':
      return boundary;
    case 'before':
      return Math.max(0, boundary - 1);
    case 'after':
      return Math.min(m.size, boundary + 1);
    default:
      return raw % (m.size + 1);
  }
}

function range(m: Model, a: Pos, b: Pos): [number, number] {
  const x = position(m, a);
  const y = position(m, b);
  return x <= y ? [x, y - x] : [y, x - y];
}

/** Runs `fn` on the bitmap and expects it to throw a BitmapStateError exactly when `fails`. */
function expectState(fails: boolean, fn: () => void): boolean {
  if (fails) assert.throws(fn, BitmapStateError);
  else fn();
  return !fails;
}

function apply(b: DirtyBitmap, m: Model, op: Op): void {
  switch (op.kind) {
    case 'set':
    case 'reset':
    case 'recordWrite': {
      const [offset, length] = range(m, op.a, op.b);
      b[op.kind](offset, length);
      if (op.kind === 'recordWrite') modelRecord(m, offset, length);
      else modelFill(m, offset, length, op.kind === 'set');
      return;
    }
    case 'merge':
    case 'andNot': {
      const granularity = Math.min(2 ** 31, Math.max(512, m.granularity * 2 ** op.shift));
      const other = new DirtyBitmap({ size: m.size, granularity });
      const om = newModel(m.size, granularity);
      for (const [x, y] of op.ranges) {
        const [offset, length] = range(m, x, y);
        other.set(offset, length);
        modelFill(om, offset, length, true);
      }
      b[op.kind](other);
      m.bits = m.bits.map((bit, t) => {
        const [first, last] = sourceGranules(m, om, t);
        const sources = om.bits.slice(first, last + 1);
        return op.kind === 'merge' ? bit || sources.some(Boolean) : bit && !sources.every(Boolean);
      });
      return;
    }
    case 'setBusy':
      b.setBusy(op.busy);
      m.busyMark = op.busy;
      return;
    case 'persistent':
      b.persistent = op.value;
      m.persistent = op.value;
      return;
    case 'enable':
      if (expectState(m.successor !== undefined || m.inconsistent, () => b.enable())) m.enabled = true;
      return;
    case 'disable':
      if (expectState(m.successor !== undefined, () => b.disable())) m.enabled = false;
      return;
    case 'markInconsistent':
      if (expectState(m.successor !== undefined, () => b.markInconsistent())) {
        m.inconsistent = true;
        m.enabled = false;
      }
      return;
    case 'createSuccessor': {
      const fails = m.busyMark || m.successor !== undefined || m.inconsistent;
      if (expectState(fails, () => b.createSuccessor())) {
        m.successor = newModel(m.size, m.granularity, m.enabled);
        m.enabledBefore = m.enabled;
        m.enabled = false;
      }
      return;
    }
    case 'abdicate':
    case 'reclaim': {
      const successor = m.successor;
      if (!expectState(successor === undefined, () => b[op.kind]())) return;
      m.bits = op.kind === 'abdicate' ? successor!.bits : m.bits.map((bit, g) => bit || successor!.bits[g]!);
      m.successor = undefined;
      m.enabled = m.enabledBefore;
      return;
    }
    case 'clear':
      b.clear();
      m.bits.fill(false);
      return;
    case 'copy': {
      if (!expectState(m.inconsistent, () => b.copy('c'))) return;
      const copy = b.copy('c');
      const cm: Model = { ...newModel(m.size, m.granularity), bits: [...m.bits] };
      checkBits(copy, cm, []);
      copy.set(0, m.size);
      copy.clear();
      return;
    }
    default: {
      const never: never = op;
      throw new Error(`unknown op ${String(never)}`);
    }
  }
}

const GRANULARITIES = [512, 1024, 4096, 65536, 2 ** 31];

function scenario(maxGranules: number, maxOps: number) {
  return fc.record({
    granularity: fc.constantFrom(...GRANULARITIES),
    granules: fc.integer({ min: 0, max: maxGranules }),
    shortBy: fc.nat(),
    ops: fc.array(opArb, { minLength: 5, maxLength: maxOps, size: 'max' }),
    probes: fc.array(fc.nat(), { minLength: 3, maxLength: 6 }),
  });
}

function run({ granularity, granules, shortBy, ops, probes }: { granularity: number; granules: number; shortBy: number; ops: Op[]; probes: number[] }): void {
  const size = granules === 0 ? 0 : granules * granularity - (shortBy % granularity);
  const b = new DirtyBitmap({ size, granularity, name: 'b0' });
  const m = newModel(size, granularity);
  checkAll(b, m, probes);
  for (const op of ops) {
    apply(b, m, op);
    checkAll(b, m, probes);
  }
}

test('DirtyBitmap matches a boolean[] model under random sequences of every operation', () => {
  fc.assert(fc.property(scenario(2100, 30), run), { numRuns: 150 });
});

test('DirtyBitmap matches the model on bitmaps that span several leaf pages', () => {
  fc.assert(fc.property(scenario(70_000, 12), run), { numRuns: 12 });
});
