/**
 * Test-only: one-line digests of a schema, so that bitback's `BlockdevOptions` can be compared
 * with what QEMU's `query-qmp-schema` says of `blockdev-add`. A digest keeps what introspection
 * shows: member names in order, `*` for optional ones, JSON types (every integer width is `int`),
 * enum values, array items, alternate branches, union variants (sorted by tag value). A
 * reference back to `BlockdevOptions` below the top is written as its name.
 */
import { type QmpType } from '../../../qmp/server/schema.js';

const JSON_TYPES: Record<string, string> = { str: 'string', bool: 'boolean', null: 'null', number: 'number', any: 'value', object: 'object' };

/**
 * The digest of a bitback schema type. `isSelf` tells the union that stands for itself when met
 * again below the top (a `BlockdevRef`), so that recursion stops there.
 */
export function digestSchema(type: QmpType, isSelf: (t: QmpType) => boolean, top = true): string {
  if (!top && isSelf(type)) return 'BlockdevOptions';
  if (typeof type === 'string') return JSON_TYPES[type] ?? 'int';
  switch (type.kind) {
    case 'enum':
      return `enum(${type.values.join(',')})`;
    case 'array':
      return `[${digestSchema(type.items, isSelf, false)}]`;
    case 'struct':
      return `{${members(type.members, isSelf)}}`;
    case 'union': {
      const variants = Object.entries(type.branches)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([tag, m]) => `${tag}=>{${members(m, isSelf)}}`);
      return `{${members(type.base, isSelf)} ${variants.join(' ')}}`;
    }
    case 'alternate':
      return `alt(${type.branches.map((b) => digestSchema(b, isSelf, false)).join('|')})`;
    case 'lazy':
      return digestSchema(type.get(), isSelf, top);
    default: {
      const never: never = type;
      throw new Error(`unknown QMP type ${JSON.stringify(never)}`);
    }
  }
}

function members(m: Readonly<Record<string, QmpType>>, isSelf: (t: QmpType) => boolean): string {
  return Object.entries(m)
    .map(([name, t]) => `${name}:${digestSchema(t, isSelf, false)}`)
    .join(',');
}

/** One entry of `query-qmp-schema` (`SchemaInfo`), the parts digests use. */
export interface SchemaInfo {
  name: string;
  'meta-type': string;
  'json-type'?: string;
  values?: string[];
  'element-type'?: string;
  members?: { name: string; type: string; default?: null }[];
  tag?: string;
  variants?: { case: string; type: string }[];
}

/**
 * The digest of type `name` in QEMU's introspected schema, keeping only the union variants whose
 * tag is in `keepVariants` at the top, and writing `selfName` (the masked name of
 * `BlockdevOptions`) as `BlockdevOptions` below the top.
 */
export function digestIntrospection(schema: ReadonlyMap<string, SchemaInfo>, name: string, selfName: string, keepVariants: readonly string[], top = true): string {
  if (!top && name === selfName) return 'BlockdevOptions';
  const e = schema.get(name);
  if (e === undefined) throw new Error(`no type ${name} in the introspected schema`);
  const sub = (n: string): string => digestIntrospection(schema, n, selfName, keepVariants, false);
  switch (e['meta-type']) {
    case 'builtin':
      return e['json-type'] === 'int' ? 'int' : e['json-type']!;
    case 'enum':
      return `enum(${e.values!.join(',')})`;
    case 'array':
      return `[${sub(e['element-type']!)}]`;
    case 'alternate':
      return `alt(${e.members!.map((m) => sub(m.type)).join('|')})`;
    case 'object': {
      const own = e.members!.map((m) => `${'default' in m ? '*' : ''}${m.name}:${sub(m.type)}`).join(',');
      if (e.variants === undefined) return `{${own}}`;
      const variants = e.variants
        .filter((v) => !top || keepVariants.includes(v.case))
        .sort((a, b) => (a.case < b.case ? -1 : 1))
        .map((v) => `${v.case}=>${sub(v.type)}`);
      return `{${own} ${variants.join(' ')}}`;
    }
    default:
      throw new Error(`unknown meta-type ${e['meta-type']}`);
  }
}
