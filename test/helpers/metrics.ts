// Reading the proxy's Prometheus metrics in tests, the way a scrape would.
import type { RunningProxy } from '../../src/main.js';

const PREFIX = 'mongo_tenant_proxy_';

/**
 * The samples of one metric (`name` without the `mongo_tenant_proxy_` prefix), keyed by their
 * label text (`{command="find",outcome="ok"}`, '' for a metric without labels).
 */
export async function samples(proxy: RunningProxy, name: string): Promise<Map<string, number>> {
  const text = await proxy.metrics.metrics();
  const full = `${PREFIX}${name}`;
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!(line.startsWith(`${full}{`) || line.startsWith(`${full} `))) continue;
    const cut = line.lastIndexOf(' ');
    found.set(line.slice(full.length, cut), Number(line.slice(cut + 1)));
  }
  return found;
}

/**
 * The sum of every sample of `name` (without the `mongo_tenant_proxy_` prefix) whose labels
 * include `labels`; 0 when there is none.
 */
export async function metricValue(
  proxy: RunningProxy,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  let sum = 0;
  for (const [labelText, value] of await samples(proxy, name)) {
    if (Object.entries(labels).every(([key, wanted]) => labelText.includes(`${key}="${wanted}"`))) sum += value;
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

/** The status of `/readyz`: 200 ready, 503 not (draining, upstream unreachable). */
export async function readyz(proxy: RunningProxy): Promise<number> {
  return (await fetchMetricsPath(proxy, '/readyz')).status;
}
