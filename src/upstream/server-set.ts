/**
 * The servers of the upstream deployment and what the proxy knows of them (server discovery and
 * monitoring, reduced to one deployment): start() finds the first server (topology.ts) and reads
 * its hello; a replica set's members or a list of mongos are then watched (monitor.ts), each with
 * its own bounded pool (pool.ts) and circuit breaker (circuit-breaker.ts). Hellos, failed
 * heartbeats and state-change replies update each server's role (a newer election wins when two
 * claim to be primary); `select` picks where a command goes (cursor owner, `$readPreference`,
 * primary, least-busy mongos: server-selection.ts), waiting (bounded) through an election.
 *
 * It owns sockets only through the pools and the monitors; what runs on a connection is the
 * caller's (leases.ts, execute.ts).
 */

import type * as tls from 'node:tls';
import type { Logger } from 'pino';
import type { HostPort } from '../config/types.js';
import { ErrorCodes, ProxyError, UpstreamError } from '../errors.js';
import type { Document } from '../wire/bson.js';
import { DEFAULT_MAX_MESSAGE_SIZE_BYTES } from '../wire/constants.js';
import type { ReplyScan } from '../wire/reply-scan.js';
import { CapabilityTracker, type UpstreamCapabilities, probeConnection } from './capabilities.js';
import { CircuitBreaker } from './circuit-breaker.js';
import type { CommandTraits } from './command-traits.js';
import { NETWORK_ERROR_LABEL, UpstreamConnection } from './connection.js';
import { performHandshake, runCommand } from './handshake.js';
import { ServerMonitor } from './monitor.js';
import { CursorHomes, CursorServers } from './pins.js';
import { ConnectionPool, type PoolStats } from './pool.js';
import type { RetryError } from './retry.js';
import { ScramKeyCache } from './scram.js';
import {
  type SelectableServer,
  type ServerType,
  eligibleReplicaSetServers,
  parseReadPreference,
  pickServer,
} from './server-selection.js';
import { loadTlsOptions } from './tls-options.js';
import { NO_TENANT } from './wait-queue.js';
import { type UpstreamServerInfo, classifyHello, describeServer, discoverServer } from './topology.js';
import { CIRCUIT_RECOVERY_DEFAULTS, NO_SERVER, type ServerPoolStats, type UpstreamOptions } from './types.js';
import { type UpstreamTarget, formatAddress, loadUpstreamTarget, parseAddress, redactUri } from './uri.js';

type ServerRoleType = ServerType | 'other';

/** One known server: its description (for selection), its pool, breaker and monitor. */
export interface ServerState extends SelectableServer {
  address: HostPort;
  pool: ConnectionPool;
  breaker: CircuitBreaker;
  monitor: ServerMonitor | undefined;
  role: ServerRoleType;
  /** For primaries: which election reported it (newer wins when two claim to be primary). */
  electionOrder: string;
  /** The next health check while its circuit is open (circuitBreaker.probeIntervalMS). */
  probeTimer?: NodeJS.Timeout | undefined;
}

/** Error codes by which a server says it is no longer what we selected it for (SDAM state changes). */
const STATE_CHANGE_CODES: ReadonlySet<number> = new Set([10107, 13435, 11602, 13436, 189, 91, 11600]);

/** What every connection still open gets when the proxy shuts down. */
export function shutdownError(): UpstreamError {
  return new UpstreamError(ErrorCodes.InterruptedAtShutdown, 'the proxy is shutting down', {
    labels: [NETWORK_ERROR_LABEL],
  });
}

