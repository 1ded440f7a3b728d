/**
 * The job layer against QEMU 7.2's: the same scripted scenarios run on real QEMU (backups of
 * 4 MiB `null-co` nodes, faults placed with `blkdebug`) and on a `JobManager` serving the job
 * commands over QMP with a test backup job that copies the same length in the same 1 MiB
 * steps. Compared: the sequences of JOB_STATUS_CHANGE statuses and of the other events with
 * their members, and the replies to the commands (errors by class and text), leaving out only
 * what depends on timing (offsets, progress done, `busy`).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { JobManager, registerJobCommands, realTimers, type BlockdevOnError } from '../../src/engine/jobs/index.js';
import { summarize } from '../../src/engine/jobs/testing/event-log.js';
import { StepJob } from '../../src/engine/jobs/testing/step-job.js';
import { connectInProcess } from '../../src/qmp/client/in-process.js';
import type { QmpClient } from '../../src/qmp/client/qmp-client.js';
import { QmpError as ClientQmpError } from '../../src/qmp/protocol/errors.js';
import type { JsonObject } from '../../src/qmp/protocol/messages.js';
import { QmpServer } from '../../src/qmp/server/qmp-server.js';
import { needPeers } from '../helpers/peers.js';
import { QmpError as HelperQmpError, startQemu, type QemuInstance } from '../helpers/qemu.js';

const skip = needPeers('qemu-system-x86_64');

const MiB = 1024 * 1024;
const LEN = 4 * MiB;
/** Where the fault sits: the third 1 MiB step. */
const FAULT_OFFSET = 2 * MiB;
const ERRNO = { EIO: 5, ENOSPC: 28 } as const;

interface BackupSpec {
  id: string;
  speed?: number;
  autoFinalize?: boolean;
  autoDismiss?: boolean;
  fault?: { errno: keyof typeof ERRNO; once: boolean; onError: BlockdevOnError };
}

/** One side of the comparison. */
interface Peer {
  readonly events: { event: string; data?: JsonObject }[];
  /** Runs a command; an error reply becomes `{error: [class, desc]}`. */
  execute(command: string, args?: JsonObject): Promise<unknown>;
  /** Starts backups as one transaction (grouped when asked), as `blockdev-backup` does for one. */
  backup(specs: BackupSpec[], grouped?: boolean): Promise<void>;
  /** Starts a mirror job (`blockdev-mirror`, not in a transaction: no drained start). */
  mirror(id: string): Promise<void>;
}

/** Waits (polling, bounded) for an event of `peer` that matches. */
async function waitFor(peer: Peer, match: (e: { event: string; data?: JsonObject }) => boolean, what: string): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if (peer.events.some(match)) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no ${what} after 20 s; events: ${JSON.stringify(summarize(peer.events))}`);
}

function waitStatus(peer: Peer, id: string, status: string, nth = 1): Promise<void> {
  let seen = 0;
  return waitFor(peer, () => (seen = peer.events.filter((e) => e.event === 'JOB_STATUS_CHANGE' && e.data?.id === id && e.data.status === status).length) >= nth, `${id}:${status} #${nth} (seen ${seen})`);
}

function waitEvent(peer: Peer, name: string, id: string): Promise<void> {
  return waitFor(peer, (e) => e.event === name && (e.data?.device === id || e.data?.id === id), `${name} of ${id}`);
}

/** Drops what depends on timing from query replies. */
function untimed(value: unknown): unknown {
  if (!Array.isArray(value)) return value;
  return value.map((entry: JsonObject) => {
    const { offset: _o, 'current-progress': _c, busy: _b, ...rest } = entry;
    return rest;
  });
}

/** A scenario: drives a peer, returns the replies it saw, in order. */
type Scenario = { ids: string[]; run: (peer: Peer, reply: (label: string, value: unknown) => void) => Promise<void> };

