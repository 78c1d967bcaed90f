/**
 * Typed errors for everything the proxy itself refuses or fails at.
 *
 * Every error carries a MongoDB server error code and code name so that it can be turned into
 * an `{ok: 0, errmsg, code, codeName}` reply that drivers raise like any server error.
 * This module imports nothing: every layer may use it.
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
  ProtocolError: 17,
  AuthenticationFailed: 18,
  IllegalOperation: 20,
  InvalidBSON: 22,
  CursorNotFound: 43,
  CommandNotFound: 59,
  InvalidOptions: 72,
  InvalidNamespace: 73,
  NetworkTimeout: 89,
  ShutdownInProgress: 91,
  OperationFailed: 96,
  CommandNotSupported: 115,
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

const PROXY_ERROR_BRAND = Symbol.for('mongo-tenant-proxy.ProxyError');

/** Base of every error the proxy raises on purpose. */
export class ProxyError extends Error {
  readonly code: number;
  readonly labels: readonly string[];
  readonly [PROXY_ERROR_BRAND] = true;

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

  static is(value: unknown): value is ProxyError {
    return typeof value === 'object' && value !== null && PROXY_ERROR_BRAND in value;
  }
}

/**
 * The client sent bytes that cannot be a valid message. When `fatal` is set the connection
 * must be closed (the stream can no longer be framed); otherwise an error reply is enough.
 */
export class WireProtocolError extends ProxyError {
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
  override get name(): string {
    return 'UpstreamError';
  }
}

/** A configuration value is wrong; `path` names the field (e.g. `upstream.uri`). */
export class ConfigError extends Error {
  readonly path: string;

  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.path = path;
  }

  override get name(): string {
    return 'ConfigError';
  }
}
