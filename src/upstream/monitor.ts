/**
 * Topology monitoring for one server (server-discovery-and-monitoring, "monitoring", reduced):
 * a dedicated, unauthenticated connection sends `hello` every `heartbeatFrequencyMS` and reports
 * each reply with its round-trip time, or the failure. `requestCheck()` asks for a check now
 * (after NotWritablePrimary or a network error on a pool connection), but never more often than
 * every MIN_HEARTBEAT_INTERVAL_MS. A failed check closes the connection; the next one reconnects.
 */
import { ErrorCodes, ProxyError } from '../errors.js';
import type { Document } from '../wire/bson.js';
import type { UpstreamConnection } from './connection.js';
import { runCommand } from './handshake.js';

/** The spec's minHeartbeatFrequencyMS: re-checks requested in a burst collapse into one. */
export const MIN_HEARTBEAT_INTERVAL_MS = 500;

export interface MonitorOptions {
  heartbeatFrequencyMS: number;
  /** Opens a connection that has said hello (no authentication needed). */
  open(): Promise<{ connection: UpstreamConnection; hello: Document }>;
  /** Bounds one check (connect or hello); the check fails past it. */
  timeoutMS: number;
  onHello(hello: Document, roundTripMS: number): void;
  /**
   * A check failed; `timedOut` when the server stayed silent (the check's timeout or a connect
   * timeout) rather than refusing or resetting: connections in use there are likely dead too.
   */
  onFailure(error: unknown, timedOut: boolean): void;
}

export class ServerMonitor {
  readonly #options: MonitorOptions;
  #connection: UpstreamConnection | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running = false;
  #checking = false;
  #stopped = false;
  #lastCheck = 0;
  #checkRequested = false;

  constructor(options: MonitorOptions) {
    this.#options = options;
  }

  /** Starts checking; the first check runs after `initialDelayMS` (0: now). */
  start(initialDelayMS = 0): void {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    this.#schedule(initialDelayMS);
  }

  /** Checks as soon as allowed (at most one check per MIN_HEARTBEAT_INTERVAL_MS). */
  requestCheck(): void {
    if (!this.#running || this.#stopped) return;
    if (this.#checking) {
      this.#checkRequested = true;
      return;
    }
    const wait = Math.max(0, this.#lastCheck + MIN_HEARTBEAT_INTERVAL_MS - Date.now());
    this.#schedule(wait);
  }

  stop(): void {
    this.#stopped = true;
    this.#running = false;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#connection?.close();
    this.#connection = undefined;
  }

  #schedule(delayMS: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#check();
    }, delayMS);
    this.#timer.unref();
  }

  async #check(): Promise<void> {
    if (this.#stopped || this.#checking) return;
    this.#checking = true;
    this.#checkRequested = false;
    this.#lastCheck = Date.now();
    const started = performance.now();
    let timedOut = false;
    const timer =
      this.#options.timeoutMS > 0
        ? setTimeout(() => {
            timedOut = true;
            this.#connection?.close();
          }, this.#options.timeoutMS)
        : undefined;
    try {
      let hello: Document;
      if (this.#connection === undefined || this.#connection.closed) {
        const opened = await this.#options.open();
        if (this.#stopped || timedOut) {
          opened.connection.close();
          throw new Error('monitoring check timed out');
        }
        this.#connection = opened.connection;
        hello = opened.hello;
      } else {
        hello = await runCommand(this.#connection, 'admin', { hello: 1 });
      }
      if (!this.#stopped) this.#options.onHello(hello, performance.now() - started);
    } catch (error) {
      this.#connection?.close();
      this.#connection = undefined;
      const silent = timedOut || (ProxyError.is(error) && error.code === ErrorCodes.NetworkTimeout);
      if (!this.#stopped) this.#options.onFailure(error, silent);
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      this.#checking = false;
    }
    if (this.#stopped) return;
    this.#schedule(this.#checkRequested ? MIN_HEARTBEAT_INTERVAL_MS : this.#options.heartbeatFrequencyMS);
  }
}
