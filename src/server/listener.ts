/**
 * Client-facing listeners, plain TCP or TLS (optionally with client certificates), each handing
 * its connections to a ClientConnection with that listener's identity methods. They serve the
 * MongoDB wire protocol only, never HTTP. The connection limit is shared by all listeners.
 *
 * Closing is a drain: the listener stops accepting at once, idle connections are closed at once,
 * busy ones as soon as their request is answered, and whatever is left when the drain timeout
 * expires (including TLS handshakes still in progress) is closed then.
 */
import { createServer, type Server, type Socket } from 'node:net';
import * as tls from 'node:tls';
import { isDeepStrictEqual } from 'node:util';
import type { HostPort, ListenerConfig, ListenerTlsConfig } from '../config/types.js';
import { createListenerTls, type ListenerTls } from '../identity/tls-context.js';
import type { PeerCertificate } from '../identity/types.js';
import { ClientConnection, type ClientConnectionDeps } from './client-connection.js';
import { createConnectionObserver, type ObservabilitySinks } from './connection-observer.js';
import { warnThrottled } from '../observability/log-throttle.js';

export interface Listener {
  readonly name: string;
  readonly address: HostPort;
  /**
   * Stops accepting (synchronously, before the first await) and drains this listener's client
   * connections: idle ones close now, busy ones when their request is answered or, at the
   * latest, after `drainTimeoutMS` (0: all at once). Resolves when every connection is gone.
   */
  close(drainTimeoutMS?: number): Promise<void>;
  /**
   * Hot reload, first step: checks new settings for this listener (the same name, address, TLS
   * on or off and client certificate mode: see config/reload.ts) and loads new TLS material,
   * without changing anything yet. Throws a ConfigError when the material does not load.
   */
  prepareUpdate(next: ListenerConfig, reloadIntervalMS: number): PreparedListenerUpdate;
}

/** Settings ready to apply: `commit` cannot fail; `discard` drops them. */
export interface PreparedListenerUpdate {
  /** New connections get the new identity methods and static tenant, new TLS handshakes the new material. */
  commit(): void;
  discard(): void;
}

/**
 * What every listener shares: the connection deps minus the per-listener and per-connection
 * parts, plus the metrics, audit log and logger each connection's observer reports to.
 */
export type SharedConnectionDeps = Omit<
  ClientConnectionDeps,
  'listener' | 'peerCertificate' | 'observe' | 'currentIdentity'
> &
  ObservabilitySinks;

/** A peak of this many connections is a flood whose end is reported to `onFell`. */
export const CONNECTION_FLOOD_MARK = 128;
/** The flood is over when the count is back to this fraction of its peak. */
const FELL_DIVISOR = 4;
/** Right after a flood's fall, a fall from an eighth of the mark is its next stage. */
const FLOOD_STAGE_DIVISOR = 8;

/** Counts connections across listeners against `limits.maxConnections` and `limits.maxUnauthenticatedConnections`. */
export class ConnectionRegistry {
  readonly connections = new Set<ClientConnection>();
  /** Connections whose tenant is not established yet. */
  readonly unauthenticated = new Set<ClientConnection>();
  /** The most connections open at once since the last fall was reported. */
  #peak = 0;
  /**
   * The last fall reported was a flood's, and its rest may still close: a flood often ends in
   * stages (the per-tenant limit closes the excess at once, the connections it let in leave
   * later), and the second stage is a flood's end too, though smaller than the mark.
   */
  #floodEnding = false;

  /**
   * `onFell`: told once when the count falls to a quarter of a peak of at least
   * CONNECTION_FLOOD_MARK (a flood of connections is over), so the proxy can give back the memory
   * the closed connections used (memory-return.ts), as after a burst of buffered bytes; and once
   * more when, after that, what was left falls to a quarter again (from at least an eighth of the
   * mark): the flood's next stage.
   */
  constructor(private readonly onFell?: (peak: number) => void) {}

  get size(): number {
    return this.connections.size;
  }

