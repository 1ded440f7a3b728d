import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GranuleSet } from './granule-set.js';

/** Compares every observable of `set` with the naive `model`. */
function check(set: GranuleSet, model: boolean[]): void {
  const length = model.length;
  assert.equal(set.count, model.filter(Boolean).length, 'count');
  let nextSet = -1;
  let nextClear = -1;
  for (let g = length - 1; g >= 0; g--) {
    if (model[g]) nextSet = g;
    else nextClear = g;
    assert.equal(set.get(g), model[g], `get(${g})`);
    assert.equal(set.nextSet(g), nextSet, `nextSet(${g})`);
    assert.equal(set.nextClear(g), nextClear, `nextClear(${g})`);
  }
  assert.equal(set.nextSet(length), -1);
  assert.equal(set.nextClear(length), -1);
  for (let w = 0; w * 32 < length + 32; w++) {
    let expected = 0;
    for (let b = 0; b < 32; b++) if (model[w * 32 + b]) expected += 2 ** b;
    assert.equal(set.word(w), expected, `word(${w})`);
  }
}

type Op =
  | { kind: 'set' | 'clear'; a: number; b: number }
  | { kind: 'writeWord'; w: number; mask: number; value: number }
  | { kind: 'or' | 'andNot'; ranges: [number, number][] }
  | { kind: 'wipe' | 'clone' | 'take' };

/** A span length: often short (a few words), sometimes anything. */
const spanArb = fc.oneof(fc.integer({ min: 0, max: 70 }), fc.nat());

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constantFrom('set' as const, 'clear' as const), a: fc.nat(), b: spanArb }),
  fc.record({ kind: fc.constant('writeWord' as const), w: fc.nat(), mask: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), value: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }),
  fc.record({ kind: fc.constantFrom('or' as const, 'andNot' as const), ranges: fc.array(fc.tuple(fc.nat(), spanArb), { maxLength: 4 }) }),
  fc.record({ kind: fc.constantFrom('wipe' as const, 'clone' as const, 'take' as const) }),
);

test('GranuleSet matches a boolean[] model under random operations, with pages of 32, 64 and 256 granules', () => {
  fc.assert(
    fc.property(fc.constantFrom(5, 6, 8), fc.integer({ min: 0, max: 700 }), fc.array(opArb, { maxLength: 25, size: 'max' }), (shift, length, ops) => {
      let set = new GranuleSet(length, shift);
      let model: boolean[] = new Array<boolean>(length).fill(false);
      const range = (a: number, span: number): [number, number] => {
        const start = a % (length + 1);
        return [start, Math.min(length, start + (span % (length + 1)))];
      };
      for (const op of ops) {
        switch (op.kind) {
          case 'set':
          case 'clear': {
            const [s, e] = range(op.a, op.b);
            if (op.kind === 'set') set.setRange(s, e);
            else set.clearRange(s, e);
            for (let g = s; g < e; g++) model[g] = op.kind === 'set';
            break;
          }
          case 'writeWord': {
            const w = op.w % (Math.ceil(length / 32) + 1);
            set.writeWord(w, op.mask, op.value);
            for (let b = 0; b < 32 && w * 32 + b < length; b++) {
              if ((op.mask >>> b) & 1) model[w * 32 + b] = ((op.value >>> b) & 1) === 1;
            }
            break;
          }
          case 'or':
          case 'andNot': {
            const other = new GranuleSet(length, shift);
            const otherModel = new Array<boolean>(length).fill(false);
            for (const [a, b] of op.ranges) {
              const [s, e] = range(a, b);
              other.setRange(s, e);
              for (let g = s; g < e; g++) otherModel[g] = true;
            }
            if (op.kind === 'or') set.orFrom(other);
            else set.andNotFrom(other);
            model = model.map((v, g) => (op.kind === 'or' ? v || otherModel[g]! : v && !otherModel[g]));
            check(other, otherModel);
            break;
          }
          case 'wipe':
            set.clear();
            model.fill(false);
            break;
          case 'clone': {
            const copy = set.clone();
            set.clear();
            check(set, new Array<boolean>(length).fill(false));
            set = copy;
            break;
          }
          case 'take': {
            const fresh = new GranuleSet(length, shift);
            fresh.take(set);
            check(set, new Array<boolean>(length).fill(false));
            set = fresh;
            break;
          }
          default: {
            const never: never = op;
            throw new Error(`unknown op ${String(never)}`);
          }
        }
        check(set, model);
      }
    }),
    { numRuns: 1000 },
  );
});

test('GranuleSet allocates no page for clean or fully dirty pages', () => {
  const set = new GranuleSet(2 ** 32);
  assert.equal(set.allocatedPages, 0);
  set.setRange(0, 2 ** 32);
  assert.equal(set.count, 2 ** 32);
  assert.equal(set.allocatedPages, 0);
  set.clearRange(100, 2 ** 31);
  assert.equal(set.allocatedPages, 1, 'only the page holding granule 100 is partly dirty');
  assert.equal(set.count, 2 ** 32 - (2 ** 31 - 100));
  assert.equal(set.nextClear(0), 100);
  assert.equal(set.nextSet(100), 2 ** 31);
  assert.equal(set.nextClear(2 ** 31), -1);
  set.setRange(100, 2 ** 15);
  assert.equal(set.allocatedPages, 0, 'a page that becomes full is released');
  assert.equal(set.word(2 ** 27 - 1), 0xffffffff);
});

test('a partial last page counts as full when all its granules are set, and its padding stays clean', () => {
  const set = new GranuleSet(70, 5);
  set.setRange(64, 70);
  assert.equal(set.allocatedPages, 0);
  assert.equal(set.word(2), 0b111111);
  set.clearRange(65, 66);
  assert.equal(set.allocatedPages, 1);
  assert.equal(set.word(2), 0b111101);
  assert.equal(set.nextClear(66), -1);
  set.writeWord(2, -1, -1);
  assert.equal(set.word(2), 0b111111, 'bits past the length are ignored');
  assert.equal(set.allocatedPages, 0);
  assert.equal(set.count, 6);
});
