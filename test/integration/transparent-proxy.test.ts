/**
 * The proxy is transparent: the official driver behaves through it as it does direct, and
 * every write is visible when the database is read directly, bypassing the proxy.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoBulkWriteError, type MongoClient, MongoServerError } from 'mongodb';
import { scrape } from '../helpers/metrics.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

let proxy: TestProxy;
let client: MongoClient;
let direct: MongoClient;
const dbName = uniqueDbName('transparent');

beforeAll(async () => {
  proxy = await startTestProxy({
    isolation: {
      tenancy: {
        sharedIndexes: [{ namespace: `${dbName}.idx`, name: 'tenant_email', key: ['email'], unique: true }],
      },
    },
  });
  client = await proxy.client();
  direct = await directClient();
});

afterAll(async () => {
  await direct
    ?.db(dbName)
    .dropDatabase()
    .catch(() => undefined);
  await direct?.close();
  await proxy?.stop();
});

describe('through the official driver', () => {
  it('answers hello itself, mirroring the upstream wire versions and limits', async () => {
    const viaProxy = await client.db('admin').command({ hello: 1 });
    const upstream = await direct.db('admin').command({ hello: 1 });
    expect(viaProxy.isWritablePrimary).toBe(true);
    for (const field of ['maxWireVersion', 'minWireVersion', 'maxBsonObjectSize', 'maxWriteBatchSize']) {
      expect(viaProxy[field], field).toBe(upstream[field]);
    }
    expect(viaProxy.maxMessageSizeBytes).toBeLessThanOrEqual(upstream.maxMessageSizeBytes);
    // Drivers must never learn the upstream hosts.
    expect(viaProxy.hosts).toBeUndefined();
    expect(viaProxy.me).toBeUndefined();
  });

  it('does CRUD exactly as direct, proven by reading the database directly', async () => {
    const coll = client.db(dbName).collection('crud');
    const inserted = await coll.insertOne({ name: 'ada', n: 1 });
    await coll.insertMany([
      { name: 'bob', n: 2 },
      { name: 'cy', n: 3 },
    ]);
    expect(await coll.countDocuments({ n: { $gte: 2 } })).toBe(2);
    const updated = await coll.updateOne({ name: 'bob' }, { $set: { n: 20 } });
    expect(updated.modifiedCount).toBe(1);
    const deleted = await coll.deleteOne({ name: 'cy' });
    expect(deleted.deletedCount).toBe(1);
    const found = await coll.find({}, { sort: { n: 1 }, projection: { _id: 0 } }).toArray();
    // Exactly what was written: the tenant field is hidden in replies (isolation.tenantFieldInReplies).
    expect(found).toEqual([
      { name: 'ada', n: 1 },
      { name: 'bob', n: 20 },
    ]);

    const stored = await direct
      .db(dbName)
      .collection('crud')
      .find({}, { sort: { n: 1 } })
      .toArray();
    // Every stored document carries the connection's tenant (static listener: test-tenant).
    expect(stored.map((d) => [d.name, d.n, d.tenantId])).toEqual([
      ['ada', 1, 'test-tenant'],
      ['bob', 20, 'test-tenant'],
    ]);
    expect(stored[0]?._id.equals(inserted.insertedId)).toBe(true);
  });

  // Sized for 2 busy cores: 100,000 documents spent up to 90 s in FerretDB's inserts without
  // proving more; what is proved is one bulk insert of many documents and a cursor that needs
  // 100 getMore round trips (batchSize 200), every document back exactly once.
  it('inserts 20,000 documents and iterates them back over 100 getMore batches', async () => {
    const coll = client.db(dbName).collection('bulk');
    const total = 20_000;
    const docs = Array.from({ length: total }, (_, i) => ({ i }));
    const result = await coll.insertMany(docs, { ordered: false });
    expect(result.insertedCount).toBe(total);
    expect(await direct.db(dbName).collection('bulk').countDocuments()).toBe(total);

    let seen = 0;
    let sum = 0;
    const getMores: number[] = [];
    const monitored = await proxy.client({ monitorCommands: true });
    monitored.on('commandStarted', (event) => {
      if (event.commandName === 'getMore') getMores.push(1);
    });
    for await (const doc of monitored.db(dbName).collection('bulk').find({}, { batchSize: 200 })) {
      seen += 1;
      sum += doc.i as number;
    }
    expect(seen).toBe(total);
    expect(sum).toBe((total * (total - 1)) / 2);
    expect(getMores.length).toBeGreaterThanOrEqual(99);
  });

  it('runs aggregation pipelines', async () => {
    const coll = client.db(dbName).collection('agg');
    await coll.insertMany([
      { k: 'a', v: 1 },
      { k: 'a', v: 2 },
      { k: 'b', v: 5 },
    ]);
    const groups = await coll
      .aggregate([{ $group: { _id: '$k', total: { $sum: '$v' } } }, { $sort: { _id: 1 } }])
      .toArray();
    expect(groups).toEqual([
      { _id: 'a', total: 3 },
      { _id: 'b', total: 5 },
    ]);
  });

  it('creates and lists indexes', async () => {
    const coll = client.db(dbName).collection('idx');
    await coll.insertOne({ email: 'x@example.com' });
    // A unique index in a shared collection is declared by the operator where the upstream has no
    // partial indexes (FerretDB: issue 13); the tenant's createIndex of it succeeds as a no-op.
    const name = await coll.createIndex({ email: 1 }, { unique: true, name: 'tenant_email' });
    expect(name).toBe('tenant_email');
    const names = (await coll.listIndexes().toArray()).map((i) => i.name);
    expect(names).toContain('tenant_email');
    const directNames = (await direct.db(dbName).collection('idx').listIndexes().toArray()).map((i) => i.name);
    expect(directNames).toContain('tenant_email');
  });

  it('passes upstream errors through unchanged (duplicate key)', async () => {
    const coll = client.db(dbName).collection('dup');
    await coll.insertOne({ _id: 1 } as never);
    const error = await coll.insertOne({ _id: 1 } as never).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MongoServerError);
    expect((error as MongoServerError).code).toBe(11000);
  });

  it('reports ordered and unordered bulk write duplicate-key errors like the server', async () => {
    const coll = client.db(dbName).collection('bulkdup');
    await coll.insertOne({ _id: 2 } as never);
    const ops = [1, 2, 3].map((id) => ({ insertOne: { document: { _id: id } } })) as never[];

    const ordered = await coll.bulkWrite(ops, { ordered: true }).catch((e: unknown) => e);
    expect(ordered).toBeInstanceOf(MongoBulkWriteError);
    expect((ordered as MongoBulkWriteError).result.insertedCount).toBe(1);
    expect((ordered as MongoBulkWriteError).writeErrors).toBeDefined();

    await coll.deleteMany({ _id: { $in: [1, 3] } } as never);
    const unordered = await coll.bulkWrite(ops, { ordered: false }).catch((e: unknown) => e);
    expect(unordered).toBeInstanceOf(MongoBulkWriteError);
    expect((unordered as MongoBulkWriteError).result.insertedCount).toBe(2);
    expect(await direct.db(dbName).collection('bulkdup').countDocuments()).toBe(3);
  });

  it('supports sessions: lsid and $clusterTime travel through', async () => {
    const session = client.startSession();
    try {
      const coll = client.db(dbName).collection('sessions');
      await coll.insertOne({ s: 1 }, { session });
      expect(await coll.countDocuments({ s: 1 }, { session })).toBe(1);
      expect(session.id?.id).toBeDefined();
    } finally {
      await session.endSession();
    }
  });

  it('keeps serving after a client disconnects in the middle of a cursor', async () => {
    const coll = client.db(dbName).collection('midcursor');
    await coll.insertMany(Array.from({ length: 500 }, (_, i) => ({ i })));
    const leaving = await proxy.client();
    const cursor = leaving.db(dbName).collection('midcursor').find({}, { batchSize: 10 });
    await cursor.next();
    await leaving.close(true);
    const again = await proxy.client();
    expect(await again.db(dbName).collection('midcursor').countDocuments()).toBe(500);
  });

  it('handles unacknowledged (w:0, moreToCome) writes', async () => {
    const coll = client.db(dbName).collection('w0');
    await coll.insertOne({ fire: 'forget' }, { writeConcern: { w: 0 } });
    // The write has no reply; poll the database directly until it lands.
    const deadline = Date.now() + 5000;
    let count = 0;
    while (Date.now() < deadline && count === 0) {
      count = await direct.db(dbName).collection('w0').countDocuments();
      if (count === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(count).toBe(1);
    // The connection is still in step: the next acknowledged command gets its own reply.
    expect((await client.db(dbName).command({ ping: 1 })).ok).toBe(1);
  });

  it('exposes per-operation metrics on its metrics port', async () => {
    await client.db(dbName).collection('crud').findOne({});
    const address = proxy.proxy.metricsAddress;
    expect(address).not.toBeNull();
    const text = await scrape(proxy.proxy);
    expect(text).toMatch(/mongo_tenant_proxy_operations_total\{[^}]*command="find"[^}]*\} \d+/);
    expect(text).toMatch(/mongo_tenant_proxy_operation_duration_seconds_bucket/);
    expect(text).toMatch(/mongo_tenant_proxy_client_connections \d+/);
  });
});
