/**
 * Per-tenant limits (issue 5, "Backpressure and limits"): connections, commands in flight and
 * operations per second per tenant. Two static-tenant listeners (acme, globex) in front of the
 * in-process fake upstream, whose replies can be delayed to hold commands in flight. Over a
 * limit the client gets an immediate error reply (never a hang) and other tenants are unaffected.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Document } from 'bson';
import { MongoClient } from 'mongodb';
import { formatCredentialsFile, hashPassword } from '../../src/identity/credentials.js';
import { startTestProxy } from '../helpers/proxy.js';
import { startFakeUpstream, type FakeUpstream } from '../helpers/fake-upstream.js';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { opMsg, replyDocument, type RawClient } from '../helpers/raw-client.js';
import type { ProxyConfig } from '../../src/config/types.js';

let fake: FakeUpstream | undefined;
let tenants: TenantProxy | undefined;
const raw = new Set<RawClient>();
/** How long the fake upstream holds each command before answering. */
let upstreamDelayMs = 0;

afterEach(async () => {
  for (const client of raw) client.close();
  raw.clear();
  await tenants?.stop();
  await fake?.close();
  tenants = undefined;
  fake = undefined;
  upstreamDelayMs = 0;
});

async function start(limits: Partial<ProxyConfig['limits']>): Promise<TenantProxy> {
  fake = await startFakeUpstream(() => ({ delayMs: upstreamDelayMs, replies: [{ ok: 1 }] }));
  tenants = await startTenantProxy(['acme', 'globex'], { upstream: { uri: fake.uri }, limits });
  return tenants;
}

async function connect(tenant: string): Promise<RawClient> {
  const client = await tenants!.rawFor(tenant);
  raw.add(client);
  return client;
}

const hello = (): ReturnType<typeof opMsg> => opMsg({ hello: 1, $db: 'admin' });
const ping = (): ReturnType<typeof opMsg> => opMsg({ ping: 1, $db: 'admin' });
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(10);
  }
}

async function rejections(reason: string): Promise<number> {
  const text = await tenants!.proxy.proxy.metrics.metrics();
  const line = text
    .split('\n')
    .find((l) => l.startsWith('mongo_tenant_proxy_tenant_limit_rejections_total{') && l.includes(`reason="${reason}"`));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

function expectLimitError(reply: Document, errmsg: string, retryable: boolean): void {
  expect(reply).toMatchObject({ ok: 0, code: 96, codeName: 'OperationFailed', errmsg });
  if (retryable) expect(reply.errorLabels).toEqual(['SystemOverloadedError', 'RetryableError']);
  else expect(reply.errorLabels).toBeUndefined();
}

describe('limits.maxConnectionsPerTenant', () => {
  it("refuses a tenant's connection over the limit with an error and closes it; other tenants are unaffected", async () => {
    await start({ maxConnectionsPerTenant: 2 });
    const acme = [await connect('acme'), await connect('acme')];
    for (const client of acme) expect(await client.command(hello())).toMatchObject({ ok: 1 });

    const third = await connect('acme');
    expectLimitError(await third.command(hello()), 'tenant connection limit (2) reached', false);
    expect(await third.waitClosed()).toBe(true);
    expect(fake!.received).toHaveLength(0);
    expect(await rejections('connections')).toBe(1);

    // globex has its own allowance.
    const globex = [await connect('globex'), await connect('globex')];
    for (const client of globex) expect(await client.command(ping())).toMatchObject({ ok: 1 });
    // The acme connections within the limit keep working.
    expect(await acme[0]!.command(ping())).toMatchObject({ ok: 1 });

    // A closed connection frees its slot.
    acme[0]!.close();
    let replacement: Document | undefined;
    for (let attempt = 0; attempt < 50 && replacement?.ok !== 1; attempt += 1) {
      const client = await connect('acme');
      replacement = await client.command(hello()).catch(() => undefined);
      if (replacement?.ok !== 1) await sleep(20);
    }
    expect(replacement).toMatchObject({ ok: 1 });
  });

  it('surfaces the error message to a driver that cannot get a connection', async () => {
    await start({ maxConnectionsPerTenant: 2 });
    for (let i = 0; i < 2; i += 1) expect(await (await connect('acme')).command(hello())).toMatchObject({ ok: 1 });
    const client = tenants!.clientFor('acme', { serverSelectionTimeoutMS: 1500 });
    await expect(client.db('admin').command({ ping: 1 })).rejects.toThrow(/tenant connection limit \(2\) reached/);
    // A driver uses a monitoring connection besides its pool: two connections for globex.
    const globex = tenants!.clientFor('globex');
    expect((await globex.db('admin').command({ ping: 1 })).ok).toBe(1);
  });
});

describe('limits.maxConnectionsPerTenant after authentication', () => {
  it('refuses the authentication that would exceed the limit, with the limit error', async () => {
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
    fake = await startFakeUpstream(() => [{ ok: 1 }]);
    const proxy = await startTestProxy({
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
  it('answers a command over the limit at once with a retryable error while other tenants proceed', async () => {
    await start({ maxInFlightPerTenant: 2 });
    upstreamDelayMs = 2000;
    const [a1, a2, a3] = [await connect('acme'), await connect('acme'), await connect('acme')];
    const started = Date.now();
    a1.write(ping().bytes);
    a2.write(ping().bytes);
    let a1Answered = false;
    const a1Reply = a1.readFrame(10_000).then((frame) => {
      a1Answered = true;
      return frame;
    });
    await until(() => fake!.received.length === 2);

    // Over the limit: answered by the proxy while acme's two commands are still in flight.
    expectLimitError(await a3.command(ping()), 'tenant in-flight limit (2) reached', true);
    expect(a1Answered).toBe(false);
    expect(fake!.received).toHaveLength(2);
    expect(await rejections('in_flight')).toBe(1);

    // globex is not limited by acme's load.
    const globex = await connect('globex');
    expect(await globex.command(ping())).toMatchObject({ ok: 1 });
    expect(fake!.received).toHaveLength(3);

    // The held commands complete normally and free their slots.
    expect(replyDocument((await a1Reply)!)).toMatchObject({ ok: 1 });
    expect(replyDocument((await a2.readFrame(10_000))!)).toMatchObject({ ok: 1 });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1900);
    upstreamDelayMs = 0;
    expect(await a3.command(ping())).toMatchObject({ ok: 1 });
    expect(a3.closed).toBe(false);
  });
});

describe('limits.operationsPerSecondPerTenant', () => {
  it('lets a burst through, refuses the next command of that tenant only, and refills over time', async () => {
    await start({ operationsPerSecondPerTenant: 1, operationsBurstPerTenant: 3 });
    const acme = await connect('acme');
    // hello is answered by the proxy and takes no token.
    expect(await acme.command(hello())).toMatchObject({ ok: 1 });
    const started = Date.now();
    for (let i = 0; i < 3; i += 1) expect(await acme.command(ping())).toMatchObject({ ok: 1 });
    expectLimitError(await acme.command(ping()), 'tenant rate limit (1 operations per second) reached', true);
    expect(fake!.received).toHaveLength(3);
    expect(await rejections('rate')).toBe(1);

    const globex = await connect('globex');
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
