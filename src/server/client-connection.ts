/**
 * One client connection's pipeline:
 *   socket → FrameDecoder → (decompress) → parse → CommandView (decoded once) → route →
 *   local reply | refusal | forward (the isolation engine's plan) → Upstream → reply → socket.
 *
 * Requests are handled strictly in order, one at a time, as a server does per connection; while
 * one is in flight the client socket is paused, so a client that pipelines or floods cannot make
 * the proxy buffer more than the frames of one read. Replies that need no change are forwarded
 * as the exact bytes the upstream sent (only the header ids are rewritten).
 * Where a command goes is decided by `route` (route.ts, pure); this class carries it out and
 * reports what happened to its `ConnectionObserver` (metrics, audit, logs).
 *
 * Timeouts and shutdown: a connection is *idle* when no request is being processed and no byte
 * of a frame is buffered. An idle connection is closed after `limits.clientIdleTimeoutMS`; once a
 * frame's first byte has arrived the whole frame must follow within `limits.frameTimeoutMS`
 * (the clock stops while the proxy itself is not reading, i.e. while a request is in flight).
 * `drain()` (shutdown) closes the connection as soon as it is idle.
 *
 * Memory and fairness (issue 15): every byte the connection makes the proxy hold (requests
 * received, decompressed and rewritten; replies the client has not read) is charged to its
 * tenant's share of `limits.maxBufferedBytes` (buffer-budget.ts); a connection shed by the budget
 * is closed with a logged reason. Replies are never held back by pausing the upstream: an upstream
 * connection is free as soon as its last reply is read. A reply is charged from the moment the
 * upstream connection starts assembling it (the connection is this connection's ReplyCharge,
 * connection.ts), and that charge is handed over to the reply's write when it is delivered, so a
 * client whose huge replies pile up is shed while they are still being read, not after. A
 * tenant's requests are charged against its byte and operation rates before anything parses them
 * (tenant-limits.ts). A connection without a tenant must authenticate within
 * `limits.authTimeoutMS` of its last hello.
 * The proxy's CPU on a request (admission, decode and validation, routing, the rewrite and its
 * frame) is measured once per request, from the admission's clock reading to the frame made (or
 * the answer decided), and charged to the tenant's CPU budget (`limits.cpuMillisPerSecondPerTenant`;
 * connections without a tenant share one account); large messages' slices are charged by the
 * validation scheduler. Waits (a slow admission, an upstream round trip) are never charged.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ProxyConfig, CompressorName, ListenerConfig } from '../config/types.js';
import { ErrorCodes, PolicyRefusal, ProxyError, WireProtocolError } from '../errors.js';
import { BsonType } from '../wire/bson-scan.js';
import { stringOf } from '../wire/raw-bson.js';
import { FrameDecoder } from '../wire/frame-decoder.js';
import { readHeader, setRequestId, setResponseTo } from '../wire/header.js';
import { OpCode } from '../wire/constants.js';
import { compressMessage, decompressMessage } from '../wire/op-compressed.js';
import { deserialize } from '../wire/bson.js';
import type { PrevalidatedDocuments } from '../wire/op-msg.js';
import type { ReplyScan } from '../wire/reply-scan.js';
import { acceptHello, buildHelloReply, newHandshakeState, type AdvertisedServer } from '../protocol/hello.js';
import { encodeErrorReply, encodeReply, nextRequestId, type ReplyFormat } from '../protocol/replies.js';
import { AUTH_COMMANDS } from '../identity/authenticator.js';
import type { IdentityServices, PeerCertificate } from '../identity/types.js';
import { ReplyInterruptedError, type ReplyCharge, type Upstream, type UpstreamSession } from '../upstream/upstream.js';
import type { CancelSignal } from '../upstream/types.js';
import type { IsolationEngine, TenantEngine } from '../rewrite/engine.js';
import type { ReplyPlan } from '../policy/types.js';
import type { TenantLimitExceeded, TenantLimits } from './tenant-limits.js';
import { BufferBudget, UNAUTHENTICATED_ACCOUNT, type BufferAccount, type ShedOwner } from './buffer-budget.js';
import { requestCommandName } from '../upstream/connection.js';
import { HELLO_COMMANDS } from '../protocol/hello.js';
import type { TenancyExecutor } from '../tenancy/executor.js';
import type { ViewGuard } from '../tenancy/views.js';
import type { VirtualOperation } from '../policy/types.js';
import { decodeCommand, type CommandLabels, type CommandView } from './command-view.js';
import { ConnectionIdentity } from './connection-identity.js';
import { Deadline, type DeadlineOwner } from './deadlines.js';
import type { ConnectionFields, ConnectionObserver } from './connection-observer.js';
import {
  compressorOfFrame,
  forwardFrame,
  hasMoreToCome,
  legacyHello,
  peekCommandLabels,
  replyAfterPlan,
} from './frames.js';
import { denialRule, failureOutcome, mayReachEngine, route, type ForwardPlan, type LocalReply } from './route.js';
import { SLICED_VALIDATION_MIN_BYTES, type ValidationScheduler } from './validation-scheduler.js';
import type { TurnShare } from './turn-share.js';

/** A net or TLS socket; any duplex stream in tests. */
export type ClientSocket = Duplex & {
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  setNoDelay?(noDelay?: boolean): unknown;
};

export interface ClientConnectionDeps {
  config: ProxyConfig;
  /** What the connection uses of the upstream: its session, and forwarding. */
  upstream: Pick<Upstream, 'openSession' | 'endSession' | 'forward'>;
  /** The upstream's current description (mirrored in hello). */
  server: () => AdvertisedServer;
  /** Where this connection reports metrics, audit events and logs (called once, in the constructor). */
  observe: (connection: Omit<ConnectionFields, 'listener'>) => ConnectionObserver;
  listener: ListenerConfig;
  identity: IdentityServices;
  /** The client certificate of a TLS connection (verified or not: see `authorized`). */
  peerCertificate: PeerCertificate | undefined;
  isolation: IsolationEngine;
  /** Per-tenant connection, in-flight and rate limits, shared by every connection. */
  tenantLimits: TenantLimits;
  /**
   * The listener settings and identity services in effect now (hot reload). A connection with no
   * tenant yet authenticates against these, not the ones it was accepted with.
   */
  currentIdentity?: () => { listener: ListenerConfig; identity: IdentityServices };
  /** Runs the engine's virtual operations (shared-collection DDL, listings, stats: src/tenancy). */
  tenancy?: TenancyExecutor;
  /** Refuses reads of operator-created views that do not keep a tenant to its own documents (catalogue 22). */
  views?: ViewGuard;
  /** The byte budget shared by every connection; absent: one of `limits.maxBufferedBytes` for this connection alone. */
  bufferBudget?: BufferBudget;
  /**
   * Validates large requests in slices, fair across tenants (one shared by every connection);
   * absent: every request is validated at once.
   */
  validation?: ValidationScheduler;
  /**
   * Shares the turns of the event loop between tenants' small requests (one shared by every
   * connection); absent: every request runs as soon as it is read.
   */
  turns?: TurnShare;
  /** The connection's tenant was established (it no longer counts as unauthenticated). */
  onEstablished?: (connection: ClientConnection) => void;
}

