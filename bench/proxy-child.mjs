// Target (c) of the benchmark: mongo-tenant-proxy from dist/ (run `npm run build` first) in its
// own process, configured like production but silent, without metrics and without compression.
//
// IPC protocol (see lib/child-ipc.mjs): parent sends {type:'start', upstreamUri, overrides} and
// gets {type:'ready', address, info: {upstream, config, metricsAddress}}; {type:'cpu'} → {type:'cpu', cpu, rss}; {type:'stop'} → {type:'stopped'}.
import pino from 'pino';
import { serveIpc } from './lib/child-ipc.mjs';
import { deepMerge } from './lib/merge.mjs';

const LISTEN = { host: '127.0.0.1', port: 0 };
/** The tenant of every bench connection; the seeded documents carry `tenantId: 'bench'` too. */
const BENCH_TENANT = 'bench';

/**
 * The proxy's configuration (runtime shape, `ProxyConfig` in src/config/types.ts): every default
 * of the build in dist/, then the bench's own settings, then `overrides` (BENCH_PROXY_CONFIG).
 * Starting from the defaults keeps the bench working when the configuration gains sections.
 */
async function benchConfig(upstreamUri, overrides) {
  let base = {};
  try {
    const { defaultConfig } = await import('../dist/config/index.js');
    if (typeof defaultConfig === 'function') base = structuredClone(defaultConfig());
  } catch {
    // an older build without defaultConfig(): the settings below are the whole configuration
  }
  const config = deepMerge(base, {
    upstream: {
      uri: upstreamUri,
      connectTimeoutMS: 5_000,
      maxIdleConnections: 64,
      idleTimeoutMS: 60_000,
    },
    metrics: { listen: null },
    log: { level: 'silent' },
    compression: { compressors: [], zlibLevel: 6 },
    handshake: { presentAs: 'auto' },
    limits: { maxMessageSizeBytes: 48_000_000, maxBsonDepth: 200, maxConnections: 10_000 },
  });
  // One plain-TCP listener on an ephemeral loopback port, in whichever shape this build uses.
  // Identity: the cheapest per-connection path, a static tenant (allowed on loopback listeners),
  // so the measured operations are ordinary tenant traffic with no authentication handshake.
  if (Array.isArray(config.listeners)) {
    const first = config.listeners[0] ?? {};
    config.listeners = [
      { ...first, name: 'bench', listen: LISTEN, tls: null, methods: ['static'], staticTenant: BENCH_TENANT },
    ];
  } else {
    config.listen = LISTEN;
  }
  return deepFreeze(deepMerge(config, overrides ?? {}));
}

function deepFreeze(value) {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

serveIpc({
  async start({ upstreamUri, overrides }) {
    let startProxy;
    try {
      ({ startProxy } = await import('../dist/main.js'));
    } catch (error) {
      throw new Error(
        `cannot load dist/main.js (run \`npm run build\` first): ${error instanceof Error ? error.message : error}`,
        { cause: error },
      );
    }
    const config = await benchConfig(upstreamUri, overrides);
    const proxy = await startProxy(config, { logger: pino({ level: 'silent' }) });
    const address = proxy.address ?? proxy.listeners?.[0]?.address ?? proxy.addresses?.[0];
    if (!address) throw new Error('startProxy() returned no listening address');
    let upstream = null;
    try {
      const { hello, ...rest } = proxy.upstream ?? {};
      upstream = JSON.parse(JSON.stringify(rest));
    } catch {
      // not plain data: leave it out of the report
    }
    return {
      address,
      // metricsAddress: null unless the overrides turn metrics on (the pool scenario reads them).
      info: { upstream, config: redactConfig(config), metricsAddress: proxy.metricsAddress ?? null },
      close: () => proxy.close(),
    };
  },
});

/** The configuration for the report, without the upstream password. */
function redactConfig(config) {
  const copy = JSON.parse(JSON.stringify(config));
  if (copy.upstream?.uri) copy.upstream.uri = copy.upstream.uri.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
  return copy;
}
