/**
 * The multiplexed upstream pool against a real FerretDB (issue 5): many client connections share
 * a pool of maxPoolSize upstream connections, counted from outside by a TCP fault proxy in
 * pass-through mode; waiting for a connection is bounded; transaction pinning is checked on raw
 * wire bytes with the fake upstream (FerretDB has no transactions).
 */
import { Long, UUID } from 'bson';
import { MongoClient } from 'mongodb';
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { scrape } from '../helpers/metrics.js';
import { opMsg, replyDocument, type RawClient } from '../helpers/raw-client.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

/** Samples `read` until stopped; returns the largest value seen. */
function sampleMax(read: () => number): { stop(): number } {
  let max = read();
  const timer = setInterval(() => {
    max = Math.max(max, read());
  }, 2);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(max, read());
    },
  };
}

async function rawCommand(client: RawClient, doc: Record<string, unknown>): Promise<Record<string, unknown>> {
  client.write(opMsg(doc).bytes);
  const frame = await client.readFrame(120_000);
  if (frame === null) throw new Error('connection closed instead of a reply');
  return replyDocument(frame);
}

describe('multiplexed pool against FerretDB', () => {
  it('serves 500 concurrent client connections over maxPoolSize 10 upstream connections', async ({
    faultProxy,
    startProxy,
  }) => {
    const faults = await faultProxy();
    // One tenant runs 500 commands at once on purpose: its in-flight limit (issue 15 default) is raised to match.
    const proxy = await startProxy({
      upstream: { uri: faults.uri, maxPoolSize: 10, waitQueueTimeoutMS: 120_000 },
      limits: { maxInFlightPerTenant: 500 },
    });
    const db = uniqueDbName('pool500');
    const clients = await Promise.all(Array.from({ length: 500 }, () => proxy.raw()));
    const upstreamOpen = sampleMax(() => faults.stats().connectionsOpen);
    const results = await Promise.all(
      clients.map(async (client, i) => {
        const inserted = await rawCommand(client, { insert: 'items', documents: [{ _id: i, n: i }], $db: db });
        const found = await rawCommand(client, { find: 'items', filter: { _id: i }, $db: db });
        return { inserted, found };
      }),
    );
    const peak = upstreamOpen.stop();
    for (const [i, { inserted, found }] of results.entries()) {
      expect(inserted).toMatchObject({ ok: 1, n: 1 });
      expect((found as { cursor: { firstBatch: Array<{ n: number }> } }).cursor.firstBatch.map((d) => d.n)).toEqual([
        i,
      ]);
    }
    expect(peak).toBeLessThanOrEqual(10);
    expect(peak).toBeGreaterThan(0);
    const direct = directClient();
    try {
      expect(await direct.db(db).collection('items').countDocuments()).toBe(500);
    } finally {
      await direct.close();
    }
    const text = await scrape(proxy.proxy);
    expect(text).toMatch(/^mongo_tenant_proxy_client_connections 500$/m);
    expect(text).toMatch(/^mongo_tenant_proxy_upstream_pool_connections\{server="[^"]+",state="idle"\} \d+$/m);
    expect(text).toMatch(/^mongo_tenant_proxy_upstream_pool_wait_queue\{server="[^"]+"\} 0$/m);
  }, 180_000);

  it('runs 500 concurrent driver operations from 20 clients over maxPoolSize 10', async ({
    faultProxy,
    startProxy,
  }) => {
    const faults = await faultProxy();
    // One tenant runs 500 commands at once on purpose: its in-flight limit (issue 15 default) is raised to match.
    const proxy = await startProxy({
      upstream: { uri: faults.uri, maxPoolSize: 10, waitQueueTimeoutMS: 120_000 },
      limits: { maxInFlightPerTenant: 500 },
    });
    const db = uniqueDbName('pooldriver');
    const drivers: MongoClient[] = Array.from({ length: 20 }, () => proxy.client({ maxPoolSize: 25 }));
    await drivers[0]!
      .db(db)
      .collection('c')
      .insertOne({ _id: 'seed' as never, v: 1 });
    const upstreamOpen = sampleMax(() => faults.stats().connectionsOpen);
    const results = await Promise.all(
      Array.from({ length: 500 }, (_, i) =>
        i % 2 === 0
          ? drivers[i % 20]!.db(db)
              .collection('c')
              .insertOne({ op: i })
              .then((r) => r.acknowledged)
          : drivers[i % 20]!.db(db)
              .collection('c')
              .findOne({ _id: 'seed' as never })
              .then((d) => d?.v === 1),
      ),
    );
    expect(upstreamOpen.stop()).toBeLessThanOrEqual(10);
    expect(results.every(Boolean)).toBe(true);
    const direct = directClient();
    try {
      expect(
        await direct
          .db(db)
          .collection('c')
          .countDocuments({ op: { $exists: true } }),
      ).toBe(250);
    } finally {
      await direct.close();
    }
  }, 180_000);
});

describe('waiting for a pool connection', () => {
  it('answers a command that waited waitQueueTimeoutMS with a retryable error instead of hanging', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream((message) =>
      message.body.comment === 'slow' ? { delayMs: 3_000, replies: [{ ok: 1 }] } : [{ ok: 1 }],
    );
    const proxy = await startProxy({ upstream: { uri: fake.uri, maxPoolSize: 1, waitQueueTimeoutMS: 200 } });
    const slow = await proxy.raw();
    const waiting = await proxy.raw();
    slow.write(opMsg({ ping: 1, comment: 'slow', $db: 'admin' }).bytes);
    await expect.poll(() => fake.received.length, { timeout: 10_000 }).toBe(1);
    const reply = await rawCommand(waiting, { ping: 1, $db: 'admin' });
    expect(reply).toMatchObject({ ok: 0, code: 262, codeName: 'ExceededTimeLimit' });
    expect(String(reply.errmsg)).toMatch(/waiting for a connection/);
    // The slow one still gets its answer, and the pool works on afterwards.
    expect(replyDocument((await slow.readFrame(10_000))!)).toMatchObject({ ok: 1 });
    expect(await rawCommand(waiting, { ping: 1, $db: 'admin' })).toMatchObject({ ok: 1 });
  });
});

describe('fairness across tenants', () => {
  it('serves a quiet tenant next even behind a noisy tenant’s backlog', async ({ fakeUpstream, startTenantProxy }) => {
    const fake = await fakeUpstream(() => ({ delayMs: 250, replies: [{ ok: 1 }] }));
    const tenantProxy = await startTenantProxy(['noisy', 'quiet'], {
      upstream: { uri: fake.uri, maxPoolSize: 1, waitQueueTimeoutMS: 120_000 },
    });
    const tp = tenantProxy.proxy;
    const noisy = await Promise.all(Array.from({ length: 30 }, () => tenantProxy.rawFor('noisy')));
    const replies = noisy.map((client, i) => {
      client.write(opMsg({ ping: 1, comment: `noisy-${i}`, $db: 'admin' }).bytes);
      return client.readFrame(120_000);
    });
    // One runs, the others wait for the only connection (at least 10 of them, for the test to mean something).
    const waiting = async (): Promise<number> =>
      Number(/upstream_pool_wait_queue\{server="[^"]+"\} (\d+)$/m.exec(await scrape(tp.proxy))?.[1] ?? 0);
    await expect.poll(waiting, { timeout: 30_000, interval: 20 }).toBeGreaterThanOrEqual(10);
    const quiet = await tenantProxy.rawFor('quiet');
    const alreadySent = fake.received.length;
    quiet.write(opMsg({ ping: 1, comment: 'quiet', $db: 'admin' }).bytes);
    expect(replyDocument((await quiet.readFrame(120_000))!)).toMatchObject({ ok: 1 });
    const order = fake.received.map((message) => message.body.comment as string);
    // Round-robin: at most one more noisy command goes first, however long the noisy backlog.
    expect(order.indexOf('quiet')).toBeGreaterThanOrEqual(alreadySent);
    expect(order.indexOf('quiet')).toBeLessThanOrEqual(alreadySent + 1);
    await Promise.all(replies);
    expect(fake.received).toHaveLength(31);
    // … while most of the noisy backlog was still waiting.
    const final = fake.received.map((message) => message.body.comment as string);
    expect(final.length - 1 - final.indexOf('quiet')).toBeGreaterThanOrEqual(5);
  }, 180_000);
});

describe('transaction pinning (raw wire, fake upstream)', () => {
  const lsid = { id: new UUID() };
  const txn = (doc: Record<string, unknown>, start = false): Record<string, unknown> => ({
    ...doc,
    lsid,
    txnNumber: Long.fromNumber(1),
    autocommit: false,
    ...(start ? { startTransaction: true } : {}),
    $db: typeof doc.$db === 'string' ? doc.$db : 'app',
  });

  it('keeps a transaction on one upstream connection from startTransaction to commit, across client connections', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream((message) =>
      'find' in message.body
        ? [{ cursor: { id: Long.fromNumber(0), ns: 'app.c', firstBatch: [] }, ok: 1 }]
        : [{ ok: 1, n: 1 }],
    );
    const proxy = await startProxy({ upstream: { uri: fake.uri, maxPoolSize: 2 } });
    const a = await proxy.raw();
    const b = await proxy.raw();
    const c = await proxy.raw();
    expect(await rawCommand(a, txn({ insert: 'c', documents: [{ x: 1 }] }, true))).toMatchObject({ ok: 1 });
    // Other work meanwhile: never on the pinned connection.
    for (let i = 0; i < 3; i++) expect(await rawCommand(b, { ping: 1, $db: 'admin' })).toMatchObject({ ok: 1 });
    expect(await rawCommand(a, txn({ find: 'c', filter: {} }))).toMatchObject({ ok: 1 });
    // The same session continued from another client connection (drivers may do that) still lands there.
    expect(await rawCommand(c, txn({ commitTransaction: 1, $db: 'admin' }))).toMatchObject({ ok: 1 });
    // After the commit the connection is free for anyone.
    expect(await rawCommand(b, { ping: 1, $db: 'admin' })).toMatchObject({ ok: 1 });

    const byCommand = (name: string): number[] => fake.received.filter((m) => name in m.body).map((m) => m.connection);
    const [pinned] = byCommand('insert');
    expect(byCommand('find')).toEqual([pinned]);
    expect(byCommand('commitTransaction')).toEqual([pinned]);
    const pings = byCommand('ping');
    expect(pings.slice(0, 3).every((connection) => connection !== pinned)).toBe(true);
  });

  it('releases the pin when the client connection that started the transaction leaves', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream(() => [{ ok: 1, n: 1 }]);
    const proxy = await startProxy({ upstream: { uri: fake.uri, maxPoolSize: 1, waitQueueTimeoutMS: 30_000 } });
    const a = await proxy.raw();
    const b = await proxy.raw();
    expect(await rawCommand(a, txn({ insert: 'c', documents: [{ x: 1 }] }, true))).toMatchObject({ ok: 1 });
    // The only connection is pinned: b waits …
    const waiting = rawCommand(b, { ping: 1, $db: 'admin' });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(fake.received.filter((m) => 'ping' in m.body)).toHaveLength(0);
    // … until a leaves without committing.
    a.close();
    expect(await waiting).toMatchObject({ ok: 1 });
  });
});

