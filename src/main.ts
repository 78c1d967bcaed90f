/**
 * Composition root: config → logger → metrics → upstream → identity → listeners. The only
 * module that sees every other one.
 */
import type { DestinationStream, Logger } from 'pino';
import type { HostPort, ProxyConfig } from './config/types.js';
import { createLogger } from './observability/logger.js';
import { ProxyMetrics } from './observability/metrics.js';
import { startMetricsServer } from './observability/http.js';
import { Upstream, type UpstreamServerInfo } from './upstream/upstream.js';
import { redactUri } from './upstream/uri.js';
import { createIdentityServices, type IdentityRuntime } from './identity/services.js';
import type { AuthObserver, IdentityServices } from './identity/types.js';
import { ConnectionRegistry, startListener, type Listener, type SharedConnectionDeps } from './server/listener.js';
import { TenantLimits } from './server/tenant-limits.js';
import { BufferBudget } from './server/buffer-budget.js';
import { loadIncrementalCollection } from './server/heap-pressure.js';
import { loadMallocTrim } from './server/malloc-trim.js';
import { exposedGc, MemoryReturn } from './server/memory-return.js';
import { ValidationScheduler } from './server/validation-scheduler.js';
import { TurnShare } from './server/turn-share.js';
import { LogThrottle } from './observability/log-throttle.js';
import { withDerivedLimits } from './config/derived.js';
import { UpstreamRelay } from './server/upstream-relay.js';
import { PROXY_COMMIT, PROXY_VERSION } from './version.js';
import { loadCodecs } from './wire/compression.js';
import { IsolationEngine } from './rewrite/engine.js';
import { TenancyExecutor } from './tenancy/executor.js';
import { upstreamRunner } from './tenancy/runner.js';
import { ViewGuard } from './tenancy/views.js';
import { ensureDeclaredIndexes, type EnsuredIndex } from './tenancy/declared.js';
import { defaultConfig } from './config/index.js';
import { CursorRegistry } from './policy/cursors.js';
import { sessionKeyFrom } from './rewrite/sessions.js';
import { createAuditLog, type AuditDestination, type AuditLog } from './observability/audit.js';
import { isolationWarnings } from './config/checks.js';
import {
  ConfigReloader,
  ReloadableAuditLog,
  type ConfigSource,
  type ReloadResult,
  type ReloadTrigger,
} from './reload.js';

export { configFileSource, type ConfigSource, type ReloadResult, type ReloadTrigger } from './reload.js';

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
  /**
   * Hot reload: loads the configuration again from `StartOptions.source` (or takes `config`,
   * already validated) and applies what can change live without dropping a connection; settings
   * that need a restart are reported and keep their running values. Never rejects: a configuration that
   * fails is in the result, logged and counted, and the running one stays. SIGHUP calls this.
   */
  reload(options?: { config?: ProxyConfig; trigger?: ReloadTrigger }): Promise<ReloadResult>;
}

export interface StartOptions {
  logger?: Logger;
  /**
   * Where audit events go instead of `audit.destination`: one stream for every destination
   * (tests, embedders), or a choice per destination (the CLI routes stdout/stderr through its
   * own writers; `undefined` opens the destination itself).
   */
  auditStream?: DestinationStream | ((destination: AuditDestination) => DestinationStream | undefined);
  /** Where reloads read the configuration from (the CLI: the same file, environment and flags). */
  source?: ConfigSource;
  /**
   * A full garbage collection, run once a burst of buffered bytes is over so its memory goes back
   * (server/memory-return.ts). Default `globalThis.gc` when Node runs with `--expose-gc` (the
   * image's entrypoint), followed by glibc's malloc_trim where available (server/malloc-trim.ts);
   * null never collects.
   */
  collectGarbage?: (() => void) | null;
  /**
   * Milliseconds of small-request work per turn of the event loop before requests wait for their
   * tenant's turn (server/turn-share.ts). Default DEFAULT_TURN_MS; 0 queues every request (tests).
   */
  turnMS?: number;
}

