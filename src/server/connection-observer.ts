/**
 * What a client connection reports, and where it goes: the connection calls a
 * `ConnectionObserver` (events, no sinks); `createConnectionObserver` (the listener builds one per
 * connection) turns the events into Prometheus metrics, audit events and log lines, with the
 * connection's fields (id, remote address, listener, tenant once known) attached once here. An
 * idle connection's observer is small: no closure per event and no child logger until a line
 * other than "client connected" is written.
 */
import type { Level, Logger } from 'pino';
import type { CompressorName } from '../config/types.js';
import type { TenantIdentity } from '../identity/types.js';
import type { AuditLog } from '../observability/audit.js';
import { warnThrottled, type LogThrottle } from '../observability/log-throttle.js';
import type { OperationRecorder, ProxyMetrics, ShedReason } from '../observability/metrics.js';
import type { CommandLabels } from './command-view.js';
import type { IsolationDecision } from './route.js';
import type { TenantLimitExceeded } from './tenant-limits.js';

export type Peer = 'client' | 'upstream';
export type Flow = 'received' | 'sent';

/** A handled command's result, measured from its arrival to its last reply byte written. */
export interface CommandResult {
  /** `ok`, `rewritten`, `retried`, `denied`, `error`, `upstream_error`. */
  outcome: string;
  seconds: number;
  /** Of `seconds`, the time spent acquiring upstream connections and awaiting replies; undefined: not forwarded. */
  upstreamSeconds: number | undefined;
  tenant: string | undefined;
}

export interface ConnectionObserver {
  /**
   * The connection's logger: connectionId and remote, then tenant and identity method once
   * established. For the connection's own messages and its authenticator's.
   */
  readonly logger: Logger;
  /** Whether a line at `level` would be written, without making the connection's logger (absent: read `logger`). */
  logs?(level: Level): boolean;
  /** An info line with the logger's fields, without making the connection's logger (absent: `logger.info`). */
  info?(message: string, fields?: Record<string, unknown>): void;
  opened(): void;
  /** `tenant`: the tenant the connection counted (it held one of the tenant's connections). */
  closed(tenant: string | undefined): void;
  tenantEstablished(identity: TenantIdentity): void;
  /** The tenant had `limit` connections already: this one is refused (every command, then closed). */
  tenantOverConnectionLimit(identity: TenantIdentity, refusal: TenantLimitExceeded, limit: number): void;
  bytes(peer: Peer, flow: Flow, count: number): void;
  /** One OP_COMPRESSED message from or to the client. */
  compressed(compressor: CompressorName, flow: Flow): void;
  /** `code`: an error code name, or e.g. `FrameTimeout`, `UnsupportedOpcode`. */
  protocolError(code: string): void;
  /** The tenant's in-flight gauge: a command started / ended. */
  tenantCommandStarted(tenant: string): void;
  tenantCommandEnded(tenant: string): void;
  commandFinished(command: CommandLabels, result: CommandResult): void;
  /** An isolation engine decision: counted and audited. */
  decision(command: CommandLabels, tenant: string | undefined, decision: IsolationDecision, rule: string): void;
  /** A refusal that is not an isolation decision (not authenticated, a per-tenant limit): audited. */
  refused(command: CommandLabels, tenant: string | undefined, rule: string): void;
  /** A command refused by the tenant's in-flight or rate limit. */
  overTenantLimit(command: CommandLabels, refusal: TenantLimitExceeded): void;
  /**
   * A request waits at admission: its tenant is over its byte rate or CPU budget; or (`read`)
   * the connection stops reading for a while: its tenant sent more than its byte rate.
   */
  delayedByTenantLimit(reason: 'bytes' | 'cpu' | 'read'): void;
  /** The proxy closed the connection to protect others (byte budget, slow reader, authentication deadline). */
  shed(reason: ShedReason): void;
}

/** Who the connection is, for its log lines and audit events. */
export interface ConnectionFields {
  connectionId: number;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  listener: string;
}

export interface ObservabilitySinks {
  metrics: ProxyMetrics;
  audit: AuditLog;
  logger: Logger;
  /** Warnings a client can cause once per connection, at most one per key and interval; absent: every one written. */
  warnings?: LogThrottle;
}

/**
 * The observer of one connection, on `sinks`. A class (its methods shared by every connection,
 * not a closure each) whose logger is a child made on first use: an idle connection that logs
 * nothing but its opening holds no logger of its own (issue 16). Its first line, "client
 * connected", goes through the parent with the same fields, so the output is the same.
 */
class SinkObserver implements ConnectionObserver {
  readonly #sinks: ObservabilitySinks;
  readonly #fields: ConnectionFields;
  /** The connection's logger once something asked for it; undefined until then. */
  #logger: Logger | undefined;
  /** The tenant's identity once established: the logger's second set of fields. */
  #identity: TenantIdentity | undefined;
  #recorder: OperationRecorder | undefined;

  constructor(sinks: ObservabilitySinks, fields: ConnectionFields) {
    this.#sinks = sinks;
    this.#fields = fields;
  }

  get logger(): Logger {
    if (this.#logger === undefined) {
      const logger = this.#sinks.logger.child(this.#connectionBindings());
      const identity = this.#identity;
      this.#logger =
        identity === undefined ? logger : logger.child({ tenant: identity.tenant, identityMethod: identity.method });
    }
    return this.#logger;
  }

