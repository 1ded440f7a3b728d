import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RwLock } from './rw-lock.js';

/** A promise with its resolve function, to hold a lock for as long as a test wants. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** Lets every queued callback and microtask run. */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('shared holders run together and an exclusive request waits for all of them', async () => {
  const lock = new RwLock();
  const events: string[] = [];
  const a = gate();
  const b = gate();
  const first = lock.shared(async () => {
    events.push('a in');
    await a.promise;
    events.push('a out');
  });
  const second = lock.shared(async () => {
    events.push('b in');
    await b.promise;
    events.push('b out');
  });
  const exclusive = lock.exclusive(async () => {
    events.push('x');
  });
  await settle();
  assert.deepEqual(events, ['a in', 'b in']);
  a.open();
  await settle();
  assert.deepEqual(events, ['a in', 'b in', 'a out']);
  b.open();
  await Promise.all([first, second, exclusive]);
  assert.deepEqual(events, ['a in', 'b in', 'a out', 'b out', 'x']);
});

test('a waiting exclusive request holds back shared requests that arrive after it', async () => {
  const lock = new RwLock();
  const events: string[] = [];
  const held = gate();
  const reader = lock.shared(() => held.promise);
  const writer = lock.exclusive(async () => {
    events.push('exclusive');
  });
  const late = lock.shared(async () => {
    events.push('late shared');
  });
  await settle();
  assert.deepEqual(events, []);
  held.open();
  await Promise.all([reader, writer, late]);
  assert.deepEqual(events, ['exclusive', 'late shared']);
});

test('metadata requests run while detached work goes on, and exclusive ones wait for it to finish', async () => {
  const lock = new RwLock();
  const events: string[] = [];
  const work = await lock.metadata(async () => lock.detach());
  const metadata = lock.metadata(async () => {
    events.push('metadata');
  });
  const exclusive = lock.exclusive(async () => {
    events.push('exclusive');
  });
  await settle();
  assert.deepEqual(events, ['metadata']);
  await work.finish(async () => {
    events.push('finish');
  });
  await Promise.all([metadata, exclusive]);
  assert.deepEqual(events, ['metadata', 'finish', 'exclusive']);
});

test('finish() takes the lock ahead of queued requests, so a queued exclusive request cannot deadlock with it', async () => {
  const lock = new RwLock();
  const events: string[] = [];
  const work = await lock.metadata(async () => lock.detach());
  const reading = gate();
  const reader = lock.shared(() => reading.promise);
  const exclusive = lock.exclusive(async () => {
    events.push('exclusive');
  });
  const metadata = lock.metadata(async () => {
    events.push('queued metadata');
  });
  const finished = work.finish(async () => {
    events.push('finish');
  });
  await settle();
  assert.deepEqual(events, [], 'finish waits for the shared holder');
  reading.open();
  await Promise.all([reader, exclusive, metadata, finished]);
  assert.deepEqual(events, ['finish', 'exclusive', 'queued metadata']);
});

test('detached work ended without the lock releases a waiting exclusive request, and ends only once', async () => {
  const lock = new RwLock();
  const work = await lock.metadata(async () => lock.detach());
  let ran = false;
  const exclusive = lock.exclusive(async () => {
    ran = true;
  });
  await settle();
  assert.equal(ran, false);
  work.end();
  work.end();
  await exclusive;
  assert.equal(ran, true);
  await assert.rejects(work.finish(async () => {}), /finished twice/);
});

test('finish() ends the work and releases the lock when its body rejects', async () => {
  const lock = new RwLock();
  const work = await lock.metadata(async () => lock.detach());
  await assert.rejects(
    work.finish(async () => {
      throw new Error('commit failed');
    }),
    /commit failed/,
  );
  assert.equal(await lock.exclusive(async () => 'free'), 'free');
});
