// The configuration reload metrics (ProxyMetrics.configLoaded / configReloaded).
import { describe, expect, it } from 'vitest';
import { ProxyMetrics } from '../../../src/observability/metrics.js';

async function sample(metrics: ProxyMetrics, name: string): Promise<number | undefined> {
  const line = (await metrics.metrics())
    .split('\n')
    .find((candidate) => candidate.startsWith(`mongo_tenant_proxy_${name} `));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

describe('configuration reload metrics', () => {
  it('start at zero reloads and "successful" once the configuration is loaded', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    const before = Date.now() / 1000;
    metrics.configLoaded();
    expect(await sample(metrics, 'config_reloads_total{result="success"}')).toBe(0);
    expect(await sample(metrics, 'config_reloads_total{result="failure"}')).toBe(0);
    expect(await sample(metrics, 'config_last_reload_successful')).toBe(1);
    expect(await sample(metrics, 'config_last_reload_success_timestamp_seconds')).toBeGreaterThanOrEqual(
      Math.floor(before),
    );
  });

  it('count reloads by result; a failure clears "successful" and keeps the last success time', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.configLoaded();
    metrics.configReloaded('success');
    const lastSuccess = await sample(metrics, 'config_last_reload_success_timestamp_seconds');
    metrics.configReloaded('failure');
    metrics.configReloaded('failure');
    expect(await sample(metrics, 'config_reloads_total{result="success"}')).toBe(1);
    expect(await sample(metrics, 'config_reloads_total{result="failure"}')).toBe(2);
    expect(await sample(metrics, 'config_last_reload_successful')).toBe(0);
    expect(await sample(metrics, 'config_last_reload_success_timestamp_seconds')).toBe(lastSuccess);
    metrics.configReloaded('success');
    expect(await sample(metrics, 'config_last_reload_successful')).toBe(1);
  });
});
