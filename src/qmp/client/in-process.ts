/**
 * A client session with a server in the same process, through an in-memory stream pair: the
 * same code path as a socket (framing, ordering, validation), without a socket.
 */
import { type QmpServer } from '../server/qmp-server.js';
import { duplexPair } from '../../util/duplex-pair.js';
import { QmpClient, type QmpClientOptions } from './qmp-client.js';

/** Opens a negotiated session with `server` in this process. */
export function connectInProcess(server: QmpServer, options: QmpClientOptions = {}): Promise<QmpClient> {
  const [clientEnd, serverEnd] = duplexPair();
  server.handleConnection(serverEnd);
  return QmpClient.open(clientEnd, { label: 'in-process QMP server', ...options });
}
