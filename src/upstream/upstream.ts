/**
 * The upstream deployment as the rest of the proxy sees it: its servers (topology.ts finds the
 * first one, monitor.ts keeps watching a replica set or a list of mongos), a bounded connection
 * pool and a circuit breaker per server (pool.ts, circuit-breaker.ts), and `forward`, which sends
 * one client command:
 *
 * 1. picks the connection: a passthrough client's own one; a transaction's pinned one (pins.ts);
 *    otherwise the server (cursor owner, `$readPreference`, primary, least-busy mongos:
 *    server-selection.ts) and a pooled connection to it, held for that one request only (so many
 *    clients share few upstream connections; an exhaust stream holds it until its last reply);
 * 2. sends the already-rewritten frame and streams the replies to the caller;
 * 3. on a failure, retries when retry.ts says it is safe and no reply reached the client yet,
 *    with backoff bounded by attempts and the command's maxTimeMS; otherwise throws an
 *    UpstreamError whose code and labels let the driver decide (translateUpstreamFailure).
 */

import type * as tls from 'node:tls';
import type { Logger } from 'pino';
import type { HostPort } from '../config/types.js';
import { ErrorCodes, ProxyError, UpstreamError, codeNameOf } from '../errors.js';
import { replyBody } from '../protocol/command.js';
import { BsonType, elements, findElement, readNumber, readString, subDocument } from '../wire/bson-scan.js';
import type { Document } from '../wire/bson.js';
import { DEFAULT_MAX_MESSAGE_SIZE_BYTES } from '../wire/constants.js';
import { clearMoreToCome } from '../wire/op-msg.js';
import { CircuitBreaker, type CircuitState } from './circuit-breaker.js';
import { type CommandTraits, replyCursor } from './command-traits.js';
import { NETWORK_ERROR_LABEL, UpstreamConnection } from './connection.js';
import { performHandshake, runCommand } from './handshake.js';
import { ServerMonitor } from './monitor.js';
import { CursorServers, type PinDecision, TransactionPins, decidePin } from './pins.js';
import { ConnectionPool, type PoolStats } from './pool.js';
import {
  ErrorLabels,
  RETRY_DEFAULTS,
  type RetryError,
  type UpstreamFailureKind,
  backoffDelays,
  classifyForRetry,
  clientDeadlineMS,
  isRetryableError,
  replyTimeoutMS,
  retryErrorOf,
  translateUpstreamFailure,
  upstreamSupportsRetryableWrites,
} from './retry.js';
import { ScramKeyCache } from './scram.js';
import {
  type SelectableServer,
  type ServerType,
  eligibleReplicaSetServers,
  parseReadPreference,
  pickServer,
} from './server-selection.js';
import { loadTlsOptions } from './tls-options.js';
import { type UpstreamServerInfo, classifyHello, describeServer, discoverServer } from './topology.js';
import { type UpstreamTarget, formatAddress, loadUpstreamTarget, parseAddress, redactUri } from './uri.js';
import { NO_TENANT } from './wait-queue.js';

export type { UpstreamServerInfo } from './topology.js';
export { UpstreamConnection } from './connection.js';

export interface UpstreamRetryOptions {
  /** Attempts including the first; 1 never retries. */
  maxAttempts: number;
  initialBackoffMS: number;
  maxBackoffMS: number;
}

export interface UpstreamCircuitBreakerOptions {
  failureThreshold: number;
  openMS: number;
  halfOpenProbes: number;
}

