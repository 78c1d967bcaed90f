/**
 * Sends one client command upstream and streams its replies back, retrying where that is safe
 * (the Node driver's executeOperation, undici's retry handler around dispatch):
 *
 * 1. attempt: lease a connection (leases.ts: a transaction's pinned one, or a pooled one of the
 *    server the server set selects), send the already-rewritten frame, pass each reply on;
 * 2. classify: a failure with no reply to forward (not sent, broken, timed out), or an error
 *    reply worth holding back because a retry may do better (retry.ts decides what is retryable);
 * 3. back off and try again while retry.ts's delays, the command's maxTimeMS and the client allow
 *    it and no reply reached the client yet;
 * 4. otherwise answer the held reply, or throw an UpstreamError whose code and labels let the
 *    driver decide (translateUpstreamFailure), or a ReplyInterruptedError when part of a reply
 *    stream was already delivered.
 *
 * A scram-passthrough client's commands take the short path (executeDedicated): its own
 * connection only, never retried.
 */

import { ErrorCodes, ProxyError, UpstreamError, codeNameOf } from '../errors.js';
import { Long, serialize } from '../wire/bson.js';
import { clearMoreToCome, encodeOpMsg } from '../wire/op-msg.js';
import { type ReplyScan, scanReply } from '../wire/reply-scan.js';
import type { CommandTraits } from './command-traits.js';
import { NETWORK_ERROR_LABEL, type UpstreamConnection } from './connection.js';
import type { Leases } from './leases.js';
import { type PinDecision, decidePin } from './pins.js';
import {
  ErrorLabels,
  type RetryClass,
  type RetryError,
  type UpstreamFailureKind,
  backoffDelays,
  classifyForRetry,
  clientDeadlineMS,
  isRetryableError,
  replyTimeoutMS,
  retryErrorOf,
  translateUpstreamFailure,
  upstreamSupportsRetryableWrites,
} from './retry.js';
import type { ServerSet } from './server-set.js';
import {
  CIRCUIT_OPEN,
  type ForwardRequest,
  type ForwardResult,
  NO_SERVER,
  ReplyInterruptedError,
  type UpstreamOptions,
  type UpstreamRetryOptions,
} from './types.js';

/** What the retry loop works with (the facade builds it once). */
export interface ExecuteContext {
  servers: ServerSet;
  leases: Leases;
  retry: UpstreamRetryOptions;
  options: Pick<UpstreamOptions, 'socketTimeoutMS' | 'observer' | 'logger'>;
}

/** How a command is sent, fixed before its first attempt. */
interface Plan {
  pin: PinDecision;
  retryClass: RetryClass;
  replyTimeoutMS: number;
}

/** A failure with no reply to forward. */
interface AttemptFailure {
  kind: UpstreamFailureKind;
  error: unknown;
  /** Whether the request may have reached the server. */
  sent: boolean;
  /** Whether retrying could help (false: circuit open, pool wait timeout, no suitable server). */
  retryable: boolean;
}

/** A retryable error reply, held back from the client in case a retry does better. */
interface HeldReply {
  reply: Buffer;
  scan: ReplyScan;
  connection: UpstreamConnection;
  error: RetryError;
}

/** How an attempt ended: both undefined when it succeeded (its replies reached the client). */
interface AttemptOutcome {
  failure: AttemptFailure | undefined;
  heldReply: HeldReply | undefined;
}

/** Shared by the attempts of one command: once a reply reached the client, nothing is retried. */
interface Progress {
  delivered: boolean;
}

/**
 * Sends one command and streams its replies to `request.onReply`, retrying where that is safe.
 * Rejects with an UpstreamError ready to be answered to the client (code and labels translated),
 * or a ReplyInterruptedError when part of a reply stream was already delivered.
 */
