/**
 * Prometheus metrics. This is the only module that imports prom-client: callers use the typed
 * methods of `ProxyMetrics`, which also keep every label's set of values bounded (a label
 * value taken from client input could otherwise create unbounded time series).
 *
 * Each `ProxyMetrics` has its own `Registry` (never prom-client's global one), so tests and
 * embedders can create as many as they like.
 */

import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { commandLabel } from './commands.js';
import { BatchedSeries, BoundHistogram, type HistogramSeries, type PendingSeries } from './bound-metrics.js';

export const METRIC_PREFIX = 'mongo_tenant_proxy_';
/**
 * How often the event-loop lag histogram samples (prom-client's default is 10 ms). Each sample
 * wakes an idle proxy: at 10 ms that is about 10 ms of CPU per second on a busy 2-core host,
 * more than the pipe's whole cost per cursor batch (docs/benchmark.md); at 100 ms, under 1 ms.
 * The lag itself is still measured to the nanosecond, from fewer samples.
 */
const EVENT_LOOP_SAMPLE_MS = 100;

/** What happened to a command: the proxy keeps this list closed (anything else is `other`). */
export const OPERATION_OUTCOMES = [
  /** The command was answered (by the upstream or the proxy) with ok: 1, unchanged. */
  'ok',
  /** The isolation engine rewrote the command (tenant filter, stamp…) and it succeeded. */
  'rewritten',
  /** The command succeeded after the proxy retried it upstream. */
  'retried',
  /** The proxy answered with an error reply of its own (bad request, no isolation engine…). */
  'error',
  /** The proxy refused the command: not authenticated, failed authentication, an isolation rule, a per-tenant limit. */
  'denied',
  /** The upstream answered with an error, could not be reached, or failed mid-operation. */
  'upstream_error',
] as const;
export type OperationOutcome = (typeof OPERATION_OUTCOMES)[number];

/** Why a client connection was refused before it was served. */
export const REFUSAL_REASONS = ['max_connections', 'max_unauthenticated', 'shutting_down'] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** Why the proxy closed a client connection to protect the others (issue 15). */
export const SHED_REASONS = ['buffer_budget', 'slow_reader', 'auth_timeout'] as const;
export type ShedReason = (typeof SHED_REASONS)[number];

/** Which per-tenant limit refused a connection or command. */
export const TENANT_LIMIT_REJECTION_REASONS = ['connections', 'in_flight', 'rate', 'bytes', 'cpu'] as const;
export type TenantLimitRejectionReason = (typeof TENANT_LIMIT_REJECTION_REASONS)[number];
/** Why a tenant's request or queued work was made to wait (its byte or CPU budget). */
export const TENANT_LIMIT_DELAY_REASONS = ['bytes', 'cpu', 'turn', 'read'] as const;
export type TenantLimitDelayReason = (typeof TENANT_LIMIT_DELAY_REASONS)[number];

/** How a client's TLS handshake ended. */
export const TLS_HANDSHAKE_OUTCOMES = ['success', 'failure', 'timeout'] as const;
export type TlsHandshakeOutcome = (typeof TLS_HANDSHAKE_OUTCOMES)[number];

export type PolicyDecision = 'refused' | 'rewritten' | 'would-refuse' | 'would-rewrite';

/** Which peer bytes were exchanged with. */
export type Peer = 'client' | 'upstream';
export type ByteFlow = 'received' | 'sent';

/** Operation latency buckets in seconds: 100 µs to 30 s. */
export const DURATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
];

/** Time spent in the proxy itself: 10 µs to 1 s (it should stay well below the upstream's). */
export const OVERHEAD_BUCKETS = [
  0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1,
];

export const DEFAULT_MAX_TENANT_LABELS = 100;
export const DEFAULT_MAX_DATABASE_LABELS = 20;

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
  /** Reported by `mongo_tenant_proxy_build_info{commit}`; `unknown` when not given. */
  commit?: string;
  /** Distinct tenants given their own label in every per-tenant family; later ones count as `other`. Default 100. */
  maxTenantLabels?: number;
  /** Distinct database names given their own label on operation metrics; later ones count as `other`. Default 20. */
  maxDatabaseLabels?: number;
}

/** One command, as `observeOperation` counts it. */
export interface OperationObservation {
  /** The command's name (unknown names count as `other`). */
  command: string;
  /** `$db` as the client named it (bounded: see `maxDatabaseLabels`). */
  database?: string;
  outcome: OperationOutcome | (string & {});
  /** From the command's arrival to its last reply byte written. */
  seconds: number;
  /** Of `seconds`, the time spent acquiring an upstream connection and waiting for its replies. */
  upstreamSeconds?: number;
  /** The connection's tenant, when established. */
  tenant?: string;
}

/** One connection's handle on the per-command metrics (`ProxyMetrics.operationRecorder`). */
export interface OperationRecorder {
  /** `tenantOperationStarted` */
  started(tenant: string): void;
  /** `tenantOperationFinished` */
  finished(tenant: string): void;
  /** `policyDecision` */
  decision(decision: PolicyDecision, rule: string): void;
  /** `observeOperation` */
  observe(operation: OperationObservation): void;
}