export interface UpstreamOptions {
  uri: string;
  /** Used when the URI has no connectTimeoutMS; 0 means no timeout. Covers hello and auth too. */
  connectTimeoutMS: number;
  maxIdleConnections: number;
  idleTimeoutMS: number;
  /** Connections per server, in use + idle + being opened. Default 100. */
  maxPoolSize?: number;
  /** Connections per server kept open in the background. Default 0. */
  minPoolSize?: number;
  /** Connections are retired after this long; 0 (default) never. */
  maxLifetimeMS?: number;
  /** A request waits at most this long for a pool connection. Default 10000. */
  waitQueueTimeoutMS?: number;
  /**
   * Connections of one server's pool a single tenant may hold at once (in use, pinned to its
   * transactions, streaming its exhaust replies); beyond it the tenant's requests wait. 0
   * (default): no cap.
   */
  maxPoolConnectionsPerTenant?: number;
  /** How long a request waits for a suitable server (a primary during an election). Default 10000. */
  serverSelectionTimeoutMS?: number;
  /** Monitoring interval of replica-set members and mongos lists. Default 10000. */
  heartbeatFrequencyMS?: number;
  /** Latency window of server selection. Default 15. */
  localThresholdMS?: number;
  /**
   * An attempt that gets no reply for this long fails with NetworkTimeout and its connection is
   * closed (see replyTimeoutMS in retry.ts; commands with maxTimeMS are bounded anyway). 0
   * (default): only maxTimeMS and, on monitored topologies, a failed heartbeat bound the wait.
   */
  socketTimeoutMS?: number;
  /**
   * A transaction pin no command has used for this long is released (default
   * ABANDONED_PIN_MS); not a config option, tests shorten it.
   */
  abandonedPinMS?: number;
  retry?: UpstreamRetryOptions;
  circuitBreaker?: UpstreamCircuitBreakerOptions;
  logger?: Logger | undefined;
  observer?: UpstreamObserver | undefined;
}

/** Hooks for metrics (the upstream layer does not import observability). */
export interface UpstreamObserver {
  /** A command is being sent again; `reason` is an error code name or `network`. */
  retry?(command: string, reason: string): void;
  /** A server's circuit breaker changed state. */
  circuitState?(server: string, state: CircuitState, previous: CircuitState): void;
  /** A request waits for a pool connection because its tenant holds maxPoolConnectionsPerTenant. */
  tenantCapWait?(server: string, tenant: string): void;
}

/** Counters for tests and metrics, summed over every server. */
export interface UpstreamPoolStats extends PoolStats {
  /** Passthrough connections: one client's alone, never pooled (counted in open and inUse too). */
  dedicated: number;
  /** Pool connections pinned to an open transaction (counted in inUse too). */
  pinned: number;
  /** Servers known (each has its own pool). */
  servers: number;
}

/** Per-server pool occupancy, for the metrics. */
export interface ServerPoolStats extends PoolStats {
  server: string;
  circuit: CircuitState;
}

/** What `forward` sends. */
export interface ForwardRequest {
  /** The request frame (its requestId is overwritten by the connection). */
  frame: Buffer;
  traits: CommandTraits;
  /**
   * The client's tenant, for the fair wait queue and the per-tenant share of the pool (a
   * transaction's pinned connection counts toward the tenant whose startTransaction took it).
   */
  tenant: string | undefined;
  /** The client connection's upstream session (pins, passthrough connection). */
  session: UpstreamSession;
  /** A moreToCome request: sent, no reply awaited, never retried. */
  fireAndForget: boolean;
  /** Aborted when the client leaves: an in-flight connection is closed and no retry follows. */
  signal?: AbortSignal | undefined;
  /** Every reply, in order, as it arrives (called synchronously; may pause `connection`). */
  onReply(reply: Buffer, moreToCome: boolean, connection: UpstreamConnection): void;
}

export interface ForwardResult {
  /** 1 unless the command was retried. */
  attempts: number;
}

/**
 * The upstream connection broke after part of a reply stream (an exhaust cursor) reached the
 * client: it cannot be retried or answered cleanly; the client connection must be closed.
 */
export class ReplyInterruptedError extends UpstreamError {}

/** One client connection's state in the upstream: the pins it owns, its passthrough connection. */
export class UpstreamSession {
  /** Set once a scram-passthrough client authenticated: its commands run only there. */
  dedicated: UpstreamConnection | undefined;
}

type ServerRoleType = ServerType | 'other';

interface ServerState extends SelectableServer {
  address: HostPort;
  pool: ConnectionPool;
  breaker: CircuitBreaker;
  monitor: ServerMonitor | undefined;
  role: ServerRoleType;
  /** For primaries: which election reported it (newer wins when two claim to be primary). */
  electionOrder: string;
}

interface Lease {
  connection: UpstreamConnection;
  server: ServerState;
  /** A transaction's pinned connection (not returned to the pool after this request). */
  pinned: boolean;
  /** Lets the transaction's next command use the pinned connection. */
  unlock: (() => void) | undefined;
}

/** A failure with no reply to forward. */
interface AttemptFailure {
  kind: UpstreamFailureKind;
  error: unknown;
  /** Whether the request may have reached the server. */
  sent: boolean;
  /** Whether retrying could help (false: circuit open, pool wait timeout, no suitable server). */
  retryable: boolean;
}

