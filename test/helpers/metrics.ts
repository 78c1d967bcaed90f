// Reading the proxy's Prometheus metrics in tests, the way a scrape would.
import type { RunningProxy } from '../../src/main.js';

const PREFIX = 'mongo_tenant_proxy_';

/**
 * The samples of one metric (`name` without the `mongo_tenant_proxy_` prefix) in a metrics page,
 * keyed by their label text (`{command="find",outcome="ok"}`, '' for a metric without labels).
 */
export function parseSamples(text: string, name: string): Map<string, number> {
  const full = `${PREFIX}${name}`;
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!(line.startsWith(`${full}{`) || line.startsWith(`${full} `))) continue;
    const cut = line.lastIndexOf(' ');
    found.set(line.slice(full.length, cut), Number(line.slice(cut + 1)));
  }
  return found;
}

/** The sum of the samples of `name` in a metrics page whose labels include `labels`; 0 when none. */
export function sumSamples(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  let sum = 0;
  for (const [labelText, value] of parseSamples(text, name)) {
    if (wanted.every((label) => labelText.includes(label))) sum += value;
  }
  return sum;
}

/**
 * The metrics page text holding `name`: only that family when the registry has it. A whole scrape
 * also collects the process metrics, which walk every handle and open file descriptor (thousands in
 * the flood tests) on each poll of `until`.
 */
async function familyText(proxy: RunningProxy, name: string): Promise<string> {
  const full = `${PREFIX}${name}`;
  const { registry } = proxy.metrics;
  const family = [full, full.replace(/_(count|sum|bucket)$/, '')].find(
    (n) => registry.getSingleMetric(n) !== undefined,
  );
  return family === undefined ? proxy.metrics.metrics() : registry.getSingleMetricAsString(family);
}

/** parseSamples() of the proxy's metrics, read from its registry (only the family asked for). */
export async function samples(proxy: RunningProxy, name: string): Promise<Map<string, number>> {
  return parseSamples(await familyText(proxy, name), name);
}

/** sumSamples() of the proxy's metrics, read from its registry. */
export async function metricValue(
  proxy: RunningProxy,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  return sumSamples(await familyText(proxy, name), name, labels);
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
