/**
 * How a command declares its arguments, in the vocabulary of QEMU's QAPI schema, so that the
 * dispatcher checks them exactly as QEMU's input visitor does (same order, same texts).
 *
 * A command's schema is a members map `{name: type}`; a name starting with `*` is optional
 * (QAPI's own marker): `{node: 'str', name: 'str', '*granularity': 'uint32'}`. Types are the
 * builtin names below or values made by {@link qmpEnum}, {@link qmpArray}, {@link qmpStruct},
 * {@link qmpUnion} and {@link qmpAlternate}. The TypeScript type of the arguments a handler gets
 * is derived from the schema ({@link QmpArgs}).
 */
import { type JsonObject } from '../protocol/messages.js';

/**
 * QAPI's builtin types. `int` is `int64`; `size` behaves as `uint64` on QMP; the fixed widths
 * matter because QEMU's texts differ (`expects uint64` first, then `expects uint32_t`).
 * `object` is bitback's own: any JSON object, taken as is.
 */
export type QmpBuiltinType =
  | 'str'
  | 'bool'
  | 'int'
  | 'int8'
  | 'int16'
  | 'int32'
  | 'int64'
  | 'uint8'
  | 'uint16'
  | 'uint32'
  | 'uint64'
  | 'size'
  | 'number'
  | 'null'
  | 'any'
  | 'object';

/** Every type a member can have. */
export type QmpType = QmpBuiltinType | QmpEnumType | QmpArrayType | QmpStructType | QmpUnionType | QmpAlternateType | QmpLazyType;

/** The members of a struct, in the order QEMU visits them; `*name` marks an optional member. */
export type QmpMembers = { readonly [name: string]: QmpType };

/** A string from a fixed set. */
export interface QmpEnumType<V extends string = string> {
  readonly kind: 'enum';
  readonly values: readonly V[];
}

/** A JSON array whose elements all have one type. */
export interface QmpArrayType<T extends QmpType = QmpType> {
  readonly kind: 'array';
  readonly items: T;
}

/** A JSON object with declared members (no others). */
export interface QmpStructType<M extends QmpMembers = QmpMembers> {
  readonly kind: 'struct';
  readonly members: M;
}

/**
 * QAPI's flat union: the `base` members, one of which (`discriminator`, an enum) picks the
 * `branches` entry whose members are also allowed. A discriminator value without an entry adds
 * no members.
 */
export interface QmpUnionType<
  B extends QmpMembers = QmpMembers,
  D extends string = string,
  V extends { readonly [value: string]: QmpMembers } = { readonly [value: string]: QmpMembers },
> {
  readonly kind: 'union';
  readonly discriminator: D;
  readonly base: B;
  readonly branches: V;
}

/**
 * QAPI's alternate: one of several types told apart by the JSON kind of the value (string,
 * number, boolean, null, object, array). `name` is the QAPI type name, which QEMU puts in its
 * error text (`expected: BlockdevRefOrNull`).
 */
export interface QmpAlternateType<T extends readonly QmpType[] = readonly QmpType[]> {
  readonly kind: 'alternate';
  readonly name: string;
  readonly branches: T;
}

/**
 * A type given by a function, for recursive schemas (QEMU's `BlockdevRef` holds a whole
 * `BlockdevOptions`). `V` is the TypeScript type of its values, which cannot be derived.
 */
export interface QmpLazyType<V = unknown> {
  readonly kind: 'lazy';
  readonly get: () => QmpType;
  /** Type-level only: the value type. */
  readonly __value?: V;
}

/** What `register()` accepts as a command's arguments: a members map, a struct or a union. */
export type QmpArgsSchema = QmpMembers | QmpStructType | QmpUnionType;

/** An enum type of `values`. */
export function qmpEnum<const V extends string>(values: readonly V[]): QmpEnumType<V> {
  return { kind: 'enum', values };
}

/** An array type of `items`. */
export function qmpArray<const T extends QmpType>(items: T): QmpArrayType<T> {
  return { kind: 'array', items };
}

/** A struct type with `members`. */
export function qmpStruct<const M extends QmpMembers>(members: M): QmpStructType<M> {
  return { kind: 'struct', members };
}

/** A flat union: `discriminator` names a required enum member of `base`. */
export function qmpUnion<const B extends QmpMembers, const D extends string & keyof B, const V extends { readonly [value: string]: QmpMembers }>(
  discriminator: D,
  base: B,
  branches: V,
): QmpUnionType<B, D, V> {
  return { kind: 'union', discriminator, base, branches };
}

/** An alternate named `name` (the QAPI type name) of `branches`. */
export function qmpAlternate<const T extends readonly QmpType[]>(name: string, ...branches: T): QmpAlternateType<T> {
  return { kind: 'alternate', name, branches };
}

/** A type resolved when first used, for recursion: `qmpLazy<Options>(() => BlockdevOptions)`. */
export function qmpLazy<V = unknown>(get: () => QmpType): QmpLazyType<V> {
  return { kind: 'lazy', get };
}

type Simplify<T> = { [K in keyof T]: T[K] } & {};

/**
 * The JavaScript value a member of type `T` arrives as (all numbers as `number`). Not
 * distributive (`[T]`): a type parameter constrained by the whole `QmpType` union resolves to
 * `unknown` at once instead of recursing through every member.
 */
export type QmpValueOf<T> = [T] extends ['str']
  ? string
  : [T] extends ['bool']
    ? boolean
    : [T] extends ['int' | 'int8' | 'int16' | 'int32' | 'int64' | 'uint8' | 'uint16' | 'uint32' | 'uint64' | 'size' | 'number']
      ? number
      : [T] extends ['null']
        ? null
        : [T] extends ['any']
          ? unknown
          : [T] extends ['object']
            ? JsonObject
            : [T] extends [QmpEnumType<infer V>]
              ? V
              : [T] extends [QmpArrayType<infer I>]
                ? QmpValueOf<I>[]
                : [T] extends [QmpStructType<infer M>]
                  ? QmpArgs<M>
                  : [T] extends [QmpUnionType<infer B, infer D, infer V>]
                    ? QmpUnionValue<B, D, V>
                    : [T] extends [QmpAlternateType<infer A>]
                      ? QmpEachValue<A[number]>
                      : [T] extends [QmpLazyType<infer L>]
                        ? L
                        : unknown;

/** The values of each type of a union of types (for alternates). */
type QmpEachValue<U> = U extends unknown ? QmpValueOf<U> : never;

/** The arguments object of a members map: `*name` members become optional properties `name?`. */
export type QmpArgs<M> = Simplify<
  { -readonly [K in keyof M as K extends `*${string}` ? never : K]: QmpValueOf<M[K]> } & {
    -readonly [K in keyof M as K extends `*${infer N}` ? N : never]?: QmpValueOf<M[K]>;
  }
>;

/** A union value: the base members with the discriminator narrowed, plus that branch's members. */
export type QmpUnionValue<B, D, V> = {
  [K in keyof V]: Simplify<Omit<QmpArgs<B>, D & string> & { [P in D & string]: K } & QmpArgs<V[K]>>;
}[keyof V];

/** The arguments a handler gets for a command declared with `schema`. */
export type QmpArgsOf<S> = S extends QmpUnionType ? QmpValueOf<S> : S extends QmpStructType<infer M> ? QmpArgs<M> : QmpArgs<S>;