export class ServerSet {
  readonly #options: UpstreamOptions;
  readonly #logger: Logger | undefined;
  readonly #scramCache = new ScramKeyCache();
  #target: UpstreamTarget | undefined;
  #tls: tls.ConnectionOptions | undefined;
  #info: UpstreamServerInfo | undefined;
  /** What the server taking the writes can do (probed at start and after a failover). */
  readonly #capabilities: CapabilityTracker;
  readonly #servers = new Map<string, ServerState>();
  readonly #cursors = new CursorServers();
  /** The connection each open cursor was opened on (kept open while it lives: pins.ts). */
  readonly cursorHomes = new CursorHomes<UpstreamConnection>();
  /** Woken whenever a server description changes (requests waiting for a primary). */
  #topologyWaiters: Array<() => void> = [];
  #starting: Promise<UpstreamServerInfo> | undefined;
  /** The health check running per server (key): concurrent askers share it. */
  readonly #healthChecks = new Map<string, Promise<boolean>>();
  /** Set once start() has set up the first server (later servers open minPoolSize at once). */
  #started = false;
  #closed = false;

  constructor(options: UpstreamOptions) {
    this.#options = options;
    this.#logger = options.logger;
    this.#capabilities = new CapabilityTracker(options.logger, options.probeDatabase);
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

  /** Throws when closed; starts (again, after a failed start) when no server is known yet. */
  async ready(): Promise<void> {
    this.assertOpen();
    if (this.#servers.size === 0) await this.start();
  }

  /** `ready()` without a promise when there is nothing to wait for: throws when closed; false until started. */
  readyNow(): boolean {
    this.assertOpen();
    return this.#servers.size > 0;
  }

  /** The first selected server's description (mirrored in hello). Throws before `start` resolved. */
  get info(): UpstreamServerInfo {
    if (this.#info === undefined) throw new Error('Upstream.info read before start() resolved');
    return this.#info;
  }

  /** What the server taking the writes can do; MongoDB's answers before start() resolved. */
  get capabilities(): UpstreamCapabilities {
    return this.#capabilities.current;
  }

  /** Servers known (each has its own pool). */
  get size(): number {
    return this.#servers.size;
  }

  get closed(): boolean {
    return this.#closed;
  }

  assertOpen(): void {
    if (this.#closed) {
      throw new UpstreamError(ErrorCodes.ShutdownInProgress, 'the upstream pool is closed');
    }
  }

  /** A known server by its `host:port` key (a connection's `address`). */
  get(key: string): ServerState | undefined {
    return this.#servers.get(key);
  }

  /** Returns a pool connection to its server's pool. */
  checkIn(connection: UpstreamConnection): void {
    this.#servers.get(connection.address)?.pool.checkIn(connection);
  }

  /** The pools' counters summed over every server. */
  get poolStats(): PoolStats {
    const total: PoolStats = { open: 0, idle: 0, inUse: 0, pending: 0, waiting: 0, created: 0 };
    for (const server of this.#servers.values()) {
      const stats = server.pool.stats;
      total.open += stats.open;
      total.idle += stats.idle;
      total.inUse += stats.inUse;
      total.pending += stats.pending;
      total.waiting += stats.waiting;
      total.created += stats.created;
    }
    return total;
  }

  /** Pool occupancy and breaker state of every known server. */
  serverStats(): ServerPoolStats[] {
    return [...this.#servers.values()].map((server) => ({
      server: server.key,
      circuit: server.breaker.state,
      ...server.pool.stats,
    }));
  }

  /**
   * Whether new work can be sent now: a server that takes writes is known (the primary, a mongos,
   * the standalone) and its circuit breaker is not open. Readiness follows it.
   */
  get reachable(): boolean {
    if (this.#closed || this.#info === undefined) return false;
    const server = this.#trySelect(undefined);
    return server !== undefined && server.breaker.state !== 'open';
  }

  /** The servers known and what each is, e.g. `{ 'h:1': 'primary' }` (tests, logs). */
  get topology(): Record<string, string> {
    return Object.fromEntries([...this.#servers.values()].map((server) => [server.key, server.role]));
  }

  /**
   * A new connection to `address` that has said hello but NOT authenticated with the proxy's
   * credentials (scram-passthrough relays a client's own exchange over it).
   */
  async connectUnauthenticated(address: HostPort): Promise<UpstreamConnection> {
    const { connection } = await this.#connectAndHandshake(address, false);
    return connection;
  }

  /** Stops monitoring and closes every pool connection, idle or in use; waits for a start in flight. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const server of this.#servers.values()) {
      if (server.probeTimer !== undefined) clearTimeout(server.probeTimer);
      server.probeTimer = undefined;
      server.monitor?.stop();
      server.pool.close(shutdownError());
    }
    this.#wakeTopologyWaiters();
    // A start still in flight settles on its own; its connection is closed when it lands.
    await this.#starting?.catch(() => undefined);
  }

  // --- selection and feedback from requests --------------------------------------------------

  /** `select` when a suitable server is known now (undefined: ask `select`, which may wait or throw). */
  selectNow(traits: CommandTraits | undefined): ServerState | undefined {
    return this.#closed ? undefined : this.#trySelect(traits);
  }

  /** Where a command goes (without a pin). Waits (bounded) for a suitable server during elections. */
  async select(traits: CommandTraits | undefined): Promise<ServerState> {
    const timeoutMS = this.#options.serverSelectionTimeoutMS ?? 10_000;
    const deadline = Date.now() + timeoutMS;
    for (;;) {
      this.assertOpen();
      const found = this.#trySelect(traits);
      if (found !== undefined) return found;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new UpstreamError(
          ErrorCodes.HostUnreachable,
          `no suitable upstream server within ${timeoutMS} ms (${describeTopology(this.#servers)})`,
          { labels: [NETWORK_ERROR_LABEL, NO_SERVER] },
        );
      }
      for (const server of this.#servers.values()) server.monitor?.requestCheck();
      await this.#topologyChanged(remaining);
    }
  }

  #trySelect(traits: CommandTraits | undefined): ServerState | undefined {
    if (traits?.cursor !== undefined && this.#servers.size > 1) {
      const owner = this.#servers.get(this.#cursors.serverOf(traits.cursor) ?? '');
      if (owner !== undefined) return owner;
    }
    const servers = [...this.#servers.values()];
    const context = {
      heartbeatFrequencyMS: this.#options.heartbeatFrequencyMS ?? 10_000,
      localThresholdMS: this.#options.localThresholdMS ?? 15,
    };
    switch (this.#info?.kind) {
      case 'replicaSet': {
        if (this.#target?.directConnection === true) return servers[0];
        const preference = parseReadPreference(traits?.readPreference);
        const candidates = eligibleReplicaSetServers(servers, preference, context);
        return this.#byKey(pickServer(candidates, context));
      }
      case 'sharded': {
        const mongos = servers.filter((server) => server.role === 'mongos');
        return this.#byKey(pickServer(mongos.length > 0 ? mongos : servers, context));
      }
      default:
        return servers[0];
    }
  }

  #byKey(server: SelectableServer | undefined): ServerState | undefined {
    return server === undefined ? undefined : this.#servers.get(server.key);
  }

  #topologyChanged(timeoutMS: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, Math.min(timeoutMS, 1_000));
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#topologyWaiters.push(done);
    });
  }

  #wakeTopologyWaiters(): void {
    const waiters = this.#topologyWaiters;
    this.#topologyWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Replies that say the server is not what it was (step-down, shutdown): re-check it now. */
  onServerError(server: ServerState, error: RetryError): void {
    if (error.code === undefined || !STATE_CHANGE_CODES.has(error.code)) return;
    if (server.role === 'primary' && this.#servers.size > 1) {
      // SDAM: mark it unknown, so new writes wait for monitoring to find the (new) primary.
      this.#setRole(server, 'unknown');
    }
    server.monitor?.requestCheck();
  }

  /** A connection to it broke: on a monitored topology its pool is cleared and it is re-checked now. */
  onNetworkError(server: ServerState): void {
    if (server.monitor === undefined) return;
    server.pool.clear();
    if (server.role !== 'unknown') this.#setRole(server, 'unknown');
    server.monitor.requestCheck();
  }

  /**
   * A request's connection broke or timed out after it was sent. That counts against the
   * server's health only when a health check fails too: a server that drops one connection for
   * what a request contained (a message over its limits, say) while still answering a fresh
   * connection's hello is healthy, and one tenant's requests must not open the circuit for all.
   * The verdict comes when the (shared) check ends; meanwhile a half-open probe slot stays taken.
   */
  requestFailed(server: ServerState): void {
    void this.checkHealth(server).then((healthy) => {
      try {
        if (healthy) server.breaker.onCancel();
        else server.breaker.onFailure();
      } catch (error) {
        this.#logger?.warn({ server: server.key, err: String(error) }, 'circuit breaker listener failed');
      }
    });
  }

  /**
   * Whether the server answers `hello` on a fresh, unauthenticated connection within
   * connectTimeoutMS (10 s when that is 0). One check per server at a time; concurrent callers
   * share its verdict. A closed set answers true (no verdict on shutdown).
   */
  checkHealth(server: ServerState): Promise<boolean> {
    const running = this.#healthChecks.get(server.key);
    if (running !== undefined) return running;
    const check = this.#runHealthCheck(server).finally(() => this.#healthChecks.delete(server.key));
    this.#healthChecks.set(server.key, check);
    return check;
  }

  async #runHealthCheck(server: ServerState): Promise<boolean> {
    if (this.#closed) return true;
    const timeoutMS = (this.#target?.connectTimeoutMS ?? this.#options.connectTimeoutMS) || 10_000;
    const opening = this.#connectAndHandshake(server.address, false);
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('health check timed out')), timeoutMS);
      });
      const { connection } = await Promise.race([opening, timeout]);
      connection.close();
      return true;
    } catch {
      // A connection that opened after the timeout is not kept either.
      opening.then(
        ({ connection }) => connection.close(),
        () => undefined,
      );
      return this.#closed;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /**
   * While a server's circuit is open (or half-open), a health check runs every probeIntervalMS;
   * the first that succeeds closes the circuit, so commands flow again as soon as the server
   * answers instead of after the rest of the open time.
   */
  #probeWhileOpen(server: ServerState): void {
    const interval = this.#options.circuitBreaker?.probeIntervalMS ?? CIRCUIT_RECOVERY_DEFAULTS.probeIntervalMS;
    if (interval <= 0 || server.probeTimer !== undefined || this.#closed) return;
    server.probeTimer = setTimeout(() => {
      server.probeTimer = undefined;
      if (this.#closed || server.breaker.state === 'closed') return;
      void this.checkHealth(server).then((healthy) => {
        if (this.#closed || server.breaker.state === 'closed') return;
        if (!healthy) {
          this.#probeWhileOpen(server);
          return;
        }
        try {
          server.breaker.probeSucceeded();
        } catch (error) {
          this.#logger?.warn({ server: server.key, err: String(error) }, 'circuit breaker listener failed');
        }
      });
    }, interval);
    server.probeTimer.unref();
  }

  /**
   * Which server a reply's cursor lives on (its getMore goes there); a finished cursor is
   * forgotten. `reply`: the scan of the reply the forwarding layer made.
   */
  rememberCursor(traits: CommandTraits, reply: ReplyScan, server: ServerState): void {
    const opened = reply.cursorKey;
    if (opened !== undefined) this.#cursors.remember(opened, server.key);
    else if (traits.cursor !== undefined && (traits.name === 'killCursors' || traits.name === 'getMore'))
      this.#cursors.forget(traits.cursor);
  }

  // --- topology ------------------------------------------------------------------------------

  async #start(): Promise<UpstreamServerInfo> {
    const target = await loadUpstreamTarget(this.#options.uri);
    this.#target = target;
    this.#tls = target.tls === undefined ? undefined : await loadTlsOptions(target.tls);
    this.assertOpen();
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
    let capabilities: UpstreamCapabilities;
    try {
      buildInfo = await this.#readBuildInfo(found.connection);
      const timeoutMS = this.#target?.connectTimeoutMS ?? this.#options.connectTimeoutMS;
      capabilities = await probeConnection(found.connection, this.#capabilities.probeOptions(timeoutMS));
    } catch (error) {
      found.connection.close();
      throw error;
    }
    this.#capabilities.set(address, capabilities);
    this.#info = describeServer(
      found.hello,
      address,
      found.connection.compressor === undefined ? [] : [found.connection.compressor],
      capabilities,
      buildInfo,
    );
    this.#logger?.info(
      {
        address,
        kind: this.#info.kind,
        setName: this.#info.setName,
        maxWireVersion: this.#info.maxWireVersion,
        compression: this.#info.compression,
        capabilities,
      },
      'upstream server selected',
    );
    if (this.#closed) {
      found.connection.close();
      return this.#info;
    }
    const first = this.#addServer(found.address);
    this.#describe(first, found.hello, 0);
    first.pool.adopt(found.connection);
    this.#startMonitoring(found.hello);
    this.#started = true;
    for (const server of this.#servers.values()) server.pool.ensureMinimum();
    return this.#info;
  }

  /**
   * Monitoring runs where the topology can change under the proxy: a replica set (not with
   * directConnection) and a list of several mongos. A standalone or a single direct server has
   * nothing to fail over to; its failures reach the breaker and the client instead.
   */
  #startMonitoring(hello: Document): void {
    const target = this.#target as UpstreamTarget;
    const kind = this.#info?.kind;
    if (target.directConnection) return;
    if (kind === 'replicaSet') {
      for (const host of helloHosts(hello)) this.#addServer(host);
    } else if (kind === 'sharded' && target.hosts.length > 1) {
      for (const host of target.hosts) this.#addServer(host);
    } else {
      return;
    }
    for (const server of this.#servers.values()) this.#monitor(server);
  }

  #addServer(address: HostPort): ServerState {
    const key = formatAddress(address);
    const existing = this.#servers.get(key);
    if (existing !== undefined) return existing;
    const breakerOptions = this.#options.circuitBreaker;
    const breaker = new CircuitBreaker({
      ...(breakerOptions === undefined
        ? {}
        : {
            failureThreshold: breakerOptions.failureThreshold,
            openMS: breakerOptions.openMS,
            halfOpenProbes: breakerOptions.halfOpenProbes,
          }),
      initialOpenMS: breakerOptions?.initialOpenMS ?? CIRCUIT_RECOVERY_DEFAULTS.initialOpenMS,
    });
    breaker.onStateChange((state, previous) => {
      this.#logger?.warn(
        { server: key, state, previous, openMS: state === 'open' ? breaker.currentOpenMS : undefined },
        'upstream circuit breaker changed state',
      );
      this.#options.observer?.circuitState?.(key, state, previous);
      const current = this.#servers.get(key);
      if (state === 'open' && current !== undefined) this.#probeWhileOpen(current);
    });
    const server: ServerState = {
      key,
      address,
      type: 'unknown',
      role: 'unknown',
      roundTripMS: 0,
      lastUpdateTime: Date.now(),
      lastWriteDate: undefined,
      tags: {},
      inFlight: 0,
      electionOrder: '',
      breaker,
      monitor: undefined,
      pool: new ConnectionPool({
        address: key,
        maxPoolSize: this.#options.maxPoolSize ?? 100,
        minPoolSize: this.#options.minPoolSize ?? 0,
        maxIdleConnections: this.#options.maxIdleConnections,
        idleTimeoutMS: this.#options.idleTimeoutMS,
        maxLifetimeMS: this.#options.maxLifetimeMS ?? 0,
        waitQueueTimeoutMS: this.#options.waitQueueTimeoutMS ?? 10_000,
        maxConnectionsPerTenant: this.#options.maxPoolConnectionsPerTenant ?? 0,
        onTenantCapWait: (tenant) => this.#options.observer?.tenantCapWait?.(key, tenant),
        open: () => this.#openPoolConnection(address),
        holdsCursors: (connection) => this.cursorHomes.holds(connection),
        logger: this.#logger,
      }),
    };
    this.#servers.set(key, server);
    this.#options.observer?.circuitState?.(key, 'closed', 'closed');
    if (this.#started) server.pool.ensureMinimum();
    if (this.#servers.size > 1) {
      for (const other of this.#servers.values())
        if (other.monitor === undefined && other !== server) this.#monitor(other);
      this.#monitor(server);
    }
    return server;
  }

  #monitor(server: ServerState): void {
    if (server.monitor !== undefined || this.#closed) return;
    const connectTimeoutMS = this.#target?.connectTimeoutMS ?? this.#options.connectTimeoutMS;
    server.monitor = new ServerMonitor({
      heartbeatFrequencyMS: this.#options.heartbeatFrequencyMS ?? 10_000,
      timeoutMS: connectTimeoutMS,
      open: () => this.#connectAndHandshake(server.address, false),
      onHello: (hello, roundTripMS) => this.#describe(server, hello, roundTripMS),
      onFailure: (error, timedOut) => {
        this.#logger?.debug(
          { server: server.key, err: error instanceof Error ? error.message : String(error) },
          'upstream monitoring check failed',
        );
        // A silent server: the requests in flight there are not coming back either (a half-open
        // network); interrupting them lets reads retry elsewhere and writes report NetworkTimeout.
        server.pool.clear(
          timedOut
            ? new UpstreamError(
                ErrorCodes.NetworkTimeout,
                `upstream ${server.key} stopped answering heartbeats; request interrupted`,
                {
                  labels: [NETWORK_ERROR_LABEL],
                },
              )
            : undefined,
        );
        this.#setRole(server, 'unknown');
      },
    });
    server.monitor.start(server.role === 'unknown' ? 0 : (this.#options.heartbeatFrequencyMS ?? 10_000));
  }

  /** Updates a server from a hello reply: its role, round trip, tags, replication progress. */
  #describe(server: ServerState, hello: Document, roundTripMS: number): void {
    const role = classifyHello(hello);
    let next: ServerRoleType;
    switch (role.type) {
      case 'mongos':
        next = 'mongos';
        break;
      case 'standalone':
        next = 'standalone';
        break;
      case 'primary':
        next = 'primary';
        break;
      case 'member':
        next = hello.secondary === true ? 'secondary' : 'other';
        break;
      default:
        next = 'other';
    }
    const setName = this.#info?.setName;
    if (setName !== undefined && 'setName' in role && role.setName !== setName) next = 'other';
    server.roundTripMS =
      server.lastUpdateTime > 0 && server.roundTripMS > 0 ? 0.8 * server.roundTripMS + 0.2 * roundTripMS : roundTripMS;
    server.lastUpdateTime = Date.now();
    const lastWrite = (hello.lastWrite as Document | undefined)?.lastWriteDate;
    server.lastWriteDate = lastWrite instanceof Date ? lastWrite.getTime() : undefined;
    server.tags = stringRecord(hello.tags);
    server.electionOrder = electionOrder(hello);
    if (next === 'primary') {
      for (const other of this.#servers.values()) {
        if (other === server || other.role !== 'primary') continue;
        if (other.electionOrder > server.electionOrder) {
          next = 'unknown'; // a stale primary report: the other one was elected later
          break;
        }
        this.#setRole(other, 'unknown');
        other.monitor?.requestCheck();
      }
    }
    if (
      this.#info?.kind === 'replicaSet' &&
      this.#target?.directConnection !== true &&
      (next === 'primary' || next === 'secondary')
    ) {
      for (const host of helloHosts(hello)) this.#addServer(host);
    }
    this.#setRole(server, next);
  }

  #setRole(server: ServerState, role: ServerRoleType): void {
    const previous = server.role;
    server.role = role;
    server.type = role === 'other' ? 'unknown' : role;
    if (previous !== role) {
      this.#logger?.info({ server: server.key, role, previous }, 'upstream server role changed');
      if (role === 'primary' && this.#started) this.#recheckCapabilities(server);
      // Its cursors are NOT forgotten when it turns unknown: that happens on one failed
      // heartbeat or one broken pool connection, and the cursors usually live on. A getMore
      // sent elsewhere could only get CursorNotFound; sent there, it gets the server's own
      // answer. (The table is bounded; entries of a server that is really gone age out.)
    }
    this.#wakeTopologyWaiters();
  }

  /** A new primary may be another version or configuration (capabilities.ts). */
  #recheckCapabilities(server: ServerState): void {
    const timeoutMS = this.#target?.connectTimeoutMS ?? this.#options.connectTimeoutMS;
    this.#capabilities.recheck(
      server.key,
      async (use) => {
        const connection = await server.pool.checkOut(NO_TENANT);
        try {
          return await use(connection);
        } finally {
          server.pool.checkIn(connection);
        }
      },
      timeoutMS,
    );
  }

  /**
   * The selected server's buildInfo reply, read once on the discovery connection: its version
   * and product for introspection answers only (introspection.ts); capabilities, the upsert
   * derivation included, are probed, never read from it (capabilities.ts). A server that answers
   * with an error (no buildInfo, not permitted) gives `undefined`. A connection that breaks or
   * stays silent past connectTimeoutMS fails start() like a failed hello would (start may be
   * retried).
   */
  async #readBuildInfo(connection: UpstreamConnection): Promise<Document | undefined> {
    const timeoutMS = this.#target?.connectTimeoutMS ?? this.#options.connectTimeoutMS;
    const timer =
      timeoutMS > 0
        ? setTimeout(() => {
            connection.close(
              new UpstreamError(
                ErrorCodes.NetworkTimeout,
                `upstream buildInfo on ${connection.address} timed out after ${timeoutMS} ms`,
                {
                  labels: [NETWORK_ERROR_LABEL],
                },
              ),
            );
          }, timeoutMS)
        : undefined;
    try {
      return await runCommand(connection, 'admin', { buildInfo: 1 });
    } catch (error) {
      if (connection.closed) throw error;
      this.#logger?.warn(
        { address: connection.address, err: error instanceof Error ? error.message : String(error) },
        'upstream buildInfo failed; assuming a MongoDB server',
      );
      return undefined;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
    }
  }

  /** Opens one more pool connection to a server. */
  async #openPoolConnection(address: HostPort): Promise<UpstreamConnection> {
    const { connection, hello } = await this.#connectAndHandshake(address);
    const server = this.#servers.get(formatAddress(address));
    if (server !== undefined && server.monitor !== undefined) {
      // The handshake is a fresh look at the server; monitoring may not have caught up yet.
      this.#describe(server, hello, server.roundTripMS);
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
}