export async function startProxy(given: ProxyConfig, options: StartOptions = {}): Promise<RunningProxy> {
  // A configuration built by hand (embedding, tests) may still say -1 ("derive it"): resolve it here too.
  const config = withDerivedLimits(given);
  // The configured native codecs load now (they load on first use otherwise): a broken install fails here.
  loadCodecs(config.compression.compressors);
  const logger = options.logger ?? createLogger({ level: config.log.level });
  const metrics = new ProxyMetrics({
    version: PROXY_VERSION,
    commit: PROXY_COMMIT,
    maxTenantLabels: config.identity.maxTenantLabels,
    maxDatabaseLabels: config.metrics.maxDatabaseLabels,
  });
  const upstream = new Upstream({
    ...config.upstream,
    ...probeDatabaseOf(config),
    logger: logger.child({ component: 'upstream' }),
    observer: {
      retry: (command, reason) => metrics.upstreamRetry(command, reason),
      circuitState: (server, state, previous) => metrics.circuitBreakerState(server, state, previous),
      tenantCapWait: (_server, tenant) => metrics.upstreamTenantCapWait(tenant),
    },
  });
  metrics.trackUpstreamPool(() => upstream.stats);
  metrics.trackUpstreamServers(() => upstream.serverStats());
  const cleanups: Array<() => Promise<void> | void> = [() => upstream.close()];
  const listeners: Listener[] = [];
  let reloader: ConfigReloader | undefined;
  // Listeners drain first (readiness is already false, the metrics endpoint still answers),
  // then later resources close first; closing twice is a no-op.
  let closing: Promise<void> | undefined;
  const cleanUp = (): Promise<void> =>
    (closing ??= (async () => {
      try {
        // No reload while draining: it would switch settings (and open files) the shutdown is about to close.
        reloader?.close();
        if (listeners.length > 0) {
          const started = Date.now();
          await Promise.all(
            listeners.map((listener) => listener.close((reloader?.config ?? config).limits.drainTimeoutMS)),
          );
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
    const createAudit = (current: ProxyConfig): AuditLog => {
      const { auditStream } = options;
      const stream = typeof auditStream === 'function' ? auditStream(current.audit.destination) : auditStream;
      // A failing audit file must not crash the proxy; its failures are logged, at most once a minute.
      let lastReported = -Infinity;
      const onError = (error: Error): void => {
        if (Date.now() - lastReported < 60_000) return;
        lastReported = Date.now();
        logger.error(
          { err: error.message, destination: current.audit.destination },
          'audit destination failed: audit events are being lost',
        );
      };
      return createAuditLog({ ...current.audit, stream, onError });
    };
    const audit = new ReloadableAuditLog(createAudit(config));
    cleanups.push(() => audit.close());
    // Every authentication outcome is counted and audited.
    const authenticationObserver: AuthObserver = {
      authentication: (event) => {
        metrics.authentication(event);
        audit.authentication(event);
      },
    };
    const createIdentity = (current: ProxyConfig, throttle?: IdentityServices['throttle']): IdentityRuntime =>
      createIdentityServices(current, {
        logger,
        observer: authenticationObserver,
        openRelay: async () => new UpstreamRelay(await upstream.openUnauthenticated()),
        ...(throttle === undefined ? {} : { throttle }),
      });
    const identity = createIdentity(config);
    cleanups.push(() => identity.close());

    const { isolation: isolationConfig } = config;
    const cursors = new CursorRegistry();
    // Expired entries are dropped before counting, so the gauge shows live cursors only.
    metrics.trackOpenCursors(() => {
      cursors.sweep();
      return cursors.size;
    });
    const isolation = new IsolationEngine({
      config: isolationConfig,
      cursors,
      sessionKey: sessionKeyFrom(isolationConfig.sessionKey),
      collationSupported: () => upstream.capabilities.collation,
      distinctMaxTimeMSSupported: () => upstream.capabilities.distinctMaxTimeMS,
      upsertFieldsFromAnd: () => upstream.capabilities.upsertFieldsFromAnd,
      virtualDdl: true,
      upstreamFacts: () => upstream.info,
      maxOpenCursorsPerTenant: () => (reloader?.config ?? config).limits.maxOpenCursorsPerTenant,
      // A client connection left with cursors open: killed upstream now, not at the idle timeout.
      onOrphanedCursors: (tenant, orphaned) => {
        const byNamespace = new Map<string, { db: string; coll: string; ids: bigint[] }>();
        for (const { id, db, coll } of orphaned) {
          const key = `${db}\0${coll}`;
          const group = byNamespace.get(key) ?? { db, coll, ids: [] };
          group.ids.push(id);
          byNamespace.set(key, group);
        }
        for (const { db, coll, ids } of byNamespace.values()) {
          upstream.killCursors(db, coll, ids, tenant).then(
            () => metrics.cursorsReaped(ids.length),
            (error: unknown) =>
              logger.debug(
                { cursors: ids.length, err: error instanceof Error ? error.message : String(error) },
                'killing the cursors of a closed client connection failed',
              ),
          );
        }
      },
    });
    // Shared-collection DDL and listings per tenant, from the ownership catalogue in the upstream.
    const tenancy = new TenancyExecutor({
      runner: upstreamRunner(upstream),
      settings: () => (reloader?.config ?? config).isolation.tenancy ?? defaultTenancy(),
      bsonSize: () => upstream.capabilities.bsonSize,
      partialIndexes: () => upstream.capabilities.partialIndexes,
    });
    // Reads of views an operator created on the server are checked against their definition (catalogue 22).
    const views = new ViewGuard({ runner: upstreamRunner(upstream) });
    for (const warning of isolationWarnings(isolationConfig)) logger.warn(warning);
    metrics.setAuditOnly(isolationConfig.mode === 'audit-only');
    if (isolationConfig.sessionKey === null) {
      logger.warn(
        'isolation.sessionKey is not set: upstream session ids change when the proxy restarts, so retries across a restart start new sessions',
      );
    }

    const declared = config.isolation.tenancy?.sharedIndexes ?? [];
    if (declared.length > 0) {
      for (const result of await ensureDeclaredIndexes(
        upstreamRunner(upstream),
        declared,
        config.isolation.tenantField,
      )) {
        if (result.error === undefined)
          logger.info({ namespace: result.namespace, index: result.name }, 'shared index ensured');
        else
          logger.error(
            { namespace: result.namespace, index: result.name, err: result.error },
            'shared index could not be created',
          );
      }
    }

    // One byte budget for every connection's buffered requests and unread replies (issue 15); when a
    // burst of them is over, or a flood of connections, one full collection gives its memory back.
    const memoryReturn = new MemoryReturn({
      collect: options.collectGarbage === null ? undefined : (options.collectGarbage ?? exposedGc()),
      trim: options.collectGarbage === null ? undefined : loadMallocTrim(),
      // Collections during a burst start incrementally (a given collectGarbage is used as it is).
      incremental: options.collectGarbage === undefined ? loadIncrementalCollection() : undefined,
      logger,
    });
    cleanups.push(() => memoryReturn.close());
    if (!memoryReturn.enabled)
      logger.info("gc is not exposed (node --expose-gc): memory of big messages comes back at V8's next collection");
    const registry = new ConnectionRegistry((peak) => memoryReturn.connectionsFell(peak));
    // One set of per-tenant counters for every listener: a tenant's limits span all of them.
    const tenantLimits = new TenantLimits(config.limits);
    const bufferBudget: BufferBudget = new BufferBudget(config.limits.maxBufferedBytes, {
      onDrained: (peak) => memoryReturn.drained(peak),
      // Dead buffers count until collected: RSS follows the budget, not V8's pacing of its collections.
      onGarbage: () => memoryReturn.collectSoon(() => bufferBudget.collected()),
    });
    metrics.trackBufferedBytes(() => bufferBudget.total);
    const shared: SharedConnectionDeps = {
      config,
      upstream,
      server: () => upstream.info,
      logger,
      metrics,
      identity: identity.services,
      isolation,
      audit,
      // Per-connection warnings a client can cause (limits reached): one line per key and 10 s.
      warnings: new LogThrottle(),
      tenantLimits,
      bufferBudget,
      // Large requests validated in slices, fair across tenants (issue 15: CPU floods); each slice is
      // charged to its tenant's CPU budget, and tenants over it wait behind those under it.
      validation: new ValidationScheduler({
        cpu: tenantLimits,
        onPassedOver: (count) => metrics.tenantLimitDelay('cpu', count),
      }),
      // Small requests past a turn's share of work wait for their tenant's turn (issue 15: floods of
      // connections and handshakes).
      turns: new TurnShare({
        ...(options.turnMS !== undefined ? { turnMS: options.turnMS } : {}),
        onWait: () => metrics.tenantLimitDelay('turn'),
      }),
      tenancy,
      views,
    };
    for (const [index, listener] of config.listeners.entries()) {
      const started = await startListener(listener, index, shared, registry);
      listeners.push(started);
      logger.info(
        { listener: started.name, address: started.address, tls: listener.tls !== null, methods: listener.methods },
        'listening',
      );
    }
    const metricsServer =
      config.metrics.listen === null
        ? null
        : await startMetricsServer(metrics.registry, config.metrics.listen, {
            // Ready once the upstream was reached and the listeners are up, while a writable upstream
            // server is reachable (unless configured otherwise); not while shutting down.
            ready: () => closing === undefined && (!config.metrics.readinessFollowsUpstream || upstream.reachable),
            onError: (error) => logger.error({ err: error }, 'metrics listener error'),
          });
    if (metricsServer !== null) cleanups.push(() => metricsServer.close());
    const configReloader = new ConfigReloader({
      config,
      source: options.source,
      logger,
      metrics,
      shared,
      isolation,
      tenantLimits,
      listeners,
      audit,
      createAudit,
      identity,
      createIdentity,
    });
    reloader = configReloader;
    cleanups.push(() => configReloader.close());
    metrics.configLoaded();

    const first = listeners[0];
    if (first === undefined) throw new Error('no listener configured');
    return {
      address: first.address,
      addresses: Object.fromEntries(listeners.map((listener) => [listener.name, listener.address])),
      metricsAddress: metricsServer?.address ?? null,
      upstream: info,
      metrics,
      close: cleanUp,
      reload: ({ config: next, trigger = 'api' } = {}) => configReloader.reload(trigger, next),
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

/** The tenancy defaults (a configuration built by hand may lack the section). */
function defaultTenancy(): NonNullable<ProxyConfig['isolation']['tenancy']> {
  return defaultConfig().isolation.tenancy!;
}

/**
 * `ensure-indexes`: creates the operator-declared shared indexes (isolation.tenancy.sharedIndexes)
 * upstream and returns what happened to each; the proxy does the same when it starts.
 */
export async function ensureIndexes(config: ProxyConfig, options: { logger?: Logger } = {}): Promise<EnsuredIndex[]> {
  const logger = options.logger ?? createLogger({ level: config.log.level });
  const upstream = new Upstream({
    ...config.upstream,
    ...probeDatabaseOf(config),
    logger: logger.child({ component: 'upstream' }),
  });
  try {
    await upstream.start();
    return await ensureDeclaredIndexes(
      upstreamRunner(upstream),
      config.isolation.tenancy?.sharedIndexes ?? [],
      config.isolation.tenantField,
    );
  } finally {
    await upstream.close();
  }
}

/** The capability probes write in the catalogue's database: tenants cannot name it, listings hide it. */
function probeDatabaseOf(config: ProxyConfig): { probeDatabase?: string } {
  const catalogue = config.isolation.tenancy?.catalogueDatabase;
  return catalogue !== undefined ? { probeDatabase: catalogue } : {};
}
