/**
 * A ClientConnection over an in-memory duplex, for unit tests of the client connection: a static
 * listener of one tenant (or other identity methods), the default configuration under the test's
 * values, a real isolation engine and tenant limits, and whatever upstream the test scripts.
 */
import { duplexPair, type Duplex } from 'node:stream';
import { configFromObject } from '../../src/config/index.js';
import type { IdentityMethod, ListenerConfig, ProxyConfig } from '../../src/config/types.js';
import { createFailureThrottle } from '../../src/identity/throttle.js';
import { CursorRegistry } from '../../src/policy/cursors.js';
import type { AdvertisedServer } from '../../src/protocol/hello.js';
import { IsolationEngine } from '../../src/rewrite/engine.js';
import { ClientConnection, type ClientConnectionDeps } from '../../src/server/client-connection.js';
import { TenantLimits } from '../../src/server/tenant-limits.js';
import { RawClient } from './raw-client.js';

/** What the proxy advertises in these tests. */
export const MEMORY_SERVER: AdvertisedServer = {
  kind: 'standalone',
  minWireVersion: 0,
  maxWireVersion: 21,
  maxBsonObjectSize: 16 * 1024 * 1024,
  maxMessageSizeBytes: 48_000_000,
  maxWriteBatchSize: 100_000,
  logicalSessionTimeoutMinutes: 30,
};

export interface MemoryConnectionOptions {
  upstream: ClientConnectionDeps['upstream'];
  observe: ClientConnectionDeps['observe'];
  /** Config values (as in a file), over the defaults. */
  config?: Record<string, unknown>;
  methods?: IdentityMethod[];
  /** The static listener's tenant (default `acme`). */
  tenant?: string;
  /** The connection's tenant limits (default: of the configuration's limits). */
  tenantLimits?: (config: ProxyConfig) => TenantLimits;
  /** Optional dependencies (validation scheduler, byte budget…). */
  extra?: Partial<Pick<ClientConnectionDeps, 'validation' | 'bufferBudget'>>;
}

export interface MemoryConnection {
  client: RawClient;
  connection: ClientConnection;
  config: ProxyConfig;
  /** Resolves when the proxy side has closed (the connection's onClosed). */
  closed: Promise<void>;
}

export function openMemoryConnection(options: MemoryConnectionOptions): MemoryConnection {
  const config: ProxyConfig = configFromObject(options.config ?? {});
  const methods = options.methods ?? ['static'];
  const listener: ListenerConfig = {
    name: 'memory',
    listen: { host: '127.0.0.1', port: 0 },
    tls: null,
    methods,
    staticTenant: methods.includes('static') ? (options.tenant ?? 'acme') : null,
  };
  const [clientSide, proxySide]: [Duplex, Duplex] = duplexPair({ allowHalfOpen: false });
  // As with TCP, a side that is destroyed closes the other one.
  proxySide.on('close', () => clientSide.destroy());
  clientSide.on('close', () => proxySide.destroy());
  let onClosed!: () => void;
  const closed = new Promise<void>((resolve) => (onClosed = resolve));
  const connection = new ClientConnection(
    proxySide,
    {
      config,
      upstream: options.upstream,
      server: () => MEMORY_SERVER,
      observe: options.observe,
      listener,
      identity: {
        throttle: createFailureThrottle(config.identity.failureDelay),
        observer: { authentication: () => undefined },
      },
      peerCertificate: undefined,
      isolation: new IsolationEngine({
        config: config.isolation,
        cursors: new CursorRegistry(),
        sessionKey: Buffer.alloc(32, 7),
        collationSupported: () => false,
      }),
      tenantLimits: options.tenantLimits?.(config) ?? new TenantLimits(config.limits),
      ...options.extra,
    },
    () => onClosed(),
  );
  return { client: RawClient.over(clientSide), connection, config, closed };
}
