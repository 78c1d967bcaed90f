/**
 * A bounded pool of authenticated connections to ONE upstream server (CMAP-like, much reduced:
 * mongodb/specifications source/connection-monitoring-and-pooling).
 *
 * - At most `maxPoolSize` connections exist at once, counting those being opened (`pending`).
 * - `checkOut` hands out an idle connection (most recently used first, so surplus ones age out),
 *   opens a new one while there is room, or waits in a fair per-tenant queue (wait-queue.ts).
 *   A waiter gets a checked-in connection directly; after `waitQueueTimeoutMS` it is rejected
 *   with a retryable error (never a hang).
 * - A tenant holds at most `maxConnectionsPerTenant` connections at once (in use, pinned to its
 *   transactions, streaming its exhaust replies, or being opened for it): beyond that its
 *   checkOut waits, passed over by the fair queue, until one of its own connections comes back,
 *   so one tenant's long holds cannot take the whole pool from the others (issue 5). Requests
 *   without a tenant (NO_TENANT: before authentication, internal work) are not capped.
 * - `checkIn` keeps at most `maxIdleConnections` idle, each for `idleTimeoutMS`; a connection older
 *   than `maxLifetimeMS`, busy (an abandoned reply stream) or from before a `clear()` is closed.
 *   Except that a connection open cursors were opened on (`holdsCursors`) is kept, idle, past
 *   maxIdleConnections, idleTimeoutMS and maxLifetimeMS until they end: some servers close a
 *   connection's cursors with it, and they may be any tenant's (pins.ts, CursorHomes).
 * - `minPoolSize` connections are kept open in the background (best effort).
 *
 * Opening and authenticating a connection is injected (`open`), so this module knows nothing of
 * hello, TLS or credentials.
 */
import type { Logger } from 'pino';
import { ErrorCodes, UpstreamError } from '../errors.js';
import type { UpstreamConnection } from './connection.js';
import { NETWORK_ERROR_LABEL } from './connection.js';
import { FairWaitQueue, NO_TENANT } from './wait-queue.js';
import type { CancelSignal } from './types.js';

export interface PoolOptions {
  /** `host:port`, for errors and logs. */
  address: string;
  maxPoolSize: number;
  minPoolSize: number;
  maxIdleConnections: number;
  /** Idle connections are closed after this long; 0 never. */
  idleTimeoutMS: number;
  /** Connections are retired (at check-in, or when found idle) after this long; 0 never. */
  maxLifetimeMS: number;
  /** A checkOut waits at most this long for a connection; 0 never gives up. */
  waitQueueTimeoutMS: number;
  /** Connections one tenant may hold at once (in use, pinned, being opened); 0 no cap. Default 0. */
  maxConnectionsPerTenant?: number;
  /** Called when a checkOut waits because its tenant holds its cap (for the metrics). */
  onTenantCapWait?: ((tenant: string) => void) | undefined;
  /** Opens and authenticates a new connection; rejects with an UpstreamError. */
  open(): Promise<UpstreamConnection>;
  /** Whether open cursors were opened on the connection (it is then not closed on purpose). */
  holdsCursors?: ((connection: UpstreamConnection) => boolean) | undefined;
  logger?: Logger | undefined;
}

export interface PoolStats {
  /** Connections open (idle + in use); pending ones are not yet open. */
  open: number;
  idle: number;
  inUse: number;
  /** Connections being opened (TCP, TLS, hello, authentication). */
  pending: number;
  /** Requests waiting for a connection. */
  waiting: number;
  /** Connections opened since start. */
  created: number;
}

