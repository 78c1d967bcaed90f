/**
 * Metric families the README, the Grafana dashboard and the PrometheusRule already use, which
 * work in progress elsewhere adds to ProxyMetrics: upstream retries, circuit breaker and pool
 * queue (upstream resilience) and configuration reloads (hot reload). Name → label names.
 * Remove each entry once `new ProxyMetrics()` exports it; the docs and chart tests then check it
 * like every other family.
 */
export const METRICS_ADDED_ELSEWHERE: ReadonlyMap<string, { type: 'counter' | 'gauge'; labels: readonly string[] }> = new Map([
  ['mongo_tenant_proxy_circuit_breaker_state', { type: 'gauge', labels: ['server'] }],
  ['mongo_tenant_proxy_retries_total', { type: 'counter', labels: [] }],
  ['mongo_tenant_proxy_upstream_wait_queue_length', { type: 'gauge', labels: [] }],
]);