export async function execute(request: ForwardRequest, context: ExecuteContext): Promise<ForwardResult> {
  const { traits } = request;
  const { retry, options } = context;
  const pin = decidePin(traits);
  const plan: Plan = {
    pin,
    retryClass:
      request.fireAndForget || pin.kind !== 'none'
        ? 'never'
        : classifyForRetry(traits, { retryableWrites: upstreamSupportsRetryableWrites(context.servers.info) }),
    replyTimeoutMS: replyTimeoutMS(options.socketTimeoutMS ?? 0, traits),
  };
  const deadlineMS = clientDeadlineMS({ maxTimeMS: traits.maxTimeMS });
  const started = performance.now();
  // The backoff schedule is drawn when an attempt fails, not for every command (most succeed at
  // once). Before that, the first attempt is the last chance only when no retry is allowed at
  // all; a first attempt's retryable error reply held back in vain (the schedule turns out empty)
  // is answered after it just the same.
  let delays: number[] | undefined;
  const delayBefore = (attempt: number): number | undefined => {
    delays ??= backoffDelays({
      attempts: retry.maxAttempts,
      baseMS: retry.initialBackoffMS,
      maxMS: retry.maxBackoffMS,
      ...(deadlineMS === undefined ? {} : { deadlineMS }),
    });
    return delays[attempt - 1];
  };
  const progress: Progress = { delivered: false };
  /** Some attempt may have reached the server: never claim NoWritesPerformed afterwards. */
  let anySent = false;
  for (let attempt = 1; ; attempt++) {
    const firstOfMany = attempt === 1 && delays === undefined && retry.maxAttempts > 1;
    let delay = firstOfMany ? undefined : delayBefore(attempt);
    let lastChance = !firstOfMany && delay === undefined;
    const { failure, heldReply } = await attemptOnce(request, plan, progress, lastChance, context);
    if (failure === undefined && heldReply === undefined) return { attempts: attempt };
    if (firstOfMany) {
      delay = delayBefore(attempt);
      lastChance = delay === undefined;
    }

    anySent ||= heldReply !== undefined || failure?.sent === true;
    if (progress.delivered) {
      throw new ReplyInterruptedError(
        ErrorCodes.SocketException,
        'the upstream connection failed in the middle of a reply stream',
        {
          labels: [NETWORK_ERROR_LABEL],
          cause: failure?.error,
        },
      );
    }
    const elapsed = performance.now() - started;
    const again =
      !lastChance &&
      request.signal?.aborted !== true &&
      (deadlineMS === undefined || elapsed + (delay ?? 0) < deadlineMS) &&
      (heldReply !== undefined ||
        (failure !== undefined &&
          failure.retryable &&
          (!failure.sent || isRetryableError(retryErrorOf(failure.error), plan.retryClass))));
    if (!again) {
      if (heldReply !== undefined) {
        request.onReply(heldReply.reply, false, heldReply.connection, heldReply.scan);
        return { attempts: attempt };
      }
      throw translate(failure as AttemptFailure, traits, attempt, anySent, context.servers);
    }
    options.observer?.retry?.(traits.name, retryReason(heldReply?.error, failure));
    options.logger?.debug(
      { command: traits.name, attempt, delayMS: delay, reason: retryReason(heldReply?.error, failure) },
      'retrying upstream command',
    );
    if (delay !== undefined && delay > 0) await sleep(delay);
    context.servers.assertOpen();
  }
}

/**
 * One attempt: lease a connection, send, stream the replies (holding back a retryable error
 * reply unless this is the last chance), and give the lease back. Throws only what must not be
 * retried or translated: the client left, or a consumer error.
 */
