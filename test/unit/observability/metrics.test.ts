import { describe, expect, it } from 'vitest';
import { KNOWN_COMMANDS, commandLabel } from '../../../src/observability/commands.js';
import { METRIC_PREFIX, ProxyMetrics } from '../../../src/observability/metrics.js';

/** The value of one sample line, e.g. `name{a="b"} 3`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('ProxyMetrics', () => {
  it('exposes every metric with the prefix and Prometheus naming', async () => {
    const metrics = new ProxyMetrics({ version: '1.2.3' });
    metrics.observeOperation('find', 'ok', 0.002);
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
    expect(text).toContain(`${METRIC_PREFIX}build_info{version="1.2.3"} 1`);
    expect(text).not.toMatch(/^(?!#)(?!mongo_tenant_proxy_)\S/m);
    expect(metrics.contentType).toContain('text/plain');
  });

  it('counts operations and their durations by command and outcome', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.observeOperation('find', 'ok', 0.0004);
    metrics.observeOperation('find', 'ok', 0.2);
    metrics.observeOperation('insert', 'upstream_error', 1);
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="find",outcome="ok"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="insert",outcome="upstream_error"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}operation_duration_seconds_bucket{le="0.0005",command="find",outcome="ok"}`)).toBe(1);
    expect(sample(text, `${METRIC_PREFIX}operation_duration_seconds_count{command="find",outcome="ok"}`)).toBe(2);
  });

  it('bounds the command and outcome labels', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.observeOperation('dropEverything', 'ok', 0.001);
    metrics.observeOperation('x'.repeat(1000), 'ok', 0.001);
    metrics.observeOperation('find', 'exploded', 0.001);
    metrics.observeOperation('find', 'ok', Number.NaN);
    const text = await metrics.metrics();
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="other",outcome="ok"}`)).toBe(2);
    expect(sample(text, `${METRIC_PREFIX}operations_total{command="find",outcome="other"}`)).toBe(1);
    expect(text).not.toContain('dropEverything');
  });

  it('knows a generous list of commands', () => {
    for (const name of ['hello', 'isMaster', 'find', 'insert', 'update', 'delete', 'aggregate', 'getMore', 'killCursors',
      'count', 'distinct', 'findAndModify', 'createIndexes', 'listIndexes', 'listCollections', 'saslStart', 'endSessions',
      'commitTransaction', 'bulkWrite', 'explain', 'ping', 'buildInfo']) {
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
});
