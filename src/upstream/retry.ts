/**
 * When the proxy may retry a forwarded command itself, how long it waits between attempts, and
 * what it answers the client when it may not (or gives up). Pure: no sockets, no logging, no
 * clock (the caller measures time and passes what is left).
 *
 * Rules (mongodb/specifications source/retryable-reads/retryable-reads.md,
 * source/retryable-writes/retryable-writes.md, source/transactions/transactions.md):
 * - Nothing inside a multi-statement transaction (`autocommit: false`) is retried by the proxy,
 *   not even `commitTransaction` / `abortTransaction`: drivers retry those themselves (and
 *   upgrade the write concern when they do), so the proxy only labels the error.
 * - Reads (`find`, `aggregate` without `$out`/`$merge`, `count`, `distinct`, `listCollections`,
 *   `listIndexes`, `listDatabases`) and handshake-like commands (`hello`, `isMaster`, `ping`,
 *   `buildInfo`) are retryable. `getMore` never is (the cursor position is lost with the reply),
 *   nor are `saslStart`/`saslContinue` (the conversation lives on one connection).
 * - Writes (`insert`, `update`, `delete`, `findAndModify`, `bulkWrite`) only when they carry a
 *   `txnNumber`: the server de-duplicates on (lsid, txnNumber), so a resend never applies twice.
 *   Drivers never attach a txnNumber to multi-document writes and servers refuse one.
 * - Anything else (unknown commands included) is never retried: the client gets an error its
 *   driver knows how to handle (see translateUpstreamFailure).
 *
 * API for the forwarding path:
 *
 * ```ts
 * type RetryClass = 'read' | 'retryable-write' | 'never'
 * interface RetryCommand { name: string; hasTxnNumber: boolean; inTransaction: boolean; pipelineWrites: boolean }
 * interface RetryError { code?: number; labels?: readonly string[]; network: boolean }
 * classifyForRetry(command: RetryCommand, upstream?: { retryableWrites?: boolean }): RetryClass
 * upstreamSupportsRetryableWrites(info: { kind: string; logicalSessionTimeoutMinutes?: number }): boolean
 * isRetryableError(error: RetryError, retryClass?: RetryClass): boolean
 * retryErrorOf(error: unknown): RetryError          // a thrown UpstreamError → RetryError
 * backoffDelays(options?: BackoffOptions): number[]  // delays before retry 1, 2, …
 * clientDeadlineMS(limits: { maxTimeMS?: unknown; timeoutMS?: unknown }): number | undefined
 * translateUpstreamFailure(failure: UpstreamFailure): UpstreamFailureReply
 * RETRY_DEFAULTS, RETRYABLE_ERROR_CODES, RETRYABLE_READ_ONLY_ERROR_CODES, ErrorLabels
 * ```
 *
 * Intended loop (the lead wires it in forwarding):
 *
 * ```ts
 * const command = { name, hasTxnNumber: 'txnNumber' in body, inTransaction: body.autocommit === false,
 *                   pipelineWrites: hasOutOrMerge(pipeline) };
 * const retryClass = classifyForRetry(command, { retryableWrites: upstreamSupportsRetryableWrites(upstream.info) });
 * const delays = retryClass === 'never' ? [] : backoffDelays({ deadlineMS: clientDeadlineMS(body) });
 * for (let attempt = 0; ; attempt++) {
 *   try { return await sendOnce(); }                       // resends the already-rewritten frame
 *   catch (error) {
 *     const delay = delays[attempt];
 *     if (delay === undefined || repliesAlreadyForwarded || !isRetryableError(retryErrorOf(error), retryClass)
 *         || elapsed() + delay >= deadline) {
 *       return reply({ ok: 0, ...translateUpstreamFailure({ kind, command, detail, attempts: attempt + 1 }) });
 *     }
 *     await sleep(delay);
 *   }
 * }
 * ```
 * A read may only be retried while no part of its reply has reached the client (an exhaust
 * stream that already forwarded a batch must fail instead). Server replies (`ok: 0` with the
 * server's own labels) are forwarded as they are once retries are over; translateUpstreamFailure
 * is for failures that produced no reply at all.
 */
import { ErrorCodes, codeNameOf } from '../errors.js';

