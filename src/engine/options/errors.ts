/**
 * Errors of option strings: QEMU's `key=value,...` syntax and the `-blockdev` options built on it.
 * `desc` always holds QEMU's own text for the problem (what QEMU prints after
 * `qemu-system-x86_64: -blockdev SPEC: `), so that a front end can print it the same way.
 */
import { InvalidArgumentError, type BitbackErrorOptions } from '../../errors.js';

/**
 * A `key=value,...` string is malformed, or one of its values does not have the type the schema
 * asks for. `desc` is QEMU 7.2's text (`util/keyval.c`, `qapi/qobject-input-visitor.c`).
 */
export class KeyvalError extends InvalidArgumentError {
  /** QEMU's text for the problem, e.g. `Parameter 'size' expects integer`. */
  readonly desc: string;

  constructor(desc: string, options?: BitbackErrorOptions) {
    super('parse key=value options', desc, options);
    this.desc = desc;
  }
}

/**
 * A `--blockdev` specification (JSON or `key=value,...`) is not a valid `BlockdevOptions`.
 * `desc` is what QEMU 7.2 prints for the same `-blockdev` argument after its
 * `qemu-system-x86_64: -blockdev SPEC: ` prefix.
 */
export class BlockdevSpecError extends InvalidArgumentError {
  /** The specification as given. */
  readonly spec: string;
  /** QEMU's text for the problem. */
  readonly desc: string;

  constructor(spec: string, desc: string, options?: BitbackErrorOptions) {
    super(`parse --blockdev ${spec}`, desc, options);
    this.spec = spec;
    this.desc = desc;
  }
}
