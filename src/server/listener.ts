/**
 * Client-facing listeners, plain TCP or TLS (optionally with client certificates), each handing
 * its connections to a ClientConnection with that listener's identity methods. They serve the
 * MongoDB wire protocol only, never HTTP. The connection limit is shared by all listeners.
 */
import { createServer, type Server, type Socket } from 'node:net';
import * as tls from 'node:tls';
import type { HostPort, ListenerConfig } from '../config/types.js';
import { createListenerTls, type ListenerTls } from '../identity/tls-context.js';
import type { PeerCertificate } from '../identity/types.js';
import { ClientConnection, type ClientConnectionDeps } from './client-connection.js';

export interface Listener {
  readonly name: string;
  readonly address: HostPort;
  /** Stops accepting and closes this listener's client connections. */
  close(): Promise<void>;
}

/** What every listener shares: the connection deps minus the per-listener parts. */
export type SharedConnectionDeps = Omit<ClientConnectionDeps, 'listener' | 'peerCertificate'>;

/** Counts connections across listeners against `limits.maxConnections`. */
export class ConnectionRegistry {
  readonly connections = new Set<ClientConnection>();

  get size(): number {
    return this.connections.size;
  }
}

export async function startListener(
  listener: ListenerConfig,
  index: number,
  deps: SharedConnectionDeps,
  registry: ConnectionRegistry,
): Promise<Listener> {
  const logger = deps.logger.child({ listener: listener.name });
  const own = new Set<ClientConnection>();

  const accept = (socket: Socket, peerCertificate: PeerCertificate | undefined): void => {
    if (registry.size >= deps.config.limits.maxConnections) {
      // Refused before a byte is read: the client sees a closed connection, others are unaffected.
      deps.metrics.connectionRefused('max_connections');
      logger.warn({ remote: socket.remoteAddress, limit: deps.config.limits.maxConnections }, 'connection limit reached; refusing');
      socket.destroy();
      return;
    }
    const connection = new ClientConnection(socket, { ...deps, listener, peerCertificate }, (closed) => {
      registry.connections.delete(closed);
      own.delete(closed);
    });
    registry.connections.add(connection);
    own.add(connection);
  };

  let listenerTls: ListenerTls | undefined;
  let server: Server;
  if (listener.tls === null) {
    server = createServer({ noDelay: true, keepAlive: true }, (socket) => accept(socket, undefined));
  } else {
    listenerTls = createListenerTls(listener.tls, {
      reloadIntervalMS: deps.config.identity.reloadIntervalMS,
      path: `listeners[${index}].tls`,
      onReload: (ok, error) => {
        if (ok) logger.info('TLS certificate material reloaded');
        else logger.error({ err: error?.message }, 'TLS certificate reload failed; keeping the previous material');
      },
    });
    const tlsServer = tls.createServer({ ...listenerTls.serverOptions(), noDelay: true, keepAlive: true }, (socket) =>
      accept(socket, peerCertificateOf(socket)),
    );
    tlsServer.on('tlsClientError', (error) => {
      deps.metrics.protocolError('TlsHandshakeFailed');
      logger.info({ err: error.message }, 'TLS handshake refused');
    });
    // New connections get the new material; established ones keep theirs.
    listenerTls.watch((options) => tlsServer.setSecureContext(options));
    server = tlsServer;
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listener.listen.port, listener.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (error) => logger.error({ err: error }, 'listener error'));
  const bound = server.address();
  const address: HostPort =
    typeof bound === 'object' && bound !== null ? { host: bound.address, port: bound.port } : listener.listen;
  if (listener.methods.length === 0) {
    logger.warn('no identity method enabled on this listener: every command except the handshake will be refused');
  }

  return {
    name: listener.name,
    address,
    async close() {
      listenerTls?.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const connection of own) connection.close('proxy shutting down');
      await closed;
    },
  };
}

function peerCertificateOf(socket: tls.TLSSocket): PeerCertificate | undefined {
  const certificate = socket.getPeerCertificate(false);
  // An empty object means the client sent no certificate.
  if (certificate === null || typeof certificate !== 'object' || !('raw' in certificate) || certificate.raw === undefined) {
    return undefined;
  }
  return { raw: certificate.raw, authorized: socket.authorized };
}
