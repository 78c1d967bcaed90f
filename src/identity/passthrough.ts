/**
 * Method `scram-passthrough`: a client's SCRAM-SHA-256 / SCRAM-SHA-1 conversation is relayed to
 * the upstream over a connection reserved for that client (`RelayConnection`), so users that
 * already live in MongoDB keep their passwords there. When the upstream says the conversation is
 * done, the proxy asks it who authenticated (`connectionStatus`) and maps that user to a tenant
 * with the ordered `identity.passthrough.rules`.
 *
 * Fail closed: if the upstream refuses, errors, cannot name exactly one authenticated user, or no
 * rule matches, the relay is discarded and the client gets AuthenticationFailed (always the same
 * text). On success the relay is handed to the authenticator, which pins the client's commands
 * to it so the upstream's own RBAC applies.
 *
 * SASL payloads are relayed as opaque bytes and never logged.
 */
import { ConfigError, ErrorCodes, ProxyError } from '../errors.js';
import type { PassthroughRule } from '../config/types.js';
import { Binary, type Document } from '../wire/bson.js';
import type {
  AuthAttemptContext,
  AuthenticatedPrincipal,
  PassthroughService,
  RelayConnection,
  SaslConversation,
  SaslMechanism,
  SaslStartRequest,
  SaslStepResult,
} from './types.js';

export const PASSTHROUGH_MECHANISMS = ['SCRAM-SHA-256', 'SCRAM-SHA-1'] as const;

export interface PassthroughServiceOptions {
  /** Ordered: the first rule that matches the authenticated user picks the tenant. */
  rules: readonly PassthroughRule[];
  /** A fresh upstream connection that has said hello but NOT authenticated. */
  openRelay: () => Promise<RelayConnection>;
  /** Mechanisms relayed; default SCRAM-SHA-256 and SCRAM-SHA-1. */
  mechanisms?: readonly string[];
}

/** A user the upstream reports as authenticated, with the roles it reports for the connection. */
export interface UpstreamUser {
  user: string;
  db: string;
  /** `authenticatedUserRoles` of connectionStatus. */
  roles: ReadonlyArray<{ role: string; db: string }>;
}

/** A validated rule: exactly one of the three matchers, and a way to name the tenant. */
type CompiledRule =
  | { kind: 'user'; user: string; db: string | undefined; tenant: string }
  | { kind: 'pattern'; pattern: RegExp; db: string | undefined; tenant: string | undefined }
  | { kind: 'role'; role: string; roleDb: string | undefined; tenant: string };

const RULES_PATH = 'identity.passthrough.rules';

function authenticationFailed(cause?: unknown): ProxyError {
  return new ProxyError(
    ErrorCodes.AuthenticationFailed,
    'Authentication failed.',
    cause === undefined ? {} : { cause },
  );
}

function nonEmpty(value: unknown): value is string {
  return typeof value === 'string' && value.length > 0;
}

/**
 * Checks and compiles the rules; throws ConfigError naming the bad rule (config/checks.ts reports
 * the same mistakes when the file is loaded; this guards other callers). A `userPattern` must
 * match the whole user name (it is anchored), so `svc-(?<tenant>[a-z]+)` does not match
 * `evil-svc-blue`.
 */
