// The test harness itself: the shared upstream answers, the helpers do what they say, and a proxy
// started by startTestProxy() carries a driver's writes to the database.
import { afterAll, describe, expect, it } from 'vitest';
import { startTestProxy, testProxyConfig } from '../helpers/proxy.js';
import { directClient, lacks, startFerretDB, uniqueDbName, upstreamKind, upstreamUri } from '../helpers/upstream.js';

describe('upstream', () => {
  const client = directClient();
  const dbName = uniqueDbName('harness');
  afterAll(async () => {
    await client.db(dbName).dropDatabase();
    await client.close();
  });

  it('is provided by the global setup', () => {
    expect(['mongodb', 'ferretdb1', 'ferretdb2', 'documentdb']).toContain(upstreamKind());
    expect(upstreamUri()).toMatch(/^mongodb(\+srv)?:\/\//);
  });

  it('is reachable directly: a document written is read back', async () => {
    const hello = await client.db('admin').command({ hello: 1 });
    expect(hello.isWritablePrimary).toBe(true);
    const collection = client.db(dbName).collection<{ _id: string; tenant: string }>('things');
    await collection.insertOne({ _id: 'a', tenant: 't1' });
    expect(await collection.findOne({ _id: 'a' })).toEqual({ _id: 'a', tenant: 't1' });
  });

  it('uniqueDbName gives distinct, valid names', () => {
    const names = new Set(Array.from({ length: 100 }, () => uniqueDbName('some.prefix with spaces')));
    expect(names.size).toBe(100);
    const long = uniqueDbName('x'.repeat(200));
    expect(long.length).toBeLessThanOrEqual(63);
    for (const name of [...names, long, uniqueDbName('9lives'), uniqueDbName('')]) {
      expect(name).toMatch(/^[A-Za-z][A-Za-z0-9_-]{0,62}$/);
    }
  });

  it.skipIf(lacks('transactions', 'transactions need a replica set (or the DocumentDB gateway); FerretDB has none'))(
    'runs a transaction when the upstream is MongoDB',
    async () => {
      const session = client.startSession();
      try {
        await session.withTransaction(async () => {
          await client.db(dbName).collection('tx').insertOne({ n: 1 }, { session });
        });
      } finally {
        await session.endSession();
      }
      expect(await client.db(dbName).collection('tx').countDocuments()).toBe(1);
    },
  );
});

describe.skipIf(upstreamKind() !== 'ferretdb1')('startFerretDB', () => {
  it('creates a SCRAM user, refuses a wrong password, and cleans up on stop', async () => {
    const ferret = await startFerretDB({
      auth: { username: 'proxy', password: 'p@ss:word/1', database: 'admin' },
      replSetName: 'rs0',
    });
    const { MongoClient } = await import('mongodb');
    const good = new MongoClient(ferret.uri, { serverSelectionTimeoutMS: 5_000 });
    const bad = new MongoClient(ferret.uri.replace(encodeURIComponent('p@ss:word/1'), 'wrong'), {
      serverSelectionTimeoutMS: 5_000,
    });
    try {
      const hello = await good.db('admin').command({ hello: 1 });
      expect(hello.setName).toBe('rs0');
      await good.db('auth_check').collection('c').insertOne({ ok: true });
      expect(await good.db('auth_check').collection('c').countDocuments()).toBe(1);
      await expect(bad.db('auth_check').collection('c').countDocuments()).rejects.toThrow(/auth/i);
    } finally {
      await Promise.all([good.close(), bad.close()]);
      await ferret.stop();
    }
    const { existsSync } = await import('node:fs');
    expect(existsSync(ferret.dataDir)).toBe(false);
    expect(ferret.process.exitCode !== null || ferret.process.signalCode !== null).toBe(true);
  });
});

describe('startTestProxy', () => {
  it('fills every configuration field and deep-merges overrides', () => {
    const config = testProxyConfig({ metrics: { listen: null }, limits: { maxConnections: 5 } });
    expect(config.upstream.uri).toBe(upstreamUri());
    expect(config.metrics.listen).toBeNull();
    expect(config.limits).toEqual({
      maxMessageSizeBytes: 48_000_000,
      maxBsonDepth: 200,
      maxConnections: 5,
      clientIdleTimeoutMS: 600_000,
      frameTimeoutMS: 30_000,
      tlsHandshakeTimeoutMS: 10_000,
      drainTimeoutMS: 30_000,
      // Issue 15 defaults, derived from the product's default maxConnections and maxPoolSize
      // (testProxyConfig merges overrides over the resolved defaults).
      maxConnectionsPerTenant: 2_500,
      maxInFlightPerTenant: 100,
      maxUnauthenticatedConnections: 2_500,
      maxOpenCursorsPerTenant: 100,
      authTimeoutMS: 30_000,
      maxBufferedBytes: 268_435_456,
      bytesPerSecondPerTenant: 67_108_864,
      cpuMillisPerSecondPerTenant: 500,
      operationsPerSecondPerTenant: 0,
      operationsBurstPerTenant: 0,
    });
    expect(config.listeners[0]!.listen).toEqual({ host: '127.0.0.1', port: 0 });
  });

  it('carries a driver write through the proxy to the database', async () => {
    const test = await startTestProxy();
    const direct = directClient();
    const dbName = uniqueDbName('harness_proxy');
    try {
      expect(test.uri).toBe(`mongodb://127.0.0.1:${test.proxy.address.port}/?directConnection=true`);
      expect(test.proxy.address.port).toBeGreaterThan(0);
      expect(test.proxy.metricsAddress?.port).toBeGreaterThan(0);
      const client = test.client();
      expect((await client.db('admin').command({ ping: 1 })).ok).toBe(1);
      await client
        .db(dbName)
        .collection('things')
        .insertOne({ _id: 'via-proxy', n: 1 } as never);
      // Stamped with the test listener's static tenant.
      expect(await direct.db(dbName).collection('things').findOne({})).toEqual({
        _id: 'via-proxy',
        tenantId: 'test-tenant',
        n: 1,
      });
    } finally {
      await direct.db(dbName).dropDatabase();
      await direct.close();
      await test.stop();
    }
  });
});
