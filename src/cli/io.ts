/**
 * `bitback io [-f FORMAT] [-r] [-c COMMAND]... TARGET` — run qemu-io-like commands on a disk.
 * Without `-c`, commands are read from standard input, one per line (`#` starts a comment).
 * Stops at the first failing command; the exit status says why (see exit-codes.ts).
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { parseIoCommand, type IoCommand } from '../block/io/commands.js';
import { runIoCommand } from '../block/io/run.js';
import { openTarget, parseFormat } from './open-target.js';
import { UsageError } from './usage-error.js';

export const IO_USAGE = `Usage: bitback io [-f raw|qcow2] [-r] [-c COMMAND]... TARGET

Runs qemu-io-like commands on a disk image. Without -c, reads commands from stdin.
Commands:
  read    [-P PATTERN] [-v] [-q] OFFSET LENGTH   read; with -P, verify every byte
  write   [-P PATTERN | -z [-u]] [-f] [-q] OFFSET LENGTH
                                                 write a pattern (default 0xcd) or zeroes
                                                 (-u: may unmap, -f: FUA)
  discard [-q] OFFSET LENGTH                     discard (trim) a range
  flush | map | length
Sizes take the suffixes K, M, G, T (powers of 1024), e.g. "write -P 0x5a 1M 64k".`;

/** Runs the `io` command with its arguments (after the word `io`). Returns the exit status. */
export async function ioCommand(argv: string[], stdout: (line: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      format: { type: 'string', short: 'f' },
      'read-only': { type: 'boolean', short: 'r' },
      cmd: { type: 'string', short: 'c', multiple: true },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help) {
    stdout(IO_USAGE);
    return 0;
  }
  if (positionals.length !== 1) {
    throw new UsageError('io', `expected exactly one TARGET, got ${positionals.length}`);
  }
  // Parse every command before opening anything, so a typo changes nothing.
  const commands: IoCommand[] | undefined = values.cmd?.map(parseIoCommand);
  const device = await openTarget(positionals[0] as string, {
    ...(values.format !== undefined ? { format: parseFormat(values.format) } : {}),
    readOnly: values['read-only'] ?? false,
  });
  try {
    if (commands !== undefined) {
      for (const command of commands) await runIoCommand(device, command, stdout);
    } else {
      const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
      for await (const line of lines) {
        const text = line.replace(/#.*/, '').trim();
        if (text === '') continue;
        await runIoCommand(device, parseIoCommand(text), stdout);
      }
    }
  } finally {
    await device.close();
  }
  return 0;
}
