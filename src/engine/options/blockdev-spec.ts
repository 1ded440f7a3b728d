/**
 * `--blockdev SPEC`: the two forms QEMU 7.2's `-blockdev` takes, read as QEMU reads them
 * (`qobject_input_visitor_new_str` with implied key `driver`, then `visit_type_BlockdevOptions`):
 * - text starting with `{` is JSON (QEMU's dialect: single quotes allowed, duplicate keys not),
 *   checked like the arguments of `blockdev-add` over QMP;
 * - anything else is `key=value,...` ({@link parseKeyval}; `qcow2,file=x` means
 *   `driver=qcow2,file=x`), converted by the keyval visitor ({@link visitKeyval}).
 *
 * No I/O.
 */
import { QmpText } from '../../qmp/protocol/constants.js';
import { QmpError, QmpJsonError } from '../../qmp/protocol/errors.js';
import { parseQmpJson } from '../../qmp/protocol/json-parse.js';
import { type JsonObject } from '../../qmp/protocol/messages.js';
import { validateArguments } from '../../qmp/server/validate.js';
import { blockdevOptions, type BlockdevOptions } from './blockdev-schema.js';
import { BlockdevSpecError, KeyvalError } from './errors.js';
import { visitKeyval } from './keyval-visit.js';
import { parseKeyval } from './keyval.js';

/** QEMU's `qobject_from_json` (`qobject/json-parser.c` `consume_json`): more after the value. */
const TRAILING_JSON = 'Expecting at most one JSON value';

/**
 * Parses a `--blockdev` value into checked `BlockdevOptions` (numbers as `number`, booleans as
 * `boolean`, absent optional members left out). Only syntax and types are checked, as QEMU does
 * while it reads its command line: whether files exist, node names are unique or references
 * resolve is for whoever opens the nodes.
 *
 * @throws BlockdevSpecError whose `desc` is what QEMU 7.2 prints after
 *   `qemu-system-x86_64: -blockdev SPEC: ` for the same text
 */
export function parseBlockdevSpec(text: string): BlockdevOptions {
  try {
    if (text.startsWith('{')) return validateArguments(blockdevOptions, parseJsonObject(text)) as BlockdevOptions;
    return visitKeyval(blockdevOptions, parseKeyval(text, { impliedKey: 'driver' })) as BlockdevOptions;
  } catch (e) {
    if (e instanceof KeyvalError || e instanceof QmpError) throw new BlockdevSpecError(text, e.desc, { cause: e });
    throw e;
  }
}

/** The JSON object in `text` (which starts with `{`), with QEMU's texts for bad JSON. */
function parseJsonObject(text: string): JsonObject {
  try {
    return parseQmpJson(text, { preserveNumberKinds: true }) as JsonObject;
  } catch (e) {
    if (!(e instanceof QmpJsonError)) throw e;
    const desc =
      e.detail === 'expecting end of input'
        ? TRAILING_JSON
        : e.detail === 'nesting depth limit exceeded'
          ? QmpText.nestingLimit
          : QmpText.jsonParseError(e.detail);
    throw new BlockdevSpecError(text, desc, { cause: e });
  }
}
