/**
 * `bitback daemon --qmp unix:PATH [--blockdev SPEC ...]` — the engine as a long-running process
 * with a QMP socket (like `qemu-storage-daemon`), until `quit`, SIGINT or SIGTERM. Thin: parses,
 * adds the `--blockdev` nodes, listens, waits, and closes the engine (which stores persistent
 * bitmaps and removes the sockets).
 */
import { parseArgs } from 'node:util';
import { createEngine } from '../engine/index.js';
import { parseBlockdevSpec } from '../engine/options/index.js';
import { UsageError } from './usage-error.js';

export const DAEMON_USAGE = `Usage: bitback daemon --qmp unix:PATH [--blockdev SPEC ...] [--qemu-io-log]

Runs bitback's engine (QEMU's block layer model: nodes, dirty bitmaps, jobs, NBD exports),
controlled over QMP with QEMU 7.2's commands, until 'quit', SIGINT or SIGTERM.
  --qmp unix:PATH     the QMP socket (created with mode 0600); repeatable for several sockets
  --blockdev SPEC     add a node at start, as QEMU's -blockdev: JSON ({"driver":"qcow2",...})
                      or driver=qcow2,node-name=disk0,file.driver=file,file.filename=disk.qcow2
  --qemu-io-log       print the output of qemu-io commands run through human-monitor-command
                      on stdout (QEMU prints it there)`;

/** Runs `bitback daemon`. Resolves with the exit status once the engine has closed. */
export async function daemonCommand(argv: string[], out: (line: string) => void): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      qmp: { type: 'string', multiple: true },
      blockdev: { type: 'string', multiple: true },
      'qemu-io-log': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.help === true) {
    out(DAEMON_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError('daemon', `unexpected argument '${positionals[0]}'`);
  const sockets = (values.qmp ?? []).map((spec) => {
    if (!spec.startsWith('unix:') || spec.length === 5) throw new UsageError('daemon', `--qmp takes unix:PATH, not '${spec}'`);
    return spec.slice(5).replace(/,server(=on)?|,wait=off|,nowait/g, '');
  });
  if (sockets.length === 0) throw new UsageError('daemon', '--qmp unix:PATH is required');
  const specs = (values.blockdev ?? []).map((spec) => parseBlockdevSpec(spec));

  let quit: () => void = () => undefined;
  const quitting = new Promise<void>((resolve) => (quit = resolve));
  const engine = createEngine({ onQuit: () => quit(), ...(values['qemu-io-log'] === true ? { ioLog: out } : {}) });
  try {
    for (const spec of specs) await engine.addNode(spec);
    for (const path of sockets) await engine.qmp.listen({ path });
    const onSignal = (): void => quit();
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      await quitting;
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  } finally {
    await engine.close();
  }
  return 0;
}
