/**
 * Composition root: config → logger → metrics → upstream → identity → listeners. The only
 * module that sees every other one.
 */
import type { Logger } from 'pino';
import type { HostPort, ProxyConfig } from './config/types.js';
import { createLogger } from './observability/logger.js';
import { ProxyMetrics } from './observability/metrics.js';
import { startMetricsServer } from './observability/http.js';
import { Upstream, type UpstreamServerInfo } from './upstream/upstream.js';
import { redactUri } from './upstream/uri.js';
import { createIdentityServices } from './identity/services.js';
import { ConnectionRegistry, startListener, type Listener } from './server/listener.js';
import { TenantLimits } from './server/tenant-limits.js';
import { UpstreamRelay } from './server/upstream-relay.js';
import { PROXY_VERSION } from './version.js';
import { IsolationEngine } from './rewrite/engine.js';
import { CursorRegistry } from './policy/cursors.js';
import { sessionKeyFrom } from './rewrite/sessions.js';
import { createAuditLog } from './observability/audit.js';
import { isolationWarnings } from './config/checks.js';

export interface RunningProxy {
  /** The first listener's address. */
  address: HostPort;
  /** Every listener's address, by listener name. */
  addresses: Readonly<Record<string, HostPort>>;
  metricsAddress: HostPort | null;
  upstream: UpstreamServerInfo;
  metrics: ProxyMetrics;
  /**
   * Graceful shutdown (a drain): `/readyz` turns 503 and every listener stops accepting at once;
   * idle client connections close at once, busy ones once their request is answered or when
   * `limits.drainTimeoutMS` expires; then the metrics endpoint, the upstream and the rest close
   * and the logs are flushed. Calling it again returns the same promise.
   */
  close(): Promise<void>;
}

export interface StartOptions {
  logger?: Logger;
}

export async function startProxy(config: ProxyConfig, options: StartOptions = {}): Promise<RunningProxy> {
  const logger = options.logger ?? createLogger({ level: config.log.level });
  const metrics = new ProxyMetrics({ version: PROXY_VERSION, maxTenantLabels: config.identity.maxTenantLabels });
  const upstream = new Upstream({
    ...config.upstream,
    logger: logger.child({ component: 'upstream' }),
    observer: {
      retry: (command, reason) => metrics.upstreamRetry(command, reason),
      circuitState: (server, state, previous) => metrics.circuitBreakerState(server, state, previous),
    },
  });
  metrics.trackUpstreamPool(() => upstream.stats);
  metrics.trackUpstreamServers(() => upstream.serverStats());
  const cleanups: Array<() => Promise<void> | void> = [() => upstream.close()];
  const listeners: Listener[] = [];
  // Listeners drain first (readiness is already false, the metrics endpoint still answers),
  // then later resources close first; closing twice is a no-op.
  let closing: Promise<void> | undefined;
  const cleanUp = (): Promise<void> =>
    (closing ??= (async () => {
      try {
        if (listeners.length > 0) {
          const started = Date.now();
          await Promise.all(listeners.map((listener) => listener.close(config.limits.drainTimeoutMS)));
          logger.info({ ms: Date.now() - started }, 'client connections drained');
        }
        for (const cleanup of [...cleanups].reverse()) await cleanup();
      } finally {
        await flushLogger(logger);
      }
    })());

  try {
    const info = await upstream.start();
    logger.info(
      { upstream: redactUri(config.upstream.uri), kind: info.kind, maxWireVersion: info.maxWireVersion },
      'upstream reached',
    );
    const identity = createIdentityServices(config, {
      logger,
      observer: metrics,
      openRelay: async () => new UpstreamRelay(await upstream.openUnauthenticated()),
    });
    cleanups.push(() => identity.close());

    const { isolation: isolationConfig } = config;
    const isolation = new IsolationEngine({
      config: isolationConfig,
      cursors: new CursorRegistry(),
      sessionKey: sessionKeyFrom(isolationConfig.sessionKey),
      collationSupported: () => upstream.info.collationSupported,
    });
    for (const warning of isolationWarnings(isolationConfig)) logger.warn(warning);
    metrics.setAuditOnly(isolationConfig.mode === 'audit-only');
    if (isolationConfig.sessionKey === null) {
      logger.warn('isolation.sessionKey is not set: upstream session ids change when the proxy restarts, so retries across a restart start new sessions');
    }
    const audit = createAuditLog({ ...isolationConfig.audit, logger: logger.child({ component: 'audit' }) });
    cleanups.push(() => audit.close());

    const registry = new ConnectionRegistry();
    // One set of per-tenant counters for every listener: a tenant's limits span all of them.
    const tenantLimits = new TenantLimits(config.limits);
    const shared = {
      config,
      upstream,
      server: () => upstream.info,
      logger,
      metrics,
      identity: identity.services,
      isolation,
      audit,
      tenantLimits,
    };
    for (const [index, listener] of config.listeners.entries()) {
      const started = await startListener(listener, index, shared, registry);
      listeners.push(started);
      logger.info({ listener: started.name, address: started.address, tls: listener.tls !== null, methods: listener.methods }, 'listening');
    }
    const metricsServer =
      config.metrics.listen === null
        ? null
        : await startMetricsServer(metrics.registry, config.metrics.listen, {
            // Ready once the upstream was reached and the listeners are up; not while shutting down.
            ready: () => closing === undefined,
            onError: (error) => logger.error({ err: error }, 'metrics listener error'),
          });
    if (metricsServer !== null) cleanups.push(() => metricsServer.close());

    const first = listeners[0];
    if (first === undefined) throw new Error('no listener configured');
    return {
      address: first.address,
      addresses: Object.fromEntries(listeners.map((listener) => [listener.name, listener.address])),
      metricsAddress: metricsServer?.address ?? null,
      upstream: info,
      metrics,
      close: cleanUp,
    };
  } catch (error) {
    await cleanUp();
    throw error;
  }
}

/** Writes out what the logger buffered (a no-op for synchronous destinations). */
function flushLogger(logger: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    try {
      logger.flush(() => resolve());
    } catch {
      resolve();
    }
  });
}
