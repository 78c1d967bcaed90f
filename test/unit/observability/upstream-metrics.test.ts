import { describe, expect, it } from 'vitest';
import { ProxyMetrics, type UpstreamServerGaugeSource } from '../../../src/observability/metrics.js';

function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const P = 'mongo_tenant_proxy_';

describe('upstream pool, retry and circuit breaker metrics', () => {
  it('reads every server’s pool and breaker at scrape time', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    let servers: UpstreamServerGaugeSource[] = [
      { server: 'a:1', circuit: 'closed', inUse: 3, idle: 2, pending: 1, waiting: 7 },
      { server: 'b:1', circuit: 'open', inUse: 0, idle: 0, pending: 0, waiting: 0 },
    ];
    metrics.trackUpstreamServers(() => servers);
    let text = await metrics.metrics();
    expect(sample(text, `${P}upstream_pool_connections{server="a:1",state="in_use"}`)).toBe(3);
    expect(sample(text, `${P}upstream_pool_connections{server="a:1",state="idle"}`)).toBe(2);
    expect(sample(text, `${P}upstream_pool_connections{server="a:1",state="pending"}`)).toBe(1);
    expect(sample(text, `${P}upstream_pool_wait_queue{server="a:1"}`)).toBe(7);
    expect(sample(text, `${P}circuit_breaker_state{server="a:1"}`)).toBe(0);
    expect(sample(text, `${P}circuit_breaker_state{server="b:1"}`)).toBe(2);
    servers = [{ server: 'a:1', circuit: 'half-open', inUse: 0, idle: 1, pending: 0, waiting: 0 }];
    text = await metrics.metrics();
    expect(sample(text, `${P}circuit_breaker_state{server="a:1"}`)).toBe(1);
    expect(sample(text, `${P}circuit_breaker_state{server="b:1"}`)).toBeUndefined();
  });

  it('counts retries by command and bounded reason, and breaker transitions', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.upstreamRetry('find', 'network');
    metrics.upstreamRetry('find', 'network');
    metrics.upstreamRetry('noSuchCommand', 'NotWritablePrimary');
    metrics.upstreamRetry('insert', 'not a reason!');
    metrics.circuitBreakerState('a:1', 'closed', 'closed');
    metrics.circuitBreakerState('a:1', 'open', 'closed');
    const text = await metrics.metrics();
    expect(sample(text, `${P}upstream_retries_total{command="find",reason="network"}`)).toBe(2);
    expect(sample(text, `${P}upstream_retries_total{command="other",reason="NotWritablePrimary"}`)).toBe(1);
    expect(sample(text, `${P}upstream_retries_total{command="insert",reason="other"}`)).toBe(1);
    expect(sample(text, `${P}circuit_breaker_transitions_total{server="a:1",from="closed",to="open"}`)).toBe(1);
    expect(
      sample(text, `${P}circuit_breaker_transitions_total{server="a:1",from="closed",to="closed"}`),
    ).toBeUndefined();
  });
});
