import { describe, expect, it } from 'vitest';
import { KNOWN_COMMANDS, commandLabel } from '../../../src/observability/commands.js';
import { BoundedLabel, METRIC_PREFIX, OPERATION_OUTCOMES, ProxyMetrics } from '../../../src/observability/metrics.js';

/** The value of one sample line, e.g. `name{a="b"} 3`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('ProxyMetrics', () => {
  it('exposes every metric with the prefix and Prometheus naming', async () => {
    const metrics = new ProxyMetrics({ version: '1.2.3', commit: 'abc123' });
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'ok', seconds: 0.002 });
    metrics.protocolError('InvalidBSON');
    metrics.connectionRefused('max_connections');
    const text = await metrics.metrics();
    for (const name of [
      'operations_total',
      'operation_duration_seconds',
      'client_connections',
      'client_connections_total',
      'client_connections_refused_total',
      'bytes_received_total',
      'bytes_sent_total',
      'upstream_connections',
      'protocol_errors_total',
      'build_info',
      'process_cpu_user_seconds_total',
      'nodejs_eventloop_lag_seconds',
    ]) {
      expect(text).toContain(`# TYPE ${METRIC_PREFIX}${name} `);
    }
    expect(text).toContain(
      `${METRIC_PREFIX}build_info{version="1.2.3",commit="abc123",node_version="${process.versions.node}"} 1`,
    );
    expect(text).not.toMatch(/^(?!#)(?!mongo_tenant_proxy_)\S/m);
    expect(metrics.contentType).toContain('text/plain');
  });

  it('counts operations and their durations by command and outcome', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'ok', seconds: 0.0004 });
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'ok', seconds: 0.2 });
    metrics.observeOperation({ command: 'insert', database: 'app', outcome: 'upstream_error', seconds: 1 });
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="find",database="app",outcome="ok"}`)).toBe(2);
    expect(
      sample(text, `${METRIC_PREFIX}operations_total{command="insert",database="app",outcome="upstream_error"}`),
    ).toBe(1);
    expect(
      sample(
        text,
        `${METRIC_PREFIX}operation_duration_seconds_bucket{le="0.0005",command="find",database="app",outcome="ok"}`,
      ),
    ).toBe(1);
    expect(
      sample(text, `${METRIC_PREFIX}operation_duration_seconds_count{command="find",database="app",outcome="ok"}`),
    ).toBe(2);
  });

  it('bounds the command and outcome labels', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.observeOperation({ command: 'dropEverything', database: 'app', outcome: 'ok', seconds: 0.001 });
    metrics.observeOperation({ command: 'x'.repeat(1000), database: 'app', outcome: 'ok', seconds: 0.001 });
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'exploded', seconds: 0.001 });
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'ok', seconds: Number.NaN });
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="other",database="app",outcome="ok"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="find",database="app",outcome="other"}`)).toBe(1);
    expect(text).not.toContain('dropEverything');
  });

  it('knows a generous list of commands', () => {
    for (const name of [
      'hello',
      'isMaster',
      'find',
      'insert',
      'update',
      'delete',
      'aggregate',
      'getMore',
      'killCursors',
      'count',
      'distinct',
      'findAndModify',
      'createIndexes',
      'listIndexes',
      'listCollections',
      'saslStart',
      'endSessions',
      'commitTransaction',
      'bulkWrite',
      'explain',
      'ping',
      'buildInfo',
    ]) {
      expect(commandLabel(name)).toBe(name);
    }
    expect(KNOWN_COMMANDS.size).toBeGreaterThan(150);
    expect(commandLabel('FIND')).toBe('other');
    expect(commandLabel('__proto__')).toBe('other');
  });

  it('tracks connections, bytes and upstream connections', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.connectionOpened();
    metrics.connectionOpened();
    metrics.connectionClosed();
    metrics.bytes('client', 'received', 100);
    metrics.bytes('client', 'sent', 50);
    metrics.bytes('upstream', 'sent', 100);
    metrics.bytes('upstream', 'received', 7);
    metrics.bytes('upstream', 'received', -1);
    let pool = { inUse: 1, idle: 2 };
    metrics.trackUpstreamPool(() => pool);
    metrics.compressedMessage('zstd', 'received');
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}client_connections`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}client_connections_total`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}bytes_received_total{direction="client"}`)).toBe(100);
    expect(sample(text, `${METRIC_PREFIX}bytes_sent_total{direction="client"}`)).toBe(50);
    expect(sample(text, `${METRIC_PREFIX}bytes_sent_total{direction="upstream"}`)).toBe(100);
    expect(sample(text, `${METRIC_PREFIX}bytes_received_total{direction="upstream"}`)).toBe(7);
    expect(sample(text, `${METRIC_PREFIX}upstream_connections{state="in_use"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}upstream_connections{state="idle"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}compressed_messages_total{compressor="zstd",direction="received"}`)).toBe(1);
    pool = { inUse: 5, idle: 0 };
    expect(sample(await metrics.metrics(), `${METRIC_PREFIX}upstream_connections{state="in_use"}`)).toBe(5);
  });

  it('bounds protocol error and refusal reasons', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.protocolError('InvalidBSON');
    metrics.protocolError('InvalidBSON');
    metrics.protocolError('not an identifier!');
    for (let i = 0; i < 100; i++) metrics.protocolError(`Reason${i}`);
    metrics.connectionRefused('because');
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}protocol_errors_total{reason="InvalidBSON"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}protocol_errors_total{reason="other"}`)).toBe(1 + 100 - 63);
    expect(sample(text, `${METRIC_PREFIX}client_connections_refused_total{reason="other"}`)).toBe(1);
  });

  it('keeps instances independent (one registry each)', async () => {
    const a = new ProxyMetrics();
    const b = new ProxyMetrics();
    a.connectionOpened();
    expect(sample(await a.metrics(), `${METRIC_PREFIX}client_connections`)).toBe(1);
    expect(sample(await b.metrics(), `${METRIC_PREFIX}client_connections`)).toBe(0);
    expect(a.registry).not.toBe(b.registry);
  });

  it('has exactly the outcomes dashboards and alerts rely on', () => {
    expect([...OPERATION_OUTCOMES].sort()).toEqual(['denied', 'error', 'ok', 'retried', 'rewritten', 'upstream_error']);
  });

  it("splits a forwarded command's time between the upstream and the proxy", async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.observeOperation({
      command: 'find',
      database: 'app',
      outcome: 'ok',
      seconds: 0.01,
      upstreamSeconds: 0.0098,
    });
    metrics.observeOperation({ command: 'ping', database: 'admin', outcome: 'ok', seconds: 0.0001 }); // answered locally
    metrics.observeOperation({
      command: 'find',
      database: 'app',
      outcome: 'ok',
      seconds: 0.001,
      upstreamSeconds: 0.002,
    }); // clock skew: never negative
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}upstream_wait_seconds_count{command="find"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}upstream_wait_seconds_sum{command="find"}`)).toBeCloseTo(0.0118, 6);
    expect(sample(text, `${METRIC_PREFIX}proxy_overhead_seconds_count{command="find"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}proxy_overhead_seconds_sum{command="find"}`)).toBeCloseTo(0.0002, 6);
    expect(sample(text, `${METRIC_PREFIX}proxy_overhead_seconds_bucket{le="0.00025",command="find"}`)).toBe(2);
    expect(text).not.toContain('upstream_wait_seconds_count{command="ping"}');
  });

  it('bounds database labels: the first maxDatabaseLabels valid names, the rest "other"', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false, maxDatabaseLabels: 2 });
    for (const database of ['app', 'shop', 'tenant_3', 'app', 'bad.name', 'x'.repeat(65), '']) {
      metrics.observeOperation({ command: 'find', database, outcome: 'ok', seconds: 0.001 });
    }
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="find",database="app",outcome="ok"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="find",database="shop",outcome="ok"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="find",database="other",outcome="ok"}`)).toBe(4);
    expect(text).not.toContain('tenant_3');
  });

  it('shares one tenant guard between every per-tenant family', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false, maxTenantLabels: 2 });
    metrics.tenantConnectionOpened('a'); // first seen through the connection gauge
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'ok', seconds: 0.001, tenant: 'b' });
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'denied', seconds: 0.001, tenant: 'c' });
    metrics.observeOperation({
      command: 'find',
      database: 'app',
      outcome: 'upstream_error',
      seconds: 0.001,
      tenant: 'a',
    });
    metrics.tenantOperationStarted('c');
    metrics.tenantOperationStarted('b');
    metrics.tenantConnectionOpened('c');
    metrics.tenantConnectionOpened('d');
    metrics.tenantConnectionClosed('d');
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}tenant_connections{tenant="a"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tenant_connections{tenant="other"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tenant_operations_total{tenant="b",outcome="ok"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tenant_operations_total{tenant="other",outcome="denied"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tenant_operations_total{tenant="a",outcome="upstream_error"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tenant_operations_in_flight{tenant="other"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tenant_operations_in_flight{tenant="b"}`)).toBe(1);
    metrics.tenantOperationFinished('c');
    expect(sample(await metrics.metrics(), `${METRIC_PREFIX}tenant_operations_in_flight{tenant="other"}`)).toBe(0);
    expect(text).not.toMatch(/tenant="[cd]"/);
  });

  it('counts authentications by listener, method, mechanism and outcome, bounded', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.authentication({ listener: 'main', method: 'scram', mechanism: 'SCRAM-SHA-256', outcome: 'failure' });
    metrics.authentication({ listener: 'main', method: 'scram', mechanism: 'SCRAM-SHA-256', outcome: 'success' });
    metrics.authentication({ listener: 'main', method: 'mtls', mechanism: 'certificate', outcome: 'success' });
    metrics.authentication({ listener: 'main', method: 'invented', mechanism: 'GSSAPI', outcome: 'failure' });
    const text = await metrics.metrics();
    const series = (labels: string): number | undefined =>
      sample(text, `${METRIC_PREFIX}authentications_total{${labels}}`);
    expect(series('listener="main",method="scram",mechanism="SCRAM-SHA-256",outcome="failure"')).toBe(1);
    expect(series('listener="main",method="scram",mechanism="SCRAM-SHA-256",outcome="success"')).toBe(1);
    expect(series('listener="main",method="mtls",mechanism="certificate",outcome="success"')).toBe(1);
    expect(series('listener="main",method="other",mechanism="other",outcome="failure"')).toBe(1);
  });

  it('counts TLS handshakes, policy decisions, and reads open cursors at scrape time', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.tlsHandshake('tls', 'success');
    metrics.tlsHandshake('tls', 'timeout');
    metrics.tlsHandshake('tls', 'failure');
    metrics.tlsHandshake('tls', 'failure');
    metrics.policyDecision('refused', 'operator.where');
    metrics.policyDecision('rewritten', 'filter.tenant');
    metrics.policyDecision('refused', 'not a rule!');
    let cursors = 0;
    expect(sample(await metrics.metrics(), `${METRIC_PREFIX}open_cursors`)).toBe(0);
    metrics.trackOpenCursors(() => cursors);
    cursors = 3;
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}tls_handshakes_total{listener="tls",outcome="success"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tls_handshakes_total{listener="tls",outcome="timeout"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}tls_handshakes_total{listener="tls",outcome="failure"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}policy_decisions_total{decision="refused",rule="operator.where"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}policy_decisions_total{decision="rewritten",rule="filter.tenant"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}policy_decisions_total{decision="refused",rule="other"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}open_cursors`)).toBe(3);
  });

  it('follows Prometheus naming: counters end in _total, durations in _seconds, one prefix', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    for (const metric of await metrics.registry.getMetricsAsJSON()) {
      expect(metric.name.startsWith(METRIC_PREFIX), metric.name).toBe(true);
      expect(metric.name).toMatch(/^[a-z_]+$/);
      if (`${metric.type}` === 'counter') expect(metric.name, metric.name).toMatch(/_total$/);
      else expect(metric.name, metric.name).not.toMatch(/_total$/);
      if (`${metric.type}` === 'histogram') expect(metric.name, metric.name).toMatch(/_seconds$/);
      expect(metric.help.length, metric.name).toBeGreaterThan(10);
    }
  });
});

describe('BoundedLabel', () => {
  it('keeps the first max values that fit the shape, forever; the rest are "other"', () => {
    const label = new BoundedLabel(2, /^[a-z]+$/);
    expect(label.of('a')).toBe('a');
    expect(label.of('B')).toBe('other');
    expect(label.of('b')).toBe('b');
    expect(label.of('c')).toBe('other');
    expect(label.of('a')).toBe('a');
    expect(new BoundedLabel(0).of('a')).toBe('other');
  });
});

describe('ProxyMetrics.operationRecorder', () => {
  type Step =
    | { kind: 'observe'; op: Parameters<ProxyMetrics['observeOperation']>[0] }
    | { kind: 'started' | 'finished'; tenant: string }
    | { kind: 'decision'; decision: Parameters<ProxyMetrics['policyDecision']>[0]; rule: string }
    | { kind: 'reset' };
  const steps: Step[] = [
    { kind: 'started', tenant: 'acme' },
    {
      kind: 'observe',
      op: { command: 'ping', database: 'app', outcome: 'ok', seconds: 0.0002, upstreamSeconds: 0.0001, tenant: 'acme' },
    },
    { kind: 'finished', tenant: 'acme' },
    {
      kind: 'observe',
      op: { command: 'ping', database: 'app', outcome: 'ok', seconds: 0.0003, upstreamSeconds: 0.0001, tenant: 'acme' },
    },
    // Same command, another outcome, database, tenant; no upstream time; invalid durations.
    { kind: 'observe', op: { command: 'ping', database: 'app', outcome: 'denied', seconds: 0.001, tenant: 'acme' } },
    {
      kind: 'observe',
      op: { command: 'ping', database: 'other', outcome: 'denied', seconds: Number.NaN, tenant: 'acme' },
    },
    { kind: 'observe', op: { command: 'hello', database: 'admin', outcome: 'ok', seconds: 0.0001 } },
    { kind: 'observe', op: { command: 'hello', database: 'admin', outcome: 'exploded', seconds: -1 } },
    {
      kind: 'observe',
      op: { command: 'x'.repeat(300), database: 'a.b', outcome: 'ok', seconds: 0.01, upstreamSeconds: 0.02 },
    },
    { kind: 'decision', decision: 'rewritten', rule: 'filter.tenant' },
    { kind: 'decision', decision: 'rewritten', rule: 'filter.tenant' },
    { kind: 'decision', decision: 'refused', rule: 'filter.tenant' },
    { kind: 'decision', decision: 'refused', rule: 'not a rule!' },
    { kind: 'started', tenant: 'globex' },
    {
      kind: 'observe',
      op: {
        command: 'find',
        database: 'app',
        outcome: 'rewritten',
        seconds: 0.002,
        upstreamSeconds: 0.001,
        tenant: 'globex',
      },
    },
    { kind: 'finished', tenant: 'globex' },
    // The registry is reset: the series the recorder held are gone, the next counts go to new ones.
    { kind: 'reset' },
    { kind: 'decision', decision: 'refused', rule: 'not a rule!' },
    { kind: 'started', tenant: 'globex' },
    {
      kind: 'observe',
      op: {
        command: 'find',
        database: 'app',
        outcome: 'rewritten',
        seconds: 0.003,
        upstreamSeconds: 0.001,
        tenant: 'globex',
      },
    },
    { kind: 'finished', tenant: 'globex' },
    {
      kind: 'observe',
      op: { command: 'find', database: 'app', outcome: 'rewritten', seconds: 0.004, tenant: 'globex' },
    },
  ];

  /** The step through the per-call methods of `plain` and through `recorder` (of `bound`). */
  function apply(
    step: Step,
    plain: ProxyMetrics,
    bound: ProxyMetrics,
    recorder: ReturnType<ProxyMetrics['operationRecorder']>,
  ): void {
    switch (step.kind) {
      case 'observe':
        plain.observeOperation(step.op);
        recorder.observe(step.op);
        break;
      case 'started':
        plain.tenantOperationStarted(step.tenant);
        recorder.started(step.tenant);
        break;
      case 'finished':
        plain.tenantOperationFinished(step.tenant);
        recorder.finished(step.tenant);
        break;
      case 'decision':
        plain.policyDecision(step.decision, step.rule);
        recorder.decision(step.decision, step.rule);
        break;
      case 'reset':
        plain.registry.resetMetrics();
        bound.registry.resetMetrics();
        break;
    }
  }

  it('reads out exactly like observeOperation and tenantOperationStarted/Finished', async () => {
    const plain = new ProxyMetrics({ processMetrics: false, maxTenantLabels: 1 });
    const bound = new ProxyMetrics({ processMetrics: false, maxTenantLabels: 1 });
    const recorder = bound.operationRecorder();
    for (const step of steps) {
      apply(step, plain, bound, recorder);
      expect(await bound.metrics()).toBe(await plain.metrics());
    }
    expect(await bound.metrics()).toContain('operations_total{command="find",database="app",outcome="rewritten"} 2');
  });

  it('reads out the same when connections share label sets (recorders taking turns)', async () => {
    const plain = new ProxyMetrics({ processMetrics: false, maxTenantLabels: 1 });
    const bound = new ProxyMetrics({ processMetrics: false, maxTenantLabels: 1 });
    const recorders = [bound.operationRecorder(), bound.operationRecorder(), bound.operationRecorder()];
    const longDatabase = 'd'.repeat(600);
    const turns = [
      ...steps,
      // A raw value too long to be shared: bound for its connection only.
      { kind: 'observe', op: { command: 'ping', database: longDatabase, outcome: 'ok', seconds: 0.001 } },
      { kind: 'observe', op: { command: 'ping', database: longDatabase, outcome: 'ok', seconds: 0.002 } },
      ...steps,
    ] satisfies Step[];
    for (const [index, step] of turns.entries()) {
      apply(step, plain, bound, recorders[index % recorders.length]!);
      expect(await bound.metrics()).toBe(await plain.metrics());
    }
  });
});