// ---------------------------------------------------------------------------------------------
// Defaults: every tunable in one place.
// ---------------------------------------------------------------------------------------------

export const RETRY_DEFAULTS = Object.freeze({
  /** Total attempts including the first one (so `attempts - 1` retries at most). */
  attempts: 3,
  /** Cap of the first backoff delay; the cap doubles on every further retry. */
  baseMS: 50,
  /** No backoff delay is ever longer than this. */
  maxMS: 1_000,
  /** No client deadline: only `attempts` bounds the retries. */
  deadlineMS: undefined as number | undefined,
  /** Source of jitter, [0, 1). */
  random: Math.random as () => number,
});

// ---------------------------------------------------------------------------------------------
// Error codes and labels
// ---------------------------------------------------------------------------------------------

/** Error labels the proxy reads or writes (names as the server and the specifications spell them). */
export const ErrorLabels = Object.freeze({
  RetryableWriteError: 'RetryableWriteError',
  TransientTransactionError: 'TransientTransactionError',
  UnknownTransactionCommitResult: 'UnknownTransactionCommitResult',
  NoWritesPerformed: 'NoWritesPerformed',
  /** client-backpressure spec: "safely retryable regardless of the command type". */
  RetryableError: 'RetryableError',
  /**
   * The proxy-internal label UpstreamConnection puts on transport failures
   * (`NETWORK_ERROR_LABEL` in connection.ts); never sent to clients.
   */
  NetworkError: 'NetworkError',
});

/**
 * Server error codes that make a read or a retryable write retryable (retryable-writes.md
 * "Determining Retryable Write Errors", the pre-4.4 list; 4.4+ servers also label them).
 */
export const RETRYABLE_ERROR_CODES: ReadonlyMap<number, string> = new Map([
  [6, 'HostUnreachable'],
  [7, 'HostNotFound'],
  [89, 'NetworkTimeout'],
  [91, 'ShutdownInProgress'],
  [189, 'PrimarySteppedDown'],
  [262, 'ExceededTimeLimit'],
  [9001, 'SocketException'],
  [10107, 'NotWritablePrimary'],
  [11600, 'InterruptedAtShutdown'],
  [11602, 'InterruptedDueToReplStateChange'],
  [13435, 'NotPrimaryNoSecondaryOk'],
  [13436, 'NotPrimaryOrSecondary'],
]);

/** Codes retryable for reads only (retryable-reads.md "Retryable Error"). */
export const RETRYABLE_READ_ONLY_ERROR_CODES: ReadonlyMap<number, string> = new Map([
  [134, 'ReadConcernMajorityNotAvailableYet'],
]);

// ---------------------------------------------------------------------------------------------
// Classification
// ---------------------------------------------------------------------------------------------

export type RetryClass = 'read' | 'retryable-write' | 'never';

/** What the forwarding path knows about a command (from its body, after rewriting). */
export interface RetryCommand {
  /** The command name: the first key of the body, case as sent. */
  name: string;
  /** The body has a top-level `txnNumber`. */
  hasTxnNumber: boolean;
  /** The body has `autocommit: false` (a multi-statement transaction, commit/abort included). */
  inTransaction: boolean;
  /** An aggregate pipeline with a `$out` or `$merge` stage (at the top level). */
  pipelineWrites: boolean;
}

const READ_COMMANDS: ReadonlySet<string> = new Set([
  'find',
  'aggregate',
  'count',
  'distinct',
  'listCollections',
  'listIndexes',
  'listDatabases',
]);

/** Commands that only describe the server; safe on any connection. */
const HANDSHAKE_COMMANDS: ReadonlySet<string> = new Set([
  'hello',
  'isMaster',
  'ismaster',
  'ping',
  'buildInfo',
  'buildinfo',
]);

/** Write commands the server can de-duplicate when they carry a txnNumber. */
const RETRYABLE_WRITE_COMMANDS: ReadonlySet<string> = new Set([
  'insert',
  'update',
  'delete',
  'findAndModify',
  'findandmodify',
  'bulkWrite',
]);

