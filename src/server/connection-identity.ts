/**
 * Who one client connection is, and what follows from it: its authenticator (rebuilt on a
 * reload until a tenant is established), the tenant it counts against the per-tenant connection
 * limit, the tenant's isolation engine, and, for scram-passthrough, the upstream connection its
 * commands must use. `routeState` is what routing reads of it.
 */
import { isDeepStrictEqual } from 'node:util';
import type { ListenerConfig } from '../config/types.js';
import { ProxyError } from '../errors.js';
import type { Logger } from 'pino';
import { ConnectionAuthenticator, type ConnectionAuthenticatorOptions } from '../identity/authenticator.js';
import type { IdentityServices, PeerCertificate } from '../identity/types.js';
import type { IsolationEngine, TenantEngine } from '../rewrite/engine.js';
import type { UpstreamSession } from '../upstream/upstream.js';
import type { ConnectionObserver } from './connection-observer.js';
import type { ConnectionState } from './route.js';
import type { TenantLimitExceeded, TenantLimits } from './tenant-limits.js';
import { UpstreamRelay } from './upstream-relay.js';

export interface IdentitySettings {
  listener: ListenerConfig;
  identity: IdentityServices;
}

export interface ConnectionIdentityOptions extends IdentitySettings {
  /** The settings in effect now (hot reload); a connection without a tenant follows them. */
  current?: (() => IdentitySettings) | undefined;
  peerCertificate: PeerCertificate | undefined;
  remoteAddress: string;
  /** `host:port` of the client as a server's whatsmyuri shows it (IPv6 in brackets). */
  clientAddress?: string;
  connectionId: number;
  observer: ConnectionObserver;
  tenantLimits: TenantLimits;
  /** For the log line of a refused connection. */
  maxConnectionsPerTenant: number;
  isolation: IsolationEngine;
  /** Gets the passthrough connection once a scram-passthrough client authenticated. */
  upstreamSession: UpstreamSession;
  /** Told when the tenant was just counted (may run inside the constructor: mtls/static tenants are known at connect). */
  counted?: { tenantCounted(tenant: string): void };
}

/**
 * Also the state routing reads (ConnectionState): `routeState()` is the identity itself, whose
 * tenant engine is made the first time routing asks for it (a command that is not the handshake,
 * authentication or connectionStatus), so an idle connection holds none (issue 16).
 */
export class ConnectionIdentity implements ConnectionState {
  #authenticator: ConnectionAuthenticator;
  /**
   * The authenticator's options: also what it was built from (its listener and services are
   * compared with `options.current` before each message; no copy of them per connection).
   */
  #built: AuthenticatorOptions;
  #countedTenant: string | undefined;
  #overConnectionLimit: TenantLimitExceeded | undefined;
  #engine: TenantEngine | undefined;
  /** Why the tenant cannot be isolated (e.g. not representable as the configured type). */
  #engineError: ProxyError | undefined;
  /** The counted tenant's engine is due: made on first use (`#engineNeeded`), not at establishment. */
  #enginePending = false;

  constructor(private readonly options: ConnectionIdentityOptions) {
    this.#built = new AuthenticatorOptions(options.listener, options.identity, options);
    this.#authenticator = new ConnectionAuthenticator(this.#built);
    this.settle();
  }

  /** Answers the handshake's authentication fields and the authentication commands. */
  get authenticator(): ConnectionAuthenticator {
    return this.#authenticator;
  }

  /** The connection's tenant once authentication established it (counted or over the limit). */
  get tenant(): string | undefined {
    return this.#authenticator.identity?.tenant;
  }

  /** The tenant counted in the per-tenant connection gauge and limits. */
  get countedTenant(): string | undefined {
    return this.#countedTenant;
  }

  /**
   * The tenant already had `limits.maxConnectionsPerTenant` connections when this one established
   * it: every command gets this error and the connection is closed after the first reply.
   */
  get overConnectionLimit(): TenantLimitExceeded | undefined {
    return this.#overConnectionLimit;
  }