interface Waiter {
  tenant: string;
  resolve(connection: UpstreamConnection): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The error a request gets when no connection became free within waitQueueTimeoutMS; `limit`
 * names what made it wait (the whole pool, or its tenant's share).
 */
export function waitQueueTimeoutError(
  address: string,
  timeoutMS: number,
  limit: 'upstream.maxPoolSize' | 'upstream.maxPoolConnectionsPerTenant' = 'upstream.maxPoolSize',
): UpstreamError {
  // ExceededTimeLimit is retryable for drivers (reads and retryable writes); nothing was sent.
  return new UpstreamError(
    ErrorCodes.ExceededTimeLimit,
    `timed out after ${timeoutMS} ms waiting for a connection to upstream ${address} (${limit} reached)`,
    { labels: [NETWORK_ERROR_LABEL] },
  );
}

/** The error a waiting request gets when its client left (nothing was sent; nobody reads it). */
function cancelledError(address: string): UpstreamError {
  return new UpstreamError(
    ErrorCodes.SocketException,
    `the request was cancelled while waiting for a connection to upstream ${address}`,
  );
}

export class ConnectionPool {
  readonly address: string;
  readonly #options: PoolOptions;
  readonly #logger: Logger | undefined;
  /** Idle connections, least recently checked in first; checkOut takes from the end. */
  readonly #idle: UpstreamConnection[] = [];
  /**
   * One idle timer per connection, armed again (refresh) at each check-in rather than created per
   * request; it fires harmlessly while the connection is in use. Removed when the connection closes.
   */
  readonly #idleTimers = new Map<UpstreamConnection, { timer: NodeJS.Timeout; ms: number }>();
  readonly #inUse = new Set<UpstreamConnection>();
  /** When each open connection was created, and the generation it belongs to. */
  readonly #born = new Map<UpstreamConnection, { at: number; generation: number }>();
  readonly #waiters = new FairWaitQueue<Waiter>();
  /** The tenant each in-use connection was checked out for (pins and exhaust streams included). */
  readonly #holders = new Map<UpstreamConnection, string>();
  /** Per tenant: connections in use plus those being opened for it (what the share cap bounds). */
  readonly #held = new Map<string, number>();
  /** Whether a waiter of this tenant may get a connection now (below its share cap). */
  readonly #belowCap = (tenant: string): boolean => !this.#atCap(tenant);
  #pending = 0;
  #created = 0;
  #generation = 0;
  #closed = false;
  #closeError: Error | undefined;

  constructor(options: PoolOptions) {
    for (const key of ['maxPoolSize', 'minPoolSize', 'maxIdleConnections', 'maxConnectionsPerTenant'] as const) {
      const value = options[key] ?? 0;
      if (!Number.isInteger(value) || value < 0) throw new RangeError(`${key} must be a non-negative integer`);
    }
    if (options.maxPoolSize < 1) throw new RangeError('maxPoolSize must be at least 1');
    this.address = options.address;
    this.#options = options;
    this.#logger = options.logger;
  }

  get stats(): PoolStats {
    return {
      open: this.#idle.length + this.#inUse.size,
      idle: this.#idle.length,
      inUse: this.#inUse.size,
      pending: this.#pending,
      waiting: this.#waiters.length,
      created: this.#created,
    };
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Connections that exist or are being opened: what maxPoolSize bounds. */
  get #total(): number {
    return this.#idle.length + this.#inUse.size + this.#pending;
  }

  /** Takes an already open connection (the discovery connection) into the pool as idle. */
  adopt(connection: UpstreamConnection): void {
    if (this.#closed) {
      connection.close();
      return;
    }
    this.#register(connection);
    this.#inUse.add(connection);
    this.checkIn(connection);
  }

  /**
   * A connection exclusive to the caller until `checkIn`. `tenant` places it in the fair queue;
   * aborting `signal` (the client left) takes a waiting request out of the queue at once, so it
   * neither holds a place in the round-robin nor receives a connection nobody will use.
   */
  checkOut(tenant: string = NO_TENANT, signal?: CancelSignal): Promise<UpstreamConnection> {
    if (this.#closed) return Promise.reject(this.#closedError());
    const capped = this.#atCap(tenant);
    if (!capped) {
      const idle = this.#takeIdle();
      if (idle !== undefined) {
        this.#hold(idle, tenant);
        return Promise.resolve(idle);
      }
      if (this.#total < this.#options.maxPoolSize) return this.#openFor(tenant);
    }
    if (signal?.aborted === true) return Promise.reject(cancelledError(this.address));
    if (capped) this.#options.onTenantCapWait?.(tenant);
    return new Promise<UpstreamConnection>((resolve, reject) => {
      const onAbort = (): void => {
        if (this.#waiters.remove(tenant, waiter)) waiter.reject(cancelledError(this.address));
      };
      // However the wait ends, its timer and abort listener go with it.
      const detach = (): void => {
        if (waiter.timer !== undefined) clearTimeout(waiter.timer);
        signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        tenant,
        resolve: (connection) => {
          detach();
          resolve(connection);
        },
        reject: (error) => {
          detach();
          reject(error);
        },
        timer: undefined,
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const timeoutMS = this.#options.waitQueueTimeoutMS;
      if (timeoutMS > 0) {
        waiter.timer = setTimeout(() => {
          if (!this.#waiters.remove(tenant, waiter)) return;
          // Still capped when it gives up: its own connections, not the pool, kept it waiting.
          const limit = this.#atCap(tenant) ? 'upstream.maxPoolConnectionsPerTenant' : 'upstream.maxPoolSize';
          waiter.reject(waitQueueTimeoutError(this.address, timeoutMS, limit));
        }, timeoutMS);
      }
      this.#waiters.push(tenant, waiter);
    });
  }

  /**
   * `checkOut` when an idle connection can be had at once (undefined: ask `checkOut`, which may
   * open one, queue, or refuse). No promise: the common case of a warm pool.
   */
  tryCheckOut(tenant: string = NO_TENANT): UpstreamConnection | undefined {
    if (this.#closed || this.#atCap(tenant)) return undefined;
    const idle = this.#takeIdle();
    if (idle !== undefined) this.#hold(idle, tenant);
    return idle;
  }

  /** Returns a connection: to the next waiter, kept idle if there is room, or closed. */
  checkIn(connection: UpstreamConnection): void {
    if (!this.#inUse.delete(connection)) return;
    this.#unhold(connection);
    if (connection.closed) {
      this.#serveWaiters();
      return;
    }
    if (this.#closed || connection.busy || this.#expired(connection)) {
      connection.close();
      this.#serveWaiters();
      return;
    }
    const waiter = this.#waiters.shift(this.#belowCap);
    if (waiter !== undefined) {
      this.#handTo(waiter, connection);
      // Its tenant holds one fewer now: a waiter of it may be served from a free slot.
      this.#serveWaiters();
      return;
    }
    if (this.#idle.length >= this.#options.maxIdleConnections && !this.#holdsCursors(connection)) {
      connection.close();
      return;
    }
    connection.lastUsed = Date.now();
    this.#idle.push(connection);
    this.#armIdleTimer(connection);
  }

  /**
   * Forgets every connection made so far (the server failed or stepped down): idle ones close now,
   * in-use ones when checked in, or at once with `interruptInUse` (CMAP's
   * interruptInUseConnections: the server stopped answering, so their requests would otherwise
   * wait for a reply that never comes). Waiters stay queued and get fresh connections.
   */
  clear(interruptInUse?: Error): void {
    this.#generation++;
    for (const connection of this.#idle.splice(0)) {
      this.#clearIdleTimer(connection);
      connection.close();
    }
    if (interruptInUse !== undefined) for (const connection of [...this.#inUse]) connection.close(interruptInUse);
  }

  /** Closes every connection, idle or in use, and rejects every waiter with `error`. */
  close(error?: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeError = error;
    for (const { timer } of this.#idleTimers.values()) clearTimeout(timer);
    this.#idleTimers.clear();
    const all = [...this.#idle, ...this.#inUse];
    this.#idle.length = 0;
    this.#inUse.clear();
    this.#holders.clear();
    this.#held.clear();
    for (const connection of all) connection.close(error);
    for (const waiter of this.#waiters.drain()) {
      if (waiter.timer !== undefined) clearTimeout(waiter.timer);
      waiter.reject(this.#closedError());
    }
  }

  /** Opens connections in the background up to minPoolSize. Failures are only logged. */
  ensureMinimum(): void {
    this.#ensureMinimum();
  }

  // --- internals -----------------------------------------------------------------------------

  #takeIdle(): UpstreamConnection | undefined {
    for (;;) {
      const connection = this.#idle.pop();
      if (connection === undefined) return undefined;
      // Its idle timer stays (see #idleTimers); closing removes it.
      if (connection.closed) {
        this.#clearIdleTimer(connection);
        continue;
      }
      if (this.#expired(connection)) {
        connection.close();
        continue;
      }
      return connection;
    }
  }

  /** Opens a connection for the caller (a slot is free); it counts toward `tenant` from now on. */
  async #openFor(tenant: string): Promise<UpstreamConnection> {
    this.#pending++;
    this.#count(tenant, 1);
    let connection: UpstreamConnection;
    try {
      connection = await this.#options.open();
    } catch (error) {
      this.#pending--;
      this.#count(tenant, -1);
      // The slot is free again: a waiter may get it (its own open may succeed, or fail in turn).
      this.#serveWaiters();
      throw error;
    }
    this.#pending--;
    this.#count(tenant, -1);
    if (this.#closed) {
      connection.close();
      throw this.#closedError();
    }
    this.#register(connection);
    this.#hold(connection, tenant);
    return connection;
  }

  #register(connection: UpstreamConnection): void {
    this.#created++;
    this.#born.set(connection, { at: Date.now(), generation: this.#generation });
    connection.once('close', () => {
      this.#born.delete(connection);
      const wasInUse = this.#inUse.delete(connection);
      if (wasInUse) this.#unhold(connection);
      this.#clearIdleTimer(connection);
      const index = this.#idle.indexOf(connection);
      if (index >= 0) this.#idle.splice(index, 1);
      if (wasInUse || index >= 0) this.#serveWaiters();
    });
  }

  /**
   * Gives free slots to waiters below their tenant's cap: an idle connection, or a new one while
   * there is room. (When idle connections exist but all turn out closed or expired, taking them
   * frees as many slots, so a waiter shifted here is always served.)
   */
  #serveWaiters(): void {
    while (!this.#closed && this.#waiters.hasEligible(this.#belowCap)) {
      if (this.#idle.length === 0 && this.#total >= this.#options.maxPoolSize) return;
      const waiter = this.#waiters.shift(this.#belowCap) as Waiter;
      const idle = this.#takeIdle();
      if (idle !== undefined) {
        this.#handTo(waiter, idle);
        continue;
      }
      if (waiter.timer !== undefined) clearTimeout(waiter.timer);
      this.#openFor(waiter.tenant).then(waiter.resolve, waiter.reject);
    }
  }

  #handTo(waiter: Waiter, connection: UpstreamConnection): void {
    if (waiter.timer !== undefined) clearTimeout(waiter.timer);
    this.#hold(connection, waiter.tenant);
    waiter.resolve(connection);
  }

  /** Whether `tenant` holds its share cap (never for NO_TENANT, never without a cap). */
  #atCap(tenant: string): boolean {
    const cap = this.#options.maxConnectionsPerTenant ?? 0;
    return cap > 0 && tenant !== NO_TENANT && (this.#held.get(tenant) ?? 0) >= cap;
  }

  /** Marks `connection` in use by `tenant`. */
  #hold(connection: UpstreamConnection, tenant: string): void {
    this.#inUse.add(connection);
    this.#holders.set(connection, tenant);
    this.#count(tenant, 1);
  }

  /** `connection` is no longer in use: its tenant holds one fewer. */
  #unhold(connection: UpstreamConnection): void {
    const tenant = this.#holders.get(connection);
    if (tenant === undefined) return;
    this.#holders.delete(connection);
    this.#count(tenant, -1);
  }

  #count(tenant: string, delta: number): void {
    const held = (this.#held.get(tenant) ?? 0) + delta;
    if (held > 0) this.#held.set(tenant, held);
    else this.#held.delete(tenant);
  }

  #expired(connection: UpstreamConnection): boolean {
    const born = this.#born.get(connection);
    if (born === undefined) return false;
    if (born.generation !== this.#generation) return true;
    const lifetime = this.#options.maxLifetimeMS;
    return lifetime > 0 && Date.now() - born.at >= lifetime && !this.#holdsCursors(connection);
  }

  #ensureMinimum(): void {
    const missing = this.#options.minPoolSize - this.#total;
    for (let i = 0; i < missing && !this.#closed; i++) {
      this.#openFor(NO_TENANT).then(
        (connection) => this.checkIn(connection),
        (error: unknown) =>
          this.#logger?.debug(
            { address: this.address, err: error instanceof Error ? error.message : String(error) },
            'could not open a minPoolSize connection',
          ),
      );
    }
  }

  /**
   * Closes an idle connection after idleTimeoutMS, unless cursors opened on it are still open
   * then. A check-in refreshes the armed timer rather than making a new one.
   */
  #armIdleTimer(connection: UpstreamConnection): void {
    const idleTimeoutMS = this.#options.idleTimeoutMS;
    const armed = this.#idleTimers.get(connection);
    if (armed !== undefined && armed.ms === idleTimeoutMS) {
      armed.timer.refresh();
      return;
    }
    if (armed !== undefined) this.#clearIdleTimer(connection);
    if (idleTimeoutMS <= 0) return;
    const timer = setTimeout(() => {
      const index = this.#idle.indexOf(connection);
      // In use since: its next check-in arms the timer again.
      if (index < 0) return;
      this.#idleTimers.delete(connection);
      if (this.#holdsCursors(connection)) {
        this.#armIdleTimer(connection);
        return;
      }
      this.#idle.splice(index, 1);
      connection.close();
      this.#ensureMinimum();
    }, idleTimeoutMS);
    timer.unref();
    this.#idleTimers.set(connection, { timer, ms: idleTimeoutMS });
  }

  #holdsCursors(connection: UpstreamConnection): boolean {
    return this.#options.holdsCursors?.(connection) === true;
  }

  #clearIdleTimer(connection: UpstreamConnection): void {
    const armed = this.#idleTimers.get(connection);
    if (armed !== undefined) {
      clearTimeout(armed.timer);
      this.#idleTimers.delete(connection);
    }
  }

  #closedError(): UpstreamError {
    return new UpstreamError(
      ErrorCodes.ShutdownInProgress,
      `the connection pool for upstream ${this.address} is closed`,
      {
        labels: this.#closeError === undefined ? [] : [NETWORK_ERROR_LABEL],
      },
    );
  }
}
