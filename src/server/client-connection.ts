/**
 * One client connection's pipeline:
 *   socket → FrameDecoder → (decompress) → parse → handshake | forward → reply → socket.
 *
 * Requests are handled strictly in order, one at a time, as a server does per connection; while
 * one is in flight the client socket is paused, so a client that pipelines or floods cannot make
 * the proxy buffer more than the frames of one read. Replies that need no change are forwarded
 * as the exact bytes the upstream sent (only the header ids are rewritten).
 * Identity, policy and rewrite steps slot in between `handleCommand` and `forward`.
 *
 * Timeouts and shutdown: a connection is *idle* when no request is being processed and no byte
 * of a frame is buffered. An idle connection is closed after `limits.clientIdleTimeoutMS`; once a
 * frame's first byte has arrived the whole frame must follow within `limits.frameTimeoutMS`
 * (the clock stops while the proxy itself is not reading, i.e. while a request is in flight).
 * `drain()` (shutdown) closes the connection as soon as it is idle.
 */
import type { Socket } from 'node:net';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import type { ProxyConfig, CompressorName, ListenerConfig } from '../config/types.js';
import { ErrorCodes, ProxyError, WireProtocolError } from '../errors.js';
import { FrameDecoder } from '../wire/frame-decoder.js';
import { readHeader, setRequestId, setResponseTo } from '../wire/header.js';
import { HEADER_LENGTH, OpCode, OpMsgFlag } from '../wire/constants.js';
import { parseOpMsg, encodeOpMsg, type OpMsg } from '../wire/op-msg.js';
import { parseOpQuery, unwrapLegacyCommand } from '../wire/op-query.js';
import { compressMessage, decompressMessage } from '../wire/op-compressed.js';
import { compressorNameOf } from '../wire/compression.js';
import { deserialize } from '../wire/bson.js';
import { BsonType, firstElement, readString } from '../wire/bson-scan.js';
import { readCommandEnvelope, replyIsOk, type CommandEnvelope } from '../protocol/command.js';
import {
  HELLO_COMMANDS,
  acceptHello,
  buildHelloReply,
  newHandshakeState,
  type AdvertisedServer,
} from '../protocol/hello.js';
import { encodeErrorReply, encodeReply, nextRequestId, type ReplyFormat } from '../protocol/replies.js';
import { AUTH_COMMANDS, ConnectionAuthenticator } from '../identity/authenticator.js';
import type { IdentityServices, PeerCertificate } from '../identity/types.js';
import { ReplyInterruptedError, type Upstream, type UpstreamSession } from '../upstream/upstream.js';
import { commandTraits } from '../upstream/command-traits.js';
import { UpstreamRelay } from './upstream-relay.js';
import { commandInput, type Decision, type IsolationEngine, type TenantEngine } from '../rewrite/engine.js';
import { PolicyRefusal, type ReplyPlan } from '../rewrite/types.js';
import type { AuditDecision, AuditLog } from '../observability/audit.js';
import { replyBody } from '../protocol/command.js';
import type { UpstreamConnection } from '../upstream/connection.js';
import type { ProxyMetrics } from '../observability/metrics.js';
import { TenantLimitExceeded, type TenantLimits } from './tenant-limits.js';

/** Answered by the proxy before a tenant exists; buildInfo is forwarded (it names no data). */
const PRE_AUTH_LOCAL_OK: ReadonlySet<string> = new Set(['ping', 'endSessions']);
const PRE_AUTH_FORWARDED: ReadonlySet<string> = new Set(['buildInfo', 'buildinfo']);
/**
 * Commands a client may send with moreToCome: no reply is expected. w:0 writes, and endSessions,
 * which drivers send so when they close (it opens nothing a tenant would not be told about).
 */
const FIRE_AND_FORGET_COMMANDS: ReadonlySet<string> = new Set([
  'insert',
  'update',
  'delete',
  'bulkWrite',
  'endSessions',
]);

export interface ClientConnectionDeps {
  config: ProxyConfig;
  upstream: Upstream;
  /** The upstream's current description (mirrored in hello). */
  server: () => AdvertisedServer;
  logger: Logger;
  metrics: ProxyMetrics;
  listener: ListenerConfig;
  identity: IdentityServices;
  /** The client certificate of a TLS connection (verified or not: see `authorized`). */
  peerCertificate: PeerCertificate | undefined;
  isolation: IsolationEngine;
  audit: AuditLog;
  /** Per-tenant connection, in-flight and rate limits, shared by every connection. */
  tenantLimits: TenantLimits;
  /**
   * The listener settings and identity services in effect now (hot reload). A connection with no
   * tenant yet authenticates against these, not the ones it was accepted with.
   */
  currentIdentity?: () => { listener: ListenerConfig; identity: IdentityServices };
}

