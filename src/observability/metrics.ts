/**
 * Prometheus metrics. This is the only module that imports prom-client: callers use the typed
 * methods of `ProxyMetrics`, which also keep every label's set of values bounded (a label
 * value taken from client input could otherwise create unbounded time series).
 *
 * Each `ProxyMetrics` has its own `Registry` (never prom-client's global one), so tests and
 * embedders can create as many as they like.
 */

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { commandLabel } from './commands.js';

export const METRIC_PREFIX = 'mongo_tenant_proxy_';

/** What happened to a command: the proxy keeps this list closed (anything else is `other`). */
export const OPERATION_OUTCOMES = [
  /** The command was answered (by the upstream or the proxy) with ok: 1. */
  'ok',
  /** The upstream or the proxy answered with an error reply. */
  'error',
  /** The proxy refused the command (authentication, policy). */
  'denied',
  /** The upstream could not be reached or failed mid-operation. */
  'upstream_error',
] as const;
export type OperationOutcome = (typeof OPERATION_OUTCOMES)[number];

/** Why a client connection was refused before it was served. */
export const REFUSAL_REASONS = ['max_connections', 'shutting_down'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** Which per-tenant limit refused a connection or command. */
export const TENANT_LIMIT_REJECTION_REASONS = ['connections', 'in_flight', 'rate'] as const;
export type TenantLimitRejectionReason = (typeof TENANT_LIMIT_REJECTION_REASONS)[number];

/** Which peer bytes were exchanged with. */
export type Peer = 'client' | 'upstream';
export type ByteFlow = 'received' | 'sent';

/**
 * Protocol error reasons are chosen by the proxy (error code names such as `InvalidBSON`), so
 * any identifier-like value is accepted, up to this many distinct ones; later ones are `other`.
 */
const MAX_PROTOCOL_ERROR_REASONS = 64;
const REASON_SHAPE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const REASON_SHAPE_RULE = /^[A-Za-z$][A-Za-z0-9_.$-]{0,63}$/;

/** Operation latency buckets in seconds: 100 µs to 30 s. */
export const DURATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** What the metrics HTTP endpoint needs; both `ProxyMetrics` and its `registry` provide it. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface ProxyMetricsOptions {
  /** Also export Node process metrics (CPU, memory, event loop, GC), prefixed. Default true. */
  processMetrics?: boolean;
  /** Reported by `mongo_tenant_proxy_build_info{version}`. */
  version?: string;
  /** Distinct tenants given their own label; later ones count as `other`. Default 100. */
  maxTenantLabels?: number;
}

/** Mechanism and method names that may appear as the `mechanism` label. */
const AUTH_MECHANISM_LABELS: ReadonlySet<string> = new Set([
  'SCRAM-SHA-256',
  'SCRAM-SHA-1',
  'PLAIN',
  'MONGODB-X509',
  'mtls',
  'scram',
  'scram-passthrough',
  'plain-jwt',
  'static',
]);

const OUTCOMES: ReadonlySet<string> = new Set(OPERATION_OUTCOMES);
const REFUSALS: ReadonlySet<string> = new Set(REFUSAL_REASONS);

export class ProxyMetrics implements MetricsSource {
  readonly registry: Registry;
  private readonly operations: Counter<'command' | 'outcome'>;
  private readonly operationDuration: Histogram<'command' | 'outcome'>;
  private readonly clientConnections: Gauge;
  private readonly clientConnectionsTotal: Counter;
  private readonly clientConnectionsRefused: Counter<'reason'>;
  private readonly bytesReceived: Counter<'direction'>;
  private readonly bytesSent: Counter<'direction'>;
  private readonly upstreamConnections: Gauge<'state'>;
  private readonly compressedMessages: Counter<'compressor' | 'direction'>;
  private upstreamPool: (() => { inUse: number; idle: number }) | undefined;
  private readonly authentications: Counter<'listener' | 'mechanism' | 'outcome'>;
  private readonly policyDecisions: Counter<'decision' | 'rule'>;
  private readonly auditOnlyMode: Gauge;
  private readonly policyRules = new Set<string>();
  private readonly tenantOperations: Counter<'tenant' | 'outcome'>;
  private readonly tenantConnections: Gauge<'tenant'>;
  private readonly tenantLabels: Set<string> = new Set();
  private readonly maxTenantLabels: number;
  private readonly protocolErrors: Counter<'reason'>;
  private readonly tenantLimitRejections: Counter<'reason'>;
  private readonly protocolErrorReasons = new Set<string>();

  constructor(options: ProxyMetricsOptions = {}) {
    this.maxTenantLabels = options.maxTenantLabels ?? 100;
    this.registry = new Registry();
    const registers = [this.registry];
    const name = (suffix: string): string => METRIC_PREFIX + suffix;

    this.operations = new Counter({
      name: name('operations_total'),
      help: 'Commands handled, by command name (unknown names are "other") and outcome.',
      labelNames: ['command', 'outcome'],
      registers,
    });
    this.operationDuration = new Histogram({
      name: name('operation_duration_seconds'),
      help: 'Time from a command arriving to its last reply byte being written, in seconds.',
      labelNames: ['command', 'outcome'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.clientConnections = new Gauge({
      name: name('client_connections'),
      help: 'Client connections currently open.',
      registers,
    });
    this.clientConnectionsTotal = new Counter({
      name: name('client_connections_total'),
      help: 'Client connections accepted since start.',
      registers,
    });
    this.clientConnectionsRefused = new Counter({
      name: name('client_connections_refused_total'),
      help: 'Client connections refused before being served, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.bytesReceived = new Counter({
      name: name('bytes_received_total'),
      help: 'Bytes received from clients or from the upstream (direction names the peer).',
      labelNames: ['direction'],
      registers,
    });
    this.bytesSent = new Counter({
      name: name('bytes_sent_total'),
      help: 'Bytes sent to clients or to the upstream (direction names the peer).',
      labelNames: ['direction'],
      registers,
    });
    const metricsSelf = this;
    this.upstreamConnections = new Gauge({
      name: name('upstream_connections'),
      help: 'Upstream connections currently open, by state (in_use, idle); read from the pool at scrape time.',
      labelNames: ['state'],
      registers,
      collect() {
        const pool = metricsSelf.upstreamPool?.();
        if (pool === undefined) return;
        this.set({ state: 'in_use' }, pool.inUse);
        this.set({ state: 'idle' }, pool.idle);
      },
    });
    this.authentications = new Counter({
      name: name('authentications_total'),
      help: 'Authentication attempts and certificate mappings, by listener, mechanism and outcome (success, failure).',
      labelNames: ['listener', 'mechanism', 'outcome'],
      registers,
    });
    this.policyDecisions = new Counter({
      name: name('policy_decisions_total'),
      help: 'Isolation decisions by kind (refused, rewritten, would-refuse, would-rewrite in audit-only mode) and rule id.',
      labelNames: ['decision', 'rule'],
      registers,
    });
    this.auditOnlyMode = new Gauge({
      name: name('isolation_audit_only'),
      help: '1 while isolation runs in audit-only mode (decisions logged and counted, NOT enforced).',
      registers,
    });
    this.auditOnlyMode.set(0);
    this.tenantOperations = new Counter({
      name: name('tenant_operations_total'),
      help: 'Commands handled per tenant (the first maxTenantLabels tenants seen; the rest as "other").',
      labelNames: ['tenant', 'outcome'],
      registers,
    });
    this.tenantConnections = new Gauge({
      name: name('tenant_connections'),
      help: 'Client connections with an established tenant, per tenant (bounded as tenant_operations_total).',
      labelNames: ['tenant'],
      registers,
    });
    this.compressedMessages = new Counter({
      name: name('compressed_messages_total'),
      help: 'OP_COMPRESSED messages exchanged with clients, by compressor and direction (received, sent).',
      labelNames: ['compressor', 'direction'],
      registers,
    });
    this.protocolErrors = new Counter({
      name: name('protocol_errors_total'),
      help: 'Malformed or unsupported client messages, by reason.',
      labelNames: ['reason'],
      registers,
    });
    this.tenantLimitRejections = new Counter({
      name: name('tenant_limit_rejections_total'),
      help: 'Connections and commands refused by a per-tenant limit, by reason (connections, in_flight, rate).',
      labelNames: ['reason'],
      registers,
    });
    new Gauge({
      name: name('build_info'),
      help: 'Always 1; the version label identifies the running build.',
      labelNames: ['version'],
      registers,
    }).set({ version: options.version ?? 'unknown' }, 1);

    // Pre-create the unlabelled series and the common labelled ones so dashboards see zeros.
    this.clientConnections.set(0);
    this.clientConnectionsTotal.inc(0);
    this.upstreamConnections.set({ state: 'in_use' }, 0);
    this.upstreamConnections.set({ state: 'idle' }, 0);
    for (const reason of TENANT_LIMIT_REJECTION_REASONS) this.tenantLimitRejections.inc({ reason }, 0);
    for (const direction of ['client', 'upstream']) {
      this.bytesReceived.inc({ direction }, 0);
      this.bytesSent.inc({ direction }, 0);
    }

    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: METRIC_PREFIX });
  }

  /** Prometheus text exposition content type. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /** Counts one command and records its duration. Unknown command names count as `other`. */
  observeOperation(command: string, outcome: OperationOutcome | (string & {}), seconds: number, tenant?: string): void {
    const labels = { command: commandLabel(command), outcome: OUTCOMES.has(outcome) ? outcome : 'other' };
    this.operations.inc(labels);
    if (Number.isFinite(seconds) && seconds >= 0) this.operationDuration.observe(labels, seconds);
    if (tenant !== undefined) this.tenantOperations.inc({ tenant: this.tenantLabel(tenant), outcome: labels.outcome });
  }

  /** Counts an authentication attempt (or a certificate mapping at connect). */
  authentication(listener: string, mechanism: string, outcome: 'success' | 'failure'): void {
    this.authentications.inc({ listener, mechanism: AUTH_MECHANISM_LABELS.has(mechanism) ? mechanism : 'other', outcome });
  }

  /** Counts an isolation decision; rule ids come from code, capped like protocol errors anyway. */
  policyDecision(decision: 'refused' | 'rewritten' | 'would-refuse' | 'would-rewrite', rule: string): void {
    let label = 'other';
    if (REASON_SHAPE_RULE.test(rule) && (this.policyRules.has(rule) || this.policyRules.size < 256)) {
      this.policyRules.add(rule);
      label = rule;
    }
    this.policyDecisions.inc({ decision, rule: label });
  }

  setAuditOnly(on: boolean): void {
    this.auditOnlyMode.set(on ? 1 : 0);
  }

  tenantConnectionOpened(tenant: string): void {
    this.tenantConnections.inc({ tenant: this.tenantLabel(tenant) });
  }

  tenantConnectionClosed(tenant: string): void {
    this.tenantConnections.dec({ tenant: this.tenantLabel(tenant) });
  }

  /** Cardinality guard: the first `maxTenantLabels` tenants keep their name, others are `other`. */
  private tenantLabel(tenant: string): string {
    if (this.tenantLabels.has(tenant)) return tenant;
    if (this.tenantLabels.size >= this.maxTenantLabels) return 'other';
    this.tenantLabels.add(tenant);
    return tenant;
  }

  connectionOpened(): void {
    this.clientConnections.inc();
    this.clientConnectionsTotal.inc();
  }

  connectionClosed(): void {
    this.clientConnections.dec();
  }

  connectionRefused(reason: RefusalReason | (string & {})): void {
    this.clientConnectionsRefused.inc({ reason: REFUSALS.has(reason) ? reason : 'other' });
  }

  /** Counts a connection or command refused by a per-tenant limit. */
  tenantLimitRejection(reason: TenantLimitRejectionReason): void {
    this.tenantLimitRejections.inc({ reason });
  }

  /** Reads the upstream pool's occupancy whenever metrics are scraped. */
  trackUpstreamPool(read: () => { inUse: number; idle: number }): void {
    this.upstreamPool = read;
  }

  /** Counts one OP_COMPRESSED message to or from a client. */
  compressedMessage(compressor: 'zstd' | 'snappy' | 'zlib', direction: ByteFlow): void {
    this.compressedMessages.inc({ compressor, direction });
  }

  /** Counts bytes exchanged with a peer: `bytes('client', 'received', n)`. */
  bytes(peer: Peer, flow: ByteFlow, count: number): void {
    if (!(count > 0)) return;
    const direction = peer === 'upstream' ? 'upstream' : 'client';
    (flow === 'sent' ? this.bytesSent : this.bytesReceived).inc({ direction }, count);
  }

  /** Counts a protocol error; `reason` is an identifier such as an error code name. */
  protocolError(reason: string): void {
    let label = 'other';
    if (REASON_SHAPE.test(reason)) {
      if (this.protocolErrorReasons.has(reason)) label = reason;
      else if (this.protocolErrorReasons.size < MAX_PROTOCOL_ERROR_REASONS) {
        this.protocolErrorReasons.add(reason);
        label = reason;
      }
    }
    this.protocolErrors.inc({ reason: label });
  }
  // --- upstream pool, retries and circuit breakers (issue 5) ---------------------------------
  // Created on first use so the constructor (and its pre-created series) stays as it was.

  private upstreamExtras:
    | {
        retries: Counter<'command' | 'reason'>;
        breakerTransitions: Counter<'server' | 'from' | 'to'>;
        breakerStates: Map<string, number>;
        retryReasons: Set<string>;
      }
    | undefined;
  private upstreamServers: (() => ReadonlyArray<UpstreamServerGaugeSource>) | undefined;

  private upstreamMetrics(): NonNullable<ProxyMetrics['upstreamExtras']> {
    if (this.upstreamExtras !== undefined) return this.upstreamExtras;
    const registers = [this.registry];
    const name = (suffix: string): string => METRIC_PREFIX + suffix;
    const metricsSelf = this;
    const breakerStates = new Map<string, number>();
    const serverGauge = (suffix: string, help: string, read: (server: UpstreamServerGaugeSource) => number): void => {
      new Gauge({
        name: name(suffix),
        help,
        labelNames: ['server'],
        registers,
        collect() {
          this.reset();
          for (const server of metricsSelf.upstreamServers?.() ?? []) this.set({ server: server.server }, read(server));
        },
      });
    };
    new Gauge({
      name: name('upstream_pool_connections'),
      help:
        'Upstream pool connections per server and state (in_use, idle, pending = being opened). The client:upstream ' +
        'connection ratio is client_connections / sum(upstream_connections).',
      labelNames: ['server', 'state'],
      registers,
      collect() {
        this.reset();
        for (const server of metricsSelf.upstreamServers?.() ?? []) {
          this.set({ server: server.server, state: 'in_use' }, server.inUse);
          this.set({ server: server.server, state: 'idle' }, server.idle);
          this.set({ server: server.server, state: 'pending' }, server.pending);
        }
      },
    });
    serverGauge('upstream_pool_wait_queue', 'Commands waiting for a free upstream connection (pool at maxPoolSize), per server.', (s) => s.waiting);
    new Gauge({
      name: name('circuit_breaker_state'),
      help: 'Circuit breaker state per upstream server: 0 closed, 1 half-open, 2 open.',
      labelNames: ['server'],
      registers,
      collect() {
        this.reset();
        const servers = metricsSelf.upstreamServers?.();
        if (servers !== undefined) {
          for (const server of servers) this.set({ server: server.server }, CIRCUIT_GAUGE[server.circuit] ?? 0);
        } else {
          for (const [server, value] of breakerStates) this.set({ server }, value);
        }
      },
    });
    this.upstreamExtras = {
      retries: new Counter({
        name: name('upstream_retries_total'),
        help: 'Commands the proxy sent upstream again after a failure, by command and reason (an error code name, network, timeout, connect).',
        labelNames: ['command', 'reason'],
        registers,
      }),
      breakerTransitions: new Counter({
        name: name('circuit_breaker_transitions_total'),
        help: 'Circuit breaker state changes per upstream server (from, to: closed, open, half-open).',
        labelNames: ['server', 'from', 'to'],
        registers,
      }),
      breakerStates,
      retryReasons: new Set(),
    };
    return this.upstreamExtras;
  }

  /** Reads every upstream server's pool and breaker at scrape time. */
  trackUpstreamServers(read: () => ReadonlyArray<UpstreamServerGaugeSource>): void {
    this.upstreamServers = read;
    this.upstreamMetrics();
  }

  /** Counts a command sent upstream again; `reason` is an identifier (error code name, network…). */
  upstreamRetry(command: string, reason: string): void {
    const extras = this.upstreamMetrics();
    let label = 'other';
    if (REASON_SHAPE.test(reason) && (extras.retryReasons.has(reason) || extras.retryReasons.size < MAX_PROTOCOL_ERROR_REASONS)) {
      extras.retryReasons.add(reason);
      label = reason;
    }
    extras.retries.inc({ command: commandLabel(command), reason: label });
  }

  /** Records a circuit breaker's state (and counts the transition when it changed). */
  circuitBreakerState(server: string, state: string, previous: string): void {
    const extras = this.upstreamMetrics();
    extras.breakerStates.set(server, CIRCUIT_GAUGE[state] ?? 0);
    if (state !== previous) extras.breakerTransitions.inc({ server, from: previous, to: state });
  }
}

/** What the per-server upstream gauges read (Upstream.serverStats()). */
export interface UpstreamServerGaugeSource {
  server: string;
  circuit: string;
  inUse: number;
  idle: number;
  pending: number;
  waiting: number;
}

/** circuit_breaker_state values, by severity. */
const CIRCUIT_GAUGE: Readonly<Record<string, number>> = { closed: 0, 'half-open': 1, open: 2 };