export function compilePassthroughRules(rules: readonly PassthroughRule[]): CompiledRule[] {
  return rules.map((rule, index): CompiledRule => {
    const path = `${RULES_PATH}[${index}]`;
    const matchers = [rule.user, rule.userPattern, rule.role].filter((m) => m !== undefined);
    if (matchers.length !== 1) {
      throw new ConfigError(path, 'a rule needs exactly one of user, userPattern and role');
    }
    if (rule.db !== undefined && !nonEmpty(rule.db)) throw new ConfigError(`${path}.db`, 'must not be empty');
    if (rule.tenant !== undefined && !nonEmpty(rule.tenant)) {
      throw new ConfigError(`${path}.tenant`, 'must not be empty');
    }
    if (rule.user !== undefined) {
      if (!nonEmpty(rule.user)) throw new ConfigError(`${path}.user`, 'must not be empty');
      if (rule.tenant === undefined) throw new ConfigError(`${path}.tenant`, 'is required for a user rule');
      return { kind: 'user', user: rule.user, db: rule.db, tenant: rule.tenant };
    }
    if (rule.userPattern !== undefined) {
      let pattern: RegExp;
      try {
        pattern = new RegExp(`^(?:${rule.userPattern})$`);
      } catch (error) {
        throw new ConfigError(`${path}.userPattern`, `not a valid regular expression (${(error as Error).message})`);
      }
      const hasTenantGroup = /\(\?<tenant>/.test(rule.userPattern);
      if (!hasTenantGroup && rule.tenant === undefined) {
        throw new ConfigError(`${path}.tenant`, 'is required unless userPattern has a named group "tenant"');
      }
      if (hasTenantGroup && rule.tenant !== undefined) {
        throw new ConfigError(`${path}.tenant`, 'conflicts with the "tenant" group of userPattern; set only one');
      }
      return { kind: 'pattern', pattern, db: rule.db, tenant: rule.tenant };
    }
    const role = rule.role as string;
    const at = role.lastIndexOf('@');
    const roleName = at >= 0 ? role.slice(0, at) : role;
    const suffixDb = at >= 0 ? role.slice(at + 1) : undefined;
    if (!nonEmpty(roleName) || (suffixDb !== undefined && !nonEmpty(suffixDb))) {
      throw new ConfigError(`${path}.role`, 'must be "role" or "role@db"');
    }
    if (suffixDb !== undefined && rule.db !== undefined && suffixDb !== rule.db) {
      throw new ConfigError(`${path}.db`, `conflicts with the database in role "${role}"; set only one`);
    }
    if (rule.tenant === undefined) throw new ConfigError(`${path}.tenant`, 'is required for a role rule');
    return { kind: 'role', role: roleName, roleDb: suffixDb ?? rule.db, tenant: rule.tenant };
  });
}

/**
 * The tenant the first matching rule gives `user`, or undefined. On user and userPattern rules
 * `db` is the user's authentication database; on role rules it is the role's database (as is
 * the `@db` of `role@db`). Unset matches any.
 */
export function mapUserToTenant(rules: readonly CompiledRule[], user: UpstreamUser): string | undefined {
  for (const rule of rules) {
    switch (rule.kind) {
      case 'user':
        if (rule.user === user.user && (rule.db === undefined || rule.db === user.db)) return rule.tenant;
        break;
      case 'pattern': {
        if (rule.db !== undefined && rule.db !== user.db) break;
        const match = rule.pattern.exec(user.user);
        if (match === null) break;
        const tenant = rule.tenant ?? match.groups?.tenant;
        // A tenant group that matched nothing does not make a match.
        if (nonEmpty(tenant)) return tenant;
        break;
      }
      case 'role':
        if (user.roles.some((r) => r.role === rule.role && (rule.roleDb === undefined || r.db === rule.roleDb))) {
          return rule.tenant;
        }
        break;
    }
  }
  return undefined;
}

/**
 * Reads `connectionStatus` (`showPrivileges: false`): the one authenticated user and its roles,
 * or undefined when the reply does not name exactly one user.
 */
export function authenticatedUserOf(reply: Document): UpstreamUser | undefined {
  if (reply.ok !== 1) return undefined;
  const authInfo: unknown = reply.authInfo;
  if (typeof authInfo !== 'object' || authInfo === null) return undefined;
  const { authenticatedUsers, authenticatedUserRoles } = authInfo as Document;
  if (!Array.isArray(authenticatedUsers) || authenticatedUsers.length !== 1) return undefined;
  const only: unknown = authenticatedUsers[0];
  if (typeof only !== 'object' || only === null) return undefined;
  const { user, db } = only as Document;
  if (!nonEmpty(user) || !nonEmpty(db)) return undefined;
  const roles: Array<{ role: string; db: string }> = [];
  if (Array.isArray(authenticatedUserRoles)) {
    for (const entry of authenticatedUserRoles as unknown[]) {
      if (typeof entry !== 'object' || entry === null) continue;
      const { role, db: roleDb } = entry as Document;
      if (nonEmpty(role) && nonEmpty(roleDb)) roles.push({ role, db: roleDb });
    }
  }
  return { user, db, roles };
}

/** A SASL payload as the upstream sent it: Buffer (promoteBuffers), BSON Binary or Uint8Array. */
function payloadOf(value: unknown): Buffer | undefined {
  if (value instanceof Binary) return Buffer.from(value.buffer.buffer, value.buffer.byteOffset, value.position);
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return undefined;
}

/** saslStart options relayed upstream: only the ones SCRAM defines, so a client cannot inject others. */
function relayedOptions(options: Document | undefined): Document | undefined {
  if (options === undefined || typeof options.skipEmptyExchange !== 'boolean') return undefined;
  return { skipEmptyExchange: options.skipEmptyExchange };
}

class RelayedConversation implements SaslConversation {
  readonly #relay: RelayConnection;
  readonly #db: string;
  readonly #rules: readonly CompiledRule[];
  readonly #logger: AuthAttemptContext['logger'];
  readonly #mechanism: string;
  #upstreamConversationId: unknown;
  /** Set once the relay is discarded or handed over; no further step may use it. */
  #finished = false;
  #busy = false;

  constructor(
    relay: RelayConnection,
    mechanism: string,
    db: string,
    rules: readonly CompiledRule[],
    logger: AuthAttemptContext['logger'],
  ) {
    this.#relay = relay;
    this.#mechanism = mechanism;
    this.#db = db;
    this.#rules = rules;
    this.#logger = logger;
  }

  async begin(request: SaslStartRequest): Promise<SaslStepResult> {
    const command: Document = { saslStart: 1, mechanism: this.#mechanism, payload: request.payload };
    const options = relayedOptions(request.options);
    if (options !== undefined) command.options = options;
    return this.#exchange(command);
  }

  step(payload: Buffer): Promise<SaslStepResult> {
    return this.#exchange({ saslContinue: 1, conversationId: this.#upstreamConversationId, payload });
  }

  abandon(): void {
    this.#discard();
  }

  async #exchange(command: Document): Promise<SaslStepResult> {
    if (this.#finished || this.#busy) {
      // A step after the end, or two at once: the client is not following SCRAM.
      this.#discard();
      throw authenticationFailed();
    }
    this.#busy = true;
    try {
      let reply: Document;
      try {
        reply = await this.#relay.runCommand(this.#db, command);
      } catch (error) {
        this.#logger.debug({ err: error, mechanism: this.#mechanism }, 'upstream refused the relayed SASL step');
        throw this.#fail(error);
      }
      if (this.#finished) throw authenticationFailed(); // abandoned while the upstream answered
      if (reply.ok !== 1) {
        this.#logger.debug({ mechanism: this.#mechanism, code: reply.code }, 'upstream refused the relayed SASL step');
        throw this.#fail();
      }
      const payload = payloadOf(reply.payload);
      if (payload === undefined || typeof reply.done !== 'boolean' || reply.conversationId === undefined) {
        this.#logger.warn({ mechanism: this.#mechanism }, 'upstream SASL reply lacks payload, done or conversationId');
        throw this.#fail();
      }
      this.#upstreamConversationId = reply.conversationId;
      if (!reply.done) return { done: false, payload, conversation: this };
      const principal = await this.#confirm();
      if (this.#finished) throw authenticationFailed(); // abandoned while the upstream answered
      this.#finished = true; // the relay now belongs to the authenticator
      return { done: true, payload, principal, relay: this.#relay };
    } finally {
      this.#busy = false;
    }
  }

  /** Asks the upstream who authenticated and maps that user to a tenant. */
  async #confirm(): Promise<AuthenticatedPrincipal> {
    let status: Document;
    try {
      status = await this.#relay.runCommand('admin', { connectionStatus: 1, showPrivileges: false });
    } catch (error) {
      this.#logger.warn({ err: error }, 'scram-passthrough: upstream connectionStatus failed; refusing (fail closed)');
      throw this.#fail(error);
    }
    const user = authenticatedUserOf(status);
    if (user === undefined) {
      this.#logger.warn(
        'scram-passthrough: upstream did not report exactly one authenticated user; refusing (fail closed)',
      );
      throw this.#fail();
    }
    const tenant = mapUserToTenant(this.#rules, user);
    if (tenant === undefined) {
      this.#logger.warn(
        { user: user.user, db: user.db },
        'scram-passthrough: no identity.passthrough.rules entry matches the authenticated user; refusing',
      );
      throw this.#fail();
    }
    return { user: user.user, db: user.db, tenant };
  }

  #fail(cause?: unknown): ProxyError {
    this.#discard();
    return authenticationFailed(cause);
  }

  #discard(): void {
    if (this.#finished) return;
    this.#finished = true;
    try {
      this.#relay.discard();
    } catch (error) {
      this.#logger.debug({ err: error }, 'discarding the relay connection failed');
    }
  }
}

class PassthroughMechanism implements SaslMechanism {
  readonly name: string;
  readonly #rules: readonly CompiledRule[];
  readonly #openRelay: () => Promise<RelayConnection>;

  constructor(name: string, rules: readonly CompiledRule[], openRelay: () => Promise<RelayConnection>) {
    this.name = name;
    this.#rules = rules;
    this.#openRelay = openRelay;
  }

  async start(request: SaslStartRequest, context: AuthAttemptContext): Promise<SaslStepResult> {
    let relay: RelayConnection;
    try {
      relay = await this.#openRelay();
    } catch (error) {
      context.logger.warn({ err: error }, 'scram-passthrough: could not open a relay connection to the upstream');
      throw authenticationFailed(error);
    }
    const conversation = new RelayedConversation(relay, this.name, request.db, this.#rules, context.logger);
    return conversation.begin(request);
  }
}

export function createPassthroughService(options: PassthroughServiceOptions): PassthroughService {
  const rules = compilePassthroughRules(options.rules);
  const names = options.mechanisms ?? PASSTHROUGH_MECHANISMS;
  const mechanisms = [...new Set(names)].map((name) => {
    if (!(PASSTHROUGH_MECHANISMS as readonly string[]).includes(name)) {
      throw new ConfigError(
        'identity.passthrough.mechanisms',
        `unsupported mechanism "${name}" (SCRAM-SHA-256 or SCRAM-SHA-1)`,
      );
    }
    return new PassthroughMechanism(name, rules, options.openRelay);
  });
  return { mechanisms };
}
