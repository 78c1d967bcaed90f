/**
 * Typed errors, all defined here so every layer can raise and recognise them. This module imports
 * nothing: every layer may use it.
 *
 * Two families:
 * - `ProxyError` and its subclasses carry a MongoDB server error code and code name, so they turn
 *   into an `{ok: 0, errmsg, code, codeName}` reply that drivers raise like any server error.
 * - `CodedError` subclasses are about the proxy's own inputs (configuration, credentials and key
 *   files) or a broken internal invariant. They carry a stable string `code` (`MTP_ERR_…`) for
 *   programs and tests; an operator reads them, a client never gets one as such.
 *
 * Brands: each class here stamps its instances with a process-wide `Symbol.for` brand, and both
 * `instanceof` (through `Symbol.hasInstance`) and the static `is()` check that brand. An error made
 * by another copy of this module (a second install, a bundled CLI, a test runner's separate module
 * graph) is still recognised. A subclass declared elsewhere without its own `brand` keeps the
 * ordinary prototype check, so it never matches its parent's instances by mistake.
 */

/** Server error codes the proxy emits (names and numbers as in the server's error_codes.yml). */
export const ErrorCodes = {
  InternalError: 1,
  BadValue: 2,
  NoSuchKey: 4,
  HostUnreachable: 6,
  HostNotFound: 7,
  UnknownError: 8,
  FailedToParse: 9,
  Unauthorized: 13,
  TypeMismatch: 14,
  Overflow: 15,
  InvalidLength: 16,
  ProtocolError: 17,
  AuthenticationFailed: 18,
  IllegalOperation: 20,
  InvalidBSON: 22,
  NamespaceNotFound: 26,
  IndexNotFound: 27,
  CursorNotFound: 43,
  NamespaceExists: 48,
  CannotCreateIndex: 67,
  IndexOptionsConflict: 85,
  IndexKeySpecsConflict: 86,
  CommandNotFound: 59,
  InvalidOptions: 72,
  InvalidNamespace: 73,
  NetworkTimeout: 89,
  ShutdownInProgress: 91,
  OperationFailed: 96,
  CommandNotSupported: 115,
  NotImplemented: 238,
  InvalidPipelineOperator: 168,
  ExceededMemoryLimit: 146,
  ClientMetadataCannotBeMutated: 186,
  ZLibError: 147,
  IllegalOpMsgFlag: 223,
  TooManyDocumentSequences: 233,
  TooManyLogicalSessions: 261,
  ExceededTimeLimit: 262,
  MechanismUnavailable: 334,
  ChecksumMismatch: 288,
  SocketException: 9001,
  NotWritablePrimary: 10107,
  BSONObjectTooLarge: 10334,
  DuplicateKey: 11000,
  InterruptedAtShutdown: 11600,
  // OP_MSG section errors, numbered as the server's op_msg.cpp raises them.
  Location40429: 40429,
  Location40430: 40430,
  Location40431: 40431,
  Location40432: 40432,
  Location40433: 40433,
  Location40587: 40587,
  // Parse errors as the server raises them: an unknown $group accumulator, an unknown pipeline
  // stage, an unknown field of a command (IDL).
  Location15952: 15952,
  Location40324: 40324,
  Location40415: 40415,
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const CODE_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(ErrorCodes).map(([name, code]) => [code, name]));

export function codeNameOf(code: number): string {
  return CODE_NAMES.get(code) ?? `Location${code}`;
}

export interface ProxyErrorOptions {
  cause?: unknown;
  /** Error labels drivers act on, e.g. `RetryableWriteError`. */
  labels?: readonly string[];
}

type ErrorClass<T> = abstract new (...args: never[]) => T;

/** The brand of the class called `name`: the same symbol in every copy of this module. */
function brandOf(name: string): symbol {
  return Symbol.for(`mongo-tenant-proxy.${name}`);
}

