/**
 * The `config` file of the `blkdebug` driver: QEMU's config-file syntax (util/qemu-config.c
 * `qemu_config_parse`) with the groups `[inject-error]` and `[set-state]`, read the way QEMU 7.2
 * reads it, with its error texts:
 *
 *     # a comment
 *     [inject-error]
 *     event = "read_aio"
 *     errno = "28"
 *
 *     [set-state "optional-id"]
 *     event = "write_aio"
 *     new_state = "2"
 *
 * A line is a comment (`#` first), empty (nothing but its newline), a group header, or
 * `KEY = "VALUE"`; as with QEMU's `sscanf`, a line whose value is not quoted, or a `KEY="VALUE"`
 * without spaces, sets that key (the whole first word) to the empty string. Numbers are QEMU's
 * option numbers (`qemu_strtou64`, negative values wrap); booleans `on`/`off`/`yes`/`no`/...
 * No I/O: the caller reads the file.
 */
import { InvalidArgumentError } from '../../errors.js';
import { BLKDEBUG_EVENTS } from '../options/blockdev-schema.js';
import { parseQemuBool, parseQemuUint64 } from '../options/qemu-numbers.js';
import { BLKDEBUG_IO_TYPES, type BlkdebugEvent, type BlkdebugIoType, type InjectErrorRule, type SetStateRule } from './blkdebug-rules.js';

/** The rules of a config file, in file order. */
export interface BlkdebugConfig {
  injects: InjectErrorRule[];
  sets: SetStateRule[];
}

type Group = 'inject-error' | 'set-state';

/** Parameters of each group and their QemuOpts types. */
const PARAMETERS: Record<Group, Record<string, 'string' | 'number' | 'bool'>> = {
  'inject-error': { event: 'string', state: 'number', iotype: 'string', errno: 'number', sector: 'number', once: 'bool', immediately: 'bool' },
  'set-state': { event: 'string', state: 'number', new_state: 'number' },
};

interface ParsedGroup {
  group: Group;
  values: Map<string, string>;
}

const ACTION = 'read blkdebug config file';

function fail(reason: string): never {
  throw new InvalidArgumentError(ACTION, reason);
}

/**
 * Parses the text of a config file into rules.
 * @throws InvalidArgumentError with QEMU's text ("There is no option group 'x'", "no group
 *   defined", "parse error", "Invalid parameter 'x'", "Parameter 'errno' expects a number",
 *   "Missing event name for rule", "invalid parameter value: x")
 */
export function parseBlkdebugConfig(text: string): BlkdebugConfig {
  const groups: ParsedGroup[] = [];
  const ids = new Map<Group, Set<string>>();
  let current: { name: string; values: Map<string, string> } | undefined;
  const finish = (): void => {
    if (current === undefined) return;
    groups.push(checkGroup(current.name, current.values, ids));
  };
  const lines = text.split(/(?<=\n)/);
  for (const line of lines) {
    if (line.startsWith('\n') || line.startsWith('#')) continue;
    if (line.startsWith('[')) {
      const withId = /^\[(\S{1,63})\s*"([^"]{1,63})"\]/.exec(line);
      const plain = withId === null ? /^\[([^\]]{1,63})\]/.exec(line) : null;
      if (withId !== null || plain !== null) {
        finish();
        const values = new Map<string, string>();
        if (withId !== null) values.set('id', withId[2]!);
        current = { name: (withId ?? plain)![1]!, values };
        continue;
      }
    }
    const key = /^\s*(\S{1,63})/.exec(line);
    if (key === null) fail('parse error');
    const quoted = /^\s*\S{1,63}\s*=\s*"([^"]{1,1023})"/.exec(line);
    if (current === undefined) fail('no group defined');
    current.values.set(key[1]!, quoted?.[1] ?? '');
  }
  finish();
  const injects: InjectErrorRule[] = [];
  const sets: SetStateRule[] = [];
  // QEMU adds every inject-error rule, then every set-state rule (blkdebug.c `read_config`).
  for (const g of groups) if (g.group === 'inject-error') injects.push(injectRule(g.values));
  for (const g of groups) if (g.group === 'set-state') sets.push(setStateRule(g.values));
  return { injects, sets };
}

/** Checks a finished group as `qemu_opts_from_qdict` does: its name, id and parameters. */
function checkGroup(name: string, values: Map<string, string>, ids: Map<Group, Set<string>>): ParsedGroup {
  if (name !== 'inject-error' && name !== 'set-state') fail(`There is no option group '${name}'`);
  const id = values.get('id');
  if (id !== undefined) {
    if (!/^[A-Za-z][A-Za-z0-9._-]*$/.test(id)) fail("Parameter 'id' expects an identifier");
    const seen = ids.get(name) ?? new Set<string>();
    if (seen.has(id)) fail(`Duplicate ID '${id}' for ${name}`);
    seen.add(id);
    ids.set(name, seen);
  }
  const parameters = PARAMETERS[name];
  for (const [key, value] of values) {
    if (key === 'id') continue;
    const type = parameters[key];
    if (type === undefined) fail(`Invalid parameter '${key}'`);
    if (type === 'number' && parseQemuUint64(value) === undefined) fail(`Parameter '${key}' expects a number`);
    if (type === 'bool' && parseQemuBool(value) === undefined) fail(`Parameter '${key}' expects 'on' or 'off'`);
  }
  return { group: name, values };
}

/** A C `int` from an option number (`qemu_opt_get_number` truncated as blkdebug.c stores it). */
function int32(values: Map<string, string>, key: string): number | undefined {
  const text = values.get(key);
  return text === undefined ? undefined : Number(BigInt.asIntN(32, parseQemuUint64(text)!));
}

function event(values: Map<string, string>): BlkdebugEvent {
  const name = values.get('event');
  if (name === undefined) fail('Missing event name for rule');
  if (!(BLKDEBUG_EVENTS as readonly string[]).includes(name)) fail(`invalid parameter value: ${name}`);
  return name as BlkdebugEvent;
}

function injectRule(values: Map<string, string>): InjectErrorRule {
  const rule: InjectErrorRule = { event: event(values) };
  const iotype = values.get('iotype');
  if (iotype !== undefined) {
    if (!(BLKDEBUG_IO_TYPES as readonly string[]).includes(iotype)) fail(`invalid parameter value: ${iotype}`);
    rule.iotype = iotype as BlkdebugIoType;
  }
  const state = int32(values, 'state');
  if (state !== undefined) rule.state = state;
  const errno = int32(values, 'errno');
  if (errno !== undefined) rule.errno = errno;
  const sector = values.get('sector');
  if (sector !== undefined) rule.sector = Number(BigInt.asIntN(64, parseQemuUint64(sector)!));
  const once = values.get('once');
  if (once !== undefined) rule.once = parseQemuBool(once)!;
  const immediately = values.get('immediately');
  if (immediately !== undefined) rule.immediately = parseQemuBool(immediately)!;
  return rule;
}

function setStateRule(values: Map<string, string>): SetStateRule {
  const rule: SetStateRule = { event: event(values), new_state: int32(values, 'new_state') ?? 0 };
  const state = int32(values, 'state');
  if (state !== undefined) rule.state = state;
  return rule;
}