/** The series of one label set of `observeOperation`, bound by the operation recorder. */
interface BoundOperation {
  readonly rawCommand: string;
  readonly rawDatabase: string;
  readonly rawOutcome: string;
  readonly rawTenant: string | undefined;
  readonly generation: number;
  readonly command: string;
  readonly key: string;
  readonly labels: () => { command: string; database: string; outcome: string };
  readonly count: PendingSeries;
  /** Bound on first use (a series is shown once it exists, even with no observation). */
  duration: HistogramSeries | undefined;
  upstreamWait: HistogramSeries | undefined;
  proxyOverhead: HistogramSeries | undefined;
  readonly tenantCount: PendingSeries | undefined;
}

/** Label sets the operation recorders share bound, before the map is cleared (raw values come from clients). */
const MAX_SHARED_OPERATIONS = 1024;
/** Longer raw values (a client may send any `$db`) are bound for their connection only, not kept here. */
const MAX_SHARED_KEY_LENGTH = 512;

/** What a connection's recorder asks `ProxyMetrics` for when its own last series do not fit. */
interface OperationBinder {
  inFlightGeneration(): number;
  inFlight(tenant: string): PendingSeries;
  decisionGeneration(): number;
  decision(decision: string, rule: string): PendingSeries;
  operationGeneration(): number;
  operation(
    rawCommand: string,
    rawDatabase: string,
    rawOutcome: string,
    rawTenant: string | undefined,
    generation: number,
  ): BoundOperation;
  duration(bound: BoundOperation): HistogramSeries;
  upstreamWait(bound: BoundOperation): HistogramSeries;
  proxyOverhead(bound: BoundOperation): HistogramSeries;
}

/**
 * One connection's `OperationRecorder`: the series of its last tenant, decision and label set,
 * in fields of one object (an idle connection keeps this and nothing else of the metrics).
 */
class ConnectionOperations implements OperationRecorder {
  readonly #binder: OperationBinder;
  #last: BoundOperation | undefined = undefined;
  #inFlight: PendingSeries | undefined = undefined;
  #inFlightTenant = '';
  #inFlightGeneration = 0;
  #decided: PendingSeries | undefined = undefined;
  #decidedDecision = '';
  #decidedRule = '';
  #decidedGeneration = 0;

  constructor(binder: OperationBinder) {
    this.#binder = binder;
  }

  #tenantSeries(tenant: string): PendingSeries {
    const generation = this.#binder.inFlightGeneration();
    if (this.#inFlight === undefined || this.#inFlightTenant !== tenant || this.#inFlightGeneration !== generation) {
      this.#inFlight = this.#binder.inFlight(tenant);
      this.#inFlightTenant = tenant;
      this.#inFlightGeneration = generation;
    }
    return this.#inFlight;
  }

  started(tenant: string): void {
    this.#tenantSeries(tenant).pending++;
  }

  finished(tenant: string): void {
    this.#tenantSeries(tenant).pending--;
  }

  decision(decision: PolicyDecision, rule: string): void {
    const generation = this.#binder.decisionGeneration();
    if (
      this.#decided === undefined ||
      this.#decidedDecision !== decision ||
      this.#decidedRule !== rule ||
      this.#decidedGeneration !== generation
    ) {
      this.#decided = this.#binder.decision(decision, rule);
      this.#decidedDecision = decision;
      this.#decidedRule = rule;
      this.#decidedGeneration = generation;
    }
    this.#decided.pending++;
  }

  observe(operation: OperationObservation): void {
    const binder = this.#binder;
    const generation = binder.operationGeneration();
    const database = operation.database ?? '';
    let last = this.#last;
    if (
      last === undefined ||
      last.generation !== generation ||
      last.rawCommand !== operation.command ||
      last.rawDatabase !== database ||
      last.rawOutcome !== operation.outcome ||
      last.rawTenant !== operation.tenant
    ) {
      last = this.#last = binder.operation(
        operation.command,
        database,
        operation.outcome,
        operation.tenant,
        generation,
      );
    }
    last.count.pending++;
    const { seconds, upstreamSeconds } = operation;
    if (validSeconds(seconds)) {
      (last.duration ??= binder.duration(last)).observe(seconds);
      if (upstreamSeconds !== undefined && validSeconds(upstreamSeconds)) {
        (last.upstreamWait ??= binder.upstreamWait(last)).observe(upstreamSeconds);
        (last.proxyOverhead ??= binder.proxyOverhead(last)).observe(Math.max(0, seconds - upstreamSeconds));
      }
    }
    if (last.tenantCount !== undefined) last.tenantCount.pending++;
  }
}