const SCENARIOS: Record<string, Scenario> = {
  'a backup with auto-finalize and auto-dismiss': {
    ids: ['s1'],
    run: async (p) => {
      await p.backup([{ id: 's1' }]);
      await waitStatus(p, 's1', 'null');
    },
  },
  'a backup with auto-finalize and auto-dismiss false, and every verb in pending and concluded': {
    ids: ['s2'],
    run: async (p, reply) => {
      await p.backup([{ id: 's2', autoFinalize: false, autoDismiss: false }]);
      await waitEvent(p, 'BLOCK_JOB_PENDING', 's2');
      for (const c of ['job-pause', 'job-resume', 'job-complete', 'job-dismiss']) reply(c, await p.execute(c, { id: 's2' }));
      reply('query-jobs', untimed(await p.execute('query-jobs')));
      reply('query-block-jobs', untimed(await p.execute('query-block-jobs')));
      reply('job-finalize', await p.execute('job-finalize', { id: 's2' }));
      await waitStatus(p, 's2', 'concluded');
      reply('query-jobs', untimed(await p.execute('query-jobs')));
      for (const c of ['job-finalize', 'job-cancel', 'job-dismiss', 'job-dismiss']) reply(c, await p.execute(c, { id: 's2' }));
      reply('block-job-dismiss', await p.execute('block-job-dismiss', { id: 's2' }));
      reply('block-job-pause', await p.execute('block-job-pause', { device: 's2' }));
    },
  },
  'a slow backup paused, resumed and cancelled': {
    ids: ['s3'],
    run: async (p, reply) => {
      await p.backup([{ id: 's3', speed: MiB }]);
      await waitStatus(p, 's3', 'running', 2);
      reply('job-pause', await p.execute('job-pause', { id: 's3' }));
      await waitStatus(p, 's3', 'paused', 2);
      reply('query-block-jobs', untimed(await p.execute('query-block-jobs')));
      reply('block-job-pause', await p.execute('block-job-pause', { device: 's3' }));
      reply('block-job-cancel', await p.execute('block-job-cancel', { device: 's3' }));
      reply('job-resume', await p.execute('job-resume', { id: 's3' }));
      await waitStatus(p, 's3', 'running', 3);
      reply('job-resume', await p.execute('job-resume', { id: 's3' }));
      reply('block-job-set-speed', await p.execute('block-job-set-speed', { device: 's3', speed: -1 }));
      reply('block-job-set-speed', await p.execute('block-job-set-speed', { device: 's3', speed: 2 * MiB }));
      for (const c of ['job-complete', 'job-finalize', 'job-dismiss']) reply(c, await p.execute(c, { id: 's3' }));
      reply('job-cancel', await p.execute('job-cancel', { id: 's3' }));
      await waitStatus(p, 's3', 'null');
    },
  },
  'a slow backup cancelled and left for job-dismiss': {
    ids: ['s4'],
    run: async (p, reply) => {
      await p.backup([{ id: 's4', speed: MiB, autoDismiss: false }]);
      await waitStatus(p, 's4', 'running', 2);
      reply('block-job-cancel', await p.execute('block-job-cancel', { device: 's4' }));
      await waitStatus(p, 's4', 'concluded');
      reply('query-jobs', untimed(await p.execute('query-jobs')));
      reply('query-block-jobs', untimed(await p.execute('query-block-jobs')));
      reply('job-cancel', await p.execute('job-cancel', { id: 's4' }));
      reply('job-dismiss', await p.execute('job-dismiss', { id: 's4' }));
    },
  },
  'a read error with on-source-error report': {
    ids: ['s5'],
    run: async (p, reply) => {
      await p.backup([{ id: 's5', autoDismiss: false, fault: { errno: 'EIO', once: false, onError: 'report' } }]);
      await waitStatus(p, 's5', 'concluded');
      reply('query-jobs', untimed(await p.execute('query-jobs')));
      reply('job-dismiss', await p.execute('job-dismiss', { id: 's5' }));
    },
  },
  'a read error with on-source-error ignore': {
    ids: ['s6'],
    run: async (p) => {
      await p.backup([{ id: 's6', fault: { errno: 'EIO', once: true, onError: 'ignore' } }]);
      await waitStatus(p, 's6', 'null');
    },
  },
  'a read error with on-source-error stop, then job-resume': {
    ids: ['s7'],
    run: async (p, reply) => {
      await p.backup([{ id: 's7', fault: { errno: 'EIO', once: true, onError: 'stop' } }]);
      await waitStatus(p, 's7', 'paused', 2);
      reply('query-block-jobs', untimed(await p.execute('query-block-jobs')));
      reply('job-resume', await p.execute('job-resume', { id: 's7' }));
      await waitStatus(p, 's7', 'null');
    },
  },
  'an ENOSPC read error with on-source-error enospc, then job-resume': {
    ids: ['s8'],
    run: async (p, reply) => {
      await p.backup([{ id: 's8', fault: { errno: 'ENOSPC', once: true, onError: 'enospc' } }]);
      await waitStatus(p, 's8', 'paused', 2);
      reply('query-block-jobs', untimed(await p.execute('query-block-jobs')));
      reply('job-resume', await p.execute('job-resume', { id: 's8' }));
      await waitStatus(p, 's8', 'null');
    },
  },
  'a mirror paused in ready state, completed in standby, then resumed': {
    ids: ['m1'],
    run: async (p, reply) => {
      await p.mirror('m1');
      await waitEvent(p, 'BLOCK_JOB_READY', 'm1');
      reply('query-block-jobs', untimed(await p.execute('query-block-jobs')));
      reply('job-pause', await p.execute('job-pause', { id: 'm1' }));
      await waitStatus(p, 'm1', 'standby');
      reply('query-block-jobs', untimed(await p.execute('query-block-jobs')));
      reply('job-complete', await p.execute('job-complete', { id: 'm1' }));
      reply('job-resume', await p.execute('job-resume', { id: 'm1' }));
      await waitStatus(p, 'm1', 'null');
    },
  },
  'a ready mirror cancelled softly by block-job-cancel, another by job-cancel': {
    ids: ['m2', 'm3'],
    run: async (p, reply) => {
      await p.mirror('m2');
      await waitEvent(p, 'BLOCK_JOB_READY', 'm2');
      reply('block-job-cancel', await p.execute('block-job-cancel', { device: 'm2' }));
      await waitStatus(p, 'm2', 'null');
      await p.mirror('m3');
      await waitEvent(p, 'BLOCK_JOB_READY', 'm3');
      reply('job-cancel', await p.execute('job-cancel', { id: 'm3' }));
      await waitStatus(p, 'm3', 'null');
    },
  },
  'a grouped transaction in which one backup fails': {
    ids: ['g1a', 'g1b'],
    run: async (p) => {
      await p.backup([{ id: 'g1a', speed: MiB }, { id: 'g1b', fault: { errno: 'EIO', once: false, onError: 'report' } }], true);
      await waitStatus(p, 'g1a', 'null');
    },
  },
  'a grouped transaction finalized by hand': {
    ids: ['g2a', 'g2b'],
    run: async (p, reply) => {
      await p.backup([{ id: 'g2a', speed: 4 * MiB }, { id: 'g2b', autoFinalize: false }], true);
      await waitEvent(p, 'BLOCK_JOB_PENDING', 'g2b');
      reply('query-jobs', untimed(await p.execute('query-jobs')));
      reply('job-finalize', await p.execute('job-finalize', { id: 'g2a' }));
      await waitStatus(p, 'g2a', 'null');
    },
  },
};

