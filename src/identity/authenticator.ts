/**
 * One per client connection: establishes the connection's tenant and answers the handshake and
 * authentication commands. Rules that hold whatever the method (issue "Tenant identity"):
 * - before a tenant exists only PRE_AUTH_COMMANDS are answered; the caller refuses the rest;
 * - the tenant never changes; authenticating again as another identity is refused;
 * - every failure is the same `AuthenticationFailed`, delayed by the throttle, counted, logged
 *   without secrets.
 */
import type { Logger } from 'pino';
import type { IdentityMethod, ListenerConfig } from '../config/types.js';
import { ErrorCodes, ProxyError } from '../errors.js';
import { Binary, type Document } from '../wire/bson.js';
import type {
  AuthenticatedPrincipal,
  AuthenticationEvent,
  IdentityServices,
  PeerCertificate,
  RelayConnection,
  SaslConversation,
  SaslMechanism,
  SaslStepResult,
  TenantIdentity,
} from './types.js';

/** Commands answered before a tenant is established (everything else: Unauthorized). */
export const PRE_AUTH_COMMANDS: ReadonlySet<string> = new Set([
  'hello',
  'isMaster',
  'ismaster',
  'ping',
  'buildInfo',
  'buildinfo',
  'saslStart',
  'saslContinue',
  'authenticate',
  'endSessions',
  'logout',
  // Answered by the proxy itself from the connection's own state; reveals nothing else.
  'connectionStatus',
]);

/** The commands this class answers. */
export const AUTH_COMMANDS: ReadonlySet<string> = new Set(['saslStart', 'saslContinue', 'authenticate', 'logout']);

const X509 = 'MONGODB-X509';
/** The `mechanism` of the client certificate's mapping at connect (method mtls, no command). */
const CERTIFICATE_MAPPING = 'certificate';
const FAILED = 'Authentication failed.';

export interface ConnectionAuthenticatorOptions {
  listener: ListenerConfig;
  services: IdentityServices;
  remoteAddress: string;
  /** The verified client certificate of a TLS connection, if any. */
  peerCertificate: PeerCertificate | undefined;
  /** The connection's logger (may be a getter that makes it: read only to write a line). */
  logger: Logger;
  /**
   * Writes an info line with the connection's fields without reading `logger` (a connection's
   * logger is made on first use); absent: `logger.info`.
   */
  info?(fields: Record<string, unknown>, message: string): void;
  /** The proxy's id of the client connection, reported with authentication outcomes. */
  connectionId?: number;
}

interface ActiveConversation {
  id: number;
  mechanism: string;
  user: string | undefined;
  conversation: SaslConversation;
}

export class ConnectionAuthenticator {
  #identity: TenantIdentity | undefined;
  #relay: RelayConnection | undefined;
  /** Why the connection has no tenant although it presented something (for error messages). */
  #pendingReason: string | undefined;
  #conversation: ActiveConversation | undefined;
  #nextConversationId = 1;
  readonly #methods: ReadonlySet<IdentityMethod>;
  readonly #mechanisms: ReadonlyMap<string, SaslMechanism>;

