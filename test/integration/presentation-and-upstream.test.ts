/**
 * How the proxy presents itself depends on the upstream (standalone → standalone, replica set →
 * mongos), so sessions and retryable writes work whenever the upstream supports them; and the
 * proxy reaches an upstream that needs its own SCRAM credentials, which never come from clients.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { MongoServerError } from 'mongodb';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { lacks, startFerretDB, type FerretDBInstance, upstreamKind } from '../helpers/upstream.js';

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function proxyFor(uri: string, presentAs: 'auto' | 'standalone' | 'sharded' = 'auto'): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: { uri }, handshake: { presentAs } });
  cleanups.push(() => proxy.stop());
  return proxy;
}

async function ferret(options: Parameters<typeof startFerretDB>[0] = {}): Promise<FerretDBInstance> {
  const instance = await startFerretDB(options);
  cleanups.push(() => instance.stop());
  return instance;
}

describe('presentation', () => {
  it('presents a standalone upstream as a standalone, anything else (the DocumentDB gateway is a mongos) as a mongos', async () => {
    const proxy = await startTestProxy();
    cleanups.push(() => proxy.stop());
    const hello = await proxy.client().db('admin').command({ hello: 1 });
    if (proxy.proxy.upstream.kind === 'standalone') expect(hello.msg).toBeUndefined();
    else expect(hello.msg).toBe('isdbgrid');
    expect(hello.setName).toBeUndefined();
    // FerretDB v1 is a standalone; the DocumentDB gateway says isdbgrid in its own hello.
    if (upstreamKind() === 'ferretdb1') expect(proxy.proxy.upstream.kind).toBe('standalone');
    if (upstreamKind() === 'documentdb') expect(proxy.proxy.upstream.kind).toBe('sharded');
  });

  it('presents a replica-set upstream as a mongos, and retryable writes carry txnNumber through', async () => {
    const upstream = await ferret({ replSetName: 'rs0' });
    const proxy = await proxyFor(upstream.uri);
    expect(proxy.proxy.upstream.kind).toBe('replicaSet');
    const client = proxy.client({ monitorCommands: true });
    const txnNumbers: unknown[] = [];
    client.on('commandStarted', (event) => {
      if (event.commandName === 'insert') txnNumbers.push(event.command.txnNumber);
    });
    const hello = await client.db('admin').command({ hello: 1 });
    expect(hello.msg).toBe('isdbgrid');
    expect(hello.logicalSessionTimeoutMinutes).toBeGreaterThan(0);

    await client.db('presentation').collection('retry').insertOne({ once: true });
    expect(txnNumbers[0]).toBeDefined();
    // Read this upstream directly (not through the proxy): the write landed exactly once.
    const own = await import('mongodb').then(({ MongoClient }) => new MongoClient(upstream.uri));
    try {
      expect(await own.db('presentation').collection('retry').countDocuments()).toBe(1);
    } finally {
      await own.close();
    }
  });

  it('honours an explicit presentAs', async () => {
    const upstream = await ferret({ replSetName: 'rs0' });
    const proxy = await proxyFor(upstream.uri, 'standalone');
    const hello = await proxy.client().db('admin').command({ hello: 1 });
    expect(hello.msg).toBeUndefined();
  });

  it.skipIf(lacks('transactions', 'multi-document transactions (FerretDB rejects autocommit)'))(
    'runs a multi-document transaction through the proxy',
    async () => {
      const proxy = await startTestProxy();
      cleanups.push(() => proxy.stop());
      const client = proxy.client();
      const coll = client.db('presentation_txn').collection('t');
      await coll.insertOne({ seed: 1 });
      const session = client.startSession();
      try {
        await session.withTransaction(async () => {
          await coll.insertOne({ a: 1 }, { session });
          await coll.insertOne({ a: 2 }, { session });
        });
      } finally {
        await session.endSession();
      }
      expect(await coll.countDocuments({ a: { $exists: true } })).toBe(2);
    },
  );
});

describe("the proxy's own upstream credentials", () => {
  it('authenticates upstream with SCRAM-SHA-256 while clients connect without credentials', async () => {
    const upstream = await ferret({ auth: { username: 'proxyuser', password: 'proxy-secret', database: 'admin' } });
    const proxy = await proxyFor(upstream.uri);
    const coll = proxy.client().db('creds').collection('c');
    await coll.insertOne({ ok: true });
    expect(await coll.countDocuments()).toBe(1);
  });

  it('fails to start with a clear error when the upstream refuses its credentials', async () => {
    const upstream = await ferret({ auth: { username: 'proxyuser', password: 'right', database: 'admin' } });
    const wrong = upstream.uri.replace('proxyuser:right@', 'proxyuser:wrong@');
    const error = await startTestProxy({ upstream: { uri: wrong } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(String((error as Error).message)).not.toContain('wrong');
    expect((error as { code?: number }).code).toBe(18);
  });

  it('passes upstream errors to the client unchanged', async () => {
    const upstream = await ferret();
    const proxy = await proxyFor(upstream.uri);
    const error = await proxy
      .client()
      .db('errs')
      .command({ find: 'c', batchSize: -5 })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MongoServerError);
    const own = await import('mongodb').then(({ MongoClient }) => new MongoClient(upstream.uri));
    try {
      const directError = await own
        .db('errs')
        .command({ find: 'c', batchSize: -5 })
        .catch((e: unknown) => e);
      expect((error as MongoServerError).code).toBe((directError as MongoServerError).code);
      expect((error as MongoServerError).errmsg).toBe((directError as MongoServerError).errmsg);
    } finally {
      await own.close();
    }
  });
});