/** Node names on the QEMU side are unique across scenarios. */
let nodes = 0;

/** The QEMU side. */
function qemuPeer(qemu: QemuInstance): Peer {
  return {
    events: qemu.events,
    async execute(command, args) {
      try {
        return await qemu.qmp(command, args);
      } catch (e) {
        if (e instanceof HelperQmpError) return { error: [e.errorClass, e.desc] };
        throw e;
      }
    },
    async backup(specs, grouped = false) {
      const actions: JsonObject[] = [];
      for (const spec of specs) {
        const src = `src${++nodes}`;
        const tgt = `tgt${nodes}`;
        if (spec.fault === undefined) await qemu.qmp('blockdev-add', { driver: 'null-co', 'node-name': src, size: LEN });
        else {
          const rule = { event: 'read_aio', errno: ERRNO[spec.fault.errno], sector: FAULT_OFFSET / 512, once: spec.fault.once };
          await qemu.qmp('blockdev-add', { driver: 'raw', 'node-name': src, file: { driver: 'blkdebug', image: { driver: 'null-co', size: LEN }, 'inject-error': [rule] } });
        }
        await qemu.qmp('blockdev-add', { driver: 'null-co', 'node-name': tgt, size: LEN });
        const data: JsonObject = { 'job-id': spec.id, device: src, target: tgt, sync: 'full' };
        if (spec.speed !== undefined) data.speed = spec.speed;
        if (spec.autoFinalize !== undefined) data['auto-finalize'] = spec.autoFinalize;
        if (spec.autoDismiss !== undefined) data['auto-dismiss'] = spec.autoDismiss;
        if (spec.fault !== undefined) data['on-source-error'] = spec.fault.onError;
        actions.push({ type: 'blockdev-backup', data });
      }
      await qemu.qmp('transaction', { actions, ...(grouped ? { properties: { 'completion-mode': 'grouped' } } : {}) });
    },
    async mirror(id) {
      const src = `src${++nodes}`;
      const tgt = `tgt${nodes}`;
      await qemu.qmp('blockdev-add', { driver: 'null-co', 'node-name': src, size: LEN });
      await qemu.qmp('blockdev-add', { driver: 'null-co', 'node-name': tgt, size: LEN });
      await qemu.qmp('blockdev-mirror', { 'job-id': id, device: src, target: tgt, sync: 'full' });
    },
  };
}