/** DDL after which what the view check remembers of the database may be wrong. */
const VIEW_CACHE_DDL: ReadonlySet<string> = new Set(['create', 'drop', 'dropDatabase', 'renameCollection', 'collMod']);

interface Request {
  requestId: number;
  /** The compressor the client used for this request; the reply is compressed the same way. */
  compressor: CompressorName | undefined;
}

let nextConnectionId = 0;

/** The kinds of a connection's `deadline`. */
const IDLE_TIMEOUT = 1;
const FRAME_TIMEOUT = 2;

export class ClientConnection implements DeadlineOwner, ReplyCharge, ShedOwner {
  readonly id = ++nextConnectionId;
  private readonly observer: ConnectionObserver;
  /** Who the client is: authenticator, tenant, isolation engine (what routing reads). */
  private readonly identity: ConnectionIdentity;
  private readonly decoder: FrameDecoder;
  private readonly pending: Buffer[] = [];
  private readonly handshake = newHandshakeState();
  private processing = false;
  private closed = false;
  /** A graceful close (socket.end) is under way: nothing more is read. */
  private ending = false;
  /** Shutting down: close as soon as the connection is idle. */
  private draining = false;
  /**
   * The idle or the frame timeout (never both: a connection is idle only while no byte of a frame
   * is buffered), on the lists every connection shares (deadlines.ts); made when first armed.
   */
  private deadline: Deadline | undefined;
  /** This client's state in the upstream: transaction pins, a passthrough client's own connection. */
  private readonly upstreamSession: UpstreamSession;
  /**
   * Aborted when the client leaves: the signal of every command it forwards, so one that is
   * upstream then has its upstream connection closed. One per connection (commands run one at a
   * time), made with the first forwarded command.
   */
  private gone: ClientGone | undefined;
  /** The forwarded command whose replies are arriving (one at a time), for `onUpstreamReply`. */
  private replying: ReplyState | undefined;
  /** Bound once, with the first forwarded command: the upstream's reply callback of every forwarded command. */
  private onUpstreamReply:
    ((reply: Buffer, moreToCome: boolean, connection: unknown, scan: ReplyScan) => void) | undefined;
  private readonly maxMessageSize: number;
  private readonly onClosed: (connection: ClientConnection) => void;
  /**
   * Of the command being handled, the nanoseconds spent acquiring an upstream connection and
   * waiting for its replies; undefined while nothing was forwarded. (One command at a time.)
   */
  private upstreamWaitNs: bigint | undefined;
  /** This connection's bytes in the shared budget (its tenant's account once established). */
  private readonly buffers: BufferAccount;
  /** Until a tenant is established: closes the connection `limits.authTimeoutMS` after its last hello. */
  private authTimer: NodeJS.Timeout | undefined;
  /** Reply bytes written to the client and not yet flushed to the socket. */
  private unreadReplyBytes = 0;
  /**
   * Reply bytes the upstream charged to this connection while reading them and handed over with
   * delivered replies (`handOverReply`), not yet taken by a reply's write; what is left when the
   * forward ends (a reply held back for a retry, or dropped) is released then.
   */
  private handedReplyBytes = 0;
  /** Reading stopped while the tenant is over its byte rate (`pauseForByteRate`): resumes when it fires. */
  private readPause: NodeJS.Timeout | undefined;
  /** The request waiting to be admitted under its tenant's rates (`admit`), ended early by `close`. */
  private admissionWait: { timer: NodeJS.Timeout; resolve: (admitted: boolean) => void } | undefined;
  /**
   * The CPU meter of the request being handled: when (the tenant limits' clock) the proxy's work on
   * it (re)started; undefined while not metering (no CPU budget, or waiting).
   */
  private cpuStarted: number | undefined;

  constructor(
    private readonly socket: ClientSocket,
    private readonly deps: ClientConnectionDeps,
    onClosed: (connection: ClientConnection) => void,
  ) {
    this.onClosed = onClosed;
    this.upstreamSession = deps.upstream.openSession();
    this.observer = deps.observe({
      connectionId: this.id,
      remoteAddress: socket.remoteAddress,
      remotePort: socket.remotePort,
    });
    this.maxMessageSize = Math.min(deps.config.limits.maxMessageSizeBytes, deps.server().maxMessageSizeBytes);
    this.buffers = (deps.bufferBudget ?? new BufferBudget(deps.config.limits.maxBufferedBytes)).open(
      UNAUTHENTICATED_ACCOUNT,
      this,
    );
    this.decoder = new FrameDecoder(this.maxMessageSize);
    socket.setNoDelay?.(true);
    // Handlers shared by every connection (no closures per connection): the socket names its connection.
    (socket as OwnedSocket)[CONNECTION] = this;
    socket.on('data', onSocketData);
    socket.on('error', onSocketError);
    socket.on('close', onSocketClose);
    this.observer.opened();
    this.identity = new ConnectionIdentity({
      listener: deps.listener,
      identity: deps.identity,
      current: deps.currentIdentity,
      peerCertificate: deps.peerCertificate,
      remoteAddress: socket.remoteAddress ?? 'unknown',
      clientAddress: clientAddressOf(socket),
      connectionId: this.id,
      observer: this.observer,
      tenantLimits: deps.tenantLimits,
      maxConnectionsPerTenant: deps.config.limits.maxConnectionsPerTenant,
      isolation: deps.isolation,
      upstreamSession: this.upstreamSession,
      counted: this,
    });
    this.armIdleTimer();
    if (this.identity.tenant === undefined) this.armAuthTimer();
  }

  /** Whose budgets this connection's work counts against: its counted tenant, or the unauthenticated account. */
  get account(): string {
    return this.identity.countedTenant ?? UNAUTHENTICATED_ACCOUNT;
  }

  /** A tenant is established for this connection (known at connect for mtls/static). */
  get established(): boolean {
    return this.identity.tenant !== undefined;
  }

  /** @internal The tenant is counted (ConnectionIdentity): its bytes move to the tenant's account, the auth deadline ends. */
  tenantCounted(tenant: string): void {
    // Runs from the identity's constructor for mtls/static: fields set after `identity` may not exist yet.
    this.buffers.moveTo(tenant);
    if (this.authTimer !== undefined) clearTimeout(this.authTimer);
    this.authTimer = undefined;
    this.deps.onEstablished?.(this);
  }

  /** Until a tenant is established, the connection must authenticate within authTimeoutMS of its last hello. */
  private armAuthTimer(): void {
    if (this.authTimer !== undefined) clearTimeout(this.authTimer);
    this.authTimer = undefined;
    const timeoutMS = this.deps.config.limits.authTimeoutMS;
    if (timeoutMS <= 0 || this.closed || this.identity.tenant !== undefined) return;
    this.authTimer = setTimeout(() => {
      this.authTimer = undefined;
      if (this.identity.tenant !== undefined) return;
      this.observer.shed('auth_timeout');
      this.logger.info({ authTimeoutMS: timeoutMS }, 'not authenticated within authTimeoutMS of the last hello');
      this.close('authentication timeout');
    }, timeoutMS);
    this.authTimer.unref();
  }

