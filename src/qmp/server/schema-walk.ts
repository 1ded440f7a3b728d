/**
 * The walk over a members map or a flat union that QEMU's input visitors share: declared members
 * in order ("Parameter 'x' is missing"), then the union's branch, then members nobody declared
 * ("Parameter 'x' is unexpected"). What a member's value becomes is up to the caller's `visit`:
 * the QMP checker takes JSON values as they are, the keyval visitor converts strings.
 */
import { QmpText } from '../protocol/constants.js';
import type { JsonObject } from '../protocol/messages.js';
import type { QmpArgsSchema, QmpMembers, QmpType, QmpUnionType } from './schema.js';

/** The caller's half of a walk. */
export interface SchemaWalker {
  /** The value of one member: `full` is its path (`a.b`), `bare` its own name (null in arrays). */
  visit(type: QmpType, value: unknown, full: string, bare: string | null): unknown;
  /** Throws the caller's error with QEMU's `desc`. */
  fail(desc: string): never;
}

function has(o: JsonObject, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(o, key);
}

/** `prefix.name`, or `name` at the top. */
export function joinPath(prefix: string, name: string): string {
  return prefix === '' ? name : `${prefix}.${name}`;
}

/** Whether a schema is a flat union. */
export function isUnionSchema(s: QmpArgsSchema | QmpType): s is QmpUnionType {
  return (s as { kind?: unknown }).kind === 'union' && typeof (s as { base?: unknown }).base === 'object';
}

function isStruct(s: QmpArgsSchema): s is { kind: 'struct'; members: QmpMembers } {
  return (s as { kind?: unknown }).kind === 'struct' && typeof (s as { members?: unknown }).members === 'object';
}

function walkMembers(members: QmpMembers, obj: JsonObject, prefix: string, out: JsonObject, known: Set<string>, w: SchemaWalker): void {
  for (const [declared, type] of Object.entries(members)) {
    const optional = declared.startsWith('*');
    const name = optional ? declared.slice(1) : declared;
    known.add(name);
    if (!has(obj, name)) {
      if (optional) continue;
      w.fail(QmpText.missing(joinPath(prefix, name)));
    }
    const value = w.visit(type, obj[name], joinPath(prefix, name), name);
    Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
  }
}

function checkUnexpected(obj: JsonObject, known: Set<string>, prefix: string, w: SchemaWalker): void {
  for (const key of Object.keys(obj)) if (!known.has(key)) w.fail(QmpText.unexpected(joinPath(prefix, key)));
}

/** Walks a members map. */
export function walkStruct(members: QmpMembers, obj: JsonObject, prefix: string, w: SchemaWalker): JsonObject {
  const out: JsonObject = {};
  const known = new Set<string>();
  walkMembers(members, obj, prefix, out, known, w);
  checkUnexpected(obj, known, prefix, w);
  return out;
}

/** Walks a flat union: its base, then the branch its discriminator picks. */
export function walkUnion(union: QmpUnionType, obj: JsonObject, prefix: string, w: SchemaWalker): JsonObject {
  const out: JsonObject = {};
  const known = new Set<string>();
  walkMembers(union.base, obj, prefix, out, known, w);
  const tag = out[union.discriminator];
  if (typeof tag === 'string' && has(union.branches, tag)) walkMembers(union.branches[tag]!, obj, prefix, out, known, w);
  checkUnexpected(obj, known, prefix, w);
  return out;
}

/** Walks the arguments of a command (members map, struct or union). */
export function walkArguments(schema: QmpArgsSchema, args: JsonObject, w: SchemaWalker): JsonObject {
  if (isUnionSchema(schema)) return walkUnion(schema, args, '', w);
  return walkStruct(isStruct(schema) ? schema.members : (schema as QmpMembers), args, '', w);
}