/**
 * A pinned transaction that sees no command for this long was abandoned (no commit, no abort,
 * its client connection still open): the server has aborted it by then
 * (transactionLifetimeLimitSeconds, 60 s by default), so its pin only holds a pool slot.
 */
export const ABANDONED_PIN_MS = 120_000;

/** Error codes by which a server says it is no longer what we selected it for (SDAM state changes). */
const STATE_CHANGE_CODES: ReadonlySet<number> = new Set([10107, 13435, 11602, 13436, 189, 91, 11600]);

export class Upstream {
  readonly #options: UpstreamOptions;
  readonly #logger: Logger | undefined;
  readonly #scramCache = new ScramKeyCache();
  readonly #retry: UpstreamRetryOptions;
  #target: UpstreamTarget | undefined;
  #tls: tls.ConnectionOptions | undefined;
  #info: UpstreamServerInfo | undefined;
  readonly #servers = new Map<string, ServerState>();
  /** Connections opened by openUnauthenticated: one client's alone, never pooled. */
  readonly #dedicated = new Set<UpstreamConnection>();
  readonly #transactions = new TransactionPins<UpstreamConnection, UpstreamSession>();
  /** Serializes commands of one transaction on its pinned connection. */
  readonly #pinLocks = new WeakMap<UpstreamConnection, Promise<void>>();
  /** Connections whose 'close' already drops their pins (one listener each, however many transactions). */
  readonly #unpinOnClose = new WeakSet<UpstreamConnection>();
  /** Per pinned lsid: releases the pin once it has been idle for abandonedPinMS. */
  readonly #pinIdleTimers = new Map<string, NodeJS.Timeout>();
  readonly #cursors = new CursorServers();
  /** Woken whenever a server description changes (requests waiting for a primary). */
  #topologyWaiters: Array<() => void> = [];
  #dedicatedCreated = 0;
  #starting: Promise<UpstreamServerInfo> | undefined;
  /** Set once start() has set up the first server (later servers open minPoolSize at once). */
  #started = false;
  #closed = false;

  constructor(options: UpstreamOptions) {
    if (!Number.isInteger(options.maxIdleConnections) || options.maxIdleConnections < 0) {
      throw new RangeError('maxIdleConnections must be a non-negative integer');
    }
    this.#options = options;
    this.#logger = options.logger;
    this.#retry = options.retry ?? {
      maxAttempts: RETRY_DEFAULTS.attempts,
      initialBackoffMS: RETRY_DEFAULTS.baseMS,
      maxBackoffMS: RETRY_DEFAULTS.maxMS,
    };
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