interface Request {
  requestId: number;
  /** The compressor the client used for this request; the reply is compressed the same way. */
  compressor: CompressorName | undefined;
}

let nextConnectionId = 0;

export class ClientConnection {
  readonly id = ++nextConnectionId;
  logger: Logger;
  private authenticator: ConnectionAuthenticator;
  /** What `authenticator` was built from (compared with `deps.currentIdentity` before each message). */
  private authenticatorSettings: { listener: ListenerConfig; identity: IdentityServices };
  /** The tenant counted in the per-tenant connection gauge and limits, once established. */
  private countedTenant: string | undefined;
  /**
   * The tenant already had `limits.maxConnectionsPerTenant` connections when this one established
   * it: every command gets this error and the connection is closed after the first reply.
   */
  private tenantLimitError: TenantLimitExceeded | undefined;
  /** Checks and rewrites every command once the tenant is known (src/rewrite/engine.ts). */
  private tenantEngine: TenantEngine | undefined;
  /** Why the tenant cannot be isolated (e.g. not representable as the configured type). */
  private tenantEngineError: ProxyError | undefined;
  private readonly decoder: FrameDecoder;
  private readonly pending: Buffer[] = [];
  private readonly handshake = newHandshakeState();
  private processing = false;
  private closed = false;
  /** A graceful close (socket.end) is under way: nothing more is read. */
  private ending = false;
  /** Shutting down: close as soon as the connection is idle. */
  private draining = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private frameTimer: NodeJS.Timeout | undefined;
  /** This client's state in the upstream: transaction pins, a passthrough client's own connection. */
  private readonly upstreamSession: UpstreamSession;
  /** Aborted when the client leaves while a command is upstream (its connection is then closed). */
  private inFlight: AbortController | undefined;
  private readonly maxMessageSize: number;
  private readonly onClosed: (connection: ClientConnection) => void;
  private readonly remoteAddress: string;
  /**
   * Of the command being handled, the nanoseconds spent acquiring an upstream connection and
   * waiting for its replies; undefined while nothing was forwarded. (One command at a time.)
   */
  private upstreamWaitNs: bigint | undefined;
  /** The refusal of the command being handled that is already audited as an isolation decision. */
  private auditedRefusal: unknown;
  /** The body of the command being handled: its namespace is read from it only when audited or logged. */
  private commandBody: Buffer | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly deps: ClientConnectionDeps,
    onClosed: (connection: ClientConnection) => void,
  ) {
    this.onClosed = onClosed;
    this.remoteAddress = socket.remoteAddress ?? 'unknown';
    this.upstreamSession = deps.upstream.openSession();
    this.logger = deps.logger.child({ connectionId: this.id, remote: `${socket.remoteAddress}:${socket.remotePort}` });
    this.maxMessageSize = Math.min(deps.config.limits.maxMessageSizeBytes, deps.server().maxMessageSizeBytes);
    this.decoder = new FrameDecoder(this.maxMessageSize);
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (error) => this.logger.debug({ err: error.message }, 'client socket error'));
    socket.on('close', () => this.onSocketClose());
    deps.metrics.connectionOpened();
    this.logger.info('client connected');
    this.authenticatorSettings = { listener: deps.listener, identity: deps.identity };
    this.authenticator = this.createAuthenticator();
    this.onIdentityChange();
    this.armIdleTimer();
  }

  /** `host:port` of the client as a server's whatsmyuri shows it (IPv6 in brackets). */
  private clientAddress(): string {
    const host = this.socket.remoteAddress ?? '';
    return `${host.includes(':') ? `[${host}]` : host}:${this.socket.remotePort ?? 0}`;
  }

  private createAuthenticator(): ConnectionAuthenticator {
    return new ConnectionAuthenticator({
      listener: this.authenticatorSettings.listener,
      services: this.authenticatorSettings.identity,
      remoteAddress: this.remoteAddress,
      peerCertificate: this.deps.peerCertificate,
      logger: this.logger,
      connectionId: this.id,
    });
  }

  /**
   * Until a tenant is established, authentication follows reloads: a method or credential a
   * reload removed must not stay usable on a connection opened (or a SASL conversation begun)
   * before it. Once established, the tenant never changes, so nothing is rebuilt.
   */
  private followIdentityReload(): void {
    const now = this.deps.currentIdentity?.();
    if (now === undefined || this.authenticator.identity !== undefined) return;
    const built = this.authenticatorSettings;
    // Unrelated reloads (a new log level) replace the listener object too: compare its settings.
    if (now.identity === built.identity && isDeepStrictEqual(now.listener, built.listener)) return;
    this.authenticator.close();
    this.authenticatorSettings = now;
    this.authenticator = this.createAuthenticator();
    this.onIdentityChange();
  }

  /** Attaches a newly established tenant to logs and metrics, and pins a passthrough relay. */
  private onIdentityChange(): void {
    const identity = this.authenticator.identity;
    if (identity !== undefined && this.countedTenant === undefined && this.tenantLimitError === undefined) {
      const refusal = this.deps.tenantLimits.openConnection(identity.tenant);
      if (refusal !== undefined) {
        this.tenantLimitError = refusal;
        this.deps.metrics.tenantLimitRejection(refusal.reason);
        this.logger = this.logger.child({ tenant: identity.tenant, identityMethod: identity.method });
        this.logger.warn(
          { limit: this.deps.config.limits.maxConnectionsPerTenant },
          'tenant connection limit reached; refusing the connection',
        );
        return;
      }
      this.countedTenant = identity.tenant;
      this.deps.metrics.tenantConnectionOpened(identity.tenant);
      this.logger = this.logger.child({ tenant: identity.tenant, identityMethod: identity.method });
      try {
        this.tenantEngine = this.deps.isolation.forTenant(identity.tenant, { clientAddress: this.clientAddress() });
      } catch (error) {
        if (!ProxyError.is(error)) throw error;
        this.tenantEngineError = error;
        this.logger.error({ code: error.codeName }, `tenant cannot be isolated: ${error.message}`);
      }
    }
    const relay = this.authenticator.relay;
    if (relay instanceof UpstreamRelay) {
      // From now on this client's commands run as the user the upstream authenticated, on that
      // connection only: never on a pooled one (the proxy's own credentials).
      this.upstreamSession.dedicated = relay.connection;
    }
  }

  /**
   * Closes the connection. By default at once: in-flight work is abandoned and its upstream
   * connection discarded. `graceful` (only for an idle connection) flushes what was written
   * first, so a reply just sent is not cut off.
   */
  close(reason: string, options: { graceful?: boolean } = {}): void {
    if (this.closed) return;
    this.clearTimers();
    if (options.graceful === true) {
      if (this.ending) return;
      this.ending = true;
      this.logger.info({ reason }, 'closing client connection');
      // Destroyed once the written bytes are flushed, whether or not the client answers the FIN.
      this.socket.end(() => this.socket.destroy());
      return;
    }
    if (!this.ending) this.logger.info({ reason }, 'closing client connection');
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

  private onData(chunk: Buffer): void {
    if (this.closed || this.ending) return;
    this.deps.metrics.bytes('client', 'received', chunk.length);
    this.clearIdleTimer();
    let framed = false;
    try {
      this.decoder.push(chunk, (frame) => {
        framed = true;
        this.pending.push(frame);
      });
    } catch (error) {
      this.failConnection(error);
      return;
    }
    if (this.processing) return;
    // A frame's clock starts with its first byte: a new partial frame after a whole one restarts it.
    if (this.decoder.bufferedBytes === 0) this.clearFrameTimer();
    else if (framed || this.frameTimer === undefined) this.armFrameTimer();
    if (this.pending.length > 0) void this.processPending();
  }

  private async processPending(): Promise<void> {
    this.processing = true;
    this.socket.pause();
    // The client cannot send while the proxy is not reading: its frame clock stops meanwhile.
    this.clearTimers();
    try {
      for (
        let frame = this.pending.shift();
        frame !== undefined && !this.closed && !this.ending;
        frame = this.pending.shift()
      ) {
        await this.handleFrame(frame);
      }
    } catch (error) {
      this.failConnection(error);
    } finally {
      this.processing = false;
      if (!this.closed && !this.ending && !this.socket.destroyed) {
        this.socket.resume();
        if (this.decoder.bufferedBytes > 0) this.armFrameTimer();
        else if (this.draining) this.close('proxy shutting down: request answered', { graceful: true });
        else this.armIdleTimer();
      }
    }
  }

  private armIdleTimer(): void {
    this.clearIdleTimer();
    const timeout = this.deps.config.limits.clientIdleTimeoutMS;
    if (timeout <= 0 || this.closed) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (!this.idle) return;
      this.logger.info({ clientIdleTimeoutMS: timeout }, 'client idle for clientIdleTimeoutMS');
      this.close('idle timeout', { graceful: true });
    }, timeout);
    this.idleTimer.unref();
  }

  private armFrameTimer(): void {
    this.clearFrameTimer();
    const timeout = this.deps.config.limits.frameTimeoutMS;
    this.frameTimer = setTimeout(() => {
      this.frameTimer = undefined;
      if (this.processing || this.decoder.bufferedBytes === 0) return;
      this.deps.metrics.protocolError('FrameTimeout');
      this.logger.warn(
        { code: 'FrameTimeout', frameTimeoutMS: timeout, bufferedBytes: this.decoder.bufferedBytes },
        'protocol violation: message not received in full within frameTimeoutMS',
      );
      this.close('frame timeout');
    }, timeout);
    this.frameTimer.unref();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  private clearFrameTimer(): void {
    if (this.frameTimer !== undefined) clearTimeout(this.frameTimer);
    this.frameTimer = undefined;
  }

  private clearTimers(): void {
    this.clearIdleTimer();
    this.clearFrameTimer();
  }

  private failConnection(error: unknown): void {
    // The client already left (e.g. right after an unacknowledged command whose upstream reply
    // the proxy was still waiting for): nothing to refuse, count or report.
    if (this.closed) return;
    const reason = error instanceof Error ? error.message : String(error);
    const code = ProxyError.is(error) ? error.codeName : 'InternalError';
    this.deps.metrics.protocolError(code);
    if (!ProxyError.is(error)) this.logger.error({ err: error }, 'unexpected error; closing connection');
    else this.logger.warn({ code }, `protocol violation: ${reason}`);
    this.close(reason);
  }

  private async handleFrame(frame: Buffer): Promise<void> {
    const header = readHeader(frame);
    let message = frame;
    let compressor: CompressorName | undefined;
    if (header.opCode === OpCode.OP_COMPRESSED) {
      // Byte 24 is the compressorId: header(16) + originalOpcode(4) + uncompressedSize(4).
      compressor = compressorNameOfFrame(frame);
      message = await decompressMessage(frame, this.maxMessageSize);
      if (compressor !== undefined) this.deps.metrics.compressedMessage(compressor, 'received');
    }
    const request: Request = { requestId: header.requestId, compressor };
    this.followIdentityReload();
    const opCode = readHeader(message).opCode;
    if (opCode === OpCode.OP_MSG) return this.handleOpMsg(message, request);
    if (opCode === OpCode.OP_QUERY) return this.handleOpQuery(message, request);
    return this.refuseOpcode(opCode, request);
  }

  private async handleOpMsg(frame: Buffer, request: Request): Promise<void> {
    let msg: OpMsg;
    let envelope: CommandEnvelope;
    const fireAndForget =
      frame.length > HEADER_LENGTH + 4 && (frame.readUInt32LE(HEADER_LENGTH) & OpMsgFlag.moreToCome) !== 0;
    try {
      msg = parseOpMsg(frame, { maxBsonDepth: this.deps.config.limits.maxBsonDepth });
      envelope = readCommandEnvelope(msg.body);
    } catch (error) {
      if (error instanceof WireProtocolError && error.fatal) throw error;
      this.deps.metrics.protocolError(ProxyError.is(error) ? error.codeName : 'InternalError');
      // A moreToCome request gets no reply, so a bad one can only be answered by closing.
      if (fireAndForget) throw error;
      await this.writeError(error, request, 'opMsg');
      return;
    }
    await this.handleCommand(frame, msg, envelope, request);
  }

  private async handleCommand(frame: Buffer, msg: OpMsg, envelope: CommandEnvelope, request: Request): Promise<void> {
    const started = process.hrtime.bigint();
    let outcome = 'ok';
    this.upstreamWaitNs = undefined;
    this.auditedRefusal = undefined;
    this.commandBody = msg.body;
    const tenantAtStart = this.authenticator.identity?.tenant;
    if (tenantAtStart !== undefined) this.deps.metrics.tenantOperationStarted(tenantAtStart);
    try {
      const name = envelope.name;
      this.refuseIfOverConnectionLimit();
      if (HELLO_COMMANDS.has(name)) {
        await this.replyHello(name, msg.body, request, 'opMsg');
      } else if (AUTH_COMMANDS.has(name)) {
        const reply = await this.authenticator.handle(name, deserialize(msg.body), envelope.db);
        this.onIdentityChange();
        this.refuseIfOverConnectionLimit();
        await this.write(encodeReply(reply, request.requestId, 'opMsg'));
      } else if (name === 'connectionStatus') {
        await this.write(encodeReply(this.authenticator.connectionStatus(), request.requestId, 'opMsg'));
      } else if (this.authenticator.identity === undefined && PRE_AUTH_LOCAL_OK.has(name)) {
        if ((msg.flagBits & OpMsgFlag.moreToCome) === 0)
          await this.write(encodeReply({ ok: 1 }, request.requestId, 'opMsg'));
      } else if (this.authenticator.identity === undefined && !PRE_AUTH_FORWARDED.has(name)) {
        outcome = 'denied';
        throw this.authenticator.unauthorized(name);
      } else {
        outcome = await this.forward(frame, msg, request, envelope);
      }
    } catch (error) {
      outcome = failureOutcome(error, outcome, envelope.name);
      if (error instanceof WireProtocolError && error.fatal) throw error;
      // Authentication failures are audited by the authenticator, isolation refusals where decided.
      if (outcome === 'denied' && error !== this.auditedRefusal && !AUTH_COMMANDS.has(envelope.name))
        this.auditDenial(envelope, error);
      if ((msg.flagBits & OpMsgFlag.moreToCome) !== 0) {
        // A moreToCome request gets no reply, so a refused one can only be answered by closing
        // the connection: the client must not believe its w:0 write succeeded (catalogue 50).
        const reason = ProxyError.is(error) ? error.message : 'request failed';
        throw new WireProtocolError(ProxyError.is(error) ? error.code : ErrorCodes.InternalError, reason, true, {
          cause: error,
        });
      }
      if (!this.closed) await this.writeError(error, request, 'opMsg');
      if (error === this.tenantLimitError) this.close('tenant connection limit reached', { graceful: true });
    } finally {
      if (tenantAtStart !== undefined) this.deps.metrics.tenantOperationFinished(tenantAtStart);
      this.observeOperation(envelope.name, envelope.db, outcome, started);
      this.commandBody = undefined;
    }
  }

  /** Counts a handled command and, at debug level, logs it with its request-scoped fields. */
  private observeOperation(command: string, database: string, outcome: string, started: bigint): void {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const upstreamSeconds = this.upstreamWaitNs === undefined ? undefined : Number(this.upstreamWaitNs) / 1e9;
    const tenant = this.authenticator.identity?.tenant;
    this.deps.metrics.observeOperation({ command, database, outcome, seconds, upstreamSeconds, tenant });
    if (this.logger.isLevelEnabled('debug')) {
      // connectionId, remote and (once established) tenant come from the connection's logger.
      this.logger.debug(
        {
          commandName: command,
          namespace: namespaceOf(database, this.commandBody),
          outcome,
          durationMs: seconds * 1000,
          ...(upstreamSeconds === undefined ? {} : { upstreamMs: upstreamSeconds * 1000 }),
        },
        'command handled',
      );
    }
  }

  /** Audits a refusal that is not an isolation decision: not authenticated, a per-tenant limit. */
  private auditDenial(envelope: CommandEnvelope, error: unknown): void {
    let rule = 'denied';
    if (error instanceof PolicyRefusal) rule = error.rule;
    else if (error instanceof TenantLimitExceeded) rule = `limit.${error.reason}`;
    else if (ProxyError.is(error) && error.code === ErrorCodes.Unauthorized) rule = 'auth.required';
    this.audit(envelope, 'refused', rule);
  }

  private async handleOpQuery(frame: Buffer, request: Request): Promise<void> {
    // Catalogue items 44-45: OP_QUERY survives only for the legacy handshake on admin.$cmd.
    let commandName: string;
    let command: Uint8Array;
    try {
      const query = parseOpQuery(frame, { maxBsonDepth: this.deps.config.limits.maxBsonDepth });
      ({ name: commandName, command } = unwrapLegacyCommand(query.query));
      if (query.fullCollectionName !== 'admin.$cmd' || !HELLO_COMMANDS.has(commandName)) {
        throw new ProxyError(
          ErrorCodes.CommandNotSupported,
          'OP_QUERY is only supported for the hello handshake on admin.$cmd; use OP_MSG',
        );
      }
    } catch (error) {
      if (error instanceof WireProtocolError && error.fatal) throw error;
      this.deps.metrics.protocolError(ProxyError.is(error) ? error.codeName : 'InternalError');
      await this.writeError(error, request, 'opReply');
      return;
    }
    const started = process.hrtime.bigint();
    this.upstreamWaitNs = undefined;
    this.commandBody = undefined;
    try {
      this.refuseIfOverConnectionLimit();
      await this.replyHello(commandName, command, request, 'opReply');
    } catch (error) {
      if (this.tenantLimitError === undefined || error !== this.tenantLimitError) throw error;
      this.auditDenial({ name: commandName, db: 'admin' }, error);
      this.observeOperation(commandName, 'admin', 'denied', started);
      await this.writeError(error, request, 'opReply');
      this.close('tenant connection limit reached', { graceful: true });
      return;
    }
    this.observeOperation(commandName, 'admin', 'ok', started);
  }

  private async refuseOpcode(opCode: number, request: Request): Promise<void> {
    // Removed legacy opcodes and unknown ones: say why, never forward, then close (catalogue 44).
    this.deps.metrics.protocolError('UnsupportedOpcode');
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
    const authFields = await this.authenticator.helloFields(helloRequest);
    this.onIdentityChange();
    this.refuseIfOverConnectionLimit();
    const document = buildHelloReply(commandName, helloRequest, context, this.handshake, authFields);
    // hello replies are never compressed (OP_COMPRESSED.md).
    await this.write(encodeReply(document, request.requestId, format));
  }

  /** This connection's tenant was over `maxConnectionsPerTenant` when established. */
  private refuseIfOverConnectionLimit(): void {
    if (this.tenantLimitError !== undefined) throw this.tenantLimitError;
  }

  /**
   * Checks and rewrites a command with the tenant's isolation engine, forwards it, and streams
   * the replies back (transformed only when the engine's reply plan says so). Returns the
   * outcome label.
   */
  private async forward(frame: Buffer, msg: OpMsg, request: Request, envelope: CommandEnvelope): Promise<string> {
    const moreToCome = (msg.flagBits & OpMsgFlag.moreToCome) !== 0;
    if (moreToCome && !FIRE_AND_FORGET_COMMANDS.has(envelope.name)) {
      // Only unacknowledged writes may skip their reply; anything else would, e.g., open cursors nobody reads (catalogue 50).
      // A refusal like any other isolation rule: counted as denied and audited (it also closes the connection).
      throw new PolicyRefusal(
        'moreToCome.command',
        `moreToCome is only accepted on insert, update, delete, bulkWrite and endSessions, not ${envelope.name}`,
        ErrorCodes.InvalidOptions,
      );
    }
    let outgoing: Buffer;
    /** The body of `outgoing` (what forwarding reads sessions, cursors and read preference from). */
    let outgoingBody: Uint8Array = msg.body;
    let plan: ReplyPlan | undefined;
    let outcome = 'ok';
    if (this.authenticator.identity === undefined) {
      // Only the pre-auth commands that name no data get here (buildInfo).
      outgoing = this.outgoingFrame(frame, msg);
    } else {
      const engine = this.tenantEngine;
      if (engine === undefined)
        throw unrepresentable(
          this.tenantEngineError ?? new ProxyError(ErrorCodes.InternalError, 'no isolation engine'),
        );
      let decision: Decision;
      try {
        decision = engine.decide(commandInput(envelope.name, envelope.db, msg.body, msg.sequences, moreToCome));
      } catch (error) {
        // Policy refusals come back as decisions; a ProxyError here means the (reloaded) settings cannot represent the tenant.
        throw ProxyError.is(error) ? unrepresentable(error) : error;
      }
      if (decision.action === 'refuse') {
        this.recordDecision(envelope, 'refused', decision.refusal.rule);
        this.auditedRefusal = decision.refusal;
        throw decision.refusal;
      }
      if (decision.action === 'forward-original') {
        if (decision.wouldRefuse !== undefined)
          this.recordDecision(envelope, 'would-refuse', decision.wouldRefuse.rule);
        for (const note of decision.notes) this.recordDecision(envelope, 'would-rewrite', note.rule);
        outgoing = this.outgoingFrame(frame, msg);
      } else {
        const { result } = decision;
        for (const note of result.notes)
          this.recordDecision(envelope, note.kind === 'refusal' ? 'refused' : 'rewritten', note.rule);
        if (result.notes.length > 0) outcome = 'rewritten';
        if (result.reply.localReply !== undefined) {
          if (!moreToCome) await this.write(encodeReply(result.reply.localReply, request.requestId, 'opMsg'));
          return outcome;
        }
        outgoingBody = result.body.toBytes();
        outgoing = encodeOpMsg({
          requestId: msg.requestId,
          responseTo: 0,
          flagBits: msg.flagBits & ~OpMsgFlag.checksumPresent,
          body: outgoingBody,
          sequences: [...result.sequences].map(([identifier, documents]) => ({
            identifier,
            documents: documents.map((document) =>
              Buffer.from(document.buffer, document.byteOffset, document.byteLength),
            ),
          })),
        });
        plan = result.reply;
      }
    }
    // Per-tenant in-flight and rate limits apply to what is actually forwarded (not to refusals
    // or local replies): over a limit the command is answered at once with an error.
    const tenant = this.countedTenant;
    if (tenant !== undefined) {
      const refusal = this.deps.tenantLimits.startOperation(tenant);
      if (refusal !== undefined) {
        this.deps.metrics.tenantLimitRejection(refusal.reason);
        this.logger.debug({ reason: refusal.reason, commandName: envelope.name }, refusal.message);
        throw refusal;
      }
    }
    try {
      return await this.send(outgoing, outgoingBody, moreToCome, outcome, plan, request);
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
    body: Uint8Array,
    moreToCome: boolean,
    outcome: string,
    plan: ReplyPlan | undefined,
    request: Request,
  ): Promise<string> {
    let responseTo = request.requestId;
    let ok = true;
    const engine = this.tenantEngine;
    // Replies are written in order even when compression (async) is involved.
    let writes: Promise<void> = Promise.resolve();
    const inFlight = new AbortController();
    this.inFlight = inFlight;
    let attempts: number;
    try {
      ({ attempts } = await this.waitingOnUpstream(() =>
        this.deps.upstream.forward({
          frame: outgoing,
          traits: commandTraits(body),
          tenant: this.countedTenant,
          session: this.upstreamSession,
          fireAndForget: moreToCome,
          signal: inFlight.signal,
          onReply: (upstreamReply, moreToCome, connection) => {
            this.deps.metrics.bytes('upstream', 'received', upstreamReply.length);
            let reply = upstreamReply;
            if (plan !== undefined && engine !== undefined) reply = this.applyReplyPlan(engine, plan, reply);
            const replyId = nextRequestId();
            setRequestId(reply, replyId);
            setResponseTo(reply, responseTo);
            // Each exhaust reply answers the previous one.
            responseTo = replyId;
            ok &&= replyIsOk(reply);
            writes = writes.then(() => this.writeReply(reply, request.compressor, moreToCome ? connection : undefined));
          },
        }),
      ));
    } catch (error) {
      if (error instanceof ReplyInterruptedError) {
        throw new WireProtocolError(error.code, error.message, true, { cause: error });
      }
      throw error;
    } finally {
      if (this.inFlight === inFlight) this.inFlight = undefined;
    }
    this.deps.metrics.bytes('upstream', 'sent', outgoing.length * attempts);
    await writes;
    if (!ok) return 'upstream_error';
    return attempts > 1 ? 'retried' : outcome;
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

  /** The reply after the engine's plan (cursor ownership, names mapped back, values scrubbed). */
  private applyReplyPlan(engine: TenantEngine, plan: ReplyPlan, reply: Buffer): Buffer {
    const body = replyBody(reply);
    if (body === undefined) return reply;
    const changed = engine.reply(plan, body);
    if (changed === undefined) return reply;
    return encodeOpMsg({
      requestId: 0,
      responseTo: 0,
      flagBits: reply.readUInt32LE(HEADER_LENGTH) & OpMsgFlag.moreToCome,
      body: changed,
    });
  }

  private recordDecision(envelope: CommandEnvelope, decision: AuditDecision, rule: string): void {
    this.deps.metrics.policyDecision(decision, rule);
    this.audit(envelope, decision, rule);
  }

  private audit(envelope: CommandEnvelope, decision: AuditDecision, rule: string): void {
    this.deps.audit.decision({
      tenant: this.authenticator.identity?.tenant,
      command: envelope.name,
      namespace: namespaceOf(envelope.db, this.commandBody),
      rule,
      decision,
      connectionId: this.id,
      listener: this.deps.listener.name,
      remoteAddress: this.remoteAddress,
    });
  }

  /**
   * The bytes to send upstream. The original frame is reused when the proxy changed nothing;
   * a message whose flags were cleaned or that carried a checksum is re-encoded without one
   * (the upstream hop never uses checksums, and the header ids change anyway).
   */
  private outgoingFrame(frame: Buffer, msg: OpMsg): Buffer {
    const originalFlags = frame.readUInt32LE(HEADER_LENGTH);
    if (originalFlags === msg.flagBits) return frame;
    return encodeOpMsg({
      requestId: msg.requestId,
      responseTo: 0,
      flagBits: msg.flagBits & ~OpMsgFlag.checksumPresent,
      body: msg.body,
      sequences: msg.sequences,
    });
  }

  /**
   * Writes one upstream reply. While more replies of an exhaust stream follow (`upstream` given),
   * a client slower than the upstream pauses that upstream connection, still this request's,
   * until it drains. After the last reply the connection already serves other clients and must
   * not be paused: the proxy waits for the drain itself before it takes this client's next request.
   */
  private async writeReply(
    reply: Buffer,
    compressor: CompressorName | undefined,
    upstream: UpstreamConnection | undefined,
  ): Promise<void> {
    let bytes = reply;
    if (compressor !== undefined) {
      bytes = await compressMessage(reply, compressor, this.deps.config.compression.zlibLevel);
      this.deps.metrics.compressedMessage(compressor, 'sent');
    }
    if (this.closed) return;
    if (upstream === undefined) {
      await this.write(bytes);
      return;
    }
    if (!this.socket.write(bytes)) {
      // Client is slower than the upstream: stop reading upstream until the client drains.
      upstream.pause();
      // The paused stream holds a pool connection other clients share: a client that stops
      // reading altogether is closed after clientIdleTimeoutMS (like an idle one), which closes
      // that upstream connection and frees its slot.
      const timeoutMS = this.deps.config.limits.clientIdleTimeoutMS;
      const stalled =
        timeoutMS > 0
          ? setTimeout(() => {
              this.logger.info(
                { clientIdleTimeoutMS: timeoutMS },
                'client stopped reading an exhaust stream for clientIdleTimeoutMS',
              );
              this.close('stalled reader');
            }, timeoutMS).unref()
          : undefined;
      this.socket.once('drain', () => {
        if (stalled !== undefined) clearTimeout(stalled);
        upstream.resume();
      });
    }
    this.deps.metrics.bytes('client', 'sent', bytes.length);
  }

  private async writeError(error: unknown, request: Request, format: ReplyFormat): Promise<void> {
    if (ProxyError.is(error)) this.logger.debug({ code: error.codeName }, error.message);
    else this.logger.error({ err: error }, 'unexpected error handling a request');
    await this.write(encodeErrorReply(error, request.requestId, format));
  }

  private async write(bytes: Buffer): Promise<void> {
    if (this.closed) return;
    this.deps.metrics.bytes('client', 'sent', bytes.length);
    if (!this.socket.write(bytes)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.socket.off('drain', done);
          this.socket.off('close', done);
          resolve();
        };
        this.socket.on('drain', done);
        this.socket.on('close', done);
      });
    }
  }

  private onSocketClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.clearTimers();
    this.pending.length = 0;
    // A request abandoned mid-flight (e.g. an exhaust cursor) may still receive replies: its
    // upstream connection can never be reused, so aborting closes it (and stops any retry).
    this.inFlight?.abort();
    this.deps.upstream.endSession(this.upstreamSession);
    this.authenticator.close();
    if (this.countedTenant !== undefined) {
      this.deps.metrics.tenantConnectionClosed(this.countedTenant);
      this.deps.tenantLimits.closeConnection(this.countedTenant);
    }
    this.deps.metrics.connectionClosed();
    this.logger.info('client disconnected');
    this.onClosed(this);
  }
}