/** One authentication attempt or certificate mapping (names only: never a secret). */
export interface AuthenticationObservation {
  listener: string;
  /** The identity method: mtls, scram, scram-passthrough, plain-jwt. */
  method: string;
  /** SCRAM-SHA-256, SCRAM-SHA-1, PLAIN, MONGODB-X509, or `certificate` for the mapping at connect. */
  mechanism: string;
  outcome: 'success' | 'failure';
}

/** Mechanism names that may appear as the `mechanism` label. */
const AUTH_MECHANISM_LABELS: ReadonlySet<string> = new Set([
  'SCRAM-SHA-256',
  'SCRAM-SHA-1',
  'PLAIN',
  'MONGODB-X509',
  'certificate',
]);
/** Identity methods that may appear as the `method` label. */
const AUTH_METHOD_LABELS: ReadonlySet<string> = new Set(['mtls', 'scram', 'scram-passthrough', 'plain-jwt', 'static']);

const OUTCOMES: ReadonlySet<string> = new Set(OPERATION_OUTCOMES);
const REFUSALS: ReadonlySet<string> = new Set(REFUSAL_REASONS);
const TLS_OUTCOMES: ReadonlySet<string> = new Set(TLS_HANDSHAKE_OUTCOMES);

/** The label value for anything past a cardinality guard. */
export const OTHER_LABEL = 'other';

/**
 * Cardinality guard for a label whose values come from outside (tenants, database names,
 * reasons): the first `max` distinct values that fit `shape` keep their name, anything else is
 * `other`. First come, first served: a value never changes label once given one, so counters
 * stay monotonic.
 */
export class BoundedLabel {
  private readonly seen = new Set<string>();

  constructor(
    readonly max: number,
    private readonly shape?: RegExp,
  ) {}

  of(value: string): string {
    if (this.seen.has(value)) return value;
    if (this.seen.size >= this.max || (this.shape !== undefined && !this.shape.test(value))) return OTHER_LABEL;
    this.seen.add(value);
    return value;
  }
}

