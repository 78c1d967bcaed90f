/**
 * Which connection one forward attempt holds, and what becomes of it afterwards. Normally a
 * pooled connection of the selected server, held for that one request only (so many clients share
 * few upstream connections; an exhaust stream holds it until its last reply). A multi-statement
 * transaction is the exception (pins.ts decides): the connection its first command ran on stays
 * pinned to it, the transaction's later commands run there one at a time, and it goes back to the
 * pool once the transaction ends, is aborted by the server, is superseded, its client leaves, or
 * no command used it for abandonedPinMS.
 */

import type { Logger } from 'pino';
import { ErrorCodes, ProxyError, UpstreamError } from '../errors.js';
import type { UpstreamConnection } from './connection.js';
import { type PinDecision, TransactionPins } from './pins.js';
import type { ServerSet, ServerState } from './server-set.js';
import {
  CIRCUIT_OPEN,
  type CancelSignal,
  type ForwardRequest,
  type UpstreamOptions,
  type UpstreamSession,
} from './types.js';
import { NO_TENANT } from './wait-queue.js';

/**
 * A pinned transaction that sees no command for this long was abandoned (no commit, no abort,
 * its client connection still open): the server has aborted it by then
 * (transactionLifetimeLimitSeconds, 60 s by default), so its pin only holds a pool slot.
 */
export const ABANDONED_PIN_MS = 120_000;

/** The connection one attempt holds. */
export interface Lease {
  connection: UpstreamConnection;
  server: ServerState;
  /** A transaction's pinned connection (not returned to the pool after this request). */
  pinned: boolean;
  /** Lets the transaction's next command use the pinned connection. */
  unlock: (() => void) | undefined;
}

export class Leases {
  readonly #servers: ServerSet;
  readonly #options: Pick<UpstreamOptions, 'abandonedPinMS'>;
  readonly #logger: Logger | undefined;
  readonly #transactions = new TransactionPins<UpstreamConnection, UpstreamSession>();
  /** Serializes commands of one transaction on its pinned connection. */
  readonly #pinLocks = new WeakMap<UpstreamConnection, Promise<void>>();
  /** Connections whose 'close' already drops their pins (one listener each, however many transactions). */
  readonly #unpinOnClose = new WeakSet<UpstreamConnection>();
  /** Per pinned lsid: releases the pin once it has been idle for abandonedPinMS. */
  readonly #pinIdleTimers = new Map<string, NodeJS.Timeout>();

  constructor(servers: ServerSet, options: Pick<UpstreamOptions, 'abandonedPinMS' | 'logger'>) {
    this.#servers = servers;
    this.#options = options;
    this.#logger = options.logger;
  }

  /** Pool connections pinned to an open transaction. */
  get pinned(): number {
    return this.#transactions.size;
  }

  /** The client connection left: its transaction pins are released. */
  endSession(session: UpstreamSession): void {
    for (const connection of this.#transactions.releaseOwner(session)) this.#releasePin(connection);
  }

  /** Stops the abandoned-transaction clocks (the pools close the connections themselves). */
  close(): void {
    for (const timer of this.#pinIdleTimers.values()) clearTimeout(timer);
    this.#pinIdleTimers.clear();
  }

  /**
   * `lease` when nothing needs waiting for (undefined: ask `lease`): no transaction pin, a server
   * selectable now whose breaker is closed, and an idle connection in its pool the tenant may take.
   * The same checks as `lease`, in the same order, without a promise per step.
   */
  leaseNow(request: ForwardRequest, pin: PinDecision): Lease | undefined {
    if (pin.kind !== 'none') return undefined;
    const server = this.#servers.selectNow(request.traits);
    if (server === undefined || server.breaker.state !== 'closed') return undefined;
    const connection = server.pool.tryCheckOut(request.tenant ?? NO_TENANT);
    if (connection === undefined) return undefined;
    // Closed: always true; asked all the same, as `checkOut` does, so each request is one breaker request.
    if (!server.breaker.canRequest()) {
      this.#servers.checkIn(connection);
      return undefined;
    }
    return { connection, server, pinned: false, unlock: undefined };
  }

  /** The connection for one attempt: the transaction's pinned one, or a pooled one of the selected server. */
  async lease(request: ForwardRequest, pin: PinDecision): Promise<Lease> {
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
    const server = await this.#servers.select(request.traits);
    const connection = await this.checkOut(server, request.tenant ?? NO_TENANT, request.signal);
    return { connection, server, pinned: false, unlock: undefined };
  }

  /**
   * A pooled connection of `server`, through its circuit breaker: refused at once while the breaker
   * is open, and a refused or failed connect counts against the server (a full pool or a caller
   * that left while waiting does not). Forwarded commands and the proxy's own (tenancy, view
   * checks) take this one path, so an upstream that is down opens the breaker whoever asks first.
   */
  async checkOut(server: ServerState, tenant: string, signal?: CancelSignal): Promise<UpstreamConnection> {
    if (!server.breaker.canRequest()) {
      throw new UpstreamError(ErrorCodes.HostUnreachable, `circuit breaker open for upstream ${server.key}`, {
        labels: [CIRCUIT_OPEN],
      });
    }
    try {
      return await server.pool.checkOut(tenant, signal);
    } catch (error) {
      if (
        signal?.aborted !== true &&
        ProxyError.is(error) &&
        error.code !== ErrorCodes.ExceededTimeLimit &&
        error.code !== ErrorCodes.ShutdownInProgress
      ) {
        server.breaker.onFailure();
        this.#servers.onNetworkError(server);
      } else {
        server.breaker.onCancel();
      }
      throw error;
    }
  }

  /** After an attempt: pin or unpin a transaction's connection, or give the connection back. */
  settle(
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
    this.#servers.checkIn(connection);
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
}