  /** The first selected server's description (mirrored in hello). Throws before `start` resolved. */
  get info(): UpstreamServerInfo {
    if (this.#info === undefined) throw new Error('Upstream.info read before start() resolved');
    return this.#info;
  }

  get stats(): UpstreamPoolStats {
    const total: UpstreamPoolStats = {
      open: 0,
      idle: 0,
      inUse: 0,
      pending: 0,
      waiting: 0,
      created: this.#dedicatedCreated,
      dedicated: this.#dedicated.size,
      pinned: this.#transactions.size,
      servers: this.#servers.size,
    };
    for (const server of this.#servers.values()) {
      const stats = server.pool.stats;
      total.open += stats.open;
      total.idle += stats.idle;
      total.inUse += stats.inUse;
      total.pending += stats.pending;
      total.waiting += stats.waiting;
      total.created += stats.created;
    }
    total.open += this.#dedicated.size;
    total.inUse += this.#dedicated.size;
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

  /** A pooled, authenticated connection to the default server, exclusive to the caller until `release`. */
  async acquire(tenant: string = NO_TENANT): Promise<UpstreamConnection> {
    this.#assertOpen();
    if (this.#servers.size === 0) await this.start();
    const server = await this.#selectServer(undefined);
    return server.pool.checkOut(tenant);
  }

  /** Returns a connection from `acquire`: to a waiter, kept idle if there is room, or closed. */
  release(connection: UpstreamConnection): void {
    if (this.#dedicated.has(connection)) {
      this.#dedicated.delete(connection);
      connection.close();
      return;
    }
    this.#servers.get(connection.address)?.pool.checkIn(connection);
  }

  /**
   * A new connection to the current server that has said hello but NOT authenticated with the
   * proxy's credentials: a client's own SCRAM exchange is relayed over it (scram-passthrough).
   * It belongs to that client alone and must be closed, never released, when done.
   */
  async openUnauthenticated(): Promise<UpstreamConnection> {
    this.#assertOpen();
    if (this.#servers.size === 0) await this.start();
    const server = await this.#selectServer(undefined);
    const { connection } = await this.#connectAndHandshake(server.address, false);
    if (this.#closed) {
      // close() ran while it was being opened: nobody would ever close it.
      connection.close();
      this.#assertOpen();
    }
    this.#dedicatedCreated++;
    this.#dedicated.add(connection);
    connection.once('close', () => this.#dedicated.delete(connection));
    return connection;
  }

  /** A new per-client-connection session (pins and the passthrough connection hang off it). */
  openSession(): UpstreamSession {
    return new UpstreamSession();
  }

  /** The client connection left: its transaction pins are released. */
  endSession(session: UpstreamSession): void {
    for (const connection of this.#transactions.releaseOwner(session)) this.#releasePin(connection);
    session.dedicated = undefined;
  }

  /**
   * Sends one command and streams its replies to `request.onReply`, retrying where that is safe.
   * Rejects with an UpstreamError ready to be answered to the client (code and labels translated),
   * or a ReplyInterruptedError when part of a reply stream was already delivered.
   */
  async forward(request: ForwardRequest): Promise<ForwardResult> {
    this.#assertOpen();
    if (this.#servers.size === 0) await this.start();
    const dedicated = request.session.dedicated;
    if (dedicated !== undefined) return this.#forwardDedicated(request, dedicated);

    const { traits } = request;
    const pin = decidePin(traits);
    const retryClass =
      request.fireAndForget || pin.kind !== 'none'
        ? 'never'
        : classifyForRetry(traits, { retryableWrites: upstreamSupportsRetryableWrites(this.info) });
    const deadlineMS = clientDeadlineMS({ maxTimeMS: traits.maxTimeMS });
    const replyTimeout = this.#replyTimeoutMS(traits);
    const started = performance.now();
    const delays = backoffDelays({
      attempts: this.#retry.maxAttempts,
      baseMS: this.#retry.initialBackoffMS,
      maxMS: this.#retry.maxBackoffMS,
      ...(deadlineMS === undefined ? {} : { deadlineMS }),
    });
    let delivered = false;
    /** Some attempt may have reached the server: never claim NoWritesPerformed afterwards. */
    let anySent = false;
    for (let attempt = 1; ; attempt++) {
      const delay = delays[attempt - 1];
      const lastChance = delay === undefined;
      let failure: AttemptFailure | undefined;
      let heldReply: { reply: Buffer; connection: UpstreamConnection; error: RetryError } | undefined;
      /** The reply says the server aborted this command's transaction: its pin has no more use. */
      let transactionAborted = false;

      let lease: Lease | undefined;
      try {
        lease = await this.#lease(request, pin);
      } catch (error) {
        failure = notSentFailure(error);
      }
      if (lease !== undefined) {
        const { connection, server } = lease;
        server.inFlight++;
        const abort = (): void => {
          if (connection.busy) connection.close();
        };
        request.signal?.addEventListener('abort', abort, { once: true });
        try {
          if (request.signal?.aborted === true) throw abortedError();
          if (request.fireAndForget) {
            await sendUnacknowledged(connection, request.frame);
          } else {
            const remember = this.#servers.size > 1;
            await connection.request(
              request.frame,
              (reply, moreToCome) => {
                if (!moreToCome && !delivered) {
                  const error = replyError(reply);
                  if (error !== undefined) {
                    transactionAborted = pin.kind !== 'none' && serverAbortedTransaction(error);
                    this.#onServerError(server, error);
                    if (!lastChance && isRetryableError(error, retryClass)) {
                      heldReply = { reply, connection, error };
                      return;
                    }
                  }
                }
                if (remember) this.#rememberCursor(traits, reply, server);
                delivered = true;
                request.onReply(reply, moreToCome, connection);
              },
              { replyTimeoutMS: replyTimeout },
            );
          }
          server.breaker.onSuccess();
        } catch (error) {
          if (request.signal?.aborted === true) {
            // The client left (its connection was closed on purpose): no verdict on the server.
            server.breaker.onCancel();
            throw abortedError();
          }
          if (!ProxyError.is(error) || !error.labels.includes(NETWORK_ERROR_LABEL)) {
            // Not a transport failure (a consumer error): nothing to retry or translate.
            server.breaker.onCancel();
            throw error;
          }
          server.breaker.onFailure();
          this.#onNetworkError(server);
          failure = {
            kind: ProxyError.is(error) && error.code === ErrorCodes.NetworkTimeout ? 'timeout' : 'network',
            error,
            sent: true,
            retryable: true,
          };
        } finally {
          request.signal?.removeEventListener('abort', abort);
          server.inFlight--;
          this.#settle(lease, pin, request.session, failure === undefined, transactionAborted);
        }
      }

      if (failure === undefined && heldReply === undefined) return { attempts: attempt };
      anySent ||= heldReply !== undefined || failure?.sent === true;
      if (delivered) {
        throw new ReplyInterruptedError(
          ErrorCodes.SocketException,
          'the upstream connection failed in the middle of a reply stream',
          {
            labels: [NETWORK_ERROR_LABEL],
            cause: failure?.error,
          },
        );
      }
      const elapsed = performance.now() - started;
      const retry =
        !lastChance &&
        request.signal?.aborted !== true &&
        (deadlineMS === undefined || elapsed + delay < deadlineMS) &&
        (heldReply !== undefined ||
          (failure !== undefined &&
            failure.retryable &&
            (!failure.sent || isRetryableError(retryErrorOf(failure.error), retryClass))));
      if (!retry) {
        if (heldReply !== undefined) {
          request.onReply(heldReply.reply, false, heldReply.connection);
          return { attempts: attempt };
        }
        throw this.#translate(failure as AttemptFailure, traits, attempt, anySent);
      }
      this.#options.observer?.retry?.(traits.name, retryReason(heldReply?.error, failure));
      this.#logger?.debug(
        { command: traits.name, attempt, delayMS: delay, reason: retryReason(heldReply?.error, failure) },
        'retrying upstream command',
      );
      if (delay > 0) await sleep(delay);
      this.#assertOpen();
    }
  }

  /** Closes every connection, idle or in use. Later `acquire` calls reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#pinIdleTimers.values()) clearTimeout(timer);
    this.#pinIdleTimers.clear();
    const shutdown = (): UpstreamError =>
      new UpstreamError(ErrorCodes.InterruptedAtShutdown, 'the proxy is shutting down', {
        labels: [NETWORK_ERROR_LABEL],
      });
    for (const server of this.#servers.values()) {
      server.monitor?.stop();
      server.pool.close(shutdown());
    }
    for (const connection of this.#dedicated) connection.close(shutdown());
    this.#dedicated.clear();
    this.#wakeTopologyWaiters();
    // A start still in flight settles on its own; its connection is closed when it lands.
    await this.#starting?.catch(() => undefined);
  }

  // --- forwarding internals ------------------------------------------------------------------

  /** A passthrough client's command: only on its own connection, never retried elsewhere. */
  async #forwardDedicated(request: ForwardRequest, connection: UpstreamConnection): Promise<ForwardResult> {
    if (connection.closed) {
      throw new ReplyInterruptedError(
        ErrorCodes.HostUnreachable,
        'the upstream connection authenticated as this client was lost; reconnect and authenticate again',
      );
    }
    if (request.fireAndForget) {
      await sendUnacknowledged(connection, request.frame);
      return { attempts: 1 };
    }
    let delivered = false;
    try {
      await connection.request(
        request.frame,
        (reply, moreToCome) => {
          delivered = true;
          request.onReply(reply, moreToCome, connection);
        },
        { replyTimeoutMS: this.#replyTimeoutMS(request.traits) },
      );
    } catch (error) {
      if (delivered || connection.closed) {
        throw new ReplyInterruptedError(
          ErrorCodes.HostUnreachable,
          'the upstream connection authenticated as this client was lost; reconnect and authenticate again',
          {
            cause: error,
          },
        );
      }
      throw error;
    }
    return { attempts: 1 };
  }

  #replyTimeoutMS(traits: CommandTraits): number {
    return replyTimeoutMS(this.#options.socketTimeoutMS ?? 0, traits);
  }

  /** The connection for one attempt: the transaction's pinned one, or a pooled one of the selected server. */
  async #lease(request: ForwardRequest, pin: PinDecision): Promise<Lease> {
    if (pin.kind === 'start') {
      // A new transaction on the session supersedes the pinned one (the server aborts that on
      // the higher txnNumber): its connection goes back now, so a tenant at its share of the
      // pool does not wait for a connection it holds itself.
      const superseded = this.#transactions.delete(pin.lsid);
      if (superseded !== undefined) this.#releasePin(superseded);
    }
    if (pin.kind === 'continue' || pin.kind === 'end') {
      const pinned = this.#transactions.get(pin.lsid);
      const server = pinned === undefined ? undefined : this.#servers.get(pinned.address);
      if (pinned !== undefined && server !== undefined && !pinned.closed) {
        const unlock = await this.#lockPin(pinned);
        if (!pinned.closed) return { connection: pinned, server, pinned: true, unlock };
        unlock();
      }
    }
    const server = await this.#selectServer(request.traits);
    if (!server.breaker.canRequest()) {
      throw new UpstreamError(ErrorCodes.HostUnreachable, `circuit breaker open for upstream ${server.key}`, {
        labels: [CIRCUIT_OPEN],
      });
    }
    let connection: UpstreamConnection;
    try {
      connection = await server.pool.checkOut(request.tenant ?? NO_TENANT, request.signal);
    } catch (error) {
      // A refused or failed connect counts against the server; a full pool or a client that
      // left while waiting does not.
      if (
        request.signal?.aborted !== true &&
        ProxyError.is(error) &&
        error.code !== ErrorCodes.ExceededTimeLimit &&
        error.code !== ErrorCodes.ShutdownInProgress
      ) {
        server.breaker.onFailure();
        this.#onNetworkError(server);
      } else {
        server.breaker.onCancel();
      }
      throw error;
    }
    return { connection, server, pinned: false, unlock: undefined };
  }

  /** After an attempt: pin or unpin a transaction's connection, or give the connection back. */
  #settle(
    lease: Lease,
    pin: PinDecision,
    session: UpstreamSession,
    succeeded: boolean,
    transactionAborted: boolean,
  ): void {
    const { connection } = lease;
    lease.unlock?.();
    if (pin.kind === 'start' && succeeded && !transactionAborted && !connection.closed) {
      if (lease.pinned) return;
      const replaced = this.#transactions.set(pin.lsid, connection, session);
      if (!this.#unpinOnClose.has(connection)) {
        this.#unpinOnClose.add(connection);
        connection.once('close', () => this.#transactions.forget(connection));
      }
      if (replaced !== undefined) this.#releasePin(replaced);
      this.#touchPin(pin.lsid, connection);
      return;
    }
    // Answered (or failed), or aborted by the server (the driver may never send an abort for
    // it, and a pin held until the client connection closes would hold a pool slot that long):
    // the transaction no longer needs its connection.
    if (pin.kind === 'end' || (transactionAborted && pin.kind !== 'none')) {
      const pinned = this.#transactions.delete(pin.lsid);
      if (pinned !== undefined && pinned !== connection) this.#releasePin(pinned);
      this.#returnToPool(connection);
      return;
    }
    if (lease.pinned) {
      // inside the transaction: stays pinned
      if (pin.kind !== 'none') this.#touchPin(pin.lsid, connection);
      return;
    }
    this.#returnToPool(connection);
  }

  /**
   * Returns a connection whose pin was just dropped. Drivers spread a session's commands over
   * their connections, so another client connection may be running a command of that
   * transaction on it right now: returning a busy connection would close it under that command,
   * so it goes back once the command is done (the pin lock orders it after).
   */
  #releasePin(connection: UpstreamConnection): void {
    void this.#lockPin(connection).then((unlock) => {
      unlock();
      this.#returnToPool(connection);
    });
  }

  /** (Re)starts the abandoned-transaction clock of a pin. */
  #touchPin(lsid: string, connection: UpstreamConnection): void {
    const previous = this.#pinIdleTimers.get(lsid);
    if (previous !== undefined) clearTimeout(previous);
    const timer = setTimeout(() => {
      this.#pinIdleTimers.delete(lsid);
      if (this.#transactions.get(lsid) !== connection) return;
      this.#transactions.delete(lsid);
      this.#logger?.debug({ upstreamConnection: connection.id }, 'released the pin of an abandoned transaction');
      this.#releasePin(connection);
    }, this.#options.abandonedPinMS ?? ABANDONED_PIN_MS);
    timer.unref();
    this.#pinIdleTimers.set(lsid, timer);
  }

  #returnToPool(connection: UpstreamConnection): void {
    if (this.#transactions.holds(connection)) return;
    this.#servers.get(connection.address)?.pool.checkIn(connection);
  }

  /** Serializes the commands of one transaction on its connection; resolves to the unlock function. */
  async #lockPin(connection: UpstreamConnection): Promise<() => void> {
    const previous = this.#pinLocks.get(connection) ?? Promise.resolve();
    let unlock!: () => void;
    const current = new Promise<void>((resolve) => {
      unlock = resolve;
    });
    this.#pinLocks.set(
      connection,
      previous.then(() => current),
    );
    await previous;
    return unlock;
  }

  /** Where a command goes (without a pin). Waits (bounded) for a suitable server during elections. */
  async #selectServer(traits: CommandTraits | undefined): Promise<ServerState> {
    const timeoutMS = this.#options.serverSelectionTimeoutMS ?? 10_000;
    const deadline = Date.now() + timeoutMS;
    for (;;) {
      this.#assertOpen();
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
  #onServerError(server: ServerState, error: RetryError): void {
    if (error.code === undefined || !STATE_CHANGE_CODES.has(error.code)) return;
    if (server.role === 'primary' && this.#servers.size > 1) {
      // SDAM: mark it unknown, so new writes wait for monitoring to find the (new) primary.
      this.#setRole(server, 'unknown');
    }
    server.monitor?.requestCheck();
  }

  #onNetworkError(server: ServerState): void {
    if (server.monitor === undefined) return;
    server.pool.clear();
    if (server.role !== 'unknown') this.#setRole(server, 'unknown');
    server.monitor.requestCheck();
  }

