// Reading the proxy's Prometheus metrics in tests, the way a scrape would.
import type { RunningProxy } from '../../src/main.js';

/**
 * The sum of every sample of `name` (without the `mongo_tenant_proxy_` prefix) whose labels
 * include `labels`; 0 when there is none.
 */
export async function metricValue(
  proxy: RunningProxy,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const full = `mongo_tenant_proxy_${name}`;
  // Only the family asked for: a whole scrape also collects the process metrics, which walk every
  // handle and open file descriptor (thousands in the flood tests) on each poll of `until`.
  const { registry } = proxy.metrics;
  const family = [full, full.replace(/_(count|sum|bucket)$/, '')].find(
    (n) => registry.getSingleMetric(n) !== undefined,
  );
  const text = family === undefined ? await proxy.metrics.metrics() : await registry.getSingleMetricAsString(family);
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!(line.startsWith(`${full}{`) || line.startsWith(`${full} `))) continue;
    if (!Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** GETs a path of the proxy's metrics listener (`/metrics`, `/readyz`…), as a scraper or probe would. */
export async function fetchMetricsPath(proxy: RunningProxy, path: string): Promise<Response> {
  const address = proxy.metricsAddress;
  if (address === null) throw new Error('the metrics listener is off');
  return fetch(`http://${address.host}:${address.port}${path}`);
}

/** The `/metrics` page. */
export async function scrape(proxy: RunningProxy): Promise<string> {
  return (await fetchMetricsPath(proxy, '/metrics')).text();
}
