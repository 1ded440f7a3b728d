import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RequestGate } from './request-gate.js';

test('close() waits for requests in flight, runs release once, and later requests reject with ClosedError', async () => {
  const gate = new RequestGate();
  let finish!: () => void;
  const events: string[] = [];
  const request = gate.run('slow request', () => new Promise<void>((resolve) => (finish = resolve)).then(() => {
    events.push('request settled');
  }));
  const release = async (): Promise<void> => {
    events.push('released');
  };
  const closing = gate.close(release);
  const again = gate.close(release);
  assert.equal(gate.closed, true);
  await assert.rejects(gate.run('late request', async () => events.push('late request ran')), { code: 'CLOSED' });
  finish();
  await Promise.all([request, closing, again]);
  assert.deepEqual(events, ['request settled', 'released']);
});

test('close() of an idle gate resolves at once, and a failing request still counts as settled', async () => {
  const gate = new RequestGate();
  await assert.rejects(gate.run('failing', async () => Promise.reject(new Error('boom'))), /boom/);
  await gate.close();
  await gate.close();
});
