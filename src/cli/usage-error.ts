import { InvalidArgumentError } from '../errors.js';

/** A command-line usage error: exit status 2, printed with a hint to `--help`. */
export class UsageError extends InvalidArgumentError {
  constructor(command: string, reason: string) {
    super(`run bitback ${command}`, reason);
  }
}
