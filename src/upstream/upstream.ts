/**
 * The upstream deployment as the rest of the proxy sees it: a facade over three parts.
 *
 * - server-set.ts: which servers there are and what each is (discovery, monitoring, elections),
 *   each with its own pool and circuit breaker, and where a command goes (server selection);
 * - leases.ts: which connection an attempt holds (a pooled one for that request only, or a
 *   transaction's pinned one) and what becomes of it afterwards;
 * - execute.ts: `forward`'s retry loop: attempt, classify the failure (retry.ts), back off, retry
 *   or translate.
 *
 * The contracts (options, ForwardRequest/ForwardResult, the session, observer hooks) are in
 * types.ts and re-exported here, so callers import this file only.
 */

import { Long, serialize } from '../wire/bson.js';
import { encodeOpMsg } from '../wire/op-msg.js';
import { RawDocument } from '../wire/raw-bson.js';
import { traitsOf } from './command-traits.js';
import type { UpstreamCapabilities } from './capabilities.js';
import type { UpstreamConnection } from './connection.js';
import { executeDedicated, execute, type ExecuteContext } from './execute.js';
import { Leases } from './leases.js';
import { RETRY_DEFAULTS } from './retry.js';
import { ServerSet, shutdownError } from './server-set.js';
import { checkRequestSize } from './size-limits.js';
import type { UpstreamServerInfo } from './topology.js';
import {
  type ForwardRequest,
  type ForwardResult,
  type ServerPoolStats,
  type UpstreamOptions,
  type UpstreamPoolStats,
  UpstreamSession,
} from './types.js';
import { NO_TENANT } from './wait-queue.js';

export { UpstreamConnection, type ReplyCharge } from './connection.js';
export { ABANDONED_PIN_MS } from './leases.js';
export type { UpstreamServerInfo } from './topology.js';
export {
  type ForwardRequest,
  type ForwardResult,
  ReplyInterruptedError,
  type ServerPoolStats,
  type UpstreamCircuitBreakerOptions,
  type UpstreamObserver,
  type UpstreamOptions,
  type UpstreamPoolStats,
  type UpstreamRetryOptions,
  UpstreamSession,
} from './types.js';

export class Upstream {
  readonly #servers: ServerSet;
  readonly #leases: Leases;
  readonly #execution: ExecuteContext;
  /** Connections opened by openUnauthenticated: one client's alone, never pooled. */
  readonly #dedicated = new Set<UpstreamConnection>();
  #dedicatedCreated = 0;

