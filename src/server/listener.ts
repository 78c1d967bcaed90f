/**
 * The client-facing TCP listener: accepts connections up to the configured limit and hands each
 * to a ClientConnection. It serves the MongoDB wire protocol only, never HTTP.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { HostPort } from '../config/types.js';
import { ClientConnection, type ClientConnectionDeps } from './client-connection.js';

export interface Listener {
  readonly address: HostPort;
  readonly connectionCount: number;
  /** Stops accepting and closes every client connection. */
  close(): Promise<void>;
}

export async function startListener(listen: HostPort, deps: ClientConnectionDeps): Promise<Listener> {
  const connections = new Set<ClientConnection>();
  const logger: Logger = deps.logger;
  const server: Server = createServer({ noDelay: true, keepAlive: true }, (socket: Socket) => {
    if (connections.size >= deps.config.limits.maxConnections) {
      // Refuse before reading a byte: the client sees a closed connection, others are unaffected.
      deps.metrics.connectionRefused('max_connections');
      logger.warn({ remote: socket.remoteAddress, limit: deps.config.limits.maxConnections }, 'connection limit reached; refusing');
      socket.destroy();
      return;
    }
    const connection = new ClientConnection(socket, deps, (closed) => connections.delete(closed));
    connections.add(connection);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => logger.error({ err: error }, 'listener error'));
  const bound = server.address();
  const address: HostPort =
    typeof bound === 'object' && bound !== null ? { host: bound.address, port: bound.port } : listen;

  return {
    address,
    get connectionCount() {
      return connections.size;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const connection of connections) connection.close('proxy shutting down');
      await closed;
    },
  };
}
