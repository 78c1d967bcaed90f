/**
 * Per-tenant limits (issue 5, "Backpressure and limits"): connections, commands in flight and
 * operations per second per tenant. Two static-tenant listeners (acme, globex) in front of the
 * in-process fake upstream, whose replies can be delayed to hold commands in flight. Over a
 * limit the client gets an immediate error reply (never a hang) and other tenants are unaffected.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect } from 'vitest';
import type { Document } from 'bson';
import { MongoClient } from 'mongodb';
import { formatCredentialsFile, hashPassword } from '../../src/identity/credentials.js';
import type { FakeUpstream } from '../helpers/fake-upstream.js';
import { it as base } from '../helpers/fixtures.js';
import { metricValue } from '../helpers/metrics.js';
import type { TenantProxy } from '../helpers/tenants.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';
import { sleep, until } from '../helpers/wait.js';
import type { ProxyConfig } from '../../src/config/types.js';
import { createLogger } from '../../src/observability/logger.js';

interface LimitedTenants {
  fake: FakeUpstream;
  /** Listeners for acme and globex. */
  tenants: TenantProxy;
  /** How long the fake upstream holds each command before answering. */
  upstream: { delayMs: number };
  rejections(reason: string): Promise<number>;
}

/** `start`: acme and globex, with `limits`, in front of a fake upstream whose replies can be held. */
const it = base.extend<{ start: (limits: Partial<ProxyConfig['limits']>) => Promise<LimitedTenants> }>({
  start: async ({ fakeUpstream, startTenantProxy }, use) => {
    await use(async (limits) => {
      const upstream = { delayMs: 0 };
      const fake = await fakeUpstream(() => ({ delayMs: upstream.delayMs, replies: [{ ok: 1 }] }));
      const tenants = await startTenantProxy(['acme', 'globex'], { upstream: { uri: fake.uri }, limits });
      const rejections = (reason: string): Promise<number> =>
        metricValue(tenants.proxy.proxy, 'tenant_limit_rejections_total', { reason });
      return { fake, tenants, upstream, rejections };
    });
  },
});

const hello = (): ReturnType<typeof opMsg> => opMsg({ hello: 1, $db: 'admin' });
const ping = (): ReturnType<typeof opMsg> => opMsg({ ping: 1, $db: 'admin' });

function expectLimitError(reply: Document, errmsg: string, retryable: boolean): void {
  expect(reply).toMatchObject({ ok: 0, code: 96, codeName: 'OperationFailed', errmsg });
  if (retryable) expect(reply.errorLabels).toEqual(['SystemOverloadedError', 'RetryableError']);
  else expect(reply.errorLabels).toBeUndefined();
}

describe('limits.maxConnectionsPerTenant', () => {
  it("refuses a tenant's connection over the limit with an error and closes it; other tenants are unaffected", async ({
    start,
  }) => {
    const { fake, tenants, rejections } = await start({ maxConnectionsPerTenant: 2 });
    const acme = [await tenants.rawFor('acme'), await tenants.rawFor('acme')];
    for (const client of acme) expect(await client.command(hello())).toMatchObject({ ok: 1 });

    const third = await tenants.rawFor('acme');
    expectLimitError(await third.command(hello()), 'tenant connection limit (2) reached', false);
    expect(await third.waitClosed()).toBe(true);
    expect(fake.received).toHaveLength(0);
    expect(await rejections('connections')).toBe(1);

    // globex has its own allowance.
    const globex = [await tenants.rawFor('globex'), await tenants.rawFor('globex')];
    for (const client of globex) expect(await client.command(ping())).toMatchObject({ ok: 1 });
    // The acme connections within the limit keep working.
    expect(await acme[0]!.command(ping())).toMatchObject({ ok: 1 });

    // A closed connection frees its slot.
    acme[0]!.close();
    let replacement: Document | undefined;
    for (let attempt = 0; attempt < 50 && replacement?.ok !== 1; attempt += 1) {
      const client = await tenants.rawFor('acme');
      replacement = await client.command(hello()).catch(() => undefined);
      if (replacement?.ok !== 1) await sleep(20);
    }
    expect(replacement).toMatchObject({ ok: 1 });
  });

  it('a flood of refused connections is counted one by one and logged once per interval', async ({
    fakeUpstream,
    startTenantProxy,
  }) => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger({
      level: 'info',
      destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
    });
    const fake = await fakeUpstream(() => ({ delayMs: 0, replies: [{ ok: 1 }] }));
    const tenants = await startTenantProxy(
      ['acme', 'globex'],
      { upstream: { uri: fake.uri }, limits: { maxConnectionsPerTenant: 2 } },
      { logger },
    );
    for (let i = 0; i < 2; i += 1)
      expect(await (await tenants.rawFor('acme')).command(hello())).toMatchObject({ ok: 1 });
    for (let i = 0; i < 20; i += 1) {
      const refused = await tenants.rawFor('acme');
      expectLimitError(await refused.command(hello()), 'tenant connection limit (2) reached', false);
    }
    expect(await metricValue(tenants.proxy.proxy, 'tenant_limit_rejections_total', { reason: 'connections' })).toBe(20);
    const warned = lines.filter((line) => line['msg'] === 'tenant connection limit reached; refusing the connection');
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ level: 'warn', tenant: 'acme', limit: 2 });
  });

  it('surfaces the error message to a driver that cannot get a connection', async ({ start }) => {
    const { tenants } = await start({ maxConnectionsPerTenant: 2 });
    for (let i = 0; i < 2; i += 1)
      expect(await (await tenants.rawFor('acme')).command(hello())).toMatchObject({ ok: 1 });
    const client = tenants.clientFor('acme', { serverSelectionTimeoutMS: 1500 });
    await expect(client.db('admin').command({ ping: 1 })).rejects.toThrow(/tenant connection limit \(2\) reached/);
    // A driver uses a monitoring connection besides its pool: two connections for globex.
    const globex = tenants.clientFor('globex');
    expect((await globex.db('admin').command({ ping: 1 })).ok).toBe(1);
  });
});

