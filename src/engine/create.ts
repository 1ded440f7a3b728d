/**
 * An engine with every command registered: what `bitback daemon` runs and what offline backups
 * and tests drive in-process.
 */
import type { IoOutput } from '../block/io/run.js';
import { registerBackupCommands } from './commands/backup.js';
import { registerBitmapCommands } from './commands/bitmaps.js';
import { registerBlockdevCommands } from './commands/blockdev.js';
import { registerHmpCommand } from './commands/hmp.js';
import { registerNbdCommands } from './commands/nbd-exports.js';
import { registerInternalSnapshotCommands } from './commands/internal-snapshots.js';
import { registerSnapshotCommands } from './commands/snapshots.js';
import { registerTransaction } from './commands/transaction.js';
import { Engine, type EngineOptions } from './engine.js';
import { registerJobCommands } from './jobs/job-commands.js';

/** Options of {@link createEngine}. */
export interface CreateEngineOptions extends EngineOptions {
  /** Receives the output lines of `qemu-io` run through `human-monitor-command` (QEMU prints them on its stdout). Default: dropped. */
  ioLog?: IoOutput;
}

/** A new engine with all its commands. */
export function createEngine(options: CreateEngineOptions = {}): Engine {
  const engine = new Engine(options);
  registerBlockdevCommands(engine, options.onQuit);
  registerBitmapCommands(engine);
  registerHmpCommand(engine, options.ioLog ?? (() => undefined));
  registerNbdCommands(engine);
  registerJobCommands(engine, engine.jobs);
  const transactions = registerTransaction(engine);
  registerSnapshotCommands(engine, transactions);
  registerInternalSnapshotCommands(engine, transactions);
  registerBackupCommands(engine, transactions);
  return engine;
}
