/** Test-only: a bitback QMP server that knows QEMU's schemas for a few commands but runs none. */
import { QmpServer, type QmpServerOptions } from '../qmp-server.js';
import { type QmpArgsSchema } from '../schema.js';
import { QEMU_COMMAND_SCHEMAS } from './qemu-schemas.js';

/** A server with every schema of `QEMU_COMMAND_SCHEMAS` registered; each handler throws. */
export function serverWithQemuSchemas(options: QmpServerOptions = {}): QmpServer {
  const server = new QmpServer(options);
  for (const [name, schema] of Object.entries(QEMU_COMMAND_SCHEMAS)) {
    server.dispatcher.register(
      name,
      () => {
        throw new Error(`the handler of ${name} ran: the arguments should have been refused`);
      },
      schema as QmpArgsSchema,
    );
  }
  return server;
}
