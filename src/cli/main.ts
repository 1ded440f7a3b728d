#!/usr/bin/env node
/**
 * The `bitback` command. Thin by design: it picks the command module, runs it, prints errors and
 * maps them to exit statuses (exit-codes.ts). Command modules are loaded on demand so that every
 * command starts fast.
 */
import { readFileSync } from 'node:fs';
import { BitbackError } from '../errors.js';
import { EXIT_INTERNAL, exitStatusFor } from './exit-codes.js';

type CommandRunner = (argv: string[], stdout: (line: string) => void) => Promise<number>;

/** Each command: a one-line summary and a loader of its runner. */
const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandRunner> }> = {
  image: {
    summary: 'create, inspect, compare and convert disk images (like qemu-img)',
    load: async () => (await import('./image.js')).imageCommand,
  },
  io: {
    summary: 'run qemu-io-like read/write/discard commands on a disk image',
    load: async () => (await import('./io.js')).ioCommand,
  },
  bitmap: {
    summary: 'add, remove, merge, list and dump persistent dirty bitmaps of a qcow2 image (like qemu-img bitmap)',
    load: async () => (await import('./bitmap.js')).bitmapCommand,
  },
  serve: {
    summary: 'serve disk images over NBD, with their dirty bitmaps (like qemu-nbd)',
    load: async () => (await import('./serve.js')).serveCommand,
  },
  nbd: {
    summary: 'list, describe and map NBD exports, copy disks over NBD (like nbdinfo, nbdcopy)',
    load: async () => (await import('./nbd.js')).nbdCommand,
  },
  daemon: {
    summary: "run bitback's engine (QEMU's block layer: bitmaps, jobs, NBD exports) behind a QMP socket",
    load: async () => (await import('./daemon.js')).daemonCommand,
  },
  snapshot: {
    summary: 'create, list, apply and delete internal snapshots of a qcow2 image (like qemu-img snapshot)',
    load: async () => (await import('./snapshot.js')).snapshotCommand,
  },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: bitback COMMAND [ARGS...]\n\nCommands:\n${lines.join('\n')}\n\n` +
    `bitback COMMAND --help shows a command's options; bitback --version prints the version.`;
}

/** Runs the CLI with `argv` (without node and script). Returns the exit status. */
export async function main(argv: string[]): Promise<number> {
  const out = (line: string): void => {
    process.stdout.write(`${line}\n`);
  };
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    out(usage());
    return name === undefined ? 2 : 0;
  }
  if (name === '--version' || name === '-V') {
    out(`bitback ${version()}`);
    return 0;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    process.stderr.write(`bitback: unknown command '${name}'\n\n${usage()}\n`);
    return 2;
  }
  try {
    return await (await command.load())(rest, out);
  } catch (e) {
    return report(name, e);
  }
}

/** Prints an error the way users should see it and returns its exit status. */
function report(command: string, e: unknown): number {
  const parseArgsCode = (e as { code?: unknown })?.code;
  if (typeof parseArgsCode === 'string' && parseArgsCode.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`bitback ${command}: ${(e as Error).message}\nTry 'bitback ${command} --help'.\n`);
    return 2;
  }
  if (e instanceof BitbackError) {
    process.stderr.write(`bitback ${command}: ${e.message}\n`);
    if (e.code === 'INVALID_ARGUMENT') process.stderr.write(`Try 'bitback ${command} --help'.\n`);
    return exitStatusFor(e);
  }
  process.stderr.write(`bitback ${command}: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
  return EXIT_INTERNAL;
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (e: unknown) => {
    process.stderr.write(`bitback: internal error: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exitCode = EXIT_INTERNAL;
  },
);