/** The engine side: the job commands over QMP, backups started as the engine will start them. */
function enginePeer(manager: JobManager, client: QmpClient): Peer {
  const events: { event: string; data?: JsonObject }[] = [];
  client.onEvent((e) => events.push(e));
  return {
    events,
    async execute(command, args) {
      try {
        return await client.execute(command, args);
      } catch (e) {
        if (e instanceof ClientQmpError) return { error: [e.errorClass, e.desc] };
        throw e;
      }
    },
    async backup(specs, grouped = false) {
      const txn = grouped ? manager.createTxn() : undefined;
      const jobs = specs.map((spec) => {
        const fault = spec.fault === undefined ? undefined : { offset: FAULT_OFFSET, ...spec.fault };
        const job = new StepJob({ id: spec.id, length: LEN, autoFinalize: spec.autoFinalize, autoDismiss: spec.autoDismiss, fault });
        manager.add(job, { speed: spec.speed, txn: txn ?? manager.createTxn() });
        return job;
      });
      // QEMU's transaction runs in a drained section: each job pauses once as it starts.
      for (const job of jobs) job.pause();
      for (const job of jobs) manager.start(job);
      for (const job of jobs) job.resume();
    },
    async mirror(id) {
      const job = new StepJob({ id, type: 'mirror', length: LEN, mirror: true });
      manager.add(job);
      manager.start(job);
    },
  };
}

let qemu: QemuInstance | undefined;
let server: QmpServer | undefined;
let manager: JobManager | undefined;
let client: QmpClient | undefined;

before(async () => {
  if (skip !== false) return;
  qemu = await startQemu(['-M', 'none', '-nodefaults', '-display', 'none']);
  server = new QmpServer();
  manager = new JobManager({ emit: (event, data) => server!.emit(event, data), timers: realTimers });
  registerJobCommands(server, manager);
  client = await connectInProcess(server);
});

after(async () => {
  await manager?.cancelAll();
  await client?.close();
  await server?.close();
  await qemu?.kill();
});

/** The statuses and events of `ids`: each job's own sequence, and their order across jobs from the first end on. */
function outcome(events: Peer['events'], ids: string[], replies: unknown[]): JsonObject {
  const mine = events.filter((e) => ids.includes(String(e.data?.id ?? e.data?.device)));
  const perJob = Object.fromEntries(ids.map((id) => [id, summarize(mine, id)]));
  // With several jobs, how QEMU interleaves their starts depends on its scheduler: compare
  // the order across jobs only from the first event that is not a start.
  const starts = new Set(['created', 'running', 'paused']);
  let first = 0;
  mine.forEach((e, i) => {
    if (e.event === 'JOB_STATUS_CHANGE' && starts.has(String(e.data?.status)) && i === first) first = i + 1;
  });
  return { perJob, across: ids.length > 1 ? summarize(mine.slice(first)) : [], replies: replies as JsonObject[] };
}

for (const [name, scenario] of Object.entries(SCENARIOS)) {
  test(`${name}: the engine sends the events and replies QEMU 7.2 sends`, { skip }, async () => {
    const results: JsonObject[] = [];
    for (const peer of [qemuPeer(qemu!), enginePeer(manager!, client!)]) {
      const replies: unknown[] = [];
      await scenario.run(peer, (label, value) => replies.push({ [label]: value as JsonObject }));
      results.push(outcome(peer.events, scenario.ids, replies));
    }
    const [fromQemu, fromEngine] = results;
    assert.deepEqual(fromEngine, fromQemu);
  });
}