/** The codec a compressed request used; `noop` (or a bad id, rejected later) means none. */
function compressorNameOfFrame(frame: Buffer): CompressorName | undefined {
  const name = compressorNameOf(frame[HEADER_LENGTH + 8] ?? -1);
  return name === null || name === 'noop' ? undefined : name;
}

/** The outcome label of a command that threw (`current`: what the handler had already decided). */
/**
 * Every command of a tenant the isolation settings cannot represent (e.g. after a reload changed
 * `tenantValueType`) is refused: a denial like the others, audited, with the reason in the message.
 */
function unrepresentable(error: ProxyError): PolicyRefusal {
  return new PolicyRefusal(
    'tenant.unrepresentable',
    `the tenant cannot be isolated with the current isolation settings: ${error.message}`,
    error.code,
  );
}

function failureOutcome(error: unknown, current: string, command: string): string {
  if (current === 'denied' || error instanceof PolicyRefusal || error instanceof TenantLimitExceeded) return 'denied';
  if (!ProxyError.is(error)) return 'error';
  if (AUTH_COMMANDS.has(command) && error.code === ErrorCodes.AuthenticationFailed) return 'denied';
  // HostUnreachable: the upstream connection a passthrough client authenticated on is gone.
  if (error.name === 'UpstreamError' || error.code === ErrorCodes.HostUnreachable) return 'upstream_error';
  return 'error';
}

/** `db.collection` when the command's first field names a collection (find, insert…), else `db`. */
function namespaceOf(db: string, body: Buffer | undefined): string {
  const first = body === undefined ? null : firstElement(body);
  if (first === null || first.type !== BsonType.string || body === undefined) return db;
  // A name longer than any valid namespace is cut (the audit stream bounds its events anyway).
  return `${db}.${readString(body, first).slice(0, 1024)}`;
}