  logs(level: Level): boolean {
    return (this.#logger ?? this.#sinks.logger).isLevelEnabled(level);
  }

  #connectionBindings(): { connectionId: number; remote: string } {
    const { connectionId, remoteAddress, remotePort } = this.#fields;
    return { connectionId, remote: `${remoteAddress}:${remotePort}` };
  }

  /** An info line with the logger's fields, through the parent while the connection has no logger of its own. */
  info(message: string, fields?: Record<string, unknown>): void {
    if (this.#logger !== undefined) {
      if (fields === undefined) this.#logger.info(message);
      else this.#logger.info(fields, message);
      return;
    }
    const root = this.#sinks.logger;
    if (!root.isLevelEnabled('info')) return;
    const identity = this.#identity;
    root.info(
      {
        ...this.#connectionBindings(),
        ...(identity === undefined ? {} : { tenant: identity.tenant, identityMethod: identity.method }),
        ...fields,
      },
      message,
    );
  }

  /** `tenant`'s fields are added to the logger's (now, or when it is made). */
  #withTenant(identity: TenantIdentity): void {
    this.#identity = identity;
    if (this.#logger !== undefined)
      this.#logger = this.#logger.child({ tenant: identity.tenant, identityMethod: identity.method });
  }

  #audit(command: CommandLabels, tenant: string | undefined, decision: IsolationDecision, rule: string): void {
    const { audit } = this.#sinks;
    // A rewrite is not logged unless audit.rewrites: the namespace (decoded) is not needed then.
    if (audit.logs?.(decision) === false) return;
    const { connectionId, listener, remoteAddress } = this.#fields;
    audit.decision({
      tenant,
      command: command.name,
      namespace: command.namespace,
      rule,
      decision,
      connectionId,
      listener,
      remoteAddress: remoteAddress ?? 'unknown',
    });
  }

  opened(): void {
    this.#sinks.metrics.connectionOpened();
    this.info('client connected');
  }

  closed(tenant: string | undefined): void {
    const { metrics } = this.#sinks;
    if (tenant !== undefined) metrics.tenantConnectionClosed(tenant);
    metrics.connectionClosed();
    this.info('client disconnected');
  }

  tenantEstablished(identity: TenantIdentity): void {
    this.#sinks.metrics.tenantConnectionOpened(identity.tenant);
    this.#withTenant(identity);
  }

  tenantOverConnectionLimit(identity: TenantIdentity, refusal: TenantLimitExceeded, limit: number): void {
    this.#sinks.metrics.tenantLimitRejection(refusal.reason);
    this.#withTenant(identity);
    // One line per tenant and interval: a flood of refused connections is not a flood of lines.
    warnThrottled(
      this.#sinks.warnings,
      `tenant:${identity.tenant}`,
      this.logger,
      { limit },
      'tenant connection limit reached; refusing the connection',
    );
  }

  bytes(peer: Peer, flow: Flow, count: number): void {
    this.#sinks.metrics.bytes(peer, flow, count);
  }

  compressed(compressor: CompressorName, flow: Flow): void {
    this.#sinks.metrics.compressedMessage(compressor, flow);
  }

  protocolError(code: string): void {
    this.#sinks.metrics.protocolError(code);
  }

  /** The per-command series of this connection, bound on its first command (issue 16). */
  #operations(): OperationRecorder {
    return (this.#recorder ??= this.#sinks.metrics.operationRecorder());
  }

  tenantCommandStarted(tenant: string): void {
    this.#operations().started(tenant);
  }

  tenantCommandEnded(tenant: string): void {
    this.#operations().finished(tenant);
  }

  commandFinished(command: CommandLabels, { outcome, seconds, upstreamSeconds, tenant }: CommandResult): void {
    this.#operations().observe({
      command: command.name,
      database: command.db,
      outcome,
      seconds,
      upstreamSeconds,
      tenant,
    });
    if (!(this.#logger ?? this.#sinks.logger).isLevelEnabled('debug')) return;
    // connectionId, remote and (once established) tenant come from the connection's logger.
    this.logger.debug(
      {
        commandName: command.name,
        namespace: command.namespace,
        outcome,
        durationMs: seconds * 1000,
        ...(upstreamSeconds === undefined ? {} : { upstreamMs: upstreamSeconds * 1000 }),
      },
      'command handled',
    );
  }

  decision(command: CommandLabels, tenant: string | undefined, decision: IsolationDecision, rule: string): void {
    this.#operations().decision(decision, rule);
    this.#audit(command, tenant, decision, rule);
  }

  refused(command: CommandLabels, tenant: string | undefined, rule: string): void {
    this.#audit(command, tenant, 'refused', rule);
  }

  shed(reason: ShedReason): void {
    this.#sinks.metrics.connectionShed(reason);
  }

  delayedByTenantLimit(reason: 'bytes' | 'cpu' | 'read'): void {
    this.#sinks.metrics.tenantLimitDelay(reason);
  }

  overTenantLimit(command: CommandLabels, refusal: TenantLimitExceeded): void {
    this.#sinks.metrics.tenantLimitRejection(refusal.reason);
    if (!(this.#logger ?? this.#sinks.logger).isLevelEnabled('debug')) return;
    this.logger.debug({ reason: refusal.reason, commandName: command.name }, refusal.message);
  }
}

export function createConnectionObserver(sinks: ObservabilitySinks, fields: ConnectionFields): ConnectionObserver {
  return new SinkObserver(sinks, fields);
}
