/**
 * The upstream deployment as the rest of the proxy sees it: one selected server (see
 * topology.ts) and a pool of authenticated connections to it.
 *
 * The pool is deliberately plain: `acquire` hands out an idle connection (most recently used
 * first, so surplus ones age out) or opens a new one; `release` keeps at most
 * `maxIdleConnections` and closes each after `idleTimeoutMS` without use. Every connection is
 * exclusive to its holder while acquired. Later work (multiplexing, cursor and transaction
 * pinning, retries, a circuit breaker) hooks in at `acquire`/`release` and `#openConnection`.
 */

import type * as tls from 'node:tls';
import type { Logger } from 'pino';
import type { HostPort } from '../config/types.js';
import { ErrorCodes, ProxyError, UpstreamError } from '../errors.js';
import type { Document } from '../wire/bson.js';
import { DEFAULT_MAX_MESSAGE_SIZE_BYTES } from '../wire/constants.js';
import { NETWORK_ERROR_LABEL, UpstreamConnection } from './connection.js';
import { performHandshake, runCommand } from './handshake.js';
import { ScramKeyCache } from './scram.js';
import { loadTlsOptions } from './tls-options.js';
import { type UpstreamServerInfo, classifyHello, describeServer, discoverServer } from './topology.js';
import { type UpstreamTarget, formatAddress, loadUpstreamTarget, redactUri } from './uri.js';

export type { UpstreamServerInfo } from './topology.js';
export { UpstreamConnection } from './connection.js';

export interface UpstreamOptions {
  uri: string;
  /** Used when the URI has no connectTimeoutMS; 0 means no timeout. Covers hello and auth too. */
  connectTimeoutMS: number;
  maxIdleConnections: number;
  idleTimeoutMS: number;
  logger?: Logger | undefined;
}

/** Counters for tests and metrics. */
export interface UpstreamPoolStats {
  /** Connections currently open (idle + in use). */
  open: number;
  idle: number;
  inUse: number;
  /** Connections opened since start. */
  created: number;
}

export class Upstream {
  readonly #options: UpstreamOptions;
  readonly #logger: Logger | undefined;
  readonly #scramCache = new ScramKeyCache();
  #target: UpstreamTarget | undefined;
  #tls: tls.ConnectionOptions | undefined;
  #server: HostPort | undefined;
  #info: UpstreamServerInfo | undefined;
  /** Idle connections, least recently released first; acquire takes from the end. */
  readonly #idle: UpstreamConnection[] = [];
  readonly #idleTimers = new Map<UpstreamConnection, NodeJS.Timeout>();
  readonly #inUse = new Set<UpstreamConnection>();
  /** Connections opened by openUnauthenticated: one client's alone, never pooled. */
  readonly #dedicated = new WeakSet<UpstreamConnection>();
  #created = 0;
  #starting: Promise<UpstreamServerInfo> | undefined;
  #closed = false;

  constructor(options: UpstreamOptions) {
    if (!Number.isInteger(options.maxIdleConnections) || options.maxIdleConnections < 0) {
      throw new RangeError('maxIdleConnections must be a non-negative integer');
    }
    this.#options = options;
    this.#logger = options.logger;
  }

