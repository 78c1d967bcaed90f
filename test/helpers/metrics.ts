// Reading the proxy's Prometheus metrics in tests, the way a scrape would.
import type { RunningProxy } from '../../src/main.js';
import { until } from './wait.js';

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

// Driver monitors send hello on their own schedule (answered by the proxy); they are not the
// commands a test is counting.
const MONITORING = ['hello', 'isMaster', 'ismaster'].map((command) => `command="${command}"`);

/** The sum of a command-labelled metric's samples, monitoring commands left out. */
async function commandSum(proxy: RunningProxy, name: string): Promise<number> {
  let sum = 0;
  for (const [labelText, value] of await samples(proxy, name)) {
    if (!MONITORING.some((label) => labelText.includes(label))) sum += value;
  }
  return sum;
}

/**
 * Runs `action` and tells how many commands the proxy forwarded upstream for it
 * (`upstream_wait_seconds_count`, one per forwarded command). The proxy counts a command after
 * writing its reply, so this first waits (generously) until the proxy has counted at least
 * `commands` more handled commands (`operations_total`): the answer does not depend on how fast
 * the machine is. Nothing else may run commands through `proxy` meanwhile.
 */
export async function forwardedBy<T>(
  proxy: RunningProxy,
  action: () => Promise<T>,
  commands = 1,
): Promise<{ outcome: PromiseSettledResult<T>; forwarded: number }> {
  const handledBefore = await commandSum(proxy, 'operations_total');
  const forwardedBefore = await commandSum(proxy, 'upstream_wait_seconds_count');
  const outcome = await action().then(
    (value): PromiseSettledResult<T> => ({ status: 'fulfilled', value }),
    (reason: unknown): PromiseSettledResult<T> => ({ status: 'rejected', reason }),
  );
  await until(async () => (await commandSum(proxy, 'operations_total')) >= handledBefore + commands, {
    timeoutMS: 60_000,
    message: `the proxy never counted the ${commands} command(s) handled`,
  });
  return { outcome, forwarded: (await commandSum(proxy, 'upstream_wait_seconds_count')) - forwardedBefore };
}

/** The outcome of forwardedBy() as the promise it was. */
export function settled<T>(outcome: PromiseSettledResult<T>): Promise<T> {
  return outcome.status === 'fulfilled' ? Promise.resolve(outcome.value) : Promise.reject(outcome.reason);
}