async function attemptOnce(
  request: ForwardRequest,
  plan: Plan,
  progress: Progress,
  lastChance: boolean,
  context: ExecuteContext,
): Promise<AttemptOutcome> {
  const { servers, leases } = context;
  const { pin, retryClass } = plan;
  // A warm pool answers at once; otherwise the lease may wait (a server, a connection).
  let lease = leases.leaseNow(request, pin);
  if (lease === undefined) {
    try {
      lease = await leases.lease(request, pin);
    } catch (error) {
      return { failure: notSentFailure(error), heldReply: undefined };
    }
  }
  let failure: AttemptFailure | undefined;
  let heldReply: HeldReply | undefined;
  /** The reply says the server aborted this command's transaction: its pin has no more use. */
  let transactionAborted = false;
  const { connection, server } = lease;
  const homes = servers.cursorHomes;
  server.inFlight++;
  /** The client left, and its command was left to finish because cursors live on this connection. */
  let abandoned = false;
  /** A cursor the abandoned command opened: nobody will read it. */
  let orphan: string | undefined;
  const abort = (): void => {
    if (!connection.busy) return;
    // Closing a connection closes the cursors opened on it on some servers (FerretDB v1), and they
    // may be another client's or tenant's: the command finishes instead, its replies go nowhere.
    // (Not an exhaust stream: it could run forever.)
    if (homes.holds(connection) && !exhaustAllowed(request.frame)) abandoned = true;
    else connection.close();
  };
  request.signal?.addEventListener('abort', abort, { once: true });
  try {
    if (request.signal?.aborted === true) throw abortedError();
    if (request.fireAndForget) {
      await sendUnacknowledged(connection, request.frame);
    } else {
      const remember = servers.size > 1;
      await connection.request(
        request.frame,
        (reply, moreToCome) => {
          // The reply's one scan: every consumer below (and the requester) reads its facts.
          const scan = scanReply(reply);
          homes.observe(request.traits, scan, connection);
          if (abandoned) {
            if (!moreToCome) orphan = scan.cursorKey;
            return;
          }
          if (!moreToCome && !progress.delivered) {
            const error = replyError(scan);
            if (error !== undefined) {
              transactionAborted = pin.kind !== 'none' && serverAbortedTransaction(error);
              servers.onServerError(server, error);
              if (!lastChance && isRetryableError(error, retryClass)) {
                heldReply = { reply, scan, connection, error };
                return;
              }
            }
          }
          if (remember) servers.rememberCursor(request.traits, scan, server);
          progress.delivered = true;
          request.onReply(reply, moreToCome, connection, scan);
        },
        { replyTimeoutMS: plan.replyTimeoutMS, replyCharge: request.replyCharge },
      );
      if (abandoned) {
        if (orphan !== undefined) {
          await killOnConnection(connection, orphan, plan.replyTimeoutMS);
          homes.observe({ name: 'killCursors', cursors: [orphan] }, undefined, connection);
        }
        // Answered like a command whose client left (the catch below): no verdict on the server.
        throw abortedError();
      }
    }
    server.breaker.onSuccess();
  } catch (error) {
    if (request.signal?.aborted === true) {
      // The client left (its connection was closed on purpose): no verdict on the server.
      server.breaker.onCancel();
      throw abortedError();
    }
    if (!ProxyError.is(error) || !error.labels.includes(NETWORK_ERROR_LABEL)) {
      // Not a transport failure (a consumer error): nothing to retry or translate.
      server.breaker.onCancel();
      throw error;
    }
    // Counted against the server only if a health check fails too (the request may be the cause).
    servers.requestFailed(server);
    servers.onNetworkError(server);
    failure = {
      kind: ProxyError.is(error) && error.code === ErrorCodes.NetworkTimeout ? 'timeout' : 'network',
      error,
      sent: true,
      retryable: true,
    };
  } finally {
    request.signal?.removeEventListener('abort', abort);
    server.inFlight--;
    leases.settle(lease, pin, request.session, failure === undefined, transactionAborted);
  }
  return { failure, heldReply };
}

/** A passthrough client's command: only on its own connection, never retried elsewhere. */
export async function executeDedicated(
  request: ForwardRequest,
  connection: UpstreamConnection,
  context: ExecuteContext,
): Promise<ForwardResult> {
  if (connection.closed) {
    throw new ReplyInterruptedError(
      ErrorCodes.HostUnreachable,
      'the upstream connection authenticated as this client was lost; reconnect and authenticate again',
    );
  }
  if (request.fireAndForget) {
    await sendUnacknowledged(connection, request.frame);
    return { attempts: 1 };
  }
  let delivered = false;
  try {
    await connection.request(
      request.frame,
      (reply, moreToCome) => {
        delivered = true;
        request.onReply(reply, moreToCome, connection, scanReply(reply));
      },
      {
        replyTimeoutMS: replyTimeoutMS(context.options.socketTimeoutMS ?? 0, request.traits),
        replyCharge: request.replyCharge,
      },
    );
  } catch (error) {
    if (delivered || connection.closed) {
      throw new ReplyInterruptedError(
        ErrorCodes.HostUnreachable,
        'the upstream connection authenticated as this client was lost; reconnect and authenticate again',
        {
          cause: error,
        },
      );
    }
    throw error;
  }
  return { attempts: 1 };
}

/** The error the client gets when no attempt produced a reply to forward. */
function translate(
  failure: AttemptFailure,
  traits: CommandTraits,
  attempts: number,
  anySent: boolean,
  servers: ServerSet,
): ProxyError {
  const { error } = failure;
  const labels = ProxyError.is(error) ? error.labels : [];
  // Not an availability problem (a bad $readPreference, authentication refused, shutting down):
  // the client gets it as it is.
  if (ProxyError.is(error) && !labels.includes(NETWORK_ERROR_LABEL) && !labels.includes(CIRCUIT_OPEN)) return error;
  const kind: UpstreamFailureKind = labels.includes(CIRCUIT_OPEN) ? 'circuit-open' : failure.kind;
  const detail = error instanceof Error ? error.message : undefined;
  // A txnNumber only makes a resend safe where the upstream de-duplicates on it (FerretDB, for
  // one, accepts and ignores it): elsewhere the driver must not be told to retry the write.
  const command = { ...traits, hasTxnNumber: traits.hasTxnNumber && upstreamSupportsRetryableWrites(servers.info) };
  const reply = translateUpstreamFailure({ kind, command, ...(detail === undefined ? {} : { detail }), attempts });
  // A full pool keeps its own (retryable) code: the server is fine, the proxy is saturated.
  const code = ProxyError.is(error) && error.code === ErrorCodes.ExceededTimeLimit ? error.code : reply.code;
  const errorLabels = anySent
    ? reply.errorLabels.filter((label) => label !== ErrorLabels.NoWritesPerformed)
    : reply.errorLabels;
  return new UpstreamError(code, reply.errmsg, { labels: errorLabels, cause: error });
}