  constructor(private readonly options: ConnectionAuthenticatorOptions) {
    const { listener, services } = options;
    this.#methods = methodSetOf(listener.methods);
    this.#mechanisms = saslMechanismsFor(listener.methods, services);
    if (this.#methods.has('static') && listener.staticTenant !== null) {
      this.#identity = { tenant: listener.staticTenant, method: 'static', principal: 'static' };
    } else if (this.#methods.has('mtls')) {
      this.#identityFromCertificate();
    }
    if (this.#identity !== undefined) this.#established('connect');
  }

  /** The connection's tenant, once established. */
  get identity(): TenantIdentity | undefined {
    return this.#identity;
  }

  /** scram-passthrough: the client-authenticated upstream connection its commands must use. */
  get relay(): RelayConnection | undefined {
    return this.#relay;
  }

  /** The error for a command refused because no tenant is established. */
  unauthorized(commandName: string): ProxyError {
    const why = this.#pendingReason ?? 'authenticate first';
    return new ProxyError(ErrorCodes.Unauthorized, `command ${commandName} requires authentication: ${why}`);
  }

  /** Extra hello reply fields: `saslSupportedMechs` and `speculativeAuthenticate`. */
  async helloFields(request: Document): Promise<Document> {
    const fields: Document = {};
    if (typeof request.saslSupportedMechs === 'string') {
      const mechs = this.#supportedMechanisms(request.saslSupportedMechs);
      if (mechs.length > 0) fields.saslSupportedMechs = mechs;
    }
    const speculative: unknown = request.speculativeAuthenticate;
    if (isDocument(speculative)) {
      try {
        const reply = await this.#speculative(speculative);
        if (reply !== undefined) fields.speculativeAuthenticate = reply;
      } catch (error) {
        // As a server does: a failed speculative attempt is simply not answered; the driver
        // then authenticates normally and gets the error there.
        if (!ProxyError.is(error)) throw error;
      }
    }
    return fields;
  }

  /** Answers saslStart, saslContinue, authenticate and logout. */
  async handle(commandName: string, command: Document, db: string): Promise<Document> {
    switch (commandName) {
      case 'saslStart':
        return this.#saslStart(command, db);
      case 'saslContinue':
        return this.#saslContinue(command);
      case 'authenticate':
        return this.#authenticate(command, db);
      case 'logout':
        // The tenant of a connection never changes, so logout cannot undo it; answer as servers do.
        return { ok: 1 };
      default:
        throw new ProxyError(ErrorCodes.CommandNotFound, `no such authentication command: ${commandName}`);
    }
  }

  /** The proxy's own `connectionStatus`: who this connection is, nothing about anyone else. */
  connectionStatus(): Document {
    const identity = this.#identity;
    const users = identity?.user === undefined ? [] : [{ user: identity.user.user, db: identity.user.db }];
    const reply: Document = { authInfo: { authenticatedUsers: users, authenticatedUserRoles: [] } };
    if (identity !== undefined) {
      reply.tenant = identity.tenant;
      reply.identityMethod = identity.method;
    }
    reply.ok = 1;
    return reply;
  }

  /**
   * The client went away: abandon a half-finished conversation and close the passthrough relay,
   * which belongs to this client alone (nobody else would ever close it).
   */
  close(): void {
    this.#conversation?.conversation.abandon?.();
    this.#conversation = undefined;
    this.#relay?.discard();
    this.#relay = undefined;
  }

  // --- SASL ---------------------------------------------------------------------------------

  async #speculative(request: Document): Promise<Document | undefined> {
    if (request.saslStart !== undefined) {
      const db = typeof request.db === 'string' ? request.db : 'admin';
      const reply = await this.#saslStart(request, db, true);
      const { ok: _ok, ...rest } = reply;
      return rest;
    }
    if (request.authenticate !== undefined) {
      const db = typeof request.db === 'string' ? request.db : '$external';
      const reply = await this.#authenticate(request, db, true);
      const { ok: _ok, ...rest } = reply;
      return rest;
    }
    return undefined;
  }