  /**
   * Checks and rewrites every command once the tenant is known (src/rewrite/engine.ts). Made on
   * the first read after the tenant was counted: read it only for a command the engine decides.
   */
  get engine(): TenantEngine | undefined {
    if (this.#enginePending) this.#makeEngine();
    return this.#engine;
  }

  /** Why the counted tenant has no engine (read after `engine`, as routing does). */
  get engineError(): ProxyError | undefined {
    if (this.#enginePending) this.#makeEngine();
    return this.#engineError;
  }

  /** The refusal of a command that needs a tenant (the authenticator knows what is missing). */
  unauthorized(command: string): ProxyError {
    return this.#authenticator.unauthorized(command);
  }

  /** What routing reads: this identity (its engine made only if routing reaches the engine). */
  routeState(): ConnectionState {
    return this;
  }

  /** Throws when this connection's tenant was over `maxConnectionsPerTenant` when established. */
  refuseIfOverConnectionLimit(): void {
    if (this.#overConnectionLimit !== undefined) throw this.#overConnectionLimit;
  }

  /**
   * Until a tenant is established, authentication follows reloads: a method or credential a
   * reload removed must not stay usable on a connection opened (or a SASL conversation begun)
   * before it. Once established, the tenant never changes, so nothing is rebuilt.
   */
  followReload(): void {
    const now = this.options.current?.();
    if (now === undefined || this.#authenticator.identity !== undefined) return;
    const built = this.#built;
    // Unrelated reloads (a new log level) replace the listener object too: compare its settings.
    if (now.identity === built.services && isDeepStrictEqual(now.listener, built.listener)) return;
    this.#authenticator.close();
    this.#built = new AuthenticatorOptions(now.listener, now.identity, this.options);
    this.#authenticator = new ConnectionAuthenticator(this.#built);
    this.settle();
  }

  /**
   * After anything that may have established the tenant (connect, hello, an authentication step):
   * counts a new tenant against its connection limit, attaches it to logs and metrics, and pins a
   * passthrough relay.
   */
  settle(): void {
    const { observer } = this.options;
    const identity = this.#authenticator.identity;
    if (identity !== undefined && this.#countedTenant === undefined && this.#overConnectionLimit === undefined) {
      const refusal = this.options.tenantLimits.openConnection(identity.tenant);
      if (refusal !== undefined) {
        this.#overConnectionLimit = refusal;
        observer.tenantOverConnectionLimit(identity, refusal, this.options.maxConnectionsPerTenant);
        return;
      }
      this.#countedTenant = identity.tenant;
      observer.tenantEstablished(identity);
      this.options.counted?.tenantCounted(identity.tenant);
      this.#enginePending = true;
    }
    const relay = this.#authenticator.relay;
    if (relay instanceof UpstreamRelay) {
      // From now on this client's commands run as the user the upstream authenticated, on that
      // connection only: never on a pooled one (the proxy's own credentials).
      this.options.upstreamSession.dedicated = relay.connection;
    }
  }

  #makeEngine(): void {
    this.#enginePending = false;
    const tenant = this.#countedTenant;
    if (tenant === undefined) return;
    try {
      this.#engine = this.options.isolation.forTenant(
        tenant,
        this.options.clientAddress === undefined ? {} : { clientAddress: this.options.clientAddress },
      );
    } catch (error) {
      if (!ProxyError.is(error)) throw error;
      this.#engineError = error;
      this.options.observer.logger.error({ code: error.codeName }, `tenant cannot be isolated: ${error.message}`);
    }
  }

  /** The client left: a half-finished conversation is abandoned, the tenant's connection and cursors released. */
  close(): void {
    this.#enginePending = false;
    this.#authenticator.close();
    // Its cursors are killed upstream (issue 15): nobody else may continue them.
    this.#engine?.close();
    if (this.#countedTenant !== undefined) this.options.tenantLimits.closeConnection(this.#countedTenant);
  }
}

/** The authenticator's options; its logger is the connection's, read (and so made) only to write a line. */
class AuthenticatorOptions implements ConnectionAuthenticatorOptions {
  readonly listener: ListenerConfig;
  readonly services: IdentityServices;
  readonly remoteAddress: string;
  readonly peerCertificate: PeerCertificate | undefined;
  readonly connectionId: number;
  readonly #observer: ConnectionObserver;

  constructor(listener: ListenerConfig, services: IdentityServices, options: ConnectionIdentityOptions) {
    this.listener = listener;
    this.services = services;
    this.remoteAddress = options.remoteAddress;
    this.peerCertificate = options.peerCertificate;
    this.connectionId = options.connectionId;
    this.#observer = options.observer;
  }

  get logger(): Logger {
    return this.#observer.logger;
  }

  info(fields: Record<string, unknown>, message: string): void {
    if (this.#observer.info !== undefined) this.#observer.info(message, fields);
    else this.#observer.logger.info(fields, message);
  }
}
