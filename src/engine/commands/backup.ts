/**
 * `blockdev-backup` and its transaction action. As in QEMU the command is a transaction of one
 * action: the job is created in a drained section and started when it commits; with
 * `completion-mode: grouped` the backups of one transaction share a job group, so they
 * finalize together or all fail.
 */
import { createBackupJob } from '../backup/backup-job.js';
import { blockdevBackupSchema, planBackup, type BlockdevBackupArgs } from '../backup/backup-plan.js';
import type { Engine } from '../engine.js';
import type { JobTxn } from '../jobs/job-txn.js';
import type { PreparedAction, TransactionContext, Transactions } from './transaction.js';

const TXN_KEY = 'backup-job-txn';

async function prepareBackup(engine: Engine, args: BlockdevBackupArgs, context: TransactionContext): Promise<PreparedAction> {
  const plan = planBackup(engine.graph, args, engine.blockers);
  let txn: JobTxn | undefined;
  if (context.completionMode === 'grouped') {
    txn = context.shared.get(TXN_KEY) as JobTxn | undefined;
    if (txn === undefined) {
      txn = engine.jobs.createTxn();
      context.shared.set(TXN_KEY, txn);
    }
  }
  const job = await createBackupJob(engine, plan, txn);
  return {
    commit: () => engine.startInDrain(job),
    abort: () => engine.jobs.cancelSync(job),
  };
}

/** Registers `blockdev-backup` and the `blockdev-backup` transaction action. */
export function registerBackupCommands(engine: Engine, transactions: Transactions): void {
  transactions.define('blockdev-backup', blockdevBackupSchema, (data, context) => prepareBackup(engine, data as unknown as BlockdevBackupArgs, context), { grouped: true });
  engine.register(
    'blockdev-backup',
    async (args) => {
      await engine.graph.drained(async () => {
        const prepared = await prepareBackup(engine, args as BlockdevBackupArgs, { completionMode: 'individual', shared: new Map() });
        await prepared.commit?.();
      });
    },
    blockdevBackupSchema,
  );
}
