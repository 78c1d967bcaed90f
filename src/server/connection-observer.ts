/**
 * What a client connection reports, and where it goes: the connection calls a
 * `ConnectionObserver` (events, no sinks); `createConnectionObserver` (the listener builds one per
 * connection) turns the events into Prometheus metrics, audit events and log lines, with the
 * connection's fields (id, remote address, listener, tenant once known) attached once here.
 */
import type { Logger } from 'pino';
import type { CompressorName } from '../config/types.js';
import type { TenantIdentity } from '../identity/types.js';
import type { AuditLog } from '../observability/audit.js';
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
}

export function createConnectionObserver(sinks: ObservabilitySinks, fields: ConnectionFields): ConnectionObserver {
  const { metrics, audit } = sinks;
  const { connectionId, listener } = fields;
  const remoteAddress = fields.remoteAddress ?? 'unknown';
  let logger = sinks.logger.child({ connectionId, remote: `${fields.remoteAddress}:${fields.remotePort}` });
  const auditDecision = (
    command: CommandLabels,
    tenant: string | undefined,
    decision: IsolationDecision,
    rule: string,
  ): void => {
    // A rewrite is not logged unless audit.rewrites: the namespace (decoded) is not needed then.
    if (audit.logs?.(decision) === false) return;
    audit.decision({
      tenant,
      command: command.name,
      namespace: command.namespace,
      rule,
      decision,
      connectionId,
      listener,
      remoteAddress,
    });
  };
  /** The per-command series of this connection, bound on its first command (issue 16). */
  let recorder: OperationRecorder | undefined;
  const operations = (): OperationRecorder => (recorder ??= metrics.operationRecorder());
  const withTenant = (identity: TenantIdentity): Logger =>
    logger.child({ tenant: identity.tenant, identityMethod: identity.method });

  return {
    get logger() {
      return logger;
    },
    opened() {
      metrics.connectionOpened();
      logger.info('client connected');
    },
    closed(tenant) {
      if (tenant !== undefined) metrics.tenantConnectionClosed(tenant);
      metrics.connectionClosed();
      logger.info('client disconnected');
    },
    tenantEstablished(identity) {
      metrics.tenantConnectionOpened(identity.tenant);
      logger = withTenant(identity);
    },
    tenantOverConnectionLimit(identity, refusal, limit) {
      metrics.tenantLimitRejection(refusal.reason);
      logger = withTenant(identity);
      logger.warn({ limit }, 'tenant connection limit reached; refusing the connection');
    },
    bytes: (peer, flow, count) => metrics.bytes(peer, flow, count),
    compressed: (compressor, flow) => metrics.compressedMessage(compressor, flow),
    protocolError: (code) => metrics.protocolError(code),
    tenantCommandStarted: (tenant) => operations().started(tenant),
    tenantCommandEnded: (tenant) => operations().finished(tenant),
    commandFinished(command, { outcome, seconds, upstreamSeconds, tenant }) {
      operations().observe({
        command: command.name,
        database: command.db,
        outcome,
        seconds,
        upstreamSeconds,
        tenant,
      });
      if (!logger.isLevelEnabled('debug')) return;
      // connectionId, remote and (once established) tenant come from the connection's logger.
      logger.debug(
        {
          commandName: command.name,
          namespace: command.namespace,
          outcome,
          durationMs: seconds * 1000,
          ...(upstreamSeconds === undefined ? {} : { upstreamMs: upstreamSeconds * 1000 }),
        },
        'command handled',
      );
    },
    decision(command, tenant, decision, rule) {
      operations().decision(decision, rule);
      auditDecision(command, tenant, decision, rule);
    },
    refused: (command, tenant, rule) => auditDecision(command, tenant, 'refused', rule),
    shed: (reason) => metrics.connectionShed(reason),
    overTenantLimit(command, refusal) {
      metrics.tenantLimitRejection(refusal.reason);
      logger.debug({ reason: refusal.reason, commandName: command.name }, refusal.message);
    },
  };
}
