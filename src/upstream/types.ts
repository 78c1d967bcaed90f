/**
 * The contracts of the upstream layer, shared by the facade (upstream.ts), the retry loop
 * (execute.ts), the connection leases (leases.ts) and the server set (server-set.ts): what a caller
 * configures, sends and gets back. Kept apart so those modules import it and never each other in
 * a loop.
 */

import type { Logger } from 'pino';
export { ReplyInterruptedError } from '../errors.js';
import type { ReplyScan } from '../wire/reply-scan.js';
import type { CircuitState } from './circuit-breaker.js';
import type { CommandTraits } from './command-traits.js';
import type { ReplyCharge, UpstreamConnection } from './connection.js';
import type { PoolStats } from './pool.js';

export interface UpstreamRetryOptions {
  /** Attempts including the first; 1 never retries. */
  maxAttempts: number;
  initialBackoffMS: number;
  maxBackoffMS: number;
}

export interface UpstreamCircuitBreakerOptions {
  failureThreshold: number;
  /** The longest open time. */
  openMS: number;
  halfOpenProbes: number;
  /** The first open time, doubling on each re-open up to openMS. Default: CIRCUIT_RECOVERY_DEFAULTS. */
  initialOpenMS?: number;
  /** While open, a health check (fresh connection + hello) runs this often; its success closes the circuit. 0: none. */
  probeIntervalMS?: number;
}

/** How fast an open circuit notices that its server is back. */
export const CIRCUIT_RECOVERY_DEFAULTS = Object.freeze({ initialOpenMS: 250, probeIntervalMS: 250 });

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
  /**
   * Where the capability probes that write (upsert, partial and TTL indexes) create and drop
   * their collections. main passes the ownership catalogue's database, which no tenant can name
   * and no listing shows; default PROBE_DATABASE (capabilities.ts), dropped again once empty.
   */
  probeDatabase?: string;
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

/**
 * What forwarding reads of a cancellation. An AbortSignal fits; a client connection passes a
 * lighter one of its own (an AbortController per command costs more than the rest of its bookkeeping).
 */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
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
  signal?: CancelSignal | undefined;
  /**
   * Where each attempt's reply bytes are charged while they are read off the upstream (the
   * client connection's share of the byte budget; connection.ts, ReplyCharge); handed over with
   * each reply passed to `onReply`. A reply held back for a retry, or dropped, keeps what was
   * handed over with it on the requester's side: the requester releases what it did not take
   * when the forward ends.
   */
  replyCharge?: ReplyCharge | undefined;
  /**
   * Every reply, in order, as it arrives (called synchronously; may pause `connection`), with the
   * one scan of it the forwarding layer made (its `ok`, error and cursor; wire/reply-scan.ts).
   */
  onReply(reply: Buffer, moreToCome: boolean, connection: UpstreamConnection, scan: ReplyScan): void;
}

export interface ForwardResult {
  /** 1 unless the command was retried. */
  attempts: number;
}

/** One client connection's state in the upstream: the pins it owns, its passthrough connection. */
export class UpstreamSession {
  /** Set once a scram-passthrough client authenticated: its commands run only there. */
  dedicated: UpstreamConnection | undefined;
}

/**
 * Proxy-internal error labels (never sent to clients: translateUpstreamFailure builds the
 * client's): the selected server's circuit breaker is open; no suitable server was found in time.
 */
export const CIRCUIT_OPEN = 'ProxyCircuitOpen';
export const NO_SERVER = 'ProxyNoServer';