function ownBrand(errorClass: object): symbol | undefined {
  return Object.hasOwn(errorClass, 'brand') ? (errorClass as { brand?: symbol }).brand : undefined;
}

/** Base of every error class here: the brand machinery, nothing else. */
export abstract class BrandedError extends Error {
  static readonly brand: symbol = brandOf('BrandedError');

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    // Stamp the brand of the class and of each ancestor that declares one (non-enumerable:
    // invisible to logs, JSON and equality).
    for (let target: object | null = new.target; target !== null && target !== Error;) {
      const brand = ownBrand(target);
      if (brand !== undefined) Object.defineProperty(this, brand, { value: true });
      target = Object.getPrototypeOf(target) as object | null;
    }
  }

  /** True for an instance of this class made by any copy of this module (a brand check). */
  static is<T>(this: ErrorClass<T>, value: unknown): value is T {
    const brand = ownBrand(this);
    if (brand === undefined) return Function.prototype[Symbol.hasInstance].call(this, value);
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[brand] === true;
  }

  static override [Symbol.hasInstance]<T>(this: ErrorClass<T>, value: unknown): value is T {
    return BrandedError.is.call(this, value);
  }
}

/** Base of every error the proxy raises on purpose towards a client: a MongoDB error code. */
export class ProxyError extends BrandedError {
  static override readonly brand: symbol = brandOf('ProxyError');
  readonly code: number;
  readonly labels: readonly string[];

  constructor(code: number, message: string, options: ProxyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.labels = options.labels ?? [];
  }

  override get name(): string {
    return 'ProxyError';
  }

  get codeName(): string {
    return codeNameOf(this.code);
  }
}

/**
 * The client sent bytes that cannot be a valid message. When `fatal` is set the connection
 * must be closed (the stream can no longer be framed); otherwise an error reply is enough.
 */
export class WireProtocolError extends ProxyError {
  static override readonly brand: symbol = brandOf('WireProtocolError');
  readonly fatal: boolean;

  constructor(code: number, message: string, fatal: boolean, options: ProxyErrorOptions = {}) {
    super(code, message, options);
    this.fatal = fatal;
  }

  override get name(): string {
    return 'WireProtocolError';
  }
}

/** A BSON document failed validation; `offset` is the byte offset of the problem. */
export class BsonValidationError extends ProxyError {
  static override readonly brand: symbol = brandOf('BsonValidationError');
  readonly offset: number;

  constructor(message: string, offset: number, code: number = ErrorCodes.InvalidBSON) {
    super(code, message);
    this.offset = offset;
  }

  override get name(): string {
    return 'BsonValidationError';
  }
}

/** The upstream could not be reached or failed mid-operation. */
export class UpstreamError extends ProxyError {
  static override readonly brand: symbol = brandOf('UpstreamError');
  override get name(): string {
    return 'UpstreamError';
  }
}

/**
 * The upstream connection broke after part of a reply stream (an exhaust cursor) reached the
 * client: it cannot be retried or answered cleanly; the client connection must be closed.
 */
export class ReplyInterruptedError extends UpstreamError {
  static override readonly brand: symbol = brandOf('ReplyInterruptedError');
}

/** Which per-tenant limit refused a command (`limits.maxConnectionsPerTenant`, in-flight, rate). */
export type TenantLimitReason = 'connections' | 'in_flight' | 'rate' | 'bytes' | 'cpu';

/**
 * A per-tenant limit refused the command: OperationFailed (96). The in-flight and rate refusals
 * carry `SystemOverloadedError` and `RetryableError`, the labels of the drivers' client
 * backpressure specification: drivers that implement it retry with backoff.
 */
export class TenantLimitExceeded extends ProxyError {
  static override readonly brand: symbol = brandOf('TenantLimitExceeded');
  readonly reason: TenantLimitReason;

  constructor(reason: TenantLimitReason, message: string) {
    super(ErrorCodes.OperationFailed, message, {
      labels: reason === 'connections' ? [] : ['SystemOverloadedError', 'RetryableError'],
    });
    this.reason = reason;
  }

