/**
 * Issue 15, server side: one tenant's abuse does not hurt another, on FerretDB through the
 * official driver (the bystander) and raw sockets (the abuser, who never reads or floods).
 * - Clients that never read: replies are buffered under limits.maxBufferedBytes, never held in
 *   an upstream connection; the abusing tenant's connections are shed, the bystander's pings
 *   all succeed, the buffered bytes stay under the budget and return to 0.
 * - Refused floods are counted: policy refusals take operation tokens, and request bytes are
 *   charged as they are read, before parsing (a tenant over its byte rate is not read meanwhile).
 * - Defaults: unauthenticated connections are capped and must authenticate in time; a hello
 *   restarts the deadline (driver monitoring connections never authenticate).
 * Time is never asserted: the mechanisms are checked through their metrics and closes.
 */
import { describe, expect } from 'vitest';
import type { Document } from 'bson';
import { it } from '../helpers/fixtures.js';
import { metricValue } from '../helpers/metrics.js';
import { MongoClient, MongoServerError } from 'mongodb';
import { opMsg, RawClient } from '../helpers/raw-client.js';
import { sleep, until } from '../helpers/wait.js';
import { MiB, settledMemory } from '../helpers/memory.js';
import { ErrorCodes } from '../../src/errors.js';

const DB = 'fairness';

describe('clients that never read their replies', () => {
  it("are shed under the byte budget; the bystander's pings all succeed and no upstream connection is held", async ({
    startTenantProxy,
  }) => {
    const budget = 8 * MiB;
    const tenants = await startTenantProxy(['acme', 'globex'], {
      limits: { maxBufferedBytes: budget, clientIdleTimeoutMS: 120_000 },
      upstream: { maxPoolSize: 8 },
    });
    const proxy = tenants.proxy.proxy;
    const acme = tenants.clientFor('acme');
    const collection = `slow_${Date.now()}`;
    // 24 documents of 256 KiB: every find below answers ~6 MiB.
    const pad = 'p'.repeat(256 * 1024);
    // One at a time: a single message near the budget would not fit beside its rewritten copy.
    for (let i = 0; i < 24; i += 1) await acme.db(DB).collection(collection).insertOne({ i, pad });

    const bystander = tenants.clientFor('globex', { maxPoolSize: 2 });
    const admin = bystander.db('admin');
    expect(await admin.command({ ping: 1 })).toMatchObject({ ok: 1 });

    // 16 acme connections each send three big finds (a 512 KiB filter, a ~6 MiB reply) and never read.
    const filter = { pad: { $ne: 'x'.repeat(512 * 1024) } };
    const abusers: RawClient[] = [];
    for (let c = 0; c < 16; c += 1) {
      const raw = await tenants.rawFor('acme');
      raw.socket.pause();
      for (let k = 0; k < 3; k += 1) {
        raw.write(opMsg({ find: collection, filter, batchSize: 1000, $db: DB }).bytes);
      }
      abusers.push(raw);
    }

    let pings = 0;
    let maxBuffered = 0;
    const errors: unknown[] = [];
    const deadline = Date.now() + 60_000;
    // Until the budget has shed some of acme's connections (and at least 30 pings were answered).
    while (Date.now() < deadline) {
      try {
        const reply = await admin.command({ ping: 1 });
        if (reply.ok === 1) pings += 1;
      } catch (error) {
        errors.push(error);
      }
      maxBuffered = Math.max(maxBuffered, await metricValue(proxy, 'buffered_bytes'));
      const shed = await metricValue(proxy, 'client_connections_shed_total');
      if (shed > 0 && pings >= 30) break;
      await sleep(20);
    }
    expect(errors).toEqual([]);
    expect(await metricValue(proxy, 'client_connections_shed_total', { reason: 'buffer_budget' })).toBeGreaterThan(0);
    // The budget may be passed by one charge (a chunk just read) before it sheds; never by more than a message.
    expect(maxBuffered).toBeLessThanOrEqual(budget + 8 * MiB);
    // No upstream connection is held for a client that does not read: the bystander's reads still run.
    expect(await bystander.db(DB).collection(collection).countDocuments()).toBe(0);

    const shedTotal = await metricValue(proxy, 'client_connections_shed_total');
    console.info(
      `[fairness] slow readers: ${pings} bystander pings ok, ${errors.length} errors; buffered max ` +
        `${(maxBuffered / MiB).toFixed(1)} MiB of ${budget / MiB} MiB; ${shedTotal} connections shed`,
    );
    for (const raw of abusers) raw.close();
    await until(async () => (await metricValue(proxy, 'buffered_bytes')) === 0, { timeoutMS: 20_000 });
    expect(await admin.command({ ping: 1 })).toMatchObject({ ok: 1 });
  }, 120_000);
});