function helloHosts(hello: Document): HostPort[] {
  const hosts: HostPort[] = [];
  for (const list of [hello.hosts, hello.passives]) {
    if (!Array.isArray(list)) continue;
    for (const text of list) {
      if (typeof text !== 'string') continue;
      try {
        hosts.push(parseAddress(text));
      } catch {
        // A malformed host in a hello is the server's problem; ignore that entry.
      }
    }
  }
  return hosts;
}

function stringRecord(value: unknown): Record<string, string> {
  if (typeof value !== 'object' || value === null) return {};
  return Object.fromEntries(
    Object.entries(value).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
  );
}

/** Orders primary reports: (electionId, setVersion) as comparable text; later elections sort higher. */
function electionOrder(hello: Document): string {
  const electionId = hello.electionId as { toHexString?: () => string } | undefined;
  const id = typeof electionId?.toHexString === 'function' ? electionId.toHexString() : '';
  const setVersion = typeof hello.setVersion === 'number' ? hello.setVersion : 0;
  return `${id.padStart(24, '0')}:${String(setVersion).padStart(12, '0')}`;
}

function describeTopology(servers: ReadonlyMap<string, ServerState>): string {
  return [...servers.values()].map((server) => `${server.key} ${server.role}`).join(', ') || 'no servers';
}
