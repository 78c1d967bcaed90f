/**
 * A steady stream of distinct tenants (issue 16): 1,000 tenants each open a connection, run a
 * handshake and a command, and leave, one after the other. Whatever the proxy keeps per tenant
 * must be gone again (connection counts, byte accounts) or stay under its cap (metric labels),
 * so memory cannot grow with the number of tenants ever seen. Counts and bounds only, no clock.
 */
import { duplexPair, type Duplex } from 'node:stream';
import { Long } from 'bson';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../../src/config/index.js';
import type { ListenerConfig, ProxyConfig } from '../../../src/config/types.js';
import { createFailureThrottle } from '../../../src/identity/throttle.js';
import type { AuditLog } from '../../../src/observability/audit.js';
import { ProxyMetrics } from '../../../src/observability/metrics.js';
import { CursorRegistry } from '../../../src/policy/cursors.js';
import { IsolationEngine } from '../../../src/rewrite/engine.js';
import { BufferBudget } from '../../../src/server/buffer-budget.js';
import { ClientConnection, type ClientConnectionDeps } from '../../../src/server/client-connection.js';
import { createConnectionObserver } from '../../../src/server/connection-observer.js';
import { TenantLimits } from '../../../src/server/tenant-limits.js';
import { UpstreamSession, type ForwardRequest, type ForwardResult } from '../../../src/upstream/upstream.js';
import type { UpstreamConnection } from '../../../src/upstream/connection.js';
import { serialize } from '../../../src/wire/bson.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';
import { scanReply } from '../../../src/wire/reply-scan.js';
import { MEMORY_SERVER as SERVER } from '../../helpers/memory-connection.js';
import { RawClient, opMsg } from '../../helpers/raw-client.js';

const TENANTS = 1_000;
const MAX_TENANT_LABELS = 50;

/** Answers every forwarded command with an empty, exhausted cursor; counts open sessions. */
class CountingUpstream {
  sessions = 0;

  openSession(): UpstreamSession {
    this.sessions += 1;
    return new UpstreamSession();
  }

  endSession(): void {
    this.sessions -= 1;
  }

  forward(request: ForwardRequest): Promise<ForwardResult> {
    const document = { cursor: { id: Long.fromNumber(0), ns: 'app.orders', firstBatch: [] }, ok: 1 };
    const reply = encodeOpMsg({ requestId: 500, responseTo: 0, body: serialize(document) });
    request.onReply(reply, false, {} as UpstreamConnection, scanReply(reply));
    return Promise.resolve({ attempts: 1 });
  }
}

describe('a steady stream of distinct tenants', () => {
  // A thousand sequential connections take a while on a loaded machine: a generous limit, no timing asserted.
  it('leaves no per-tenant state behind but what is capped', { timeout: 300_000 }, async () => {
    const config: ProxyConfig = configFromObject({});
    const metrics = new ProxyMetrics({ processMetrics: false, maxTenantLabels: MAX_TENANT_LABELS });
    const audit: AuditLog = {
      decision: () => undefined,
      authentication: () => undefined,
      reopen: () => undefined,
      close: async () => undefined,
    };
    const sinks = { metrics, audit, logger: pino({ level: 'silent' }) };
    const upstream = new CountingUpstream();
    // The limits' clock, moved ahead at the end: CPU charged to a tenant is remembered until paid for.
    let later = 0;
    const tenantLimits = new TenantLimits(config.limits, { now: () => performance.now() + later });
    const bufferBudget = new BufferBudget(config.limits.maxBufferedBytes);
    const cursors = new CursorRegistry();
    const isolation = new IsolationEngine({
      config: config.isolation,
      cursors,
      sessionKey: Buffer.alloc(32, 7),
      collationSupported: () => false,
    });
    const identity = {
      throttle: createFailureThrottle(config.identity.failureDelay),
      observer: { authentication: () => undefined },
    };
    const open = new Set<ClientConnection>();

    for (let i = 0; i < TENANTS; i += 1) {
      const listener: ListenerConfig = {
        name: 'churn',
        listen: { host: '127.0.0.1', port: 0 },
        tls: null,
        methods: ['static'],
        staticTenant: `tenant-${i}`,
      };
      const deps: ClientConnectionDeps = {
        config,
        upstream,
        server: () => SERVER,
        observe: (fields) => createConnectionObserver(sinks, { ...fields, listener: listener.name }),
        listener,
        identity,
        peerCertificate: undefined,
        isolation,
        tenantLimits,
        bufferBudget,
      };
      const [clientSide, proxySide]: [Duplex, Duplex] = duplexPair({ allowHalfOpen: false });
      proxySide.on('close', () => clientSide.destroy());
      clientSide.on('close', () => proxySide.destroy());
      let onClosed!: () => void;
      const closed = new Promise<void>((resolve) => (onClosed = resolve));
      const connection = new ClientConnection(proxySide, deps, (gone) => {
        open.delete(gone);
        onClosed();
      });
      open.add(connection);
      const client = RawClient.over(clientSide);
      expect((await client.command(opMsg({ hello: 1, $db: 'admin' }))).ok).toBe(1);
      expect((await client.command(opMsg({ find: 'orders', filter: {}, $db: 'app' }))).ok).toBe(1);
      client.close();
      await closed;
    }

    expect(open.size).toBe(0);
    expect(upstream.sessions).toBe(0);
    // Connection counts and rate state are forgotten with the tenant's last connection; the CPU
    // its last commands cost (milliseconds) is remembered until paid for at the rate, then forgotten.
    later = 60_000;
    tenantLimits.sweep();
    expect(tenantLimits.trackedTenants).toBe(0);
    // No tenant holds bytes, so no tenant has an account.
    expect(bufferBudget.activeTenants).toBe(0);
    expect(bufferBudget.total).toBe(0);
    // Per-tenant series: the first MAX_TENANT_LABELS tenants and `other`, however many came.
    const text = await metrics.metrics();
    const tenantLabels = new Set<string>();
    for (const match of text.matchAll(/\btenant="([^"]*)"/g)) tenantLabels.add(match[1] as string);
    expect(tenantLabels.size).toBeLessThanOrEqual(MAX_TENANT_LABELS + 1);
    expect(tenantLabels).toContain('other');
    // Every connection counted and uncounted: the gauges are back to zero.
    for (const line of text.split('\n')) {
      if (line.startsWith('mongo_tenant_proxy_tenant_connections{')) expect(line.endsWith(' 0')).toBe(true);
      if (line.startsWith('mongo_tenant_proxy_client_connections '))
        expect(line).toBe('mongo_tenant_proxy_client_connections 0');
    }
  });
});