  override get name(): string {
    return 'TenantLimitExceeded';
  }
}

/** Why a command was refused: a stable rule id (for metrics, audit and docs) and a message naming it, never data. */
export class PolicyRefusal extends ProxyError {
  static override readonly brand: symbol = brandOf('PolicyRefusal');
  readonly rule: string;

  constructor(rule: string, message: string, code: number = ErrorCodes.Unauthorized) {
    super(code, `mongo-tenant-proxy refused the command (rule ${rule}): ${message}`);
    this.rule = rule;
  }

  override get name(): string {
    return 'PolicyRefusal';
  }
}

/**
 * Base of the errors that stay inside the proxy: `code` is a stable string (`MTP_ERR_…`) that
 * programs may test; the message is for the operator and never echoes a secret.
 */
export abstract class CodedError extends BrandedError {
  static override readonly brand: symbol = brandOf('CodedError');

  abstract get code(): string;
}

/** A configuration value is wrong; `path` names the field (e.g. `upstream.uri`). */
export class ConfigError extends CodedError {
  static override readonly brand: symbol = brandOf('ConfigError');
  readonly path: string;

  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.path = path;
  }

  override get name(): string {
    return 'ConfigError';
  }

  get code(): string {
    return 'MTP_ERR_CONFIG';
  }
}

/** One problem found by configuration validation; `path` names the field, e.g. `limits.maxConnections`. */
export interface ConfigIssue {
  path: string;
  message: string;
}

/**
 * Validation found one or more problems. `path` and the message describe the first one;
 * `issues` lists them all (in schema order).
 */
export class ConfigValidationError extends ConfigError {
  static override readonly brand: symbol = brandOf('ConfigValidationError');
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly [ConfigIssue, ...ConfigIssue[]]) {
    const [first] = issues;
    const more = issues.length - 1;
    super(
      first.path,
      more === 0 ? first.message : `${first.message} (and ${more} more problem${more === 1 ? '' : 's'})`,
    );
    this.issues = issues;
  }

  override get name(): string {
    return 'ConfigValidationError';
  }

  override get code(): string {
    return 'MTP_ERR_CONFIG_VALIDATION';
  }
}

/** A credentials file that cannot be used; the message names the entry and field, never a secret. */
export class CredentialsFileError extends CodedError {
  static override readonly brand: symbol = brandOf('CredentialsFileError');

  override get name(): string {
    return 'CredentialsFileError';
  }

  get code(): string {
    return 'MTP_ERR_CREDENTIALS_FILE';
  }
}

/** A JWT verification key (PEM, JWK or JWKS file) that cannot be used; the message never quotes key material. */
export class JwtKeyError extends CodedError {
  static override readonly brand: symbol = brandOf('JwtKeyError');

  override get name(): string {
    return 'JwtKeyError';
  }

  get code(): string {
    return 'MTP_ERR_JWT_KEY';
  }
}

/** Text that is not a valid `host:port`; the message says what is wrong. */
export class HostPortError extends CodedError {
  static override readonly brand: symbol = brandOf('HostPortError');

  override get name(): string {
    return 'HostPortError';
  }

  get code(): string {
    return 'MTP_ERR_HOST_PORT';
  }
}

/** DER bytes (a certificate's subject name) that cannot be parsed. */
export class DerParseError extends CodedError {
  static override readonly brand: symbol = brandOf('DerParseError');

  override get name(): string {
    return 'DerParseError';
  }

  get code(): string {
    return 'MTP_ERR_DER_PARSE';
  }
}

/** The proxy's own code broke one of its rules (a bug or a misused API), never bad input. */
export class InvariantError extends CodedError {
  static override readonly brand: symbol = brandOf('InvariantError');

  override get name(): string {
    return 'InvariantError';
  }

  get code(): string {
    return 'MTP_ERR_INVARIANT';
  }
}