  add(connection: ClientConnection): void {
    this.connections.add(connection);
    if (this.connections.size > this.#peak) this.#peak = this.connections.size;
  }

  delete(connection: ClientConnection): void {
    this.connections.delete(connection);
    this.unauthenticated.delete(connection);
    const size = this.connections.size;
    const mark = this.#floodEnding ? CONNECTION_FLOOD_MARK / FLOOD_STAGE_DIVISOR : CONNECTION_FLOOD_MARK;
    if (this.#peak >= mark && size <= this.#peak / FELL_DIVISOR) {
      const peak = this.#peak;
      this.#peak = size;
      this.#floodEnding = peak >= CONNECTION_FLOOD_MARK;
      this.onFell?.(peak);
    }
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
  /** Every accepted TCP socket (for TLS, also those still in the handshake), until it closes. */
  const sockets = new Set<Socket>();
  let closing: Promise<void> | undefined;
  /** The settings new connections get; replaced by a reload. */
  let current = listener;

  // New TLS handshakes get the new material; established connections keep theirs.
  const swapSecureContext = (options: tls.SecureContextOptions): void => tlsServer?.setSecureContext(options);

  const accept = (socket: Socket, peerCertificate: PeerCertificate | undefined): void => {
    if (closing !== undefined) {
      // A TLS handshake that completes during the drain: no new connection is served.
      socket.destroy();
      return;
    }
    if (registry.size >= deps.config.limits.maxConnections) {
      // Refused before a byte is read: the client sees a closed connection, others are unaffected.
      deps.metrics.connectionRefused('max_connections');
      warnThrottled(
        deps.warnings,
        'max_connections',
        logger,
        { remote: socket.remoteAddress, limit: deps.config.limits.maxConnections },
        'connection limit reached; refusing',
      );
      socket.destroy();
      return;
    }
    // Setting a connection up is work of the turn too: after a burst of them, requests wait their turn.
    const turns = deps.turns;
    const started = turns?.now() ?? 0;
    const connection = new ClientConnection(socket, connectionDeps(peerCertificate), onClosed);
    turns?.note(connection.account, turns.now() - started);
    registry.add(connection);
    own.add(connection);
    if (!connection.established) {
      // Checked once the connection exists: an mtls/static tenant is established at connect.
      const limit = deps.config.limits.maxUnauthenticatedConnections;
      if (limit > 0 && registry.unauthenticated.size >= limit) {
        deps.metrics.connectionRefused('max_unauthenticated');
        warnThrottled(
          deps.warnings,
          'max_unauthenticated',
          logger,
          { remote: socket.remoteAddress, limit },
          'unauthenticated connection limit reached; refusing',
        );
        connection.close('too many unauthenticated connections');
        return;
      }
      registry.unauthenticated.add(connection);
    }
  };

  // What every connection of this listener is given: built once, not per connection (issue 16).
  // `deps` is the object a reload updates: read through it, not the copy, for the current identity services.
  const currentIdentity = (): { listener: ListenerConfig; identity: SharedConnectionDeps['identity'] } => ({
    listener: current,
    identity: deps.identity,
  });
  // The name never changes with a reload (config/reload.ts).
  const observe: ClientConnectionDeps['observe'] = ({ connectionId, remoteAddress, remotePort }) =>
    createConnectionObserver(deps, { connectionId, remoteAddress, remotePort, listener: listener.name });
  const onEstablished = (established: ClientConnection): void => {
    registry.unauthenticated.delete(established);
  };
  const onClosed = (closed: ClientConnection): void => {
    registry.delete(closed);
    own.delete(closed);
  };
  /**
   * The deps of a new connection: `deps` as it is now (a connection keeps what it was accepted
   * with) and the listener settings in effect. One object for every connection accepted while
   * neither changes; a client certificate makes one of its own.
   */
  let sharedConnectionDeps: ClientConnectionDeps | undefined;
  const connectionDeps = (peerCertificate: PeerCertificate | undefined): ClientConnectionDeps => {
    let cached = sharedConnectionDeps;
    if (cached === undefined || cached.listener !== current || !copiedFrom(cached, deps)) {
      cached = { ...deps, listener: current, peerCertificate: undefined, currentIdentity, observe, onEstablished };
      sharedConnectionDeps = cached;
    }
    return peerCertificate === undefined ? cached : { ...cached, peerCertificate };
  };

  const loadTls = (config: ListenerTlsConfig, reloadIntervalMS: number): ListenerTls =>
    createListenerTls(config, {
      reloadIntervalMS,
      path: `listeners[${index}].tls`,
      onReload: (ok, error) => {
        if (ok) logger.info('TLS certificate material reloaded');
        else logger.error({ err: error?.message }, 'TLS certificate reload failed; keeping the previous material');
      },
    });
  let listenerTls: ListenerTls | undefined;
  let tlsReloadIntervalMS = deps.config.identity.reloadIntervalMS;
  let tlsServer: tls.Server | undefined;
  let server: Server;
  if (listener.tls === null) {
    server = createServer({ noDelay: true, keepAlive: true }, (socket) => accept(socket, undefined));
  } else {
    listenerTls = loadTls(listener.tls, tlsReloadIntervalMS);
    tlsServer = tls.createServer(
      {
        ...listenerTls.serverOptions(),
        handshakeTimeout: deps.config.limits.tlsHandshakeTimeoutMS,
        noDelay: true,
        keepAlive: true,
      },
      (socket) => {
        deps.metrics.tlsHandshake(listener.name, 'success');
        accept(socket, peerCertificateOf(socket));
      },
    );
    tlsServer.on('tlsClientError', (error: Error & { code?: string }, socket: tls.TLSSocket) => {
      // With a listener here Node leaves a timed-out handshake's socket open: close it.
      socket.destroy();
      if (error.code === 'ERR_TLS_HANDSHAKE_TIMEOUT') {
        deps.metrics.tlsHandshake(listener.name, 'timeout');
        logger.info(
          { tlsHandshakeTimeoutMS: deps.config.limits.tlsHandshakeTimeoutMS },
          'TLS handshake not completed in time; closed',
        );
        return;
      }
      deps.metrics.tlsHandshake(listener.name, 'failure');
      logger.info({ err: error.message }, 'TLS handshake refused');
    });
    listenerTls.watch(swapSecureContext);
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
  // One handler for every socket (no closure each): 'close' is emitted once.
  const forget = function (this: Socket): void {
    sockets.delete(this);
  };
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', forget);
  });
  const bound = server.address();
  const address: HostPort =
    typeof bound === 'object' && bound !== null ? { host: bound.address, port: bound.port } : listener.listen;
  if (listener.methods.length === 0) {
    logger.warn('no identity method enabled on this listener: every command except the handshake will be refused');
  }

  return {
    name: listener.name,
    address,
    prepareUpdate(next: ListenerConfig, reloadIntervalMS: number): PreparedListenerUpdate {
      const tlsChanged =
        next.tls !== null && (!isDeepStrictEqual(next.tls, current.tls) || reloadIntervalMS !== tlsReloadIntervalMS);
      const nextTls =
        tlsServer !== undefined && next.tls !== null && tlsChanged ? loadTls(next.tls, reloadIntervalMS) : undefined;
      return {
        commit() {
          current = next;
          if (nextTls === undefined) return;
          if (closing !== undefined) {
            nextTls.close();
            return;
          }
          // Validated by loading it into a SecureContext already (tls-context.ts): this does not throw.
          swapSecureContext(nextTls.secureContext());
          listenerTls?.close();
          listenerTls = nextTls;
          tlsReloadIntervalMS = reloadIntervalMS;
          nextTls.watch(swapSecureContext);
          logger.info('TLS settings reloaded');
        },
        discard() {
          nextTls?.close();
        },
      };
    },
    close(drainTimeoutMS = 0): Promise<void> {
      closing ??= (async () => {
        listenerTls?.close();
        // server.close stops accepting now; its callback runs once the last connection is gone.
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        let busy = 0;
        for (const connection of own) if (!connection.drain()) busy += 1;
        const forceClose = (): void => {
          if (drainTimeoutMS > 0 && own.size > 0) {
            logger.warn({ connections: own.size, drainTimeoutMS }, 'drain timeout expired; closing busy connections');
          }
          for (const connection of own)
            connection.close(drainTimeoutMS > 0 ? 'drain timeout expired' : 'proxy shutting down');
          for (const socket of sockets) socket.destroy();
        };
        if (busy > 0 || sockets.size > own.size) {
          logger.info({ busy, drainTimeoutMS }, 'draining: waiting for in-flight requests');
        }
        let timer: NodeJS.Timeout | undefined;
        if (drainTimeoutMS <= 0) forceClose();
        else timer = setTimeout(forceClose, drainTimeoutMS);
        try {
          await closed;
        } finally {
          clearTimeout(timer);
        }
      })();
      return closing;
    },
  };
}

/** Whether `copy` still holds every value of `source` (a reload replaces some of them). */
function copiedFrom(copy: object, source: object): boolean {
  const copied = copy as Record<string, unknown>;
  for (const [key, value] of Object.entries(source)) if (copied[key] !== value) return false;
  return true;
}

function peerCertificateOf(socket: tls.TLSSocket): PeerCertificate | undefined {
  const certificate = socket.getPeerCertificate(false);
  // An empty object means the client sent no certificate.
  if (
    certificate === null ||
    typeof certificate !== 'object' ||
    !('raw' in certificate) ||
    certificate.raw === undefined
  ) {
    return undefined;
  }
  return { raw: certificate.raw, authorized: socket.authorized };
}