describe('floods of refused commands', () => {
  it('count against the operation rate: a refused command takes a token like any other', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['acme', 'globex'], {
      limits: { operationsPerSecondPerTenant: 1, operationsBurstPerTenant: 3 },
    });
    const proxy = tenants.proxy.proxy;
    const raw = await tenants.rawFor('acme');
    const where = (): ReturnType<typeof opMsg> =>
      opMsg({ find: 'c', filter: { $where: 'sleep(100) || true' }, $db: DB });
    const codes: number[] = [];
    const started = performance.now();
    for (let i = 0; i < 10; i += 1) codes.push((await raw.command(where())).code as number);
    const seconds = (performance.now() - started) / 1000;
    const overRate = codes.filter((code) => code === 96).length;
    // Refused by the isolation policy while tokens lasted (the burst, plus one a second meanwhile:
    // each refusal took one), then refused by the rate before parsing.
    expect(codes.length - overRate).toBeLessThanOrEqual(3 + Math.ceil(seconds));
    expect(overRate).toBeGreaterThan(0);
    expect(codes.every((code) => code !== 0 && code !== undefined)).toBe(true);
    expect(await metricValue(proxy, 'tenant_limit_rejections_total', { reason: 'rate' })).toBe(overRate);
    // globex has its own budget.
    const globex = tenants.clientFor('globex');
    for (let i = 0; i < 3; i += 1) expect(await globex.db('admin').command({ ping: 1 })).toMatchObject({ ok: 1 });
  });

  it('are charged by size as they are read: over the byte rate its connections stop reading, and the bystander is served meanwhile', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['acme', 'globex'], {
      limits: { bytesPerSecondPerTenant: 1_000_000, maxMessageSizeBytes: 2_000_000 },
    });
    const proxy = tenants.proxy.proxy;
    const decisions = (): Promise<number> => metricValue(proxy, 'policy_decisions_total', { decision: 'refused' });
    const before = await decisions();
    const sent = 6;
    // Six 1.5 MB finds with $where, sent at once on six connections: 9 MB at 1 MB/s, 2 MB ahead allowed.
    const raws = await Promise.all(Array.from({ length: sent }, () => tenants.rawFor('acme')));
    const big = { find: 'c', filter: { $where: `${'x'.repeat(1_500_000)} || true` }, $db: DB };
    const replies = Promise.all(raws.map(async (raw) => (await raw.command(opMsg(big))) as Document));
    // While acme's connections wait to be read, globex is served.
    await until(async () => (await metricValue(proxy, 'tenant_limit_delays_total', { reason: 'read' })) > 0);
    expect(await tenants.clientFor('globex').db('admin').command({ ping: 1 })).toMatchObject({ ok: 1 });
    // Each is read at the rate, then refused by the policy (never by the byte rate: it was slowed instead).
    for (const reply of await replies) {
      expect(reply.ok).toBe(0);
      expect(reply.code).not.toBe(ErrorCodes.OperationFailed);
    }
    expect((await decisions()) - before).toBe(sent);
    expect(await metricValue(proxy, 'tenant_limit_rejections_total', { reason: 'bytes' })).toBe(0);
  });
});

describe('CPU-expensive requests (limits.cpuMillisPerSecondPerTenant)', () => {
  it("slow the tenant sending them, measured by what they cost the proxy; the bystander's pings all succeed", async ({
    startTenantProxy,
  }) => {
    // A small CPU budget (20 ms/s): a few of the messages below put acme over it.
    const tenants = await startTenantProxy(['acme', 'globex'], { limits: { cpuMillisPerSecondPerTenant: 20 } });
    const proxy = tenants.proxy.proxy;
    const delays = (): Promise<number> => metricValue(proxy, 'tenant_limit_delays_total', { reason: 'cpu' });
    const collection = `cpu_${Date.now()}`;
    // Cheap in bytes for what they cost to check: tens of thousands of tiny elements (validated,
    // decoded and rewritten, never refused), one filter sliced by the validation scheduler
    // (over 256 KiB), one decoded at once, and a deeply nested one.
    const many = Array.from({ length: 40_000 }, (_, n) => n);
    const few = Array.from({ length: 12_000 }, (_, n) => n);
    let nested: Document = { a: 1 };
    for (let depth = 0; depth < 40; depth += 1) nested = { $and: [nested, { b: { $in: few.slice(0, 200) } }] };
    const filters: Document[] = [{ n: { $in: many } }, { $or: few.map((n) => ({ n })) }, nested];
    const noisy = tenants.clientFor('acme', { maxPoolSize: 4 });
    await noisy.db(DB).collection(collection).insertOne({ n: 1 });

    const bystander = tenants.clientFor('globex', { maxPoolSize: 2 });
    const admin = bystander.db('admin');
    expect(await admin.command({ ping: 1 })).toMatchObject({ ok: 1 });
    const before = await delays();

    let stop = false;
    const noisyErrors: unknown[] = [];
    let noisyFinds = 0;
    const workers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = w; !stop; i += 1) {
        try {
          await noisy
            .db(DB)
            .collection(collection)
            .find(filters[i % filters.length]!)
            .toArray();
          noisyFinds += 1;
        } catch (error) {
          noisyErrors.push(error);
        }
      }
    });
    let pings = 0;
    const errors: unknown[] = [];
    const deadline = Date.now() + 60_000;
    try {
      // Until acme has been slowed (and at least 20 pings were answered meanwhile).
      while (Date.now() < deadline) {
        try {
          const reply = await admin.command({ ping: 1 });
          if (reply.ok === 1) pings += 1;
        } catch (error) {
          errors.push(error);
        }
        if (pings >= 20 && (await delays()) > before) break;
        await sleep(20);
      }
    } finally {
      stop = true;
      await Promise.all(workers);
    }
    expect(errors).toEqual([]);
    expect(pings).toBeGreaterThanOrEqual(20);
    expect(noisyFinds).toBeGreaterThan(0);
    // acme was slowed by its CPU budget: its requests waited at admission, or its slices behind others'.
    expect(await delays()).toBeGreaterThan(before);
    // Any refusal the driver did not retry away is the CPU limit's, with the byte rate's labels.
    for (const error of noisyErrors) {
      expect(error).toBeInstanceOf(MongoServerError);
      expect(error).toMatchObject({ code: 96, errmsg: 'tenant CPU limit (20 ms per second) reached' });
      expect((error as MongoServerError).hasErrorLabel('SystemOverloadedError')).toBe(true);
    }
    expect(await metricValue(proxy, 'tenant_limit_rejections_total', { reason: 'cpu' })).toBeGreaterThanOrEqual(
      noisyErrors.length,
    );
  });
});