describe('limits.maxConnectionsPerTenant after authentication', () => {
  it('refuses the authentication that would exceed the limit, with the limit error', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const dir = mkdtempSync(join(tmpdir(), 'mtp-tenant-limits-'));
    const credentialsFile = join(dir, 'credentials.yaml');
    const entry = (user: string, tenant: string): ReturnType<typeof hashPassword> =>
      hashPassword({
        user,
        db: 'admin',
        tenant,
        password: `${user}-pw`,
        mechanisms: ['SCRAM-SHA-256'],
        iterations: 4096,
      });
    writeFileSync(
      credentialsFile,
      formatCredentialsFile([entry('alice', 'acme'), entry('bob', 'acme'), entry('gina', 'globex')]),
      { mode: 0o600 },
    );
    const fake = await fakeUpstream(() => [{ ok: 1 }]);
    const proxy = await startProxy({
      upstream: { uri: fake.uri },
      listeners: [
        { name: 'scram', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['scram'], staticTenant: null },
      ],
      identity: { scram: { credentialsFile } },
      limits: { maxConnectionsPerTenant: 1 },
    });
    const { host, port } = proxy.proxy.address;
    const clients: MongoClient[] = [];
    const clientAs = (user: string): MongoClient => {
      const client = new MongoClient(
        `mongodb://${user}:${user}-pw@${host}:${port}/?directConnection=true&authSource=admin`,
        {
          serverSelectionTimeoutMS: 5000,
          maxPoolSize: 1,
        },
      );
      clients.push(client);
      return client;
    };
    try {
      // The driver's monitoring connection does not authenticate: only the pool connection counts.
      expect((await clientAs('alice').db('admin').command({ ping: 1 })).ok).toBe(1);
      // Another user of the same tenant: its authentication establishes acme a second time.
      await expect(clientAs('bob').db('admin').command({ ping: 1 })).rejects.toThrow(
        /tenant connection limit \(1\) reached/,
      );
      expect((await clientAs('gina').db('admin').command({ ping: 1 })).ok).toBe(1);
      const metrics = await proxy.proxy.metrics.metrics();
      expect(metrics).toMatch(/mongo_tenant_proxy_tenant_limit_rejections_total\{reason="connections"\} [1-9]/);
    } finally {
      await Promise.allSettled(clients.map((client) => client.close()));
      await proxy.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('limits.maxInFlightPerTenant', () => {
  it('answers a command over the limit at once with a retryable error while other tenants proceed', async ({
    start,
  }) => {
    const { fake, tenants, upstream, rejections } = await start({ maxInFlightPerTenant: 2 });
    upstream.delayMs = 2000;
    const [a1, a2, a3] = [await tenants.rawFor('acme'), await tenants.rawFor('acme'), await tenants.rawFor('acme')];
    const started = Date.now();
    a1.write(ping().bytes);
    a2.write(ping().bytes);
    let a1Answered = false;
    const a1Reply = a1.readFrame(10_000).then((frame) => {
      a1Answered = true;
      return frame;
    });
    await until(() => fake.received.length === 2, { timeoutMS: 5_000 });

    // Over the limit: answered by the proxy while acme's two commands are still in flight.
    expectLimitError(await a3.command(ping()), 'tenant in-flight limit (2) reached', true);
    expect(a1Answered).toBe(false);
    expect(fake.received).toHaveLength(2);
    expect(await rejections('in_flight')).toBe(1);

    // globex is not limited by acme's load.
    const globex = await tenants.rawFor('globex');
    expect(await globex.command(ping())).toMatchObject({ ok: 1 });
    expect(fake.received).toHaveLength(3);

    // The held commands complete normally and free their slots.
    expect(replyDocument((await a1Reply)!)).toMatchObject({ ok: 1 });
    expect(replyDocument((await a2.readFrame(10_000))!)).toMatchObject({ ok: 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    upstream.delayMs = 0;
    expect(await a3.command(ping())).toMatchObject({ ok: 1 });
    expect(a3.closed).toBe(false);
  });
});

describe('limits.operationsPerSecondPerTenant', () => {
  it('lets a burst through, refuses the next command of that tenant only, and refills over time', async ({ start }) => {
    const { fake, tenants, rejections } = await start({
      operationsPerSecondPerTenant: 1,
      operationsBurstPerTenant: 3,
    });
    const acme = await tenants.rawFor('acme');
    // hello is answered by the proxy and takes no token.
    expect(await acme.command(hello())).toMatchObject({ ok: 1 });
    const started = Date.now();
    for (let i = 0; i < 3; i += 1) expect(await acme.command(ping())).toMatchObject({ ok: 1 });
    expectLimitError(await acme.command(ping()), 'tenant rate limit (1 operations per second) reached', true);
    expect(fake.received).toHaveLength(3);
    expect(await rejections('rate')).toBe(1);

    const globex = await tenants.rawFor('globex');
    for (let i = 0; i < 3; i += 1) expect(await globex.command(ping())).toMatchObject({ ok: 1 });

    // One token a second: after a second acme may send again.
    let reply: Document = {};
    for (let attempt = 0; attempt < 100 && reply.ok !== 1; attempt += 1) {
      await sleep(100);
      reply = await acme.command(ping());
    }
    expect(reply).toMatchObject({ ok: 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    expect(acme.closed).toBe(false);
  });
});
