/**
 * Composition root: config → logger → metrics → upstream → listener. The only module that sees
 * every other one.
 */
import type { Logger } from 'pino';
import type { HostPort, ProxyConfig } from './config/types.js';
import { createLogger } from './observability/logger.js';
import { ProxyMetrics } from './observability/metrics.js';
import { startMetricsServer } from './observability/http.js';
import { Upstream, type UpstreamServerInfo } from './upstream/upstream.js';
import { startListener } from './server/listener.js';
import { redactUri } from './upstream/uri.js';
import { PROXY_VERSION } from './version.js';

export interface RunningProxy {
  address: HostPort;
  metricsAddress: HostPort | null;
  upstream: UpstreamServerInfo;
  metrics: ProxyMetrics;
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
}

export async function startProxy(config: ProxyConfig, options: StartOptions = {}): Promise<RunningProxy> {
  const logger = options.logger ?? createLogger({ level: config.log.level });
  const metrics = new ProxyMetrics({ version: PROXY_VERSION });
  const upstream = new Upstream({ ...config.upstream, logger: logger.child({ component: 'upstream' }) });
  metrics.trackUpstreamPool(() => upstream.stats);
  let info: UpstreamServerInfo;
  try {
    info = await upstream.start();
  } catch (error) {
    await upstream.close();
    throw error;
  }
  logger.info(
    { upstream: redactUri(config.upstream.uri), kind: info.kind, maxWireVersion: info.maxWireVersion },
    'upstream reached',
  );

  const listener = await startListener(config.listen, {
    config,
    upstream,
    server: () => upstream.info,
    logger,
    metrics,
  });
  let metricsServer: Awaited<ReturnType<typeof startMetricsServer>> | null = null;
  try {
    if (config.metrics.listen !== null) metricsServer = await startMetricsServer(metrics.registry, config.metrics.listen);
  } catch (error) {
    await listener.close();
    await upstream.close();
    throw error;
  }

  return {
    address: listener.address,
    metricsAddress: metricsServer?.address ?? null,
    upstream: info,
    metrics,
    async close() {
      await listener.close();
      await metricsServer?.close();
      await upstream.close();
    },
  };
}