/** What the upstream can do, for classifyForRetry. */
export interface RetryUpstream {
  /**
   * The upstream de-duplicates writes on (lsid, txnNumber): a replica set or mongos that reports
   * logicalSessionTimeoutMinutes (see upstreamSupportsRetryableWrites). Default true, because
   * drivers only send a txnNumber to a server that supports it and a MongoDB standalone refuses
   * one (IllegalOperation); pass false for upstreams that accept and ignore it (FerretDB).
   */
  retryableWrites?: boolean;
}

/** May the proxy resend `command` after a retryable failure, and under which rules? */
export function classifyForRetry(command: RetryCommand, upstream: RetryUpstream = {}): RetryClass {
  if (command.inTransaction) return 'never';
  const { name } = command;
  if (name === 'aggregate' && command.pipelineWrites) return 'never';
  if (READ_COMMANDS.has(name) || HANDSHAKE_COMMANDS.has(name)) return 'read';
  if (RETRYABLE_WRITE_COMMANDS.has(name) && command.hasTxnNumber && upstream.retryableWrites !== false)
    return 'retryable-write';
  return 'never';
}

/**
 * The retryable-writes spec's isRetryableWritesSupported, from the upstream's mirrored hello
 * (UpstreamServerInfo): sessions supported and not a standalone.
 */