  /** @internal The byte budget took this connection's bytes back (ShedOwner). */
  accountShed(account: BufferAccount): void {
    this.shed(account.key);
  }

  /** The byte budget took this connection's bytes back: close it (never wait for it). */
  private shed(account: string): void {
    if (this.closed) return;
    this.observer.shed('buffer_budget');
    this.logger.warn(
      {
        maxBufferedBytes: this.deps.bufferBudget?.maxBytes ?? this.deps.config.limits.maxBufferedBytes,
        unauthenticated: account === UNAUTHENTICATED_ACCOUNT,
      },
      'closing: the tenant holds more than its share of limits.maxBufferedBytes while others need memory',
    );
    this.close('buffer budget exceeded');
  }

  /** @internal ReplyCharge: bytes of a reply to this connection's command being read off the upstream. */
  chargeReply(bytes: number): boolean {
    return this.buffers.charge(bytes);
  }

  /** @internal ReplyCharge: a reply being read was dropped (its upstream connection failed or closed). */
  releaseReply(bytes: number): void {
    this.buffers.release(bytes);
  }

  /** @internal ReplyCharge: a reply was delivered with what was charged for it; its write takes that over. */
  handOverReply(bytes: number): void {
    this.handedReplyBytes += bytes;
  }

  /** What was handed over and not taken by a write is released (the forward is over). */
  private releaseHandedReply(): void {
    const handed = this.handedReplyBytes;
    this.handedReplyBytes = 0;
    if (handed > 0) this.buffers.release(handed);
  }

  /** connectionId, remote, and the tenant once established. */
  private get logger(): Logger {
    return this.observer.logger;
  }

  /** @internal For the shared socket handlers. */
  observerOf(): ConnectionObserver {
    return this.observer;
  }

  /**
   * Closes the connection. By default at once: in-flight work is abandoned and its upstream
   * connection discarded. `graceful` (only for an idle connection) flushes what was written
   * first, so a reply just sent is not cut off.
   */
  close(reason: string, options: { graceful?: boolean } = {}): void {
    if (this.closed) return;
    this.clearTimers();
    if (options.graceful !== true) {
      // Destroying the socket drops what it buffered: the budget gets it back now, and nothing more is
      // read. The bytes go with it: the frames received and not yet handled, the one being assembled,
      // and the request waiting for admission (the budget no longer counts them, so nothing may hold them).
      this.buffers.close();
      this.ending = true;
      this.decoder.discard();
      this.pending.length = 0;
      this.endAdmissionWait();
    }
    if (options.graceful === true) {
      if (this.ending) return;
      this.ending = true;
      this.logger.info({ reason }, 'closing client connection');
      // Destroyed once the written bytes are flushed, whether or not the client answers the FIN.
      this.socket.end(() => this.socket.destroy());
      return;
    }
    this.logger.info({ reason }, 'closing client connection');
    this.socket.destroy();
  }

  /** No request is being processed and no byte of a frame is buffered. */
  get idle(): boolean {
    return !this.processing && this.pending.length === 0 && this.decoder.bufferedBytes === 0;
  }

  /**
   * Shutdown: an idle connection is closed now; a busy one once its request is answered (and
   * the frames already received are handled). Returns whether it was closed now.
   */
  drain(): boolean {
    if (this.closed || this.ending) return true;
    this.draining = true;
    if (!this.idle) return false;
    this.close('proxy shutting down', { graceful: true });
    return true;
  }

  /** @internal The socket's 'data' (see onSocketData). */
  onData(chunk: Buffer): void {
    if (this.closed || this.ending) return;
    this.observer.bytes('client', 'received', chunk.length);
    // Held until the frames it carries are handled (released per frame in processPending).
    if (!this.buffers.charge(chunk.length)) return;
    // Charged to the tenant's byte rate as read (tenant-limits.ts `received`).
    const tenant = this.identity.countedTenant;
    const readPauseMS = tenant === undefined ? 0 : this.deps.tenantLimits.received(tenant, chunk.length);
    this.disarmIdleTimer();
    let framed = false;
    try {
      this.decoder.push(chunk, (frame) => {
        framed = true;
        this.pending.push(frame);
      });
      // Bytes copied into a frame spanning chunks: the chunks are garbage now (the budget collects them).
      const copied = this.decoder.takeCopiedBytes();
      if (copied > 0) this.deps.bufferBudget?.discarded(copied);
    } catch (error) {
      this.failConnection(error);
      return;
    }
    if (this.processing) return;
    // A frame's clock starts with its first byte: a new partial frame after a whole one restarts it.
    if (this.decoder.bufferedBytes === 0) this.clearFrameTimer();
    else if (framed || this.deadline?.isArmed(FRAME_TIMEOUT) !== true) this.armFrameTimer();
    if (this.pending.length > 0) void this.processPending();
    else if (readPauseMS > 0) this.pauseReading(readPauseMS);
  }

  /**
   * Stops reading while the tenant is over its byte rate (tenant-limits.ts readPauseMS): the
   * client's bytes wait in its socket, not in the proxy. Its frame clock stops meanwhile (the
   * proxy is not reading). True when paused.
   */
  private pauseForByteRate(): boolean {
    if (this.readPause !== undefined) return true;
    const tenant = this.identity.countedTenant;
    if (tenant === undefined) return false;
    const pauseMS = this.deps.tenantLimits.readPauseMS(tenant);
    if (pauseMS <= 0) return false;
    this.pauseReading(pauseMS);
    return true;
  }

  private pauseReading(pauseMS: number): void {
    if (this.readPause !== undefined) return;
    this.observer.delayedByTenantLimit('read');
    this.socket.pause();
    this.clearFrameTimer();
    this.readPause = setTimeout(() => {
      this.readPause = undefined;
      if (!this.processing) this.resumeReading();
    }, pauseMS);
  }

  /** After a request was handled or a byte-rate pause ended: reading goes on, unless paused again. */
  private resumeReading(): void {
    if (this.closed || this.ending || this.socket.destroyed || this.pauseForByteRate()) return;
    this.socket.resume();
    if (this.decoder.bufferedBytes > 0) this.armFrameTimer();
    else if (this.draining) this.close('proxy shutting down: request answered', { graceful: true });
    else this.armIdleTimer();
  }

  private async processPending(): Promise<void> {
    this.processing = true;
    this.socket.pause();
    // The client cannot send while the proxy is not reading: its frame clock stops meanwhile.
    this.disarmIdleTimer();
    this.clearFrameTimer();
    this.clearAuthTimer();
    try {
      for (
        let frame = this.pending.shift();
        frame !== undefined && !this.closed && !this.ending;
        frame = this.pending.shift()
      ) {
        try {
          const turns = this.deps.turns;
          if (turns === undefined) {
            await this.handleFrame(frame);
            continue;
          }
          // Past its tenant's share of this turn, a small request waits for the tenant's turn
          // (turn-share.ts); a large one is already validated and copied in fair slices.
          const account = this.account;
          if (frame.length < SLICED_VALIDATION_MIN_BYTES && !turns.mayRunNow(account)) {
            await turns.wait(account);
            if (this.closed || this.ending) break;
          }
          const started = turns.now();
          const handled = this.handleFrame(frame);
          turns.note(account, turns.now() - started);
          await handled;
        } finally {
          this.buffers.release(frame.length);
        }
      }
    } catch (error) {
      this.failConnection(error);
    } finally {
      this.processing = false;
      this.resumeReading();
    }
  }

