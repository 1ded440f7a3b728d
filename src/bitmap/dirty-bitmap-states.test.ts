import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hasCode } from '../errors.js';
import { DirtyBitmap } from './dirty-bitmap.js';
import { BitmapStateError } from './errors.js';

const G = 65536;

function bitmap(options: Partial<ConstructorParameters<typeof DirtyBitmap>[0]> = {}): DirtyBitmap {
  return new DirtyBitmap({ size: 16 * G, granularity: G, name: 'b0', ...options });
}

function dirty(b: DirtyBitmap): [number, number][] {
  return [...b.dirtyExtents()].map((e) => [e.offset, e.length]);
}

function throwsState(fn: () => unknown, reason?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof BitmapStateError, `expected a BitmapStateError, got ${String(e)}`);
    assert.equal(e.code, 'BITMAP_STATE');
    if (reason !== undefined) assert.equal(e.reason, reason);
    return true;
  });
}

test('a new bitmap is enabled, not persistent, not busy and consistent', () => {
  const b = bitmap();
  assert.equal(b.enabled, true);
  assert.equal(b.persistent, false);
  assert.equal(b.busy, false);
  assert.equal(b.inconsistent, false);
  assert.equal(b.successor, undefined);
  b.persistent = true;
  assert.equal(b.persistent, true);
});

test('recordWrite() sets bits only while enabled; set() works either way', () => {
  const b = bitmap({ enabled: false });
  b.recordWrite(0, 1);
  assert.equal(b.isEmpty(), true);
  b.set(G, 1);
  assert.deepEqual(dirty(b), [[G, G]]);
  b.enable();
  b.recordWrite(0, 1);
  assert.deepEqual(dirty(b), [[0, 2 * G]]);
  b.disable();
  b.recordWrite(5 * G, 1);
  assert.deepEqual(dirty(b), [[0, 2 * G]]);
});

test('assertUsable() passes on an idle bitmap and refuses a busy one with QEMU wording', () => {
  const b = bitmap();
  b.assertUsable('clear');
  b.assertUsable('export', 'read');
  b.setBusy(true);
  assert.equal(b.busy, true);
  for (const mode of ['modify', 'read'] as const) {
    assert.throws(
      () => b.assertUsable('clear', mode),
      (e: unknown) =>
        e instanceof BitmapStateError &&
        e.message === "Cannot clear dirty bitmap 'b0': Bitmap 'b0' is currently in use by another operation and cannot be used",
    );
  }
  throwsState(() => b.createSuccessor());
  b.setBusy(false);
  b.assertUsable('clear');
});

test('an inconsistent bitmap is disabled, cannot be enabled, copied or frozen, and assertUsable() says why', () => {
  const b = bitmap({ inconsistent: true, persistent: true });
  assert.equal(b.inconsistent, true);
  assert.equal(b.enabled, false);
  const reason = "Bitmap 'b0' is inconsistent and cannot be used";
  throwsState(() => b.assertUsable('merge', 'read'), reason);
  throwsState(() => b.enable(), reason);
  throwsState(() => b.copy('c'), reason);
  throwsState(() => b.createSuccessor(), reason);
  b.recordWrite(0, 1);
  assert.equal(b.isEmpty(), true);
  assert.throws(() => bitmap({ inconsistent: true, enabled: true }), (e: unknown) => hasCode(e, 'INVALID_ARGUMENT'));
});

test('markInconsistent() stops recording and makes the bitmap unusable', () => {
  const b = bitmap();
  b.set(0, 1);
  b.markInconsistent();
  assert.equal(b.inconsistent, true);
  assert.equal(b.enabled, false);
  throwsState(() => b.assertUsable('clear'), "Bitmap 'b0' is inconsistent and cannot be used");
});

test('createSuccessor() freezes the bitmap and the successor records writes instead', () => {
  const b = bitmap();
  b.set(0, 1);
  const s = b.createSuccessor();
  assert.equal(b.busy, true);
  assert.equal(b.enabled, false, 'QEMU reports recording: false for a frozen bitmap');
  assert.equal(b.successor, s);
  assert.equal(s.name, undefined);
  assert.equal(s.enabled, true);
  assert.equal(s.busy, false);
  assert.equal(s.size, b.size);
  assert.equal(s.granularity, b.granularity);
  assert.equal(s.isEmpty(), true);
  b.recordWrite(3 * G, 1);
  assert.deepEqual(dirty(b), [[0, G]], 'the frozen bitmap does not change');
  assert.deepEqual(dirty(s), [[3 * G, G]]);
  throwsState(() => b.assertUsable('clear'), "Bitmap 'b0' is currently in use by another operation and cannot be used");
  throwsState(() => b.createSuccessor());
  throwsState(() => b.enable());
  throwsState(() => b.disable());
  throwsState(() => b.markInconsistent());
  b.reset(0, G);
  assert.deepEqual(dirty(b), [], 'jobs may still change the bits of a frozen bitmap');
});

test('the successor of a disabled bitmap is disabled, and writes are recorded nowhere', () => {
  const b = bitmap({ enabled: false });
  const s = b.createSuccessor();
  assert.equal(s.enabled, false);
  b.recordWrite(0, G);
  assert.equal(s.isEmpty(), true);
  assert.equal(b.isEmpty(), true);
  b.reclaim();
  assert.equal(b.enabled, false);
});

test('abdicate() replaces the bits with the successor\'s and unfreezes the bitmap under its name', () => {
  const b = bitmap({ persistent: true });
  b.set(0, 2 * G);
  const s = b.createSuccessor();
  b.recordWrite(5 * G, 1);
  assert.equal(b.abdicate(), b);
  assert.deepEqual(dirty(b), [[5 * G, G]]);
  assert.equal(b.name, 'b0');
  assert.equal(b.persistent, true);
  assert.equal(b.busy, false);
  assert.equal(b.enabled, true);
  assert.equal(b.successor, undefined);
  assert.equal(s.isEmpty(), true, 'the detached successor no longer shares storage');
  s.set(0, 1);
  assert.deepEqual(dirty(b), [[5 * G, G]]);
  b.recordWrite(7 * G, 1);
  assert.deepEqual(dirty(b), [[5 * G, G], [7 * G, G]]);
});

test('reclaim() merges the successor\'s bits back so that nothing is lost', () => {
  const b = bitmap();
  b.set(0, 2 * G);
  b.createSuccessor();
  b.recordWrite(G, 1);
  b.recordWrite(5 * G, 1);
  assert.equal(b.reclaim(), b);
  assert.deepEqual(dirty(b), [[0, 2 * G], [5 * G, G]]);
  assert.equal(b.busy, false);
  assert.equal(b.enabled, true);
  b.createSuccessor();
  assert.equal(b.busy, true, 'a reclaimed bitmap can be frozen again');
});

test('abdicate() and reclaim() without a successor throw BitmapStateError', () => {
  const b = bitmap();
  throwsState(() => b.abdicate(), 'there is no successor present');
  throwsState(() => b.reclaim(), 'there is no successor present');
});

test('a bitmap marked busy by an export stays busy after its job\'s successor is gone', () => {
  const b = bitmap();
  const s = b.createSuccessor();
  b.setBusy(true);
  s.setBusy(true);
  throwsState(() => b.abdicate());
  s.setBusy(false);
  b.abdicate();
  assert.equal(b.busy, true);
  b.setBusy(false);
  assert.equal(b.busy, false);
});