/** A failure before the request left the proxy. */
function notSentFailure(error: unknown): AttemptFailure {
  const labels = ProxyError.is(error) ? error.labels : [];
  const code = ProxyError.is(error) ? error.code : undefined;
  if (
    ProxyError.is(error) &&
    !labels.includes(NETWORK_ERROR_LABEL) &&
    !labels.includes(CIRCUIT_OPEN) &&
    code !== ErrorCodes.ExceededTimeLimit
  ) {
    // Not an availability problem (a bad $readPreference, authentication refused…): not retried.
    return { kind: 'unreachable', error, sent: false, retryable: false };
  }
  const retryable =
    !labels.includes(CIRCUIT_OPEN) &&
    !labels.includes(NO_SERVER) &&
    code !== ErrorCodes.ExceededTimeLimit &&
    code !== ErrorCodes.ShutdownInProgress;
  return { kind: 'unreachable', error, sent: false, retryable };
}

/** The OP_MSG exhaustAllowed flag: the reply may be a stream. */
function exhaustAllowed(frame: Buffer): boolean {
  return frame.length > 20 && (frame.readUInt32LE(16) & (1 << 16)) !== 0;
}

/**
 * Kills `cursor` (a cursorKey, `db.coll:id`) on the connection that opened it, before the
 * connection goes back to the pool: the command that opened it was abandoned by its client. A
 * failure closes the connection (and with it, on servers that tie cursors to connections, the cursor).
 */
async function killOnConnection(connection: UpstreamConnection, cursor: string, replyTimeoutMS: number): Promise<void> {
  const colon = cursor.lastIndexOf(':');
  const ns = cursor.slice(0, colon);
  const dot = ns.indexOf('.');
  const body = serialize({
    killCursors: ns.slice(dot + 1),
    cursors: [Long.fromBigInt(BigInt(cursor.slice(colon + 1)))],
    $db: ns.slice(0, dot),
  });
  try {
    await connection.request(encodeOpMsg({ requestId: 0, responseTo: 0, body }), () => undefined, { replyTimeoutMS });
  } catch {
    connection.close();
  }
}

function abortedError(): UpstreamError {
  return new UpstreamError(ErrorCodes.SocketException, 'the client left', { labels: [NETWORK_ERROR_LABEL] });
}

/** The code and labels of an `ok: 0` reply (or of its writeConcernError), else undefined: from the reply's one scan. */
function replyError(scan: ReplyScan): RetryError | undefined {
  const error = scan.error;
  return error === undefined ? undefined : { ...error, network: false };
}

/** The server's NoSuchTransaction code: the transaction was aborted (or never existed). */
const NO_SUCH_TRANSACTION = 251;

/** NoSuchTransaction, or any error the server labels TransientTransactionError: the transaction is gone. */
function serverAbortedTransaction(error: RetryError): boolean {
  return error.code === NO_SUCH_TRANSACTION || (error.labels ?? []).includes(ErrorLabels.TransientTransactionError);
}

function retryReason(error: RetryError | undefined, failure: AttemptFailure | undefined): string {
  if (error !== undefined) return error.code === undefined ? 'server_error' : codeReason(error.code);
  if (failure === undefined) return 'unknown';
  if (!failure.sent) return 'connect';
  return failure.kind === 'timeout' ? 'timeout' : 'network';
}

function codeReason(code: number): string {
  return codeNameOf(code);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * A client's moreToCome command (a w:0 write, endSessions) is sent *with* a reply requested and
 * the reply dropped, holding the connection until it arrives. A server that answers moreToCome
 * anyway (FerretDB does) would otherwise leave a stray reply on a pooled connection that another
 * client's request uses next, and the connection would fail under that request. The client still
 * gets nothing, as it asked; the write's outcome stays unknown to it, as with w:0 on MongoDB.
 */
function sendUnacknowledged(connection: UpstreamConnection, frame: Buffer): Promise<void> {
  return connection.request(clearMoreToCome(frame), () => undefined);
}