  /**
   * Parses the URI, loads TLS material, finds the server to use and reads its hello. The
   * connection used for that is kept as the first idle connection. Idempotent.
   */
  start(): Promise<UpstreamServerInfo> {
    if (this.#starting === undefined) {
      const starting = this.#start();
      this.#starting = starting;
      // A failed start may be retried (the upstream may come up later); a successful one sticks.
      starting.catch(() => {
        if (this.#starting === starting) this.#starting = undefined;
      });
    }
    return this.#starting;
  }

  /** The selected server's description. Throws before `start` has resolved. */
  get info(): UpstreamServerInfo {
    if (this.#info === undefined) throw new Error('Upstream.info read before start() resolved');
    return this.#info;
  }

  get stats(): UpstreamPoolStats {
    return {
      open: this.#idle.length + this.#inUse.size,
      idle: this.#idle.length,
      inUse: this.#inUse.size,
      created: this.#created,
    };
  }

  /** An authenticated connection, exclusive to the caller until `release`. */
  async acquire(): Promise<UpstreamConnection> {
    this.#assertOpen();
    if (this.#server === undefined) await this.start();
    for (;;) {
      const connection = this.#idle.pop();
      if (connection === undefined) break;
      this.#clearIdleTimer(connection);
      if (connection.closed) continue;
      this.#inUse.add(connection);
      return connection;
    }
    const connection = await this.#openConnection(this.#server as HostPort);
    if (this.#closed) {
      connection.close();
      this.#assertOpen();
    }
    this.#inUse.add(connection);
    return connection;
  }

  /**
   * A new connection to the current server that has said hello but NOT authenticated with the
   * proxy's credentials: a client's own SCRAM exchange is relayed over it (scram-passthrough).
   * It belongs to that client alone and must be closed, never released, when done.
   */
  async openUnauthenticated(): Promise<UpstreamConnection> {
    this.#assertOpen();
    if (this.#server === undefined) await this.start();
    const { connection } = await this.#connectAndHandshake(this.#server as HostPort, false);
    this.#created++;
    this.#track(connection);
    this.#inUse.add(connection);
    this.#dedicated.add(connection);
    return connection;
  }

  /** Returns a connection: kept idle if it is healthy and there is room, closed otherwise. */
  release(connection: UpstreamConnection): void {
    this.#inUse.delete(connection);
    if (connection.closed) return;
    // A client-authenticated connection must never serve anyone else.
    if (this.#closed || this.#dedicated.has(connection) || connection.busy || this.#idle.length >= this.#options.maxIdleConnections) {
      connection.close();
      return;
    }
    if (this.#idle.includes(connection)) return;
    connection.lastUsed = Date.now();
    this.#idle.push(connection);
    const idleTimeoutMS = this.#options.idleTimeoutMS;
    if (idleTimeoutMS > 0) {
      const timer = setTimeout(() => {
        this.#idleTimers.delete(connection);
        const index = this.#idle.indexOf(connection);
        if (index >= 0) this.#idle.splice(index, 1);
        connection.close();
      }, idleTimeoutMS);
      timer.unref();
      this.#idleTimers.set(connection, timer);
    }
  }

  /** Closes every connection, idle or in use. Later `acquire` calls reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#idleTimers.values()) clearTimeout(timer);
    this.#idleTimers.clear();
    const all = [...this.#idle, ...this.#inUse];
    this.#idle.length = 0;
    this.#inUse.clear();
    for (const connection of all) {
      connection.close(
        new UpstreamError(ErrorCodes.InterruptedAtShutdown, 'the proxy is shutting down', {
          labels: [NETWORK_ERROR_LABEL],
        }),
      );
    }
    // A start still in flight settles on its own; its connection is closed when it lands.
    await this.#starting?.catch(() => undefined);
  }

  // --- internals -----------------------------------------------------------------------------

  async #start(): Promise<UpstreamServerInfo> {
    const target = await loadUpstreamTarget(this.#options.uri);
    this.#target = target;
    this.#tls = target.tls === undefined ? undefined : await loadTlsOptions(target.tls);
    this.#assertOpen();
    this.#logger?.debug({ uri: redactUri(this.#options.uri) }, 'discovering upstream server');

    const found = await discoverServer({
      seeds: target.hosts,
      replicaSet: target.replicaSet,
      directConnection: target.directConnection,
      open: async (address) => {
        const { connection, hello } = await this.#connectAndHandshake(address);
        return { connection, hello };
      },
      discard: (connection) => connection.close(),
      logger: this.#logger,
    });
    const address = formatAddress(found.address);
    let buildInfo: Document | undefined;
    try {
      buildInfo = await this.#readBuildInfo(found.connection);
    } catch (error) {
      found.connection.close();
      throw error;
    }
    this.#server = found.address;
    this.#info = describeServer(
      found.hello,
      address,
      found.connection.compressor === undefined ? [] : [found.connection.compressor],
      buildInfo,
    );
    this.#logger?.info(
      {
        address,
        kind: this.#info.kind,
        setName: this.#info.setName,
        maxWireVersion: this.#info.maxWireVersion,
        compression: this.#info.compression,
        collationSupported: this.#info.collationSupported,
      },
      'upstream server selected',
    );
    if (this.#closed) {
      found.connection.close();
    } else {
      this.#created++;
      this.#track(found.connection);
      this.release(found.connection);
    }
    return this.#info;
  }

  /**
   * The selected server's buildInfo reply, read once on the discovery connection: it tells
   * FerretDB apart (topology.ts collationSupportedBy). A server that answers with an error (no
   * buildInfo, not permitted) gives `undefined`, which counts as a MongoDB server: collation is
   * then pinned, and a server that refused it would fail commands rather than compare loosely.
   * A connection that breaks or stays silent past connectTimeoutMS fails start() like a failed
   * hello would (start may be retried).
   */
  async #readBuildInfo(connection: UpstreamConnection): Promise<Document | undefined> {
    const timeoutMS = this.#target?.connectTimeoutMS ?? this.#options.connectTimeoutMS;
    const timer =
      timeoutMS > 0
        ? setTimeout(() => {
            connection.close(
              new UpstreamError(ErrorCodes.NetworkTimeout, `upstream buildInfo on ${connection.address} timed out after ${timeoutMS} ms`, {
                labels: [NETWORK_ERROR_LABEL],
              }),
            );
          }, timeoutMS)
        : undefined;
    try {
      return await runCommand(connection, 'admin', { buildInfo: 1 });
    } catch (error) {
      if (connection.closed) throw error;
      this.#logger?.warn(
        { address: connection.address, err: error instanceof Error ? error.message : String(error) },
        'upstream buildInfo failed; assuming a MongoDB server (collation pinned on tenant-filtered commands)',
      );
      return undefined;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /** Opens one more pool connection to the selected server. */
  async #openConnection(address: HostPort): Promise<UpstreamConnection> {
    const { connection, hello } = await this.#connectAndHandshake(address);
    this.#created++;
    this.#track(connection);
    const role = classifyHello(hello);
    if (!(this.#target?.directConnection ?? false) && this.#info?.kind === 'replicaSet' && role.type !== 'primary') {
      // TODO(upstream-failover): re-run discovery and retry instead of only warning.
      this.#logger?.warn({ address: formatAddress(address) }, 'upstream server is no longer the writable primary');
    }
    return connection;
  }

  async #connectAndHandshake(
    address: HostPort,
    authenticate = true,
  ): Promise<{ connection: UpstreamConnection; hello: Document }> {
    const configured = this.#target as UpstreamTarget;
    const target = authenticate ? configured : { ...configured, credentials: undefined };
    const timeoutMS = target.connectTimeoutMS ?? this.#options.connectTimeoutMS;
    const started = Date.now();
    const connection = await UpstreamConnection.connect({
      address,
      tls: this.#tls,
      connectTimeoutMS: timeoutMS,
      maxMessageSize: this.#info?.maxMessageSizeBytes ?? DEFAULT_MAX_MESSAGE_SIZE_BYTES,
      logger: this.#logger,
    });
    // connectTimeoutMS also bounds the hello and authentication (uri-options.md).
    let timer: NodeJS.Timeout | undefined;
    if (timeoutMS > 0) {
      const remaining = Math.max(1, timeoutMS - (Date.now() - started));
      timer = setTimeout(() => {
        connection.close(
          new UpstreamError(
            ErrorCodes.NetworkTimeout,
            `upstream handshake with ${connection.address} timed out after ${timeoutMS} ms`,
            { labels: [NETWORK_ERROR_LABEL] },
          ),
        );
      }, remaining);
    }
    try {
      const result = await performHandshake(connection, {
        target,
        scramCache: this.#scramCache,
        logger: this.#logger,
      });
      return { connection, hello: result.hello };
    } catch (error) {
      connection.close();
      throw ProxyError.is(error) || (error instanceof Error && error.name === 'ConfigError')
        ? error
        : new UpstreamError(ErrorCodes.InternalError, `upstream handshake failed: ${String(error)}`, { cause: error });
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /** Forgets a connection wherever it is once it closes (server restart, idle reaping, ...). */
  #track(connection: UpstreamConnection): void {
    connection.once('close', () => {
      this.#inUse.delete(connection);
      this.#clearIdleTimer(connection);
      const index = this.#idle.indexOf(connection);
      if (index >= 0) this.#idle.splice(index, 1);
    });
  }

  #clearIdleTimer(connection: UpstreamConnection): void {
    const timer = this.#idleTimers.get(connection);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.#idleTimers.delete(connection);
    }
  }

  #assertOpen(): void {
    if (this.#closed) {
      throw new UpstreamError(ErrorCodes.ShutdownInProgress, 'the upstream pool is closed');
    }
  }
}