  /** `speculative`: the attempt inside hello, which drivers make with a guessed mechanism. */
  async #saslStart(command: Document, db: string, speculative = false): Promise<Document> {
    const mechanismName = command.mechanism;
    const mechanism = typeof mechanismName === 'string' ? this.#mechanisms.get(mechanismName) : undefined;
    if (mechanism === undefined) {
      throw new ProxyError(
        ErrorCodes.MechanismUnavailable,
        `Received authentication for mechanism ${String(mechanismName)} which is not enabled on this listener`,
      );
    }
    const payload = bytesOf(command.payload);
    const user = saslUser(mechanism.name, payload);
    this.#conversation?.conversation.abandon?.();
    this.#conversation = undefined;
    const step = await this.#attempt(
      mechanism.name,
      user,
      () =>
        mechanism.start(
          { db, payload, options: isDocument(command.options) ? command.options : undefined },
          { listener: this.options.listener, remoteAddress: this.options.remoteAddress, logger: this.options.logger },
        ),
      speculative,
    );
    const id = this.#nextConversationId++;
    if (!step.done) this.#conversation = { id, mechanism: mechanism.name, user, conversation: step.conversation };
    return this.#stepReply(id, step, mechanism.name);
  }

  async #saslContinue(command: Document): Promise<Document> {
    const active = this.#conversation;
    if (active === undefined || Number(command.conversationId) !== active.id) {
      throw new ProxyError(ErrorCodes.ProtocolError, 'No SASL session state found');
    }
    const payload = bytesOf(command.payload);
    this.#conversation = undefined;
    const step = await this.#attempt(active.mechanism, active.user, () => active.conversation.step(payload));
    if (!step.done) this.#conversation = { ...active, conversation: step.conversation };
    return this.#stepReply(active.id, step, active.mechanism);
  }

  #stepReply(conversationId: number, step: SaslStepResult, mechanism: string): Document {
    if (step.done) this.#bind(step.principal, mechanism, step.relay);
    return { conversationId, done: step.done, payload: new Binary(step.payload), ok: 1 };
  }

  // --- MONGODB-X509 -------------------------------------------------------------------------

  async #authenticate(command: Document, db: string, speculative = false): Promise<Document> {
    if (command.mechanism !== X509) {
      throw new ProxyError(
        ErrorCodes.MechanismUnavailable,
        `Received authentication for mechanism ${String(command.mechanism)} which is not supported by authenticate`,
      );
    }
    const claimedUser = typeof command.user === 'string' ? command.user : undefined;
    const principal = await this.#attempt(
      X509,
      claimedUser,
      async () => {
        const mapper = this.options.services.certificates;
        const certificate = this.options.peerCertificate;
        if (
          !this.#methods.has('mtls') ||
          mapper === undefined ||
          certificate === undefined ||
          !certificate.authorized
        ) {
          throw failed();
        }
        if (db !== '$external') throw failed();
        const subject = mapper.subjectOf(certificate);
        if (claimedUser !== undefined && claimedUser !== subject) throw failed();
        const tenant = mapper.tenantOf(certificate);
        if (tenant === undefined) throw failed();
        return { user: subject, db: '$external', tenant };
      },
      speculative,
    );
    this.#bind(principal, X509, undefined);
    return { dbname: '$external', user: principal.user, ok: 1 };
  }

  // --- shared ---------------------------------------------------------------------------------

  /**
   * Runs one authentication step with throttling, counting and logging of failures. A failed
   * speculative step (inside hello) is not a failure yet: drivers guess SCRAM-SHA-256 there even
   * for SHA-1-only users, then authenticate properly, so it is neither delayed nor counted.
   */
  async #attempt<T>(
    mechanism: string,
    user: string | undefined,
    run: () => Promise<T>,
    speculative = false,
  ): Promise<T> {
    const { services, remoteAddress, logger } = this.options;
    const key = { user, address: remoteAddress };
    try {
      return await run();
    } catch (error) {
      if (speculative) {
        logger.debug({ mechanism, user }, 'speculative authentication not accepted');
        throw ProxyError.is(error) ? error : failed();
      }
      const delay = services.throttle.delayFor(key);
      services.throttle.recordFailure(key);
      this.#report({
        method: methodOfMechanism(mechanism, this.#methods),
        mechanism,
        outcome: 'failure',
        user,
        reason: ProxyError.is(error) ? error.codeName : 'InternalError',
      });
      logger.warn({ mechanism, user, delayMs: delay }, 'authentication failed');
      if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
      // Whatever went wrong inside, the client learns only that it failed.
      if (
        ProxyError.is(error) &&
        error.code !== ErrorCodes.AuthenticationFailed &&
        error.code !== ErrorCodes.MechanismUnavailable
      ) {
        logger.debug({ code: error.codeName }, error.message);
      }
      if (!ProxyError.is(error)) logger.error({ err: error }, 'authentication mechanism error');
      throw ProxyError.is(error) && error.code === ErrorCodes.MechanismUnavailable ? error : failed();
    }
  }

  /** Binds the principal's tenant to the connection, or refuses a change of identity. */
  #bind(principal: AuthenticatedPrincipal, mechanism: string, relay: RelayConnection | undefined): void {
    const method = methodOfMechanism(mechanism, this.#methods);
    const { services, remoteAddress, logger } = this.options;
    const principalName = method === 'mtls' ? principal.user : `${principal.user}@${principal.db}`;
    const current = this.#identity;
    if (
      current !== undefined &&
      (current.tenant !== principal.tenant ||
        (current.method !== 'static' && current.method !== 'mtls' && current.principal !== principalName))
    ) {
      relay?.discard();
      this.#report({
        method,
        mechanism,
        outcome: 'failure',
        user: principal.user,
        tenant: current.tenant,
        reason: 'already authenticated as another identity',
      });
      logger.warn({ tenant: current.tenant, method }, 'refused re-authentication as another identity');
      throw new ProxyError(
        ErrorCodes.AuthenticationFailed,
        'this connection is already authenticated as another identity; open a new connection',
      );
    }
    services.throttle.recordSuccess({ user: principal.user, address: remoteAddress });
    this.#report({ method, mechanism, outcome: 'success', user: principal.user, tenant: principal.tenant });
    if (relay !== undefined) {
      this.#relay?.discard();
      this.#relay = relay;
    }
    if (current === undefined) {
      this.#identity = {
        tenant: principal.tenant,
        method,
        principal: principalName,
        user: { user: principal.user, db: principal.db },
      };
      this.#established('authenticate');
    }
  }

  #identityFromCertificate(): void {
    const mapper = this.options.services.certificates;
    const certificate = this.options.peerCertificate;
    if (mapper === undefined || certificate === undefined || !certificate.authorized) {
      this.#pendingReason = 'no verified client certificate';
      return;
    }
    const tenant = mapper.tenantOf(certificate);
    if (tenant === undefined) {
      this.#pendingReason = 'the client certificate matches no tenant mapping rule';
      this.#report({
        method: 'mtls',
        mechanism: CERTIFICATE_MAPPING,
        outcome: 'failure',
        user: mapper.subjectOf(certificate),
        reason: 'no tenant mapping rule matches',
      });
      this.options.logger.warn('client certificate matches no tenant mapping rule');
      return;
    }
    const subject = mapper.subjectOf(certificate);
    this.#identity = { tenant, method: 'mtls', principal: subject, user: { user: subject, db: '$external' } };
    this.#report({ method: 'mtls', mechanism: CERTIFICATE_MAPPING, outcome: 'success', user: subject, tenant });
  }

  /** Counts and audits one authentication outcome, with this connection's listener and address. */
  #report(event: Omit<AuthenticationEvent, 'listener' | 'remoteAddress' | 'connectionId'>): void {
    const { services, listener, remoteAddress, connectionId } = this.options;
    services.observer.authentication({
      ...event,
      listener: listener.name,
      remoteAddress,
      ...(connectionId === undefined ? {} : { connectionId }),
    });
  }

  #established(how: 'connect' | 'authenticate'): void {
    const identity = this.#identity;
    if (identity === undefined) return;
    const fields = { tenant: identity.tenant, method: identity.method, principal: identity.principal, how };
    if (this.options.info !== undefined) this.options.info(fields, 'tenant established');
    else this.options.logger.info(fields, 'tenant established');
  }

  #supportedMechanisms(namespacedUser: string): string[] {
    const dot = namespacedUser.indexOf('.');
    const db = dot < 0 ? 'admin' : namespacedUser.slice(0, dot);
    const user = dot < 0 ? namespacedUser : namespacedUser.slice(dot + 1);
    const { services } = this.options;
    if (this.#methods.has('scram') && services.scram !== undefined) return services.scram.supportedMechanisms(db, user);
    return [...this.#mechanisms.keys()].filter((name) => name.startsWith('SCRAM-'));
  }
}

