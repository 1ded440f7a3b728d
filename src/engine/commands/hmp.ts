/**
 * `human-monitor-command` with the one HMP command scripts need: `qemu-io [-d] NODE "COMMAND"`.
 * As in QEMU (block/monitor/block-hmp-cmds.c `hmp_qemu_io`), the command runs through a
 * temporary backend on the node, so a write passes the node's bitmaps and everything above the
 * node is bypassed; qemu-io's own output (and its errors, such as a failed pattern check or an
 * I/O error) goes to the engine's I/O log, not into the reply, and the reply is empty unless the
 * node is not found or the command line is malformed. Any other HMP command gets a clear error
 * in the reply text.
 */
import { parseIoCommand } from '../../block/io/commands.js';
import { runIoCommand, type IoOutput } from '../../block/io/run.js';
import { BitbackError } from '../../errors.js';
import type { Engine } from '../engine.js';
import type { BlockNode } from '../graph/block-node.js';
import { ALL_PERMISSIONS, BlockPermission, PermissionConflictError } from '../graph/permissions.js';
import { strerror } from '../qemu-errors.js';

/** Splits an HMP argument line the way QEMU's monitor reads `s` arguments: words or "quoted strings" with C escapes. */
export function hmpWords(line: string): string[] | string {
  const words: string[] = [];
  let i = 0;
  while (i < line.length) {
    while (i < line.length && /\s/.test(line[i]!)) i++;
    if (i >= line.length) break;
    if (line[i] === '"') {
      let word = '';
      i++;
      for (;;) {
        if (i >= line.length) return 'unterminated string literal';
        const ch = line[i++]!;
        if (ch === '"') break;
        if (ch === '\\') {
          const next = line[i++];
          const escaped = next === 'n' ? '\n' : next === 'r' ? '\r' : next === '\\' || next === '"' || next === "'" ? next : undefined;
          if (escaped === undefined) return `unsupported escape code: '\\${next ?? ''}'`;
          word += escaped;
        } else word += ch;
      }
      words.push(word);
    } else {
      let word = '';
      while (i < line.length && !/\s/.test(line[i]!)) word += line[i++];
      words.push(word);
    }
  }
  return words;
}

/** Registers `human-monitor-command` on `engine`; `ioLog` receives qemu-io's output lines. */
export function registerHmpCommand(engine: Engine, ioLog: IoOutput): void {
  engine.register(
    'human-monitor-command',
    async (args) => {
      const words = hmpWords(args['command-line']);
      if (typeof words === 'string') return `${words}\r\n`;
      const [name, ...rest] = words;
      if (name === undefined) return '';
      if (name !== 'qemu-io') return `Error: bitback's engine runs only 'qemu-io' through human-monitor-command, not '${name}'\r\n`;
      const byDevice = rest[0] === '-d';
      const operands = byDevice ? rest.slice(1) : rest;
      if (operands.length < 2) return 'qemu-io: string expected\r\nTry "help qemu-io" for more information\r\n';
      const [nodeName, commandLine] = operands as [string, string];
      // The engine has no devices: `-d NAME` never finds one (QEMU: "Device 'NAME' not found").
      if (byDevice) return `Error: Device '${nodeName}' not found\r\n`;
      const node = engine.graph.get(nodeName);
      if (node === undefined) return `Error: Cannot find device='' nor node-name='${nodeName}'\r\n`;
      return runQemuIo(engine, node, commandLine, ioLog);
    },
    { 'command-line': 'str', '*cpu-index': 'int' },
  );
}

/**
 * Runs one qemu-io command line through a temporary backend on `node`, as QEMU does: the
 * backend attaches holding nothing (a permission conflict there is the reply, with "Error: "),
 * then a writing command takes the write permission (a refusal is the reply as it is: a
 * conflict with another user, or "Block node is read-only"). Returns the reply.
 */
async function runQemuIo(engine: Engine, node: BlockNode, commandLine: string, out: IoOutput): Promise<string> {
  let backend;
  try {
    backend = engine.graph.attachBackend(`qemu-io ${node.name}`, node);
  } catch (e) {
    if (e instanceof PermissionConflictError) return `Error: ${e.reason}\r\n`;
    throw e;
  }
  try {
    let command;
    try {
      command = parseIoCommand(commandLine);
    } catch (e) {
      out(e instanceof BitbackError ? e.reason : String(e));
      return '';
    }
    if (command.kind === 'write' || command.kind === 'discard') {
      try {
        backend.setPermissions({ perm: BlockPermission.WRITE, shared: ALL_PERMISSIONS });
      } catch (e) {
        if (e instanceof PermissionConflictError) return `${e.reason}\r\n`;
        throw e;
      }
    }
    try {
      await runIoCommand(backend, command, out);
    } catch (e) {
      const errno = (e as { errno?: unknown }).errno;
      // qemu-io's own words: a failed pattern check names the request; a failed flush prints nothing.
      if (e instanceof BitbackError && e.code === 'VERIFY_FAILED' && command.kind === 'read') out(`Pattern verification failed at offset ${command.offset}, ${command.length} bytes`);
      else if (command.kind !== 'flush') out(`${command.kind} failed: ${typeof errno === 'string' ? strerror(errno) : e instanceof Error ? e.message : String(e)}`);
    }
    return '';
  } finally {
    await engine.graph.detachBackend(backend);
  }
}