describe('unauthenticated connections (defaults on)', () => {
  it('are capped, and closed when they do not authenticate in time unless they keep sending hello', async ({
    startProxy,
  }) => {
    const proxy = await startProxy({
      listeners: [
        // No identity method: its connections never establish a tenant (every command but the handshake refused).
        { name: 'open', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: [], staticTenant: null },
        {
          name: 'static',
          listen: { host: '127.0.0.1', port: 0 },
          tls: null,
          methods: ['static'],
          staticTenant: 'acme',
        },
      ],
      limits: { maxUnauthenticatedConnections: 2, authTimeoutMS: 600 },
    });
    const open = proxy.proxy.addresses['open']!;
    const first = await RawClient.connect(open.host, open.port);
    const second = await RawClient.connect(open.host, open.port);
    const third = await RawClient.connect(open.host, open.port);
    // The third is over the cap: closed before a byte is read.
    expect(await third.waitClosed(5_000)).toBe(true);
    expect(await metricValue(proxy.proxy, 'client_connections_refused_total', { reason: 'max_unauthenticated' })).toBe(
      1,
    );
    // A tenant known at connect is not counted: the static listener still serves a driver.
    const staticAddress = proxy.proxy.addresses['static']!;
    const driver = new MongoClient(`mongodb://${staticAddress.host}:${staticAddress.port}/?directConnection=true`, {
      serverSelectionTimeoutMS: 5_000,
    });
    try {
      expect(await driver.db('admin').command({ ping: 1 })).toMatchObject({ ok: 1 });
      // `first` keeps sending hello (as a monitoring connection does); `second` sends nothing.
      for (let i = 0; i < 8; i += 1) {
        expect(await first.command(opMsg({ hello: 1, $db: 'admin' }))).toMatchObject({ ok: 1 });
        await sleep(200);
      }
      expect(await second.waitClosed(5_000)).toBe(true);
      expect(first.closed).toBe(false);
      expect(await metricValue(proxy.proxy, 'client_connections_shed_total', { reason: 'auth_timeout' })).toBe(1);
      // Once `first` stops, it is closed too.
      expect(await first.waitClosed(5_000)).toBe(true);
    } finally {
      await driver.close();
      first.close();
      second.close();
      third.close();
    }
  });
});

describe('memory after large messages', () => {
  it('is returned: no buffer keeps the size of the largest message once it is handled', async ({ startProxy }) => {
    const proxy = await startProxy();
    const client = proxy.client();
    const collection = client.db(DB).collection(`large_${Date.now()}`);
    await collection.insertOne({ warm: true });
    const baseline = await settledMemory();
    // Three inserts of ~15 MB documents (and their replies, rewritten copies, decoder chunks).
    const pad = 'l'.repeat(15 * 1000 * 1000);
    for (let i = 0; i < 3; i += 1) await collection.insertOne({ i, pad });
    const found = await collection.find({ i: 2 }, { projection: { pad: 1 } }).toArray();
    expect(found[0]?.pad).toHaveLength(pad.length);
    found.length = 0;
    await until(async () => (await metricValue(proxy.proxy, 'buffered_bytes')) === 0, { timeoutMS: 10_000 });
    const after = await settledMemory();
    console.info(
      `[fairness] after 3 x 15 MB inserts: array buffers ${((after.arrayBuffers - baseline.arrayBuffers) / MiB).toFixed(1)} MiB ` +
        `over baseline, rss ${((after.rss - baseline.rss) / MiB).toFixed(1)} MiB over baseline`,
    );
    // The test process's own driver holds its buffers too: a loose bound, far under one message.
    expect(after.arrayBuffers - baseline.arrayBuffers).toBeLessThan(12 * MiB);
  }, 60_000);
});
