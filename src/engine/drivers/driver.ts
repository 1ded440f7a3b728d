/**
 * How node drivers plug into the engine. A driver opens one node from its `blockdev-add`
 * options: it resolves its children through the context (which attaches them to the node as
 * edges) and returns the device that does the node's I/O over those edges.
 */
import { InvalidArgumentError } from '../../errors.js';
import type { JsonObject } from '../../qmp/protocol/messages.js';
import type { BlockNode, DriverInstance } from '../graph/block-node.js';
import type { Edge } from '../graph/edge.js';
import type { NodeGraph } from '../graph/node-graph.js';

/** A child reference as QMP gives it: a node name, or the options of an inline (implicit) node. */
export type BlockdevRef = string | JsonObject;

/** What a driver gets while it opens a node. */
export interface OpenContext {
  readonly graph: NodeGraph;
  /** The node being opened; its edges are attached by {@link child}. */
  readonly node: BlockNode;
  /** The node is opened read-only (`read-only: true`). */
  readonly readOnly: boolean;
  /**
   * Resolves `ref` (an existing node's name, or options from which an implicit node is made
   * first) and attaches it to the node as a child in `role`.
   * @throws NotFoundError for an unknown node name; whatever opening an inline node throws
   */
  child(role: string, ref: BlockdevRef): Promise<Edge>;
}

/** One driver (`file`, `qcow2`, ...). */
export interface BlockDriver {
  /** The name `blockdev-add` selects it by. */
  readonly name: string;
  /** Opens a node. Children attached before a failure are detached by the caller. */
  open(options: JsonObject, context: OpenContext): Promise<DriverInstance>;
}

/** The string member `key` of `options`. @throws InvalidArgumentError naming it when missing or not a string */
export function requiredString(options: JsonObject, key: string): string {
  const value = options[key];
  if (typeof value !== 'string') throw new InvalidArgumentError(`open node`, `Parameter '${key}' is missing`);
  return value;
}

/** The child reference `key` of `options`, or undefined. */
export function childRef(options: JsonObject, key: string): BlockdevRef | undefined {
  const value = options[key];
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as JsonObject;
  return undefined;
}

/** A required child reference. @throws InvalidArgumentError as QEMU words it */
export function requiredChild(options: JsonObject, key: string): BlockdevRef {
  const ref = childRef(options, key);
  if (ref === undefined) throw new InvalidArgumentError('open node', `Parameter '${key}' is missing`);
  return ref;
}
