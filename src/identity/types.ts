/**
 * Contracts of the identity layer: who a connection is, and the plug-ins that establish it.
 *
 * One `ConnectionAuthenticator` (authenticator.ts) per client connection drives the handshake
 * and authentication commands and dispatches to these plug-ins:
 * - SASL mechanisms (`SaslMechanism`): SCRAM-SHA-256 / SCRAM-SHA-1 verified at the proxy
 *   (scram-server.ts), the same relayed to the upstream (passthrough.ts), PLAIN with a JWT
 *   (plain-jwt.ts);
 * - the client certificate (certificates.ts): method `mtls` and `authMechanism=MONGODB-X509`;
 * - a listener's static tenant.
 * Nothing here imports sockets or the upstream layer: what a plug-in needs from outside comes
 * in through `IdentityServices`, which `main.ts` / the server layer provide.
 */
import type { Logger } from 'pino';
import type { IdentityMethod, ListenerConfig } from '../config/types.js';
import type { Document } from '../wire/bson.js';

/** A connection's verified tenant. Set once; never changes for the life of the connection. */
export interface TenantIdentity {
  readonly tenant: string;
  readonly method: IdentityMethod;
  /**
   * Who authenticated, for logs and the `connectionStatus`-like answers: `user@db` for SASL
   * users, the certificate subject (RFC 2253) for mTLS, `static` for a static tenant.
   * Never a secret.
   */
  readonly principal: string;
  /** The authenticated user and authentication database as a server reports them; absent for a static tenant. */
  readonly user?: { readonly user: string; readonly db: string };
}

/** What a successful mechanism reports; the authenticator turns it into a TenantIdentity. */
export interface AuthenticatedPrincipal {
  /** User name as the client named it (SASL) or the certificate subject (X.509). */
  user: string;
  /** The authentication database (`authSource`): `admin`, `$external`, … */
  db: string;
  tenant: string;
}

/** The client certificate of a TLS connection, already verified against the listener's CA. */
export interface PeerCertificate {
  /** DER bytes (`tlsSocket.getPeerCertificate(false).raw`). */
  raw: Buffer;
  /** Whether Node verified the chain (`tlsSocket.authorized`). */
  authorized: boolean;
}

/**
 * A connection to the upstream reserved for one client (scram-passthrough): the SCRAM
 * conversation is relayed over it, then the client's commands run over it too, so the
 * upstream's own RBAC applies. Provided by the server layer.
 */
export interface RelayConnection {
  /** Runs one command on the reserved connection and returns the reply document. */
  runCommand(db: string, command: Document): Promise<Document>;
  /** Gives the connection up (authentication failed or the client left). */
  discard(): void;
}

/** One step of a SASL exchange, as the server answers `saslStart` / `saslContinue`. */
export type SaslStepResult =
  | { done: false; payload: Buffer; conversation: SaslConversation }
  | {
      done: true;
      payload: Buffer;
      principal: AuthenticatedPrincipal;
      /** scram-passthrough: the authenticated upstream connection the client is now pinned to. */
      relay?: RelayConnection;
    };

export interface SaslConversation {
  /** The next client message (`saslContinue.payload`). */
  step(payload: Buffer): Promise<SaslStepResult>;
  /** The client went away or restarted authentication mid-conversation. */
  abandon?(): void;
}

export interface SaslStartRequest {
  /** The authentication database: `$db` of saslStart, or `db` inside speculativeAuthenticate. */
  db: string;
  payload: Buffer;
  /** saslStart `options`, e.g. `{skipEmptyExchange: true}`. */
  options: Document | undefined;
}

/** A SASL mechanism the proxy answers. Failures throw ProxyError(AuthenticationFailed). */
export interface SaslMechanism {
  /** As drivers spell it: `SCRAM-SHA-256`, `SCRAM-SHA-1`, `PLAIN`. */
  readonly name: string;
  start(request: SaslStartRequest, context: AuthAttemptContext): Promise<SaslStepResult>;
}

/** What one authentication attempt may know about its connection. */
export interface AuthAttemptContext {
  listener: ListenerConfig;
  remoteAddress: string;
  logger: Logger;
}

/**
 * Shared, hot-reloadable services (one set per proxy). Each is optional: a listener that
 * enables a method whose service is missing fails at start-up, not at connection time.
 */
export interface IdentityServices {
  /** Mechanisms answered by the proxy for method `scram` (SCRAM-SHA-256, SCRAM-SHA-1). */
  scram?: ScramService;
  /** Method `scram-passthrough`. */
  passthrough?: PassthroughService;
  /** Method `plain-jwt`. */
  jwt?: SaslMechanism;
  /** Methods `mtls` and MONGODB-X509. */
  certificates?: CertificateMapper;
  /** Slows down repeated failures (per user and per address). */
  throttle: FailureThrottle;
  /** Counts outcomes; bounded labels. */
  observer: AuthObserver;
}

export interface ScramService {
  mechanisms: readonly SaslMechanism[];
  /** `saslSupportedMechs: "db.user"` in hello: the user's mechanisms, or the defaults for an unknown user (no enumeration). */
  supportedMechanisms(db: string, user: string): string[];
}

export interface PassthroughService {
  /** SCRAM-SHA-256 / SCRAM-SHA-1 relayed to the upstream. */
  mechanisms: readonly SaslMechanism[];
}

export interface CertificateMapper {
  /** The tenant the ordered rules pick for this certificate, or undefined if none matches. */
  tenantOf(certificate: PeerCertificate): string | undefined;
  /** The subject as MongoDB writes it for MONGODB-X509 (RFC 2253, most specific RDN first). */
  subjectOf(certificate: PeerCertificate): string;
}

export interface FailureThrottle {
  /** Milliseconds to wait before answering a failure for this user / address. */
  delayFor(key: { user: string | undefined; address: string }): number;
  recordFailure(key: { user: string | undefined; address: string }): void;
  recordSuccess(key: { user: string | undefined; address: string }): void;
}

export type AuthOutcome = 'success' | 'failure';

/**
 * One authentication outcome, for metrics and the audit stream. Names only: the user name the
 * client gave is allowed, a password, token or SASL payload never is.
 */
export interface AuthenticationEvent {
  /** The listener's name. */
  listener: string;
  method: IdentityMethod;
  /** SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, MONGODB-X509, or `certificate` for the mapping at connect. */
  mechanism: string;
  outcome: AuthOutcome;
  /** The user the client claimed (SASL) or the certificate subject, when known. */
  user?: string;
  /** The tenant established (success) or already bound (a refused change of identity). */
  tenant?: string;
  remoteAddress: string;
  /** The proxy's id of the client connection, when the caller knows it. */
  connectionId?: number;
  /** Failure only: an error code name or a short fixed phrase, never input. */
  reason?: string;
}

export interface AuthObserver {
  authentication(event: AuthenticationEvent): void;
}
