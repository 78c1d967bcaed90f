// A proxy in front of the shared test upstream, configured like production but on ephemeral ports.
import { MongoClient, type MongoClientOptions } from 'mongodb';
import type { ProxyConfig } from '../../src/config/types.js';
import { defaultConfig } from '../../src/config/index.js';
import { startProxy, type RunningProxy, type StartOptions } from '../../src/main.js';
import { RawClient } from './raw-client.js';
import { upstreamUri } from './upstream.js';

/** Audit lines a test proxy keeps (the newest). */
const MAX_AUDIT_LINES = 5_000;

/** Objects are merged key by key; arrays and scalars (and null) replace. */
export type DeepPartial<T> = T extends readonly unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: DeepPartial<T[K]> }
    : T;

export interface TestProxy {
  proxy: RunningProxy;
  config: ProxyConfig;
  /** `mongodb://host:port/?directConnection=true` */
  uri: string;
  /** A new client to the proxy (connects on first use); closed by stop(). */
  client(options?: MongoClientOptions): MongoClient;
  /** A raw wire client connected to the first listener; closed by stop(). */
  raw(): Promise<RawClient>;
  /** Closes every client made by client() and raw(), then the proxy. */
  stop(): Promise<void>;
  /** The audit events written so far (parsed JSON lines), kept in memory instead of stdout. */
  auditEvents(): Record<string, unknown>[];
  /** The raw audit lines written so far. */
  auditText(): string;
}

/**
 * A complete configuration with test defaults, `overrides` merged in. Arrays replace: a test that
 * needs other listeners passes the whole `listeners` array.
 */
export function testProxyConfig(overrides: DeepPartial<ProxyConfig> = {}): ProxyConfig {
  // The product's own defaults (one owner: src/config/schema.ts), then what tests need differently:
  // ephemeral ports, the shared test upstream, a static-tenant loopback listener, quiet logs.
  const defaults = deepMerge<ProxyConfig>(defaultConfig(), {
    listeners: [
      {
        name: 'test',
        listen: { host: '127.0.0.1', port: 0 },
        tls: null,
        methods: ['static'],
        staticTenant: 'test-tenant',
      },
    ],
    // connectTimeoutMS: the product's default (10 s). It also bounds the upstream handshake,
    // SCRAM included, which took over 5 s on DocumentDB's gateway at load 25 (CI, a set-up failure).
    upstream: { uri: upstreamUri() },
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    log: { level: (process.env.MTP_TEST_LOG_LEVEL as ProxyConfig['log']['level'] | undefined) ?? 'silent' },
  });
  return deepMerge<ProxyConfig>(defaults, overrides);
}

/** `logger`: the proxy's logger instead of one built from `log.level` (e.g. to capture lines). */
export async function startTestProxy(
  overrides: DeepPartial<ProxyConfig> = {},
  options: Pick<StartOptions, 'logger' | 'turnMS'> = {},
): Promise<TestProxy> {
  const config = testProxyConfig(overrides);
  // The most recent audit lines only: a long load must not grow the test process without bound.
  const auditLines: string[] = [];
  const proxy = await startProxy(config, {
    ...options,
    auditStream: { write: (line: string) => void (auditLines.push(line) > MAX_AUDIT_LINES && auditLines.shift()) },
  });
  const { host, port } = proxy.address;
  const uri = `mongodb://${host.includes(':') ? `[${host}]` : host}:${port}/?directConnection=true`;
  const clients = new Set<MongoClient>();
  const raws = new Set<RawClient>();
  let stopping: Promise<void> | undefined;
  return {
    proxy,
    config,
    uri,
    client(options: MongoClientOptions = {}): MongoClient {
      const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, ...options });
      clients.add(client);
      return client;
    },
    async raw(): Promise<RawClient> {
      const client = await RawClient.connect(host, port);
      raws.add(client);
      client.socket.once('close', () => raws.delete(client));
      return client;
    },
    auditText: () => auditLines.join(''),
    auditEvents: () =>
      auditLines
        .join('')
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
    stop(): Promise<void> {
      stopping ??= (async () => {
        for (const raw of raws) raw.close();
        await Promise.allSettled([...clients].map((client) => client.close()));
        await proxy.close();
      })();
      return stopping;
    },
  };
}

function deepMerge<T>(base: T, overrides: DeepPartial<T>): T {
  if (!isPlainObject(base) || !isPlainObject(overrides)) {
    return (overrides === undefined ? base : overrides) as T;
  }
  const merged: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    merged[key] = deepMerge(merged[key], value as never);
  }
  return merged as T;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