  #rememberCursor(traits: CommandTraits, reply: Buffer, server: ServerState): void {
    const opened = replyCursor(reply);
    if (opened !== undefined) this.#cursors.remember(opened, server.key);
    else if (traits.cursor !== undefined && (traits.name === 'killCursors' || traits.name === 'getMore'))
      this.#cursors.forget(traits.cursor);
  }

  #translate(failure: AttemptFailure, traits: CommandTraits, attempts: number, anySent: boolean): ProxyError {
    const { error } = failure;
    const labels = ProxyError.is(error) ? error.labels : [];
    // Not an availability problem (a bad $readPreference, authentication refused, shutting down):
    // the client gets it as it is.
    if (ProxyError.is(error) && !labels.includes(NETWORK_ERROR_LABEL) && !labels.includes(CIRCUIT_OPEN)) return error;
    const kind: UpstreamFailureKind = labels.includes(CIRCUIT_OPEN) ? 'circuit-open' : failure.kind;
    const detail = error instanceof Error ? error.message : undefined;
    // A txnNumber only makes a resend safe where the upstream de-duplicates on it (FerretDB, for
    // one, accepts and ignores it): elsewhere the driver must not be told to retry the write.
    const command = { ...traits, hasTxnNumber: traits.hasTxnNumber && upstreamSupportsRetryableWrites(this.info) };
    const reply = translateUpstreamFailure({ kind, command, ...(detail === undefined ? {} : { detail }), attempts });
    // A full pool keeps its own (retryable) code: the server is fine, the proxy is saturated.
    const code = ProxyError.is(error) && error.code === ErrorCodes.ExceededTimeLimit ? error.code : reply.code;
    const errorLabels = anySent
      ? reply.errorLabels.filter((label) => label !== ErrorLabels.NoWritesPerformed)
      : reply.errorLabels;
    return new UpstreamError(code, reply.errmsg, { labels: errorLabels, cause: error });
  }

  // --- topology ------------------------------------------------------------------------------

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
    const breaker = new CircuitBreaker(breakerOptions === undefined ? {} : breakerOptions);
    breaker.onStateChange((state, previous) => {
      this.#logger?.warn({ server: key, state, previous }, 'upstream circuit breaker changed state');
      this.#options.observer?.circuitState?.(key, state, previous);
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
      // Its cursors are NOT forgotten when it turns unknown: that happens on one failed
      // heartbeat or one broken pool connection, and the cursors usually live on. A getMore
      // sent elsewhere could only get CursorNotFound; sent there, it gets the server's own
      // answer. (The table is bounded; entries of a server that is really gone age out.)
    }
    this.#wakeTopologyWaiters();
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
        'upstream buildInfo failed; assuming a MongoDB server (collation pinned on tenant-filtered commands)',
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

  #assertOpen(): void {
    if (this.#closed) {
      throw new UpstreamError(ErrorCodes.ShutdownInProgress, 'the upstream pool is closed');
    }
  }
}

