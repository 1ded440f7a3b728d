/**
 * The command table of a QMP server: handlers registered by name with a schema of their
 * arguments. The dispatcher checks arguments exactly as QEMU 7.2 does before a handler runs, so
 * that handlers only see well-typed input and argument errors read like QEMU's.
 */
import { BitbackError, InvalidArgumentError } from '../../errors.js';
import { QmpText } from '../protocol/constants.js';
import { QmpError } from '../protocol/errors.js';
import { type JsonObject } from '../protocol/messages.js';
import { type QmpArgsOf, type QmpArgsSchema } from './schema.js';
import { validateArguments } from './validate.js';

/** What a handler learns about the call besides its arguments. */
export interface QmpCommandContext {
  /** The monitor (connection) the command came from; unique within one server. */
  readonly monitorId: number;
  /** The command name. */
  readonly command: string;
}

/**
 * A command handler. It returns the `return` value (`undefined` becomes `{}`, as for QEMU
 * commands without a return type), possibly as a promise. To fail with a chosen class and text it
 * throws a `QmpError`; any other `BitbackError` becomes a GenericError with its message;
 * anything else a GenericError "internal error" (and is reported to the server's `onError`).
 */
export type QmpHandler<A = JsonObject> = (args: A, context: QmpCommandContext) => unknown;

interface Entry {
  handler: QmpHandler;
  schema: QmpArgsSchema;
}

/** Registered commands, in registration order. */
export class QmpDispatcher {
  readonly #commands = new Map<string, Entry>();

  /**
   * Adds command `name`. `schema` declares its arguments (see `schema.ts`); the handler's
   * argument type follows from it.
   *
   * @throws BitbackError ALREADY_EXISTS when `name` is registered; INVALID_ARGUMENT for an empty name
   */
  register<const S extends QmpArgsSchema>(name: string, handler: QmpHandler<QmpArgsOf<S>>, schema: S): this {
    if (name === '') throw new InvalidArgumentError('register a QMP command', 'the name is empty');
    if (this.#commands.has(name)) throw new BitbackError('ALREADY_EXISTS', `register QMP command ${name}`, 'a command of that name is registered');
    this.#commands.set(name, { handler: handler as unknown as QmpHandler, schema });
    return this;
  }

  /** Removes command `name`; returns whether it was registered. */
  unregister(name: string): boolean {
    return this.#commands.delete(name);
  }

  /** Whether command `name` is registered. */
  has(name: string): boolean {
    return this.#commands.has(name);
  }

  /** The registered command names, in registration order. */
  names(): string[] {
    return [...this.#commands.keys()];
  }

  /** The schema command `name` was registered with. */
  schemaOf(name: string): QmpArgsSchema | undefined {
    return this.#commands.get(name)?.schema;
  }

  /**
   * Runs command `name` with `args` (`undefined` for none): looks it up, checks the arguments,
   * calls the handler and returns its value (`{}` for `undefined`).
   *
   * @throws QmpError CommandNotFound for an unknown command, GenericError for bad arguments;
   *   whatever the handler throws, unchanged
   */
  async dispatch(name: string, args: JsonObject | undefined, context: Omit<QmpCommandContext, 'command'>): Promise<unknown> {
    const entry = this.#commands.get(name);
    if (entry === undefined) throw new QmpError('CommandNotFound', QmpText.commandNotFound(name), { command: name });
    const checked = validateArguments(entry.schema, args ?? {});
    const result: unknown = await entry.handler(checked, { ...context, command: name });
    return result === undefined ? {} : result;
  }
}