  /** (Re)starts the idle clock: the connection's deadline on the shared list for its duration. */
  private armIdleTimer(): void {
    const timeout = this.deps.config.limits.clientIdleTimeoutMS;
    if (timeout <= 0 || this.closed) return;
    (this.deadline ??= new Deadline(this)).arm(timeout, IDLE_TIMEOUT);
  }

  /** Stops the idle clock while the connection is busy. */
  private disarmIdleTimer(): void {
    this.clearIdleTimer();
  }

  private armFrameTimer(): void {
    (this.deadline ??= new Deadline(this)).arm(Math.max(0, this.deps.config.limits.frameTimeoutMS), FRAME_TIMEOUT);
  }

  /** @internal The idle or frame deadline passed (deadlines.ts). */
  deadlineExpired(kind: number): void {
    if (kind === IDLE_TIMEOUT) {
      if (!this.idle) return;
      const timeout = this.deps.config.limits.clientIdleTimeoutMS;
      this.logger.info({ clientIdleTimeoutMS: timeout }, 'client idle for clientIdleTimeoutMS');
      this.close('idle timeout', { graceful: true });
      return;
    }
    if (this.processing || this.decoder.bufferedBytes === 0) return;
    this.observer.protocolError('FrameTimeout');
    this.logger.warn(
      {
        code: 'FrameTimeout',
        frameTimeoutMS: this.deps.config.limits.frameTimeoutMS,
        bufferedBytes: this.decoder.bufferedBytes,
      },
      'protocol violation: message not received in full within frameTimeoutMS',
    );
    this.close('frame timeout');
  }

  private clearIdleTimer(): void {
    if (this.deadline?.isArmed(IDLE_TIMEOUT) === true) this.deadline.disarm();
  }

  private clearFrameTimer(): void {
    if (this.deadline?.isArmed(FRAME_TIMEOUT) === true) this.deadline.disarm();
  }

  private clearAuthTimer(): void {
    if (this.authTimer !== undefined) clearTimeout(this.authTimer);
    this.authTimer = undefined;
  }

  private clearTimers(): void {
    if (this.readPause !== undefined) clearTimeout(this.readPause);
    this.readPause = undefined;
    this.clearIdleTimer();
    this.clearFrameTimer();
    this.clearAuthTimer();
  }

  private failConnection(error: unknown): void {
    // The client already left (e.g. right after an unacknowledged command whose upstream reply
    // the proxy was still waiting for): nothing to refuse, count or report.
    if (this.closed) return;
    const reason = error instanceof Error ? error.message : String(error);
    const code = ProxyError.is(error) ? error.codeName : 'InternalError';
    this.observer.protocolError(code);
    if (!ProxyError.is(error)) this.logger.error({ err: error }, 'unexpected error; closing connection');
    else this.logger.warn({ code }, `protocol violation: ${reason}`);
    this.close(reason);
  }

  private async handleFrame(frame: Buffer): Promise<void> {
    const header = readHeader(frame);
    let message = frame;
    let compressor: CompressorName | undefined;
    if (header.opCode === OpCode.OP_COMPRESSED) {
      compressor = compressorOfFrame(frame);
      message = await decompressMessage(frame, this.maxMessageSize);
      if (compressor !== undefined) this.observer.compressed(compressor, 'received');
      if (!this.buffers.charge(message.length)) return;
    }
    try {
      const request: Request = { requestId: header.requestId, compressor };
      // Admitted at once in the common case: no promise to wait for.
      // Its bytes on the wire were charged to the byte rate as they were read; what decompression added is charged now.
      const admitted = this.admit(message, request, message.length - frame.length);
      if (admitted !== true && !(await admitted)) return;
      this.identity.followReload();
      const opCode = readHeader(message).opCode;
      if (opCode === OpCode.OP_MSG) return await this.handleOpMsg(message, request);
      if (opCode === OpCode.OP_QUERY) return await this.handleOpQuery(message, request);
      return await this.refuseOpcode(opCode, request);
    } finally {
      if (message !== frame) this.buffers.release(message.length);
    }
  }