/** Proxy-internal labels (never sent to clients: translateUpstreamFailure builds the client's). */
const CIRCUIT_OPEN = 'ProxyCircuitOpen';
const NO_SERVER = 'ProxyNoServer';

/** A failure before the request left the proxy. */
function notSentFailure(error: unknown): AttemptFailure {
  const labels = ProxyError.is(error) ? error.labels : [];
  const code = ProxyError.is(error) ? error.code : undefined;
  if (
    ProxyError.is(error) &&
    !labels.includes(NETWORK_ERROR_LABEL) &&
    !labels.includes(CIRCUIT_OPEN) &&
    code !== ErrorCodes.ExceededTimeLimit
  ) {
    // Not an availability problem (a bad $readPreference, authentication refused…): not retried.
    return { kind: 'unreachable', error, sent: false, retryable: false };
  }
  const retryable =
    !labels.includes(CIRCUIT_OPEN) &&
    !labels.includes(NO_SERVER) &&
    code !== ErrorCodes.ExceededTimeLimit &&
    code !== ErrorCodes.ShutdownInProgress;
  return { kind: 'unreachable', error, sent: false, retryable };
}

function abortedError(): UpstreamError {
  return new UpstreamError(ErrorCodes.SocketException, 'the client left', { labels: [NETWORK_ERROR_LABEL] });
}