/** Error code names (`InvalidBSON`) and rule ids (`filter.tenant`, `$where`…), chosen by the proxy. */
const REASON_SHAPE = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
/** Distinct reason labels (protocol errors, retries) before the rest count as `other`. */
const MAX_REASON_LABELS = 64;
const RULE_SHAPE = /^[A-Za-z$][A-Za-z0-9_.$-]{0,63}$/;
/** Tenants come from certificates, tokens or configuration: printable, not absurdly long. */
const TENANT_SHAPE = /^[^\u0000-\u001f]{1,128}$/;
/** MongoDB database names (the server's rule): at most 64 characters, none of `/\\. "$`, no control characters. */
const DATABASE_SHAPE = /^[^/\\. "$\u0000-\u001f]{1,64}$/;

export class ProxyMetrics implements MetricsSource {
  readonly registry: Registry;
  private readonly operations: Counter<'command' | 'database' | 'outcome'>;
  private readonly operationDuration: BoundHistogram<'command' | 'database' | 'outcome'>;
  private readonly upstreamWait: BoundHistogram<'command'>;
  private readonly proxyOverhead: BoundHistogram<'command'>;
  /** The per-command series, bound once per label set (prom-client hashes labels on every update). */
  private readonly operationSeries = new BatchedSeries<'command' | 'database' | 'outcome'>();
  private readonly tenantOperationSeries = new BatchedSeries<'tenant' | 'outcome'>();
  private readonly tenantInFlightSeries = new BatchedSeries<'tenant'>();
  private readonly policyDecisionSeries = new BatchedSeries<'decision' | 'rule'>();
  private readonly bytesReceivedSeries = new BatchedSeries<'direction'>();
  private readonly bytesSentSeries = new BatchedSeries<'direction'>();
  /** `bytesSeries[peer][flow]`, bound once. */
  private readonly bytesSeries: Record<Peer, Record<ByteFlow, PendingSeries>>;
  private readonly clientConnections: Gauge;
  private readonly clientConnectionsTotal: Counter;
  private readonly clientConnectionsRefused: Counter<'reason'>;
  private readonly tlsHandshakes: Counter<'listener' | 'outcome'>;
  private readonly bytesReceived: Counter<'direction'>;
  private readonly bytesSent: Counter<'direction'>;
  private readonly compressedMessages: Counter<'compressor' | 'direction'>;
  private upstreamPool: (() => { inUse: number; idle: number }) | undefined;
  private openCursorCount: (() => number) | undefined;
  private readonly authentications: Counter<'listener' | 'method' | 'mechanism' | 'outcome'>;
  private readonly policyDecisions: Counter<'decision' | 'rule'>;
  private readonly auditOnlyMode: Gauge;
  private readonly tenantOperations: Counter<'tenant' | 'outcome'>;
  private readonly tenantInFlight: Gauge<'tenant'>;
  private readonly tenantConnections: Gauge<'tenant'>;
  private readonly protocolErrors: Counter<'reason'>;
  private readonly tenantLimitRejections: Counter<'reason'>;
  private readonly tenantLimitDelays: Counter<'reason'>;
  private readonly cursorsReapedTotal: Counter;
  private readonly clientConnectionsShed: Counter<'reason'>;
  private bufferedBytes: (() => number) | undefined;
  /** One guard for every per-tenant family, so a tenant has the same label everywhere. */
  private readonly tenants: BoundedLabel;
  private readonly databases: BoundedLabel;
  private readonly policyRules = new BoundedLabel(256, RULE_SHAPE);
  private readonly protocolErrorReasons = new BoundedLabel(MAX_REASON_LABELS, REASON_SHAPE);
  /** Listener names come from the configuration; bounded anyway. */
  private readonly listeners = new BoundedLabel(64);

  constructor(options: ProxyMetricsOptions = {}) {
    this.tenants = new BoundedLabel(options.maxTenantLabels ?? DEFAULT_MAX_TENANT_LABELS, TENANT_SHAPE);
    this.databases = new BoundedLabel(options.maxDatabaseLabels ?? DEFAULT_MAX_DATABASE_LABELS, DATABASE_SHAPE);
    this.registry = new Registry();
    const registers = [this.registry];
    const name = (suffix: string): string => METRIC_PREFIX + suffix;
    // prom-client calls collect() with the metric as `this`; these read the proxy's state at scrape time.
    const read = {
      pool: () => this.upstreamPool?.(),
      cursors: () => this.openCursorCount?.(),
      buffered: () => this.bufferedBytes?.(),
    };

    const batched = <L extends string>(series: BatchedSeries<L>) => ({ collect: () => series.flush() });
    this.operations = new Counter({
      name: name('operations_total'),
      help: 'Commands handled, by command name (unknown names are "other"), database (bounded) and outcome.',
      labelNames: ['command', 'database', 'outcome'],
      registers,
      ...batched(this.operationSeries),
    });
    this.operationSeries.bind(this.operations);
    this.operationDuration = new BoundHistogram({
      name: name('operation_duration_seconds'),
      help: 'Time from a command arriving to its last reply byte being written, in seconds.',
      labelNames: ['command', 'database', 'outcome'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.upstreamWait = new BoundHistogram({
      name: name('upstream_wait_seconds'),
      help: "Per forwarded command, time spent acquiring an upstream connection and waiting for the upstream's replies.",
      labelNames: ['command'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.proxyOverhead = new BoundHistogram({
      name: name('proxy_overhead_seconds'),
      help: 'Per forwarded command, time spent in the proxy itself (operation duration minus upstream wait).',
      labelNames: ['command'],
      buckets: OVERHEAD_BUCKETS,
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
    this.tlsHandshakes = new Counter({
      name: name('tls_handshakes_total'),
      help: 'TLS handshakes with clients, by listener and outcome (success, failure, timeout).',
      labelNames: ['listener', 'outcome'],
      registers,
    });
    this.bytesReceived = new Counter({
      name: name('bytes_received_total'),
      help: 'Bytes received from clients or from the upstream (direction names the peer).',
      labelNames: ['direction'],
      registers,
      ...batched(this.bytesReceivedSeries),
    });
    this.bytesReceivedSeries.bind(this.bytesReceived);
    this.bytesSent = new Counter({
      name: name('bytes_sent_total'),
      help: 'Bytes sent to clients or to the upstream (direction names the peer).',
      labelNames: ['direction'],
      registers,
      ...batched(this.bytesSentSeries),
    });
    this.bytesSentSeries.bind(this.bytesSent);
    const bytesOf = (series: BatchedSeries<'direction'>, direction: Peer): PendingSeries =>
      series.series(direction, () => ({ direction }));
    this.bytesSeries = {
      client: { received: bytesOf(this.bytesReceivedSeries, 'client'), sent: bytesOf(this.bytesSentSeries, 'client') },
      upstream: {
        received: bytesOf(this.bytesReceivedSeries, 'upstream'),
        sent: bytesOf(this.bytesSentSeries, 'upstream'),
      },
    };
    new Gauge({
      name: name('upstream_connections'),
      help: 'Upstream connections currently open, by state (in_use, idle); read from the pool at scrape time.',
      labelNames: ['state'],
      registers,
      collect() {
        const pool = read.pool();
        this.set({ state: 'in_use' }, pool?.inUse ?? 0);
        this.set({ state: 'idle' }, pool?.idle ?? 0);
      },
    });
    new Gauge({
      name: name('open_cursors'),
      help: 'Cursors the proxy tracks for their tenant (opened and neither exhausted, killed nor idle-expired).',
      registers,
      collect() {
        this.set(read.cursors() ?? 0);
      },
    });
    this.authentications = new Counter({
      name: name('authentications_total'),
      help: 'Authentication attempts and certificate mappings, by listener, identity method, mechanism and outcome (success, failure).',
      labelNames: ['listener', 'method', 'mechanism', 'outcome'],
      registers,
    });
    this.policyDecisions = new Counter({
      name: name('policy_decisions_total'),
      help: 'Isolation decisions by kind (refused, rewritten, would-refuse, would-rewrite in audit-only mode) and rule id.',
      labelNames: ['decision', 'rule'],
      registers,
      ...batched(this.policyDecisionSeries),
    });
    this.policyDecisionSeries.bind(this.policyDecisions);
    this.auditOnlyMode = new Gauge({
      name: name('isolation_audit_only'),
      help: '1 while isolation runs in audit-only mode (decisions logged and counted, NOT enforced).',
      registers,
    });
    this.tenantOperations = new Counter({
      name: name('tenant_operations_total'),
      help: 'Commands handled per tenant and outcome (denials: outcome="denied"; the first maxTenantLabels tenants, the rest "other").',
      labelNames: ['tenant', 'outcome'],
      registers,
      ...batched(this.tenantOperationSeries),
    });
    this.tenantOperationSeries.bind(this.tenantOperations);
    this.tenantInFlight = new Gauge({
      name: name('tenant_operations_in_flight'),
      help: 'Commands being processed per tenant (tenants bounded as tenant_operations_total).',
      labelNames: ['tenant'],
      registers,
      ...batched(this.tenantInFlightSeries),
    });
    this.tenantInFlightSeries.bind(this.tenantInFlight);
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
    this.clientConnectionsShed = new Counter({
      name: name('client_connections_shed_total'),
      help:
        'Client connections the proxy closed to protect other clients, by reason (buffer_budget: its tenant held ' +
        'more than its share of limits.maxBufferedBytes; slow_reader: it did not read its replies; auth_timeout: ' +
        'not authenticated within limits.authTimeoutMS).',
      labelNames: ['reason'],
      registers,
    });
    new Gauge({
      name: name('buffered_bytes'),
      help:
        'Bytes of client requests and of replies (being read off the upstream, or unread by the client) the ' +
        'proxy holds now (bounded by limits.maxBufferedBytes).',
      registers,
      collect() {
        this.set(read.buffered() ?? 0);
      },
    });
    this.tenantLimitRejections = new Counter({
      name: name('tenant_limit_rejections_total'),
      help: 'Connections and commands refused by a per-tenant limit, by reason (connections, in_flight, rate, bytes, cpu).',
      labelNames: ['reason'],
      registers,
    });
    this.tenantLimitDelays = new Counter({
      name: name('tenant_limit_delays_total'),
      help:
        'Requests made to wait at admission because their tenant was over its byte rate or CPU budget, (cpu) ' +
        "slices of a tenant's large messages passed over for tenants under their CPU budget, and (turn) requests " +
        "that waited for their tenant's turn because the proxy had spent its share of work in the event loop's turn, " +
        '(read) pauses of a connection that stopped reading because its tenant sent more than its byte rate.',
      labelNames: ['reason'],
      registers,
    });
    this.cursorsReapedTotal = new Counter({
      name: name('cursors_reaped_total'),
      help: 'Cursors killed upstream by the proxy because the client connection that last used them closed.',
      registers,
    });
    new Gauge({
      name: name('build_info'),
      help: 'Always 1; the labels identify the running build: version, commit and Node.js version.',
      labelNames: ['version', 'commit', 'node_version'],
      registers,
    }).set(
      {
        version: options.version ?? 'unknown',
        commit: options.commit ?? 'unknown',
        node_version: process.versions.node,
      },
      1,
    );

    // Pre-create the unlabelled series and the common labelled ones so dashboards see zeros.
    this.auditOnlyMode.set(0);
    this.clientConnections.set(0);
    this.clientConnectionsTotal.inc(0);
    for (const reason of TENANT_LIMIT_REJECTION_REASONS) this.tenantLimitRejections.inc({ reason }, 0);
    for (const reason of TENANT_LIMIT_DELAY_REASONS) this.tenantLimitDelays.inc({ reason }, 0);
    for (const reason of SHED_REASONS) this.clientConnectionsShed.inc({ reason }, 0);
    for (const direction of ['client', 'upstream']) {
      this.bytesReceived.inc({ direction }, 0);
      this.bytesSent.inc({ direction }, 0);
    }

    this.configReloads = ProxyMetrics.createConfigReloadMetrics(registers);
    this.createUpstreamMetrics(registers);
    this.upstreamRetries = new Counter({
      name: name('upstream_retries_total'),
      help: 'Commands the proxy sent upstream again after a failure, by command and reason (an error code name, network, timeout, connect).',
      labelNames: ['command', 'reason'],
      registers,
    });
    this.tenantCapWaits = new Counter({
      name: name('upstream_tenant_cap_waits_total'),
      help: 'Commands that waited for an upstream connection because their tenant held upstream.maxPoolConnectionsPerTenant, by tenant (bounded).',
      labelNames: ['tenant'],
      registers,
    });
    this.breakerTransitions = new Counter({
      name: name('circuit_breaker_transitions_total'),
      help: 'Circuit breaker state changes per upstream server (from, to: closed, open, half-open).',
      labelNames: ['server', 'from', 'to'],
      registers,
    });

    if (options.processMetrics ?? true) {
      collectDefaultMetrics({
        register: this.registry,
        prefix: METRIC_PREFIX,
        eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS,
      });
    }
  }

  /** Prometheus text exposition content type. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The Prometheus text exposition of every metric. */
  metrics(): Promise<string> {
    return this.registry.metrics();
  }

  /**
   * Counts one command and records its duration; a forwarded command (`upstreamSeconds` given)
   * also records how its time splits between the upstream and the proxy.
   */
  observeOperation(operation: OperationObservation): void {
    const command = commandLabel(operation.command);
    const outcome = OUTCOMES.has(operation.outcome) ? operation.outcome : OTHER_LABEL;
    const database = this.databases.of(operation.database ?? '');
    // Label values are bounded, so their join names one series; NUL is in none of them.
    const key = `${command}\0${database}\0${outcome}`;
    const labels = () => ({ command, database, outcome });
    this.operationSeries.series(key, labels).pending++;
    const { seconds, upstreamSeconds } = operation;
    if (validSeconds(seconds)) {
      this.operationDuration.series(key, labels).observe(seconds);
      if (upstreamSeconds !== undefined && validSeconds(upstreamSeconds)) {
        this.upstreamWait.series(command, () => ({ command })).observe(upstreamSeconds);
        this.proxyOverhead.series(command, () => ({ command })).observe(Math.max(0, seconds - upstreamSeconds));
      }
    }
    if (operation.tenant !== undefined) {
      const tenant = this.tenants.of(operation.tenant);
      this.tenantOperationSeries.series(`${tenant}\0${outcome}`, () => ({ tenant, outcome })).pending++;
    }
  }

  /**
   * `observeOperation`, `tenantOperationStarted` and `tenantOperationFinished` for one client
   * connection (issue 16): the series of the connection's last label set are kept, so a
   * connection repeating its command (the common case) neither bounds labels, builds keys nor
   * looks a series up. The same series, counts and readout as the methods it stands for.
   *
   * An idle connection has one of these (its handshake was a command), so it is one small object
   * (`ConnectionOperations`): the label sets it binds are shared by every connection through
   * `#sharedOperations`, not made per connection.
   */
  operationRecorder(): OperationRecorder {
    return new ConnectionOperations((this.#binder ??= this.#makeBinder()));
  }

  #binder: OperationBinder | undefined;
  /**
   * Bound label sets by their raw values, shared by the connections' recorders (a burst of
   * handshakes of one tenant binds one). Bounded: cleared when full; an entry of an older
   * generation is bound again.
   */
  readonly #sharedOperations = new Map<string, BoundOperation>();

  #makeBinder(): OperationBinder {
    return {
      inFlightGeneration: () => this.tenantInFlightSeries.generation,
      inFlight: (tenant) => {
        const label = this.tenants.of(tenant);
        return this.tenantInFlightSeries.series(label, () => ({ tenant: label }));
      },
      decisionGeneration: () => this.policyDecisionSeries.generation,
      decision: (decision, rule) => {
        const label = this.policyRules.of(rule);
        return this.policyDecisionSeries.series(`${decision}\0${label}`, () => ({ decision, rule: label }));
      },
      operationGeneration: () =>
        this.operationSeries.generation +
        this.operationDuration.generation +
        this.upstreamWait.generation +
        this.proxyOverhead.generation +
        this.tenantOperationSeries.generation,
      operation: (rawCommand, rawDatabase, rawOutcome, rawTenant, generation) => {
        // Unambiguous: each raw value but the last is length-prefixed.
        const key = `${rawCommand.length}:${rawCommand}${rawDatabase.length}:${rawDatabase}${rawOutcome.length}:${rawOutcome}${
          rawTenant === undefined ? '-' : `+${rawTenant}`
        }`;
        let bound = this.#sharedOperations.get(key);
        if (bound === undefined || bound.generation !== generation) {
          bound = this.#bindOperation(rawCommand, rawDatabase, rawOutcome, rawTenant, generation);
          if (key.length <= MAX_SHARED_KEY_LENGTH) {
            if (this.#sharedOperations.size >= MAX_SHARED_OPERATIONS) this.#sharedOperations.clear();
            this.#sharedOperations.set(key, bound);
          }
        }
        return bound;
      },
      duration: (bound) => this.operationDuration.series(bound.key, bound.labels),
      upstreamWait: (bound) => {
        const { command } = bound;
        return this.upstreamWait.series(command, () => ({ command }));
      },
      proxyOverhead: (bound) => {
        const { command } = bound;
        return this.proxyOverhead.series(command, () => ({ command }));
      },
    };
  }

  #bindOperation(
    rawCommand: string,
    rawDatabase: string,
    rawOutcome: string,
    rawTenant: string | undefined,
    generation: number,
  ): BoundOperation {
    const command = commandLabel(rawCommand);
    const outcome = OUTCOMES.has(rawOutcome) ? rawOutcome : OTHER_LABEL;
    const database = this.databases.of(rawDatabase);
    const key = `${command}\0${database}\0${outcome}`;
    const labels = (): { command: string; database: string; outcome: string } => ({ command, database, outcome });
    let tenantCount: PendingSeries | undefined;
    if (rawTenant !== undefined) {
      const tenant = this.tenants.of(rawTenant);
      tenantCount = this.tenantOperationSeries.series(`${tenant}\0${outcome}`, () => ({ tenant, outcome }));
    }
    return {
      rawCommand,
      rawDatabase,
      rawOutcome,
      rawTenant,
      generation,
      command,
      key,
      labels,
      count: this.operationSeries.series(key, labels),
      duration: undefined,
      upstreamWait: undefined,
      proxyOverhead: undefined,
      tenantCount,
    };
  }

  /** A command of `tenant` started (pair with `tenantOperationFinished`). */
  tenantOperationStarted(tenant: string): void {
    const label = this.tenants.of(tenant);
    this.tenantInFlightSeries.series(label, () => ({ tenant: label })).pending++;
  }

  tenantOperationFinished(tenant: string): void {
    const label = this.tenants.of(tenant);
    this.tenantInFlightSeries.series(label, () => ({ tenant: label })).pending--;
  }

  /** Counts an authentication attempt (or a certificate mapping at connect). */
  authentication(attempt: AuthenticationObservation): void {
    this.authentications.inc({
      listener: this.listeners.of(attempt.listener),
      method: AUTH_METHOD_LABELS.has(attempt.method) ? attempt.method : OTHER_LABEL,
      mechanism: AUTH_MECHANISM_LABELS.has(attempt.mechanism) ? attempt.mechanism : OTHER_LABEL,
      outcome: attempt.outcome,
    });
  }

  /** Counts an isolation decision; rule ids come from code, bounded anyway. */
  policyDecision(decision: PolicyDecision, rule: string): void {
    const label = this.policyRules.of(rule);
    this.policyDecisionSeries.series(`${decision}\0${label}`, () => ({ decision, rule: label })).pending++;
  }

  setAuditOnly(on: boolean): void {
    this.auditOnlyMode.set(on ? 1 : 0);
  }

  tenantConnectionOpened(tenant: string): void {
    this.tenantConnections.inc({ tenant: this.tenants.of(tenant) });
  }

  tenantConnectionClosed(tenant: string): void {
    this.tenantConnections.dec({ tenant: this.tenants.of(tenant) });
  }

  connectionOpened(): void {
    this.clientConnections.inc();
    this.clientConnectionsTotal.inc();
  }

  connectionClosed(): void {
    this.clientConnections.dec();
  }

  connectionRefused(reason: RefusalReason | (string & {})): void {
    this.clientConnectionsRefused.inc({ reason: REFUSALS.has(reason) ? reason : OTHER_LABEL });
  }

  /** Counts a client TLS handshake by how it ended. */
  tlsHandshake(listener: string, outcome: TlsHandshakeOutcome): void {
    this.tlsHandshakes.inc({
      listener: this.listeners.of(listener),
      outcome: TLS_OUTCOMES.has(outcome) ? outcome : OTHER_LABEL,
    });
  }

  /** Counts a client connection closed to protect the others. */
  connectionShed(reason: ShedReason): void {
    this.clientConnectionsShed.inc({ reason });
  }

  /** Reads the bytes held for clients (the buffer budget's total) whenever metrics are scraped. */
  trackBufferedBytes(read: () => number): void {
    this.bufferedBytes = read;
  }

  /** Counts a connection or command refused by a per-tenant limit. */
  tenantLimitRejection(reason: TenantLimitRejectionReason): void {
    this.tenantLimitRejections.inc({ reason });
  }

  /** Counts `count` requests or slices made to wait by a tenant's byte rate or CPU budget. */
  tenantLimitDelay(reason: TenantLimitDelayReason, count = 1): void {
    this.tenantLimitDelays.inc({ reason }, count);
  }

  /** Reads the upstream pool's occupancy whenever metrics are scraped. */
  trackUpstreamPool(read: () => { inUse: number; idle: number }): void {
    this.upstreamPool = read;
  }

  /** Counts cursors killed upstream because their client connection closed. */
  cursorsReaped(count: number): void {
    this.cursorsReapedTotal.inc(count);
  }

  /** Reads the number of tracked cursors whenever metrics are scraped. */
  trackOpenCursors(read: () => number): void {
    this.openCursorCount = read;
  }

  /** Counts one OP_COMPRESSED message to or from a client. */
  compressedMessage(compressor: 'zstd' | 'snappy' | 'zlib', direction: ByteFlow): void {
    this.compressedMessages.inc({ compressor, direction });
  }

  /** Counts bytes exchanged with a peer: `bytes('client', 'received', n)`. */
  bytes(peer: Peer, flow: ByteFlow, count: number): void {
    if (!(count > 0)) return;
    this.bytesSeries[peer === 'upstream' ? 'upstream' : 'client'][flow === 'sent' ? 'sent' : 'received'].pending +=
      count;
  }

  /** Counts a protocol error; `reason` is an identifier such as an error code name. */
  protocolError(reason: string): void {
    this.protocolErrors.inc({ reason: this.protocolErrorReasons.of(reason) });
  }

  // ---- Configuration reloads (hot reload) ----

  private readonly configReloads: { reloads: Counter<'result'>; lastSuccessTime: Gauge; lastSuccessful: Gauge };

  private static createConfigReloadMetrics(registers: Registry[]): ProxyMetrics['configReloads'] {
    const reloads = new Counter({
      name: `${METRIC_PREFIX}config_reloads_total`,
      help: 'Configuration reloads (SIGHUP or a changed configuration file), by result (success, failure).',
      labelNames: ['result'],
      registers,
    });
    for (const result of ['success', 'failure']) reloads.inc({ result }, 0);
    return {
      reloads,
      lastSuccessTime: new Gauge({
        name: `${METRIC_PREFIX}config_last_reload_success_timestamp_seconds`,
        help: 'Unix time of the last successful configuration load (the start, or the last successful reload).',
        registers,
      }),
      lastSuccessful: new Gauge({
        name: `${METRIC_PREFIX}config_last_reload_successful`,
        help: '1 when the last configuration reload succeeded (or none was tried yet), 0 when it failed and the previous configuration is still running.',
        registers,
      }),
    };
  }

  /** The configuration the proxy started with is loaded: reloads start at zero, the last load succeeded. */
  configLoaded(): void {
    const metrics = this.configReloads;
    metrics.lastSuccessTime.set(Date.now() / 1000);
    metrics.lastSuccessful.set(1);
  }

  /** Counts one configuration reload and records whether the new configuration is running. */
  configReloaded(result: 'success' | 'failure'): void {
    const metrics = this.configReloads;
    metrics.reloads.inc({ result });
    metrics.lastSuccessful.set(result === 'success' ? 1 : 0);
    if (result === 'success') metrics.lastSuccessTime.set(Date.now() / 1000);
  }

  // ---- Upstream pool, retries and circuit breakers ----

  private readonly upstreamRetries: Counter<'command' | 'reason'>;
  private readonly retryReasons = new BoundedLabel(MAX_REASON_LABELS, REASON_SHAPE);
  private readonly breakerTransitions: Counter<'server' | 'from' | 'to'>;
  private readonly tenantCapWaits: Counter<'tenant'>;
  private upstreamServers: () => ReadonlyArray<UpstreamServerGaugeSource> = () => [];

  /** Per-server pool and breaker gauges (read at scrape time), retries and breaker transitions. */
  private createUpstreamMetrics(registers: Registry[]): void {
    const servers = (): ReadonlyArray<UpstreamServerGaugeSource> => this.upstreamServers();
    new Gauge({
      name: `${METRIC_PREFIX}upstream_pool_connections`,
      help: 'Upstream pool connections per server and state (in_use, idle, pending = being opened).',
      labelNames: ['server', 'state'],
      registers,
      collect() {
        this.reset();
        for (const server of servers()) {
          this.set({ server: server.server, state: 'in_use' }, server.inUse);
          this.set({ server: server.server, state: 'idle' }, server.idle);
          this.set({ server: server.server, state: 'pending' }, server.pending);
        }
      },
    });
    const serverGauge = (suffix: string, help: string, read: (server: UpstreamServerGaugeSource) => number): void => {
      new Gauge({
        name: `${METRIC_PREFIX}${suffix}`,
        help,
        labelNames: ['server'],
        registers,
        collect() {
          this.reset();
          for (const server of servers()) this.set({ server: server.server }, read(server));
        },
      });
    };
    serverGauge(
      'upstream_pool_wait_queue',
      'Commands waiting for a free upstream connection (pool at maxPoolSize), per server.',
      (server) => server.waiting,
    );
    serverGauge(
      'circuit_breaker_state',
      'Circuit breaker state per upstream server: 0 closed, 1 half-open, 2 open.',
      (server) => CIRCUIT_GAUGE[server.circuit] ?? 0,
    );
  }

  /** Reads every upstream server's pool and breaker at scrape time. */
  trackUpstreamServers(read: () => ReadonlyArray<UpstreamServerGaugeSource>): void {
    this.upstreamServers = read;
  }

  /** Counts a command sent upstream again; `reason` is an identifier (error code name, network…). */
  upstreamRetry(command: string, reason: string): void {
    this.upstreamRetries.inc({ command: commandLabel(command), reason: this.retryReasons.of(reason) });
  }

  /** Counts a command that waited for a pool connection because its tenant held its share. */
  upstreamTenantCapWait(tenant: string): void {
    this.tenantCapWaits.inc({ tenant: this.tenants.of(tenant) });
  }

  /** Counts a circuit breaker's state change. */
  circuitBreakerState(server: string, state: string, previous: string): void {
    if (state !== previous) this.breakerTransitions.inc({ server, from: previous, to: state });
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

function validSeconds(seconds: number): boolean {
  return Number.isFinite(seconds) && seconds >= 0;
}
