import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BitTree } from './bit-tree.js';
import { bitRange, lowestBit, popcount } from './bits.js';

/** The members of `tree`, listed by walking next(). */
function members(tree: BitTree): number[] {
  const out: number[] = [];
  for (let i = tree.next(0); i >= 0; i = tree.next(i + 1)) out.push(i);
  return out;
}

test('popcount(), lowestBit() and bitRange() agree with bit-by-bit loops', () => {
  fc.assert(
    fc.property(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), (x) => {
      let ones = 0;
      let lowest = -1;
      for (let b = 0; b < 32; b++) {
        if ((x >>> b) & 1) {
          ones++;
          if (lowest < 0) lowest = b;
        }
      }
      assert.equal(popcount(x), ones);
      if (x !== 0) assert.equal(lowestBit(x), lowest);
    }),
  );
  for (let lo = 0; lo < 32; lo++) {
    for (let hi = lo; hi < 32; hi++) {
      let expected = 0;
      for (let b = lo; b <= hi; b++) expected += 2 ** b;
      assert.equal(bitRange(lo, hi) >>> 0, expected);
    }
  }
});

test('an empty BitTree has no members and a filled one has exactly 0..length-1', () => {
  for (const length of [0, 1, 31, 32, 33, 1024, 1025, 32 * 1024 + 5]) {
    assert.deepEqual(members(new BitTree(length)), []);
    const full = new BitTree(length, true);
    const listed = members(full);
    assert.equal(listed.length, length);
    assert.ok(listed.every((v, i) => v === i));
    assert.equal(full.next(length), -1);
  }
});

test('next() finds members across word and level boundaries', () => {
  const tree = new BitTree(40000);
  for (const i of [31, 32, 1023, 1024, 32767, 32768, 39999]) tree.add(i);
  assert.equal(tree.next(0), 31);
  assert.equal(tree.next(33), 1023);
  assert.equal(tree.next(1025), 32767);
  assert.equal(tree.next(32769), 39999);
  assert.equal(tree.next(40000), -1);
  tree.delete(1023);
  tree.delete(1024);
  assert.equal(tree.next(33), 32767);
  assert.equal(tree.has(1024), false);
  assert.equal(tree.has(32768), true);
});

test('BitTree behaves like a Set under random add/delete, and clone() is independent', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5000 }),
      fc.array(fc.tuple(fc.boolean(), fc.nat()), { maxLength: 200 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (length, ops, probes) => {
        const tree = new BitTree(length);
        const model = new Set<number>();
        for (const [add, raw] of ops) {
          const i = raw % length;
          tree.assign(i, add);
          if (add) model.add(i);
          else model.delete(i);
        }
        const sorted = [...model].sort((a, b) => a - b);
        assert.deepEqual(members(tree), sorted);
        for (const raw of probes) {
          const from = raw % (length + 1);
          assert.equal(tree.next(from), sorted.find((v) => v >= from) ?? -1);
        }
        const copy = tree.clone();
        copy.clear();
        assert.deepEqual(members(tree), sorted);
        assert.deepEqual(members(copy), []);
      },
    ),
    { numRuns: 200 },
  );
});
