import { createServer } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { startMetricsServer, type MetricsServer } from '../../../src/observability/http.js';
import { ProxyMetrics } from '../../../src/observability/metrics.js';

const servers: MetricsServer[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
});

async function start(
  source = new ProxyMetrics({ processMetrics: false }),
): Promise<{ base: string; metrics: ProxyMetrics | typeof source }> {
  const server = await startMetricsServer(source, { host: '127.0.0.1', port: 0 });
  servers.push(server);
  expect(server.address.port).toBeGreaterThan(0);
  return { base: `http://127.0.0.1:${server.address.port}`, metrics: source };
}

describe('startMetricsServer', () => {
  it('serves /metrics in the Prometheus text format', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    metrics.observeOperation({ command: 'find', database: 'app', outcome: 'ok', seconds: 0.01 });
    const { base } = await start(metrics);
    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toContain('text/plain');
    expect(await response.text()).toContain(
      'mongo_tenant_proxy_operations_total{command="find",database="app",outcome="ok"} 1',
    );
    expect((await fetch(`${base}/metrics?x=1`)).status).toBe(200);
  });

  it('accepts a prom-client registry directly', async () => {
    const metrics = new ProxyMetrics({ processMetrics: false });
    const server = await startMetricsServer(metrics.registry, { host: '127.0.0.1', port: 0 });
    servers.push(server);
    const response = await fetch(`http://127.0.0.1:${server.address.port}/metrics`);
    expect(await response.text()).toContain('mongo_tenant_proxy_client_connections 0');
  });

  it('answers /healthz with ok', async () => {
    const { base } = await start();
    const response = await fetch(`${base}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('ok\n');
    const head = await fetch(`${base}/healthz`, { method: 'HEAD' });
    expect(head.status).toBe(200);
  });

  it('answers /readyz from the ready callback: 200 ready, 503 not ready', async () => {
    let ready = false;
    const server = await startMetricsServer(
      new ProxyMetrics({ processMetrics: false }),
      { host: '127.0.0.1', port: 0 },
      { ready: () => ready },
    );
    servers.push(server);
    const url = `http://127.0.0.1:${server.address.port}/readyz`;
    expect((await fetch(url)).status).toBe(503);
    ready = true;
    const response = await fetch(url);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('ready\n');
  });

  it('serves nothing else', async () => {
    const { base } = await start();
    for (const path of ['/', '/metrics/', '/favicon.ico', '/healthz/x', '/admin']) {
      expect((await fetch(`${base}${path}`)).status, path).toBe(404);
    }
    const post = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it('answers 500 when collection fails', async () => {
    const { base } = await start({
      contentType: 'text/plain',
      metrics: () => Promise.reject(new Error('nope')),
    } as unknown as ProxyMetrics);
    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(500);
    expect(await response.text()).not.toContain('nope');
  });

  it('rejects when the address is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      await expect(
        startMetricsServer(new ProxyMetrics({ processMetrics: false }), { host: '127.0.0.1', port }),
      ).rejects.toThrow(/EADDRINUSE/);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('closes even with keep-alive connections open, and close is idempotent', async () => {
    const server = await startMetricsServer(new ProxyMetrics({ processMetrics: false }), {
      host: '127.0.0.1',
      port: 0,
    });
    await fetch(`http://127.0.0.1:${server.address.port}/healthz`, { headers: { connection: 'keep-alive' } });
    await Promise.all([server.close(), server.close()]);
    await expect(fetch(`http://127.0.0.1:${server.address.port}/healthz`)).rejects.toThrow();
  });
});
