/**
 * A `--blockdev` argument of `bitback daemon`, in the JSON form of QEMU's `-blockdev`.
 * (Provisional: the dotted key=value form comes with src/engine/options/.)
 */
import { InvalidArgumentError } from '../../errors.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';

/** Parses a `--blockdev` value. @throws InvalidArgumentError for anything but a JSON object */
export function parseBlockdevSpec(text: string): JsonObject {
  const action = `parse --blockdev '${text}'`;
  if (!text.trimStart().startsWith('{')) throw new InvalidArgumentError(action, 'only the JSON form is supported yet');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(action, (e as Error).message);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidArgumentError(action, 'not a JSON object');
  return value as JsonObject;
}