  constructor(options: UpstreamOptions) {
    if (!Number.isInteger(options.maxIdleConnections) || options.maxIdleConnections < 0) {
      throw new RangeError('maxIdleConnections must be a non-negative integer');
    }
    this.#servers = new ServerSet(options);
    this.#leases = new Leases(this.#servers, options);
    this.#execution = {
      servers: this.#servers,
      leases: this.#leases,
      retry: options.retry ?? {
        maxAttempts: RETRY_DEFAULTS.attempts,
        initialBackoffMS: RETRY_DEFAULTS.baseMS,
        maxBackoffMS: RETRY_DEFAULTS.maxMS,
      },
      options,
    };
  }

  /**
   * Parses the URI, loads TLS material, finds the server to use and reads its hello. The
   * connection used for that is kept as the first idle connection. Idempotent.
   */
  start(): Promise<UpstreamServerInfo> {
    return this.#servers.start();
  }

  /** The first selected server's description (mirrored in hello). Throws before `start` resolved. */
  get info(): UpstreamServerInfo {
    return this.#servers.info;
  }

  /** What the server taking the writes can do (capabilities.ts); MongoDB's answers before start() resolved. */
  get capabilities(): UpstreamCapabilities {
    return this.#servers.capabilities;
  }

  get stats(): UpstreamPoolStats {
    const pools = this.#servers.poolStats;
    return {
      open: pools.open + this.#dedicated.size,
      idle: pools.idle,
      inUse: pools.inUse + this.#dedicated.size,
      pending: pools.pending,
      waiting: pools.waiting,
      created: pools.created + this.#dedicatedCreated,
      dedicated: this.#dedicated.size,
      pinned: this.#leases.pinned,
      servers: this.#servers.size,
    };
  }

  /** Pool occupancy and breaker state of every known server. */
  serverStats(): ServerPoolStats[] {
    return this.#servers.serverStats();
  }

  /**
   * Whether new work can be sent now: a server that takes writes is known (the primary, a mongos,
   * the standalone) and its circuit breaker is not open. Readiness follows it.
   */
  get reachable(): boolean {
    return this.#servers.reachable;
  }

  /** The servers known and what each is, e.g. `{ 'h:1': 'primary' }` (tests, logs). */
  get topology(): Record<string, string> {
    return this.#servers.topology;
  }

  /**
   * A pooled, authenticated connection to the default server, exclusive to the caller until
   * `release`; through the server's circuit breaker like a forwarded command (leases.ts checkOut).
   */
  async acquire(tenant: string = NO_TENANT): Promise<UpstreamConnection> {
    await this.#servers.ready();
    const server = await this.#servers.select(undefined);
    return this.#leases.checkOut(server, tenant);
  }

  /** Returns a connection from `acquire`: to a waiter, kept idle if there is room, or closed. */
  release(connection: UpstreamConnection): void {
    if (this.#dedicated.has(connection)) {
      this.#dedicated.delete(connection);
      connection.close();
      return;
    }
    this.#servers.checkIn(connection);
  }

  /**
   * A new connection to the current server that has said hello but NOT authenticated with the
   * proxy's credentials: a client's own SCRAM exchange is relayed over it (scram-passthrough).
   * It belongs to that client alone and must be closed, never released, when done.
   */
  async openUnauthenticated(): Promise<UpstreamConnection> {
    await this.#servers.ready();
    const server = await this.#servers.select(undefined);
    const connection = await this.#servers.connectUnauthenticated(server.address);
    if (this.#servers.closed) {
      // close() ran while it was being opened: nobody would ever close it.
      connection.close();
      this.#servers.assertOpen();
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
    this.#leases.endSession(session);
    session.dedicated = undefined;
  }

  /**
   * Sends one command and streams its replies to `request.onReply`, retrying where that is safe
   * (execute.ts). A request over the upstream's size limits (size-limits.ts) is rejected with
   * BSONObjectTooLarge / InvalidLength and never sent. Rejects with an UpstreamError ready to be answered to the client (code and
   * labels translated), or a ReplyInterruptedError when part of a reply stream was already delivered.
   */
  forward(request: ForwardRequest): Promise<ForwardResult> {
    try {
      // Started: no promise to wait for before sending.
      if (this.#servers.readyNow()) return this.#send(request);
    } catch (error) {
      return Promise.reject(error);
    }
    return this.#servers.ready().then(() => this.#send(request));
  }

  #send(request: ForwardRequest): Promise<ForwardResult> {
    // Over the upstream's limits once rewritten: answered as the server would, never sent (a
    // dropped connection would fail the requests sharing it and look like an outage).
    const tooLarge = checkRequestSize(request.frame, this.#servers.info);
    if (tooLarge !== undefined) throw tooLarge;
    const dedicated = request.session.dedicated;
    if (dedicated !== undefined) return executeDedicated(request, dedicated, this.#execution);
    return execute(request, this.#execution);
  }

  /**
   * Kills cursors upstream on the proxy's behalf (their client connection left): one killCursors
   * per namespace, on the server each cursor lives on (the cursor table of server-set.ts). The
   * reply is not read: a cursor already gone is as good as killed. Rejects when the upstream is
   * unreachable; the caller logs it (the server's idle timeout reaps what is left).
   */
  async killCursors(db: string, coll: string, ids: readonly bigint[], tenant?: string): Promise<void> {
    if (ids.length === 0 || this.#servers.closed) return;
    const body = serialize({ killCursors: coll, cursors: ids.map((id) => Long.fromBigInt(id)), $db: db });
    await this.forward({
      frame: encodeOpMsg({ requestId: 0, responseTo: 0, body }),
      traits: traitsOf(RawDocument.parse(body).elements),
      tenant,
      session: this.openSession(),
      fireAndForget: false,
      onReply: () => undefined,
    });
  }

  /** Closes every connection, idle or in use. Later `acquire` calls reject. */
  async close(): Promise<void> {
    if (this.#servers.closed) return;
    const closing = this.#servers.close();
    this.#leases.close();
    for (const connection of this.#dedicated) connection.close(shutdownError());
    this.#dedicated.clear();
    await closing;
  }
}
