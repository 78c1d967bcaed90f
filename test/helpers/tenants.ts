/**
 * A proxy with one loopback listener per tenant (method static), so tests can act as several
 * tenants at once through the official driver or raw sockets, then read the upstream directly.
 */
import { MongoClient, type MongoClientOptions } from 'mongodb';
import type { ListenerConfig, ProxyConfig } from '../../src/config/types.js';
import { startTestProxy, type DeepPartial, type TestProxy } from './proxy.js';
import { RawClient } from './raw-client.js';

export interface TenantProxy {
  proxy: TestProxy;
  tenants: readonly string[];
  /** `mongodb://127.0.0.1:<port>/?directConnection=true` of the tenant's listener. */
  uriFor(tenant: string): string;
  /** A driver client acting as `tenant` (closed by stop()). */
  clientFor(tenant: string, options?: MongoClientOptions): MongoClient;
  /** A raw wire client acting as `tenant` (closed by stop()). */
  rawFor(tenant: string): Promise<RawClient>;
  stop(): Promise<void>;
}

export async function startTenantProxy(
  tenants: readonly string[],
  overrides: DeepPartial<ProxyConfig> = {},
  options: Parameters<typeof startTestProxy>[1] = {},
): Promise<TenantProxy> {
  const listeners: ListenerConfig[] = tenants.map((tenant, index) => ({
    name: `tenant${index}`,
    listen: { host: '127.0.0.1', port: 0 },
    tls: null,
    methods: ['static'],
    staticTenant: tenant,
  }));
  const proxy = await startTestProxy({ ...overrides, listeners }, options);
  const clients = new Set<MongoClient>();
  const raws = new Set<RawClient>();
  const addressOf = (tenant: string): { host: string; port: number } => {
    const index = tenants.indexOf(tenant);
    const address = proxy.proxy.addresses[`tenant${index}`];
    if (index < 0 || address === undefined) throw new Error(`no listener for tenant ${tenant}`);
    return address;
  };
  const uriFor = (tenant: string): string => {
    const { host, port } = addressOf(tenant);
    return `mongodb://${host}:${port}/?directConnection=true`;
  };
  return {
    proxy,
    tenants,
    uriFor,
    clientFor(tenant, options = {}) {
      const client = new MongoClient(uriFor(tenant), { serverSelectionTimeoutMS: 10_000, ...options });
      clients.add(client);
      return client;
    },
    async rawFor(tenant) {
      const { host, port } = addressOf(tenant);
      const client = await RawClient.connect(host, port);
      raws.add(client);
      client.socket.once('close', () => raws.delete(client));
      return client;
    },
    async stop() {
      for (const raw of raws) raw.close();
      await Promise.allSettled([...clients].map((client) => client.close()));
      await proxy.stop();
    },
  };
}