/** The code and labels of an `ok: 0` reply (or of its writeConcernError), else undefined. */
function replyError(reply: Buffer): RetryError | undefined {
  const body = replyBody(reply);
  if (body === undefined) return undefined;
  try {
    const ok = findElement(body, 'ok');
    let code: number | undefined;
    if (ok !== null && readNumber(body, ok) !== 1) {
      const codeElement = findElement(body, 'code');
      code = codeElement === null ? undefined : readNumber(body, codeElement);
    } else {
      const wce = findElement(body, 'writeConcernError');
      if (wce === null || wce.type !== BsonType.document) return undefined;
      const doc = subDocument(body, wce);
      const codeElement = findElement(doc, 'code');
      code = codeElement === null ? undefined : readNumber(doc, codeElement);
    }
    const labels: string[] = [];
    const labelsElement = findElement(body, 'errorLabels');
    if (labelsElement !== null && labelsElement.type === BsonType.array) {
      const array = subDocument(body, labelsElement);
      for (const item of elements(array)) if (item.type === BsonType.string) labels.push(readString(array, item));
    }
    return { ...(code === undefined ? {} : { code }), labels, network: false };
  } catch {
    return undefined;
  }
}

/** The server's NoSuchTransaction code: the transaction was aborted (or never existed). */
const NO_SUCH_TRANSACTION = 251;