describe('per-tenant share of the pool (upstream.maxPoolConnectionsPerTenant)', () => {
  const transaction = (lsid: UUID, doc: Record<string, unknown>, start = false): Record<string, unknown> => ({
    ...doc,
    lsid: { id: lsid },
    txnNumber: Long.fromNumber(1),
    autocommit: false,
    ...(start ? { startTransaction: true } : {}),
    $db: typeof doc.$db === 'string' ? doc.$db : 'app',
  });

  it('keeps serving other tenants at once while one tenant’s open transactions hold its share', async ({
    fakeUpstream,
    startTenantProxy,
  }) => {
    const fake = await fakeUpstream(() => [{ ok: 1, n: 1 }]);
    const tenantProxy = await startTenantProxy(['a', 'b'], {
      upstream: { uri: fake.uri, maxPoolSize: 3, maxPoolConnectionsPerTenant: 2, waitQueueTimeoutMS: 120_000 },
    });
    const tp = tenantProxy.proxy;
    const capWaits = async (tenant: string): Promise<number> =>
      Number(
        new RegExp(`^mongo_tenant_proxy_upstream_tenant_cap_waits_total\\{tenant="${tenant}"\\} (\\d+)$`, 'm').exec(
          await scrape(tp.proxy),
        )?.[1] ?? 0,
      );
    const clientsOfA = await Promise.all([0, 1, 2].map(() => tenantProxy.rawFor('a')));
    const [first, second, third] = clientsOfA as [RawClient, RawClient, RawClient];
    const b = await tenantProxy.rawFor('b');
    const sessions = [new UUID(), new UUID(), new UUID()] as const;

    // Tenant a pins two connections with two open transactions: its whole share.
    expect(
      await rawCommand(first, transaction(sessions[0], { insert: 'c', documents: [{ x: 1 }] }, true)),
    ).toMatchObject({ ok: 1 });
    expect(
      await rawCommand(second, transaction(sessions[1], { insert: 'c', documents: [{ x: 2 }] }, true)),
    ).toMatchObject({ ok: 1 });
    // Its third transaction waits for one of its own connections, though the pool has room
    // (without the cap it would pin the last connection, and tenant b would wait) …
    third.write(
      opMsg(transaction(sessions[2], { insert: 'c', documents: [{ x: 3 }], comment: 'a-capped' }, true)).bytes,
    );
    const cappedReply = third.readFrame(120_000);
    await expect.poll(() => capWaits('a'), { timeout: 30_000, interval: 20 }).toBe(1);
    // … while tenant b's commands get the free connection at once, again and again.
    for (let i = 0; i < 5; i++)
      expect(await rawCommand(b, { ping: 1, comment: `b-${i}`, $db: 'admin' })).toMatchObject({ ok: 1 });
    const comments = (): string[] => fake.received.map((message) => String(message.body.comment));
    expect(comments()).not.toContain('a-capped');
    expect(await capWaits('b')).toBe(0);

    // One of a's transactions commits: its connection goes to a's waiting command.
    expect(await rawCommand(first, transaction(sessions[0], { commitTransaction: 1, $db: 'admin' }))).toMatchObject({
      ok: 1,
    });
    expect(replyDocument((await cappedReply)!)).toMatchObject({ ok: 1 });
    expect(comments()).toContain('a-capped');
    const committedOn = fake.received.find((message) => 'commitTransaction' in message.body)?.connection;
    expect(fake.received.find((message) => message.body.comment === 'a-capped')?.connection).toBe(committedOn);
    // The pins' connections never served tenant b.
    const pinned = new Set(
      fake.received.filter((message) => 'insert' in message.body).map((message) => message.connection),
    );
    expect(pinned.size).toBe(2);
    expect(fake.openConnections).toBeLessThanOrEqual(3);
    for (const message of fake.received.filter((m) => String(m.body.comment).startsWith('b-')))
      expect(pinned.has(message.connection)).toBe(false);
    for (const [client, session] of [
      [second, sessions[1]],
      [third, sessions[2]],
    ] as const) {
      expect(await rawCommand(client, transaction(session, { abortTransaction: 1, $db: 'admin' }))).toMatchObject({
        ok: 1,
      });
    }
  }, 180_000);

  it('lets a session at its tenant’s share start a new transaction over its unfinished one', async ({
    fakeUpstream,
    startTenantProxy,
  }) => {
    const fake = await fakeUpstream(() => [{ ok: 1, n: 1 }]);
    const tenantProxy = await startTenantProxy(['a'], {
      upstream: { uri: fake.uri, maxPoolSize: 3, maxPoolConnectionsPerTenant: 1, waitQueueTimeoutMS: 10_000 },
    });
    const client = await tenantProxy.rawFor('a');
    const session = new UUID();
    expect(await rawCommand(client, transaction(session, { insert: 'c', documents: [{ x: 1 }] }, true))).toMatchObject({
      ok: 1,
    });
    // No commit or abort reached the proxy; the next transaction supersedes the pinned one
    // (the server aborts it on the higher txnNumber), so it must not wait for its own pin.
    const next = {
      ...transaction(session, { insert: 'c', documents: [{ x: 2 }] }, true),
      txnNumber: Long.fromNumber(2),
    };
    expect(await rawCommand(client, next)).toMatchObject({ ok: 1 });
    expect(
      await rawCommand(client, {
        ...transaction(session, { commitTransaction: 1, $db: 'admin' }),
        txnNumber: Long.fromNumber(2),
      }),
    ).toMatchObject({ ok: 1 });
    expect(await rawCommand(client, { ping: 1, $db: 'admin' })).toMatchObject({ ok: 1 });
  }, 180_000);
});