  /**
   * Charges a tenant's request to its byte and operation rates before anything parses it (a
   * flood of huge refused commands must cost the proxy little): waits while the tenant is over
   * its byte rate, or answers the limit error unparsed. Returns whether to handle the request.
   */
  private admit(message: Buffer, request: Request, unchargedBytes: number): boolean | Promise<boolean> {
    const limits = this.deps.tenantLimits;
    this.cpuStarted = undefined;
    // No per-tenant rates or CPU budget configured: nothing to charge (admitRequest would admit at once).
    if (limits.enabled === false) return !this.closed && !this.ending;
    const tenant = this.identity.countedTenant;
    const opCode = readHeader(message).opCode;
    const name = opCode === OpCode.OP_MSG ? requestCommandName(message) : undefined;
    const operation = opCode !== OpCode.OP_QUERY && (name === undefined || !HELLO_COMMANDS.has(name));
    // Without a tenant, only the CPU budget of the account all such connections share applies.
    const admission =
      tenant === undefined
        ? limits.admitUnauthenticated(UNAUTHENTICATED_ACCOUNT, operation)
        : limits.admitRequest(tenant, unchargedBytes, operation);
    if (admission.refusal === undefined) {
      if (admission.delayMS > 0) {
        this.observer.delayedByTenantLimit(admission.delayedBy ?? 'bytes');
        return new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => {
            this.admissionWait = undefined;
            this.startCpuMeter();
            resolve(!this.closed && !this.ending);
          }, admission.delayMS);
          this.admissionWait = { timer, resolve };
        });
      }
      // The meter starts at the admission's own clock reading: a small request pays one more, at its end.
      if (limits.cpuMetered) this.cpuStarted = admission.at ?? limits.now();
      return !this.closed && !this.ending;
    }
    return this.refuseUnparsed(message, request, tenant, opCode, name, admission.refusal);
  }

  /** The connection closed while its request waited for admission: the wait ends now, refused. */
  private endAdmissionWait(): void {
    const wait = this.admissionWait;
    if (wait === undefined) return;
    this.admissionWait = undefined;
    clearTimeout(wait.timer);
    wait.resolve(false);
  }

  /** (Re)starts the CPU meter of the request being handled, after a wait (when a CPU budget is set). */
  private startCpuMeter(): void {
    const limits = this.deps.tenantLimits;
    this.cpuStarted = limits.cpuMetered ? limits.now() : undefined;
  }

  /** Stops the CPU meter (before a wait, or at the end of the request's work) and charges what it measured. */
  private chargeCpu(): void {
    const started = this.cpuStarted;
    if (started === undefined) return;
    this.cpuStarted = undefined;
    const limits = this.deps.tenantLimits;
    const now = limits.now();
    limits.chargeCpu(this.identity.countedTenant ?? UNAUTHENTICATED_ACCOUNT, now - started, now);
  }

  /** A request over its tenant's rates, answered unparsed (see `admit`); always false. */
  private async refuseUnparsed(
    message: Buffer,
    request: Request,
    tenant: string | undefined,
    opCode: number,
    name: string | undefined,
    refusal: TenantLimitExceeded,
  ): Promise<false> {
    // Measured, counted and audited like any refused command, from its top-level fields only.
    const labels = peekCommandLabels(message) ?? { name: name ?? 'unknown', db: '', namespace: '' };
    if (tenant !== undefined) this.observer.tenantCommandStarted(tenant);
    this.observer.overTenantLimit(labels, refusal);
    this.observer.refused(labels, tenant, denialRule(refusal));
    if (tenant !== undefined) this.observer.tenantCommandEnded(tenant);
    this.upstreamWaitNs = undefined;
    this.finished(labels, 'denied', process.hrtime.bigint());
    // A moreToCome request gets no reply: closing is the only answer it can get (catalogue 50).
    if (opCode === OpCode.OP_MSG && hasMoreToCome(message)) {
      throw new WireProtocolError(refusal.code, refusal.message, true, { cause: refusal });
    }
    await this.writeError(refusal, request, opCode === OpCode.OP_QUERY ? 'opReply' : 'opMsg');
    return false;
  }

  private handleOpMsg(frame: Buffer, request: Request): Promise<void> {
    const maxBsonDepth = this.deps.config.limits.maxBsonDepth;
    const { validation } = this.deps;
    // A large message is validated in slices between other work, in its tenant's turns
    // (validation-scheduler.ts): it must not hold the event loop while others' requests wait.
    if (validation !== undefined && frame.length >= SLICED_VALIDATION_MIN_BYTES) {
      const account = this.identity.countedTenant ?? UNAUTHENTICATED_ACCOUNT;
      // The scheduler charges its slices; the meter runs again for the decode and route after them.
      this.chargeCpu();
      return validation
        .validate(account, frame, { maxBsonDepth }, () => this.closed || this.ending)
        .then((prevalidated) => {
          if (this.closed || this.ending) return;
          this.startCpuMeter();
          // Its rewrite's copies are sliced too (forward: CommandView.copies).
          return this.decodeAndHandle(frame, request, { maxBsonDepth, prevalidated, deferCopies: true });
        });
    }
    return this.decodeAndHandle(frame, request, { maxBsonDepth });
  }

  private decodeAndHandle(
    frame: Buffer,
    request: Request,
    options: { maxBsonDepth: number; prevalidated?: PrevalidatedDocuments; deferCopies?: boolean },
  ): Promise<void> {
    let command: CommandView;
    try {
      command = decodeCommand(frame, options);
    } catch (error) {
      // A message refused late by its validation cost what it cost: charged.
      this.chargeCpu();
      return this.refuseUndecodable(frame, error, request);
    }
    return this.handleCommand(frame, command, request);
  }

  /** An OP_MSG that does not decode: answered with its error (or the connection closed). */
  private async refuseUndecodable(frame: Buffer, error: unknown, request: Request): Promise<void> {
    if (error instanceof WireProtocolError && error.fatal) throw error;
    this.observer.protocolError(ProxyError.is(error) ? error.codeName : 'InternalError');
    // A moreToCome request gets no reply, so a bad one can only be answered by closing.
    if (hasMoreToCome(frame)) throw error;
    await this.writeError(error, request, 'opMsg');
  }

  /** Routes one command and carries the route out; every command is measured once, here. */
  private async handleCommand(frame: Buffer, command: CommandView, request: Request): Promise<void> {
    const started = process.hrtime.bigint();
    let outcome = 'ok';
    this.upstreamWaitNs = undefined;
    /** The engine's refusal, already audited as its decision. */
    let decided: unknown;
    const tenantAtStart = this.identity.tenant;
    if (tenantAtStart !== undefined) this.observer.tenantCommandStarted(tenantAtStart);
    try {
      // Hints by index name on shared collections resolve through the tenant's index mapping (issue 13).
      // The engine is made on first use: not for the handshake and authentication (issue 16).
      if (this.deps.tenancy !== undefined && this.identity.tenant !== undefined && mayReachEngine(command.name)) {
        const engine = this.identity.engine;
        const hints =
          engine === undefined
            ? undefined
            : this.deps.tenancy.prepareHints(command.db, command.body, command.msg.sequences, engine.context);
        if (hints !== undefined) {
          this.chargeCpu();
          await hints;
          this.startCpuMeter();
        }
      }
      const next = route(command, this.identity.routeState());
      // A forwarded command's meter runs until its frame is made (forward); the others' stop here.
      if (next.action !== 'forward') this.chargeCpu();
      for (const { decision, rule } of next.decisions)
        this.observer.decision(command, this.identity.tenant, decision, rule);
      switch (next.action) {
        case 'refuse':
          outcome = 'denied';
          if (next.decided) decided = next.refusal;
          throw next.refusal;
        case 'local':
          outcome = next.outcome;
          await this.answer(next.reply, command, request);
          break;
        case 'forward':
          try {
            const checking = this.checkViews(next.plan);
            if (checking !== undefined) {
              this.chargeCpu();
              await checking;
              this.startCpuMeter();
            }
          } catch (error) {
            if (error instanceof PolicyRefusal) {
              outcome = 'denied';
              decided = error;
              this.observer.decision(command, this.identity.tenant, 'refused', error.rule);
            }
            throw error;
          }
          // An explain on a shared collection shows the tenant's own index names (issue 13).
          if (
            next.plan.reply?.explain !== undefined &&
            this.deps.tenancy !== undefined &&
            this.identity.engine !== undefined
          ) {
            this.chargeCpu();
            await this.deps.tenancy.prepareExplain(command.db, command.msg.body, this.identity.engine.context);
            this.startCpuMeter();
          }
          try {
            outcome = await this.forward(frame, command, next.plan, next.outcome, request);
          } finally {
            if (VIEW_CACHE_DDL.has(command.name)) this.forgetViews(next.plan);
          }
          break;
        case 'virtual':
          try {
            outcome = await this.runVirtual(command, next.operation, next.outcome, request);
          } finally {
            if (VIEW_CACHE_DDL.has(command.name) && 'db' in next.operation)
              this.deps.views?.invalidate(next.operation.db);
          }
          break;
      }
    } catch (error) {
      // Refused (by the route, a view check, a limit): the work so far is charged.
      this.chargeCpu();
      outcome = failureOutcome(error, outcome, command.name);
      if (error instanceof WireProtocolError && error.fatal) throw error;
      // Authentication failures are audited by the authenticator, isolation refusals where decided.
      if (outcome === 'denied' && error !== decided && !AUTH_COMMANDS.has(command.name))
        this.observer.refused(command, this.identity.tenant, denialRule(error));
      if (command.moreToCome) {
        // A moreToCome request gets no reply, so a refused one can only be answered by closing
        // the connection: the client must not believe its w:0 write succeeded (catalogue 50).
        const reason = ProxyError.is(error) ? error.message : 'request failed';
        throw new WireProtocolError(ProxyError.is(error) ? error.code : ErrorCodes.InternalError, reason, true, {
          cause: error,
        });
      }
      if (!this.closed) await this.writeError(error, request, 'opMsg');
      if (error === this.identity.overConnectionLimit)
        this.close('tenant connection limit reached', { graceful: true });
    } finally {
      this.cpuStarted = undefined;
      if (tenantAtStart !== undefined) this.observer.tenantCommandEnded(tenantAtStart);
      this.finished(command, outcome, started);
    }
  }

  /** Reports a handled command: its outcome, duration and the upstream's share of it. */
  private finished(command: CommandLabels, outcome: string, started: bigint): void {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const upstreamSeconds = this.upstreamWaitNs === undefined ? undefined : Number(this.upstreamWaitNs) / 1e9;
    this.observer.commandFinished(command, { outcome, seconds, upstreamSeconds, tenant: this.identity.tenant });
  }

  /** What the proxy answers itself. */
  private async answer(reply: LocalReply, command: CommandView, request: Request): Promise<void> {
    switch (reply.kind) {
      case 'hello':
        return this.replyHello(command.name, command.msg.body, request, 'opMsg');
      case 'authenticate': {
        const document = await this.identity.authenticator.handle(
          command.name,
          deserialize(command.msg.body),
          command.db,
        );
        this.identity.settle();
        this.identity.refuseIfOverConnectionLimit();
        return this.write(encodeReply(document, request.requestId, 'opMsg'));
      }
      case 'connectionStatus':
        return this.write(encodeReply(this.identity.authenticator.connectionStatus(), request.requestId, 'opMsg'));
      case 'document':
        return this.write(encodeReply(reply.document, request.requestId, 'opMsg'));
      case 'none':
        return;
    }
  }

  private async handleOpQuery(frame: Buffer, request: Request): Promise<void> {
    let commandName: string;
    let command: Uint8Array;
    try {
      ({ name: commandName, command } = legacyHello(frame, this.deps.config.limits.maxBsonDepth));
      this.chargeCpu();
    } catch (error) {
      this.chargeCpu();
      if (error instanceof WireProtocolError && error.fatal) throw error;
      this.observer.protocolError(ProxyError.is(error) ? error.codeName : 'InternalError');
      await this.writeError(error, request, 'opReply');
      return;
    }
    const started = process.hrtime.bigint();
    this.upstreamWaitNs = undefined;
    const labels: CommandLabels = { name: commandName, db: 'admin', namespace: 'admin' };
    try {
      this.identity.refuseIfOverConnectionLimit();
      await this.replyHello(commandName, command, request, 'opReply');
    } catch (error) {
      if (this.identity.overConnectionLimit === undefined || error !== this.identity.overConnectionLimit) throw error;
      this.observer.refused(labels, this.identity.tenant, denialRule(error));
      this.finished(labels, 'denied', started);
      await this.writeError(error, request, 'opReply');
      this.close('tenant connection limit reached', { graceful: true });
      return;
    }
    this.finished(labels, 'ok', started);
  }

  private async refuseOpcode(opCode: number, request: Request): Promise<void> {
    // Removed legacy opcodes and unknown ones: say why, never forward, then close (catalogue 44).
    this.observer.protocolError('UnsupportedOpcode');
    const error = new ProxyError(
      ErrorCodes.CommandNotSupported,
      `unsupported opcode ${opCode}; only OP_MSG is accepted`,
    );
    const format: ReplyFormat = opCode === OpCode.OP_GET_MORE ? 'opReply' : 'opMsg';
    await this.writeError(error, request, format);
    this.socket.end();
    throw new WireProtocolError(ErrorCodes.CommandNotSupported, `unsupported opcode ${opCode}`, true);
  }

  private async replyHello(
    commandName: string,
    body: Uint8Array,
    request: Request,
    format: ReplyFormat,
  ): Promise<void> {
    const helloRequest = deserialize(body);
    const context = {
      server: this.deps.server(),
      presentAs: this.deps.config.handshake.presentAs,
      compressors: this.deps.config.compression.compressors,
      maxMessageSizeBytes: this.maxMessageSize,
      connectionId: this.id,
    };
    acceptHello(helloRequest, context, this.handshake);
    // A hello restarts the authentication deadline: driver monitoring connections never authenticate.
    if (this.identity.tenant === undefined) this.armAuthTimer();
    const authFields = await this.identity.authenticator.helloFields(helloRequest);
    this.identity.settle();
    this.identity.refuseIfOverConnectionLimit();
    const document = buildHelloReply(commandName, helloRequest, context, this.handshake, authFields);
    // hello replies are never compressed (OP_COMPRESSED.md).
    await this.write(encodeReply(document, request.requestId, format));
  }

  /**
   * Forwards a command as its route planned (the engine's rewrite, or as sent) and streams the
   * replies back (transformed only when the plan says so). Returns the outcome label.
   */
  private async forward(
    frame: Buffer,
    command: CommandView,
    plan: ForwardPlan,
    outcome: string,
    request: Request,
  ): Promise<string> {
    const outgoing = forwardFrame(frame, command.msg, plan.rewrite, command.copies);
    // The proxy's own work on the request ends with its frame (large copies: the scheduler's slices).
    this.chargeCpu();
    const copied = outgoing === frame ? 0 : outgoing.length;
    // A rewritten body with sequences was encoded once before being copied into the frame: that
    // much is garbage now (without sequences it is encoded straight into the frame: forwardFrame).
    if (copied > 0 && plan.rewrite !== undefined && plan.rewrite.sequences.size > 0)
      this.deps.bufferBudget?.discarded(copied);
    if (!this.buffers.charge(copied))
      throw new WireProtocolError(ErrorCodes.ExceededMemoryLimit, 'buffer budget exceeded', true);
    // A large rewrite's copies (stamped documents, the frame) run in slices, in the tenant's turns.
    if (plan.rewrite !== undefined && command.copies !== undefined && !command.copies.finished) {
      const account = this.identity.countedTenant ?? UNAUTHENTICATED_ACCOUNT;
      const copying = this.deps.validation?.copy(account, command.copies, () => this.closed);
      if (copying === undefined) command.copies.runAll();
      else if (!(await copying)) {
        this.buffers.release(copied);
        throw new WireProtocolError(ErrorCodes.InternalError, 'client left before its request was sent', true);
      }
    }
    // Per-tenant in-flight and rate limits apply to what is actually forwarded (not to refusals
    // or local replies): over a limit the command is answered at once with an error.
    const tenant = this.identity.countedTenant;
    if (tenant !== undefined) {
      const refusal = this.deps.tenantLimits.startOperation(tenant);
      if (refusal !== undefined) {
        this.buffers.release(copied);
        this.observer.overTenantLimit(command, refusal);
        throw refusal;
      }
    }
    try {
      return await this.send(outgoing, plan, command.moreToCome, outcome, request);
    } finally {
      if (tenant !== undefined) this.deps.tenantLimits.endOperation(tenant);
      this.buffers.release(copied);
    }
  }

  /**
   * Before a read is forwarded: a namespace it reads (its target, a join's) that is a view an
   * operator created must keep the tenant to its own documents (catalogue 22). Checked on the
   * rewritten command (physical names); audit-only forwards the client's own command unchecked.
   */
  private checkViews(plan: ForwardPlan): Promise<void> | undefined {
    const views = this.deps.views;
    const engine = this.identity.engine;
    if (views === undefined || engine === undefined || plan.rewrite === undefined) return undefined;
    const { body } = plan.rewrite;
    const db = body.get('$db');
    if (db === undefined || db.type !== BsonType.string) return undefined;
    // Answered from the cache (a plain collection): no upstream wait to measure.
    const checking = views.check(stringOf(db), body, engine.context);
    return checking === undefined ? undefined : this.waitingOnUpstream(() => checking);
  }

  /** DDL went through the proxy: the view check forgets what it knew of the database. */
  private forgetViews(plan: ForwardPlan): void {
    const views = this.deps.views;
    const db = plan.rewrite?.body.get('$db');
    if (views === undefined || db === undefined || db.type !== BsonType.string) return;
    // renameCollection runs on admin and names both databases: forget everything.
    if (plan.rewrite?.body.first?.name === 'renameCollection') views.invalidateAll();
    else views.invalidate(stringOf(db));
  }

  /** A virtual operation, answered by the tenancy executor under the tenant's limits like a forwarded command. */
  private async runVirtual(
    command: CommandView,
    operation: VirtualOperation,
    outcome: string,
    request: Request,
  ): Promise<string> {
    const executor = this.deps.tenancy;
    const engine = this.identity.engine;
    if (executor === undefined || engine === undefined)
      throw new ProxyError(ErrorCodes.InternalError, 'no tenancy executor');
    const tenant = this.identity.countedTenant;
    if (tenant !== undefined) {
      const refusal = this.deps.tenantLimits.startOperation(tenant);
      if (refusal !== undefined) {
        this.observer.overTenantLimit(command, refusal);
        throw refusal;
      }
    }
    try {
      const reply = await this.waitingOnUpstream(() => executor.execute(operation, engine.context));
      await this.write(encodeReply(reply, request.requestId, 'opMsg'));
      return outcome;
    } finally {
      if (tenant !== undefined) this.deps.tenantLimits.endOperation(tenant);
    }
  }

  /**
   * Sends a (checked and rewritten) command upstream and streams its replies back to the client.
   * The upstream picks the connection per request (pool, transaction pin, passthrough connection)
   * and retries where that is safe; a failure it could not hide arrives as an UpstreamError with
   * the labels the driver needs, answered like any error. A reply stream cut in the middle
   * cannot be answered: the client connection is closed.
   */
  private async send(
    outgoing: Buffer,
    { traits, reply: plan }: ForwardPlan,
    moreToCome: boolean,
    outcome: string,
    request: Request,
  ): Promise<string> {
    // One command at a time per connection: its reply state lives here, for the bound callback.
    const state: ReplyState = {
      plan,
      engine: this.identity.engine,
      responseTo: request.requestId,
      compressor: request.compressor,
      ok: true,
      writes: undefined,
    };
    this.replying = state;
    let attempts: number;
    const started = process.hrtime.bigint();
    try {
      ({ attempts } = await this.deps.upstream.forward({
        frame: outgoing,
        traits,
        tenant: this.identity.countedTenant,
        session: this.upstreamSession,
        fireAndForget: moreToCome,
        // A moreToCome command is the client's last word on it (drivers close right after
        // endSessions): its leaving does not cancel it, nor close a healthy upstream connection
        // whose reply is only awaited to be dropped, nor make the command an upstream error.
        signal: moreToCome ? undefined : (this.gone ??= new ClientGone(this.closed)),
        onReply: (this.onUpstreamReply ??= (
          reply: Buffer,
          more: boolean,
          _connection: unknown,
          scan: ReplyScan,
        ): void => this.relayReply(reply, more, scan)),
        replyCharge: this,
      }));
    } catch (error) {
      if (error instanceof ReplyInterruptedError) {
        throw new WireProtocolError(error.code, error.message, true, { cause: error });
      }
      throw error;
    } finally {
      this.upstreamWaitNs = (this.upstreamWaitNs ?? 0n) + (process.hrtime.bigint() - started);
      if (this.replying === state) this.replying = undefined;
      // Charged for replies that never reached a write (held back for a retry, then dropped).
      if (this.handedReplyBytes > 0) this.releaseHandedReply();
    }
    this.observer.bytes('upstream', 'sent', outgoing.length * attempts);
    // Replies are written in order even when compression (async) is involved; usually all are written already.
    if (state.writes !== undefined) await state.writes;
    if (!state.ok) return 'upstream_error';
    return attempts > 1 ? 'retried' : outcome;
  }

  /** One upstream reply of the command being sent: transformed per its plan, re-addressed, written. */
  private relayReply(upstreamReply: Buffer, moreToCome: boolean, scan: ReplyScan): void {
    const state = this.replying;
    // The command was abandoned (its send() is over): nothing to relay it to.
    if (state === undefined) {
      if (this.handedReplyBytes > 0) this.releaseHandedReply();
      return;
    }
    this.observer.bytes('upstream', 'received', upstreamReply.length);
    let reply = upstreamReply;
    if (state.plan !== undefined && state.engine !== undefined)
      reply = replyAfterPlan(state.engine, state.plan, reply, scan);
    const replyId = nextRequestId();
    setRequestId(reply, replyId);
    setResponseTo(reply, state.responseTo);
    // Each exhaust reply answers the previous one.
    state.responseTo = replyId;
    // The upstream's reply, whose scan the forwarding layer made (no reply plan changes `ok`).
    state.ok &&= scan.isOk();
    // What was charged while the reply was read is this write's charge now (no double counting).
    const prepaid = this.handedReplyBytes;
    this.handedReplyBytes = 0;
    const compressor = state.compressor;
    if (state.writes === undefined && compressor === undefined) {
      // Nothing queued before it: written now (a promise only while the client is slow to read).
      state.writes = this.writeReplyNow(reply, moreToCome, prepaid);
    } else {
      const previous = state.writes ?? Promise.resolve();
      state.writes = previous.then(() => this.writeReply(reply, compressor, moreToCome, prepaid));
    }
  }

  /** Runs `work` (acquiring an upstream connection, a request) adding its time to the command's upstream wait. */
  private async waitingOnUpstream<T>(work: () => Promise<T>): Promise<T> {
    const started = process.hrtime.bigint();
    try {
      return await work();
    } finally {
      this.upstreamWaitNs = (this.upstreamWaitNs ?? 0n) + (process.hrtime.bigint() - started);
    }
  }

  /**
   * Writes one upstream reply. The upstream connection is never paused for a slow client (it
   * would hold a pool connection other tenants share): the reply is buffered for the client and
   * charged to its tenant's share of the byte budget. While more replies of an exhaust stream
   * follow (`exhaust`), a client that has not read more than its bound (a sixteenth of
   * maxBufferedBytes, at least one message) is closed, which ends the stream and frees that upstream
   * connection. After the last reply the proxy waits for the drain before this client's next request.
   */
  private async writeReply(
    reply: Buffer,
    compressor: CompressorName | undefined,
    exhaust: boolean,
    prepaid: number,
  ): Promise<void> {
    let bytes = reply;
    if (compressor !== undefined) {
      try {
        bytes = await compressMessage(reply, compressor, this.deps.config.compression.zlibLevel);
      } catch (error) {
        this.buffers.release(prepaid);
        throw error;
      }
      this.observer.compressed(compressor, 'sent');
    }
    await this.writeReplyNow(bytes, exhaust, prepaid);
  }

  /**
   * `writeReply` of bytes ready to go: a promise only when the proxy must wait for the client to
   * read. `prepaid`: what is already charged for the reply (while it was read off the upstream).
   */
  private writeReplyNow(bytes: Buffer, exhaust: boolean, prepaid: number): Promise<void> | undefined {
    if (this.closed || this.socket.destroyed) {
      this.buffers.release(prepaid);
      return undefined;
    }
    if (!exhaust) return this.writeNow(bytes, prepaid);
    const bound = Math.max(this.deps.config.limits.maxBufferedBytes / 16, this.maxMessageSize);
    if (this.unreadReplyBytes > bound) {
      this.observer.shed('slow_reader');
      this.logger.warn(
        { unreadBytes: this.unreadReplyBytes, bound },
        'closing: the client does not read an exhaust stream (unread replies over a sixteenth of maxBufferedBytes)',
      );
      this.close('slow reader');
      return undefined;
    }
    this.writeCharged(bytes, prepaid);
    return undefined;
  }

  /**
   * Writes `bytes` charged to the budget until flushed; false when the budget shed this connection
   * instead. `prepaid` of them are charged already (a reply charged while it was read): only the
   * difference is charged, or released when the reply shrank (its upstream copy is garbage now).
   */
  private writeCharged(bytes: Buffer, prepaid = 0): boolean {
    const more = bytes.length - prepaid;
    if (more < 0) this.buffers.release(-more);
    else if (!this.buffers.charge(more)) return false;
    this.unreadReplyBytes += bytes.length;
    this.observer.bytes('client', 'sent', bytes.length);
    const flushed = this.socket.write(bytes, () => {
      this.unreadReplyBytes -= bytes.length;
      this.buffers.release(bytes.length);
    });
    return flushed;
  }

  private async writeError(error: unknown, request: Request, format: ReplyFormat): Promise<void> {
    if (ProxyError.is(error)) this.logger.debug({ code: error.codeName }, error.message);
    else this.logger.error({ err: error }, 'unexpected error handling a request');
    await this.write(encodeErrorReply(error, request.requestId, format));
  }

  /**
   * Writes `bytes` and waits until the client has taken them, so the proxy holds at most one
   * reply per connection. A client that reads nothing for clientIdleTimeoutMS is closed (it would
   * hold its bytes, and this connection, forever).
   */
  private async write(bytes: Buffer): Promise<void> {
    await this.writeNow(bytes);
  }

  /** `write`, without a promise when the socket took the bytes at once (the common case). */
  private writeNow(bytes: Buffer, prepaid = 0): Promise<void> | undefined {
    if (this.closed || this.socket.destroyed) {
      this.buffers.release(prepaid);
      return undefined;
    }
    if (this.writeCharged(bytes, prepaid)) return undefined;
    if (this.closed || this.socket.destroyed) return undefined;
    const timeoutMS = this.deps.config.limits.clientIdleTimeoutMS;
    return new Promise<void>((resolve) => {
      const stalled =
        timeoutMS > 0
          ? setTimeout(() => {
              this.observer.shed('slow_reader');
              this.logger.info({ clientIdleTimeoutMS: timeoutMS }, 'client read nothing for clientIdleTimeoutMS');
              this.close('stalled reader');
            }, timeoutMS).unref()
          : undefined;
      const done = (): void => {
        if (stalled !== undefined) clearTimeout(stalled);
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  /** @internal The socket's 'close' (see onSocketClose). */
  onSocketClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimers();
    this.buffers.close();
    // What was received is dropped with the socket (close() does the same when the proxy closes).
    this.pending.length = 0;
    this.decoder.discard();
    this.endAdmissionWait();
    // A request abandoned mid-flight (e.g. an exhaust cursor) may still receive replies: its
    // upstream connection can never be reused, so aborting closes it (and stops any retry).
    this.gone?.abort();
    this.deps.upstream.endSession(this.upstreamSession);
    this.identity.close();
    this.observer.closed(this.identity.countedTenant);
    this.onClosed(this);
  }
}

/** The connection a client socket belongs to, for the handlers every connection shares. */
const CONNECTION = Symbol('clientConnection');
type OwnedSocket = ClientSocket & { [CONNECTION]: ClientConnection };

function onSocketData(this: OwnedSocket, chunk: Buffer): void {
  this[CONNECTION].onData(chunk);
}

function onSocketError(this: OwnedSocket, error: Error): void {
  const observer = this[CONNECTION].observerOf();
  if (observer.logs?.('debug') === false) return;
  observer.logger.debug({ err: error.message }, 'client socket error');
}

function onSocketClose(this: OwnedSocket): void {
  this[CONNECTION].onSocketClose();
}

/** What relaying the replies of the command being sent needs (see `send`). */
interface ReplyState {
  plan: ReplyPlan | undefined;
  engine: TenantEngine | undefined;
  /** The id the next reply answers: the request's, then each exhaust reply's. */
  responseTo: number;
  compressor: CompressorName | undefined;
  /** Every reply so far had ok: 1. */
  ok: boolean;
  /** The reply writes still under way, in order; undefined when all were taken at once. */
  writes: Promise<void> | undefined;
}

/**
 * The client left: aborted once, on close. An AbortSignal's part that forwarding reads
 * (CancelSignal), without an AbortController and EventTarget per command.
 */
class ClientGone implements CancelSignal {
  private listeners: Array<() => void> = [];

  /** `aborted`: made after the client left (a command that was already being handled). */
  constructor(public aborted: boolean) {}

  addEventListener(_type: 'abort', listener: () => void): void {
    if (!this.aborted) this.listeners.push(listener);
  }

  removeEventListener(_type: 'abort', listener: () => void): void {
    const index = this.listeners.indexOf(listener);
    if (index >= 0) this.listeners.splice(index, 1);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const listeners = this.listeners;
    this.listeners = [];
    for (const listener of listeners) listener();
  }
}

/** `host:port` of the client as a server's whatsmyuri shows it (IPv6 in brackets); none for an in-memory duplex. */
function clientAddressOf(socket: Duplex): string | undefined {
  const { remoteAddress: host, remotePort: port } = socket as Partial<Socket>;
  if (host === undefined) return undefined;
  return `${host.includes(':') ? `[${host}]` : host}:${port ?? 0}`;
}