export function upstreamSupportsRetryableWrites(info: {
  kind: string;
  logicalSessionTimeoutMinutes?: number | undefined;
}): boolean {
  return info.kind !== 'standalone' && info.logicalSessionTimeoutMinutes !== undefined;
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/** One failed attempt, as the retry decision sees it. */
export interface RetryError {
  /** The server's (or the proxy's mapped) error code; for a mongod write-concern error, `writeConcernError.code`. */
  code?: number;
  /** The reply's `errorLabels` (or an UpstreamError's labels). */
  labels?: readonly string[];
  /** No reply was received: the connection failed, closed or timed out. */
  network: boolean;
}

/**
 * Is `error` worth another attempt? With `retryClass`, exactly the rules of that class
 * ('never' → false; reads also retry on ReadConcernMajorityNotAvailableYet; retryable writes
 * also on a `RetryableWriteError` label); without it, any of those reasons. Network errors and
 * the spec's codes always count; so does the backpressure spec's `RetryableError` label.
 */
export function isRetryableError(error: RetryError, retryClass?: RetryClass): boolean {
  if (retryClass === 'never') return false;
  if (error.network) return true;
  const labels = error.labels ?? [];
  if (labels.includes(ErrorLabels.RetryableError)) return true;
  const code = error.code;
  if (code !== undefined && RETRYABLE_ERROR_CODES.has(code)) return true;
  if (retryClass !== 'retryable-write' && code !== undefined && RETRYABLE_READ_ONLY_ERROR_CODES.has(code)) return true;
  if (retryClass !== 'read' && labels.includes(ErrorLabels.RetryableWriteError)) return true;
  return false;
}

/**
 * Reads a thrown value into a RetryError: `code` and `labels` from a ProxyError (UpstreamError),
 * `network` from the NetworkError label UpstreamConnection puts on transport failures. Anything
 * else is treated as not retryable (no code, not network).
 */
export function retryErrorOf(error: unknown): RetryError {
  if (typeof error !== 'object' || error === null) return { network: false };
  const { code, labels } = error as { code?: unknown; labels?: unknown };
  const labelList = Array.isArray(labels) ? labels.filter((label): label is string => typeof label === 'string') : [];
  const result: RetryError = { labels: labelList, network: labelList.includes(ErrorLabels.NetworkError) };
  if (typeof code === 'number' && Number.isInteger(code)) result.code = code;
  return result;
}

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

export interface BackoffOptions {
  /** Total attempts including the first; default RETRY_DEFAULTS.attempts. */
  attempts?: number;
  /** Cap of the first delay, in ms. */
  baseMS?: number;
  /** Cap of every delay, in ms. */
  maxMS?: number;
  /**
   * Time left until the client's deadline, in ms, measured when the delays are computed. Delays
   * whose running total reaches it are dropped (a retry that would start after the deadline is
   * pointless). Attempt durations are not known here: the loop must still check its clock.
   */
  deadlineMS?: number;
  /** Jitter source returning [0, 1); values outside are clamped. */
  random?: () => number;
}

/**
 * The delays before retry 1, 2, … ("full jitter": retry i waits a uniform random time in
 * [0, min(maxMS, baseMS · 2^(i-1))]), at most `attempts - 1` of them, whole milliseconds, cut
 * off by `deadlineMS`. An empty array means: do not retry.
 */
export function backoffDelays(options: BackoffOptions = {}): number[] {
  const attempts = options.attempts ?? RETRY_DEFAULTS.attempts;
  const baseMS = options.baseMS ?? RETRY_DEFAULTS.baseMS;
  const maxMS = options.maxMS ?? RETRY_DEFAULTS.maxMS;
  const deadlineMS = options.deadlineMS ?? RETRY_DEFAULTS.deadlineMS;
  const random = options.random ?? RETRY_DEFAULTS.random;
  if (!Number.isInteger(attempts) || attempts < 1)
    throw new RangeError(`attempts must be an integer >= 1, got ${attempts}`);
  if (!(Number.isFinite(baseMS) && baseMS >= 0))
    throw new RangeError(`baseMS must be a finite number >= 0, got ${baseMS}`);
  if (!(Number.isFinite(maxMS) && maxMS >= 0)) throw new RangeError(`maxMS must be a finite number >= 0, got ${maxMS}`);
  if (deadlineMS !== undefined && Number.isNaN(deadlineMS)) throw new RangeError('deadlineMS must be a number');

  const delays: number[] = [];
  let total = 0;
  for (let retry = 0; retry < attempts - 1; retry++) {
    const cap = Math.min(maxMS, baseMS * 2 ** retry);
    const jitter = Math.min(1, Math.max(0, Number(random()) || 0));
    const delay = Math.floor(jitter * cap);
    if (deadlineMS !== undefined && total + delay >= deadlineMS) break;
    total += delay;
    delays.push(delay);
  }
  return delays;
}

/**
 * The client's time budget for an operation, in ms, or undefined when it has none: the smaller
 * positive value of the command's `maxTimeMS` (CSOT drivers derive it from their `timeoutMS`)
 * and a `timeoutMS` the proxy applies. 0, negative and non-numeric values mean "no limit", as
 * `maxTimeMS: 0` does on the server. BSON Long values are accepted through `Number()`.
 */
export function clientDeadlineMS(limits: { maxTimeMS?: unknown; timeoutMS?: unknown }): number | undefined {
  let result: number | undefined;
  for (const value of [limits.maxTimeMS, limits.timeoutMS]) {
    const ms = toMillis(value);
    if (ms !== undefined && (result === undefined || ms < result)) result = ms;
  }
  return result;
}

/**
 * Slack after a command's `maxTimeMS` before the proxy stops waiting for its reply: the server
 * checks its deadline only at interrupt points and the reply still has to travel.
 */
export const MAX_TIME_REPLY_GRACE_MS = 5_000;

/**
 * How long one upstream attempt may go without a reply (0: no limit): `socketTimeoutMS` when
 * set, and `maxTimeMS` + MAX_TIME_REPLY_GRACE_MS when the command has one, whichever is shorter.
 * A server that honours maxTimeMS has answered by then, so silence means a half-open connection.
 * For a getMore, maxTimeMS is how long the server WAITS for new data (the server accepts it only
 * on tailable awaitData cursors: change streams, capped collections), so silence up to then is
 * expected: the longer of the two applies.
 */
export function replyTimeoutMS(
  socketTimeoutMS: number,
  command: { name: string; maxTimeMS?: number | undefined },
): number {
  const { maxTimeMS } = command;
  const fromMaxTime = maxTimeMS === undefined ? 0 : maxTimeMS + MAX_TIME_REPLY_GRACE_MS;
  if (socketTimeoutMS <= 0) return fromMaxTime;
  if (fromMaxTime === 0) return socketTimeoutMS;
  return command.name === 'getMore' ? Math.max(socketTimeoutMS, fromMaxTime) : Math.min(socketTimeoutMS, fromMaxTime);
}

function toMillis(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  let ms: number;
  if (typeof value === 'number') ms = value;
  else if (typeof value === 'bigint') ms = Number(value);
  else if (typeof value === 'object' && typeof (value as { toNumber?: unknown }).toNumber === 'function') {
    ms = (value as { toNumber(): number }).toNumber();
  } else return undefined;
  return Number.isFinite(ms) && ms > 0 ? ms : undefined;
}

// ---------------------------------------------------------------------------------------------
// Failure translation
// ---------------------------------------------------------------------------------------------

/**
 * Why the proxy has no reply to forward:
 * - `unreachable`: no connection could be had (refused, DNS, TLS handshake, pool closed); the
 *   request never left the proxy;
 * - `circuit-open`: the circuit breaker refused; the request never left the proxy;
 * - `network`: the connection failed after the request was (perhaps) sent; the outcome is unknown;
 * - `timeout`: no reply in time after the request was sent; the outcome is unknown.
 */
export type UpstreamFailureKind = 'unreachable' | 'circuit-open' | 'network' | 'timeout';

export interface UpstreamFailure {
  kind: UpstreamFailureKind;
  command: RetryCommand;
  /** Appended to the message; must already be safe to show (no secrets). */
  detail?: string;
  /** How many attempts the proxy made (mentioned when more than one). */
  attempts?: number;
}

/** Spread into `{ ok: 0, ...reply }`, or `new UpstreamError(code, errmsg, { labels: errorLabels })`. */
export interface UpstreamFailureReply {
  code: number;
  codeName: string;
  errmsg: string;
  errorLabels: string[];
}

const FAILURE_CODES: Readonly<Record<UpstreamFailureKind, number>> = {
  unreachable: ErrorCodes.HostUnreachable,
  'circuit-open': ErrorCodes.HostUnreachable,
  network: ErrorCodes.SocketException,
  timeout: ErrorCodes.NetworkTimeout,
};

const FAILURE_MESSAGES: Readonly<Record<UpstreamFailureKind, string>> = {
  unreachable: 'could not reach the upstream server',
  'circuit-open': 'the upstream server is unavailable (circuit breaker open)',
  network: 'the connection to the upstream server failed',
  timeout: 'the upstream server did not reply in time',
};

/**
 * The error reply for a command that got no upstream reply. Codes are ones every driver retries
 * reads on (HostUnreachable, SocketException, NetworkTimeout) and that do not make SDAM mark the
 * proxy unknown. Labels:
 * - in a transaction: `commitTransaction` → RetryableWriteError + UnknownTransactionCommitResult
 *   (the driver retries the commit); `abortTransaction` → RetryableWriteError +
 *   TransientTransactionError; anything else → TransientTransactionError only (the spec forbids
 *   RetryableWriteError inside a transaction);
 * - outside: RetryableWriteError only for a write that carried a txnNumber (so the driver
 *   retries it, safely); none otherwise (a write without one must not be retried: it may have
 *   been applied);
 * - NoWritesPerformed for a write whose request never left the proxy.
 */
export function translateUpstreamFailure(failure: UpstreamFailure): UpstreamFailureReply {
  const { kind, command } = failure;
  const code = FAILURE_CODES[kind];
  const labels: string[] = [];
  const isWrite =
    RETRYABLE_WRITE_COMMANDS.has(command.name) || (command.name === 'aggregate' && command.pipelineWrites);
  if (command.inTransaction) {
    if (command.name === 'commitTransaction') {
      labels.push(ErrorLabels.RetryableWriteError, ErrorLabels.UnknownTransactionCommitResult);
    } else if (command.name === 'abortTransaction') {
      labels.push(ErrorLabels.RetryableWriteError, ErrorLabels.TransientTransactionError);
    } else {
      labels.push(ErrorLabels.TransientTransactionError);
    }
  } else {
    if (RETRYABLE_WRITE_COMMANDS.has(command.name) && command.hasTxnNumber)
      labels.push(ErrorLabels.RetryableWriteError);
    if (isWrite && (kind === 'unreachable' || kind === 'circuit-open')) labels.push(ErrorLabels.NoWritesPerformed);
  }
  let errmsg = FAILURE_MESSAGES[kind];
  if (failure.attempts !== undefined && failure.attempts > 1) errmsg += ` after ${failure.attempts} attempts`;
  if (failure.detail !== undefined && failure.detail !== '') errmsg += `: ${failure.detail}`;
  return { code, codeName: codeNameOf(code), errmsg, errorLabels: labels };
}