/** The SASL mechanisms a listener answers, by name (config validation prevents clashes). */
/** The methods of a listener (its configuration is immutable), as one set shared by its connections. */
const methodSets = new WeakMap<readonly IdentityMethod[], ReadonlySet<IdentityMethod>>();

function methodSetOf(methods: readonly IdentityMethod[]): ReadonlySet<IdentityMethod> {
  let set = methodSets.get(methods);
  if (set === undefined) {
    set = new Set(methods);
    methodSets.set(methods, set);
  }
  return set;
}

/** Shared by every connection of a listener without a SASL method (static, mtls). */
const NO_MECHANISMS: ReadonlyMap<string, SaslMechanism> = new Map();

function saslMechanismsFor(
  methods: readonly IdentityMethod[],
  services: IdentityServices,
): ReadonlyMap<string, SaslMechanism> {
  if (!methods.some((method) => method === 'scram' || method === 'scram-passthrough' || method === 'plain-jwt'))
    return NO_MECHANISMS;
  const mechanisms = new Map<string, SaslMechanism>();
  const add = (list: readonly SaslMechanism[] | undefined): void => {
    for (const mechanism of list ?? []) if (!mechanisms.has(mechanism.name)) mechanisms.set(mechanism.name, mechanism);
  };
  for (const method of methods) {
    if (method === 'scram') add(services.scram?.mechanisms);
    else if (method === 'scram-passthrough') add(services.passthrough?.mechanisms);
    else if (method === 'plain-jwt' && services.jwt !== undefined) add([services.jwt]);
  }
  return mechanisms;
}

function methodOfMechanism(mechanism: string, methods: ReadonlySet<IdentityMethod>): IdentityMethod {
  if (mechanism === X509) return 'mtls';
  if (mechanism === 'PLAIN') return 'plain-jwt';
  return methods.has('scram') ? 'scram' : 'scram-passthrough';
}

function failed(): ProxyError {
  return new ProxyError(ErrorCodes.AuthenticationFailed, FAILED);
}

function isDocument(value: unknown): value is Document {
  return (
    typeof value === 'object' &&
    value !== null &&
    !Array.isArray(value) &&
    !(value instanceof Uint8Array) &&
    !(value instanceof Binary)
  );
}

function bytesOf(value: unknown): Buffer {
  if (value instanceof Binary) return Buffer.from(value.buffer);
  if (value instanceof Uint8Array) return Buffer.from(value);
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  throw new ProxyError(ErrorCodes.BadValue, 'payload must be binary data');
}

/**
 * The user named in a first SASL message, for throttling and logs only (the mechanism parses
 * it properly): SCRAM `n,,n=user,r=…`, PLAIN `authzid\0authcid\0password`.
 */
function saslUser(mechanism: string, payload: Buffer): string | undefined {
  if (mechanism === 'PLAIN') {
    const parts = payload.toString('utf8').split('\0');
    return parts.length === 3 ? parts[1] || undefined : undefined;
  }
  const match = /(?:^|,)n=([^,]*)/.exec(payload.toString('utf8'));
  return match?.[1]?.replace(/=2C/g, ',').replace(/=3D/g, '=');
}