/** NoSuchTransaction, or any error the server labels TransientTransactionError: the transaction is gone. */
function serverAbortedTransaction(error: RetryError): boolean {
  return error.code === NO_SUCH_TRANSACTION || (error.labels ?? []).includes(ErrorLabels.TransientTransactionError);
}

function retryReason(error: RetryError | undefined, failure: AttemptFailure | undefined): string {
  if (error !== undefined) return error.code === undefined ? 'server_error' : codeReason(error.code);
  if (failure === undefined) return 'unknown';
  if (!failure.sent) return 'connect';
  return failure.kind === 'timeout' ? 'timeout' : 'network';
}

function codeReason(code: number): string {
  return codeNameOf(code);
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

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A client's moreToCome command (a w:0 write, endSessions) is sent *with* a reply requested and
 * the reply dropped, holding the connection until it arrives. A server that answers moreToCome
 * anyway (FerretDB does) would otherwise leave a stray reply on a pooled connection that another
 * client's request uses next, and the connection would fail under that request. The client still
 * gets nothing, as it asked; the write's outcome stays unknown to it, as with w:0 on MongoDB.
 */
function sendUnacknowledged(connection: UpstreamConnection, frame: Buffer): Promise<void> {
  return connection.request(clearMoreToCome(frame), () => undefined);
}
