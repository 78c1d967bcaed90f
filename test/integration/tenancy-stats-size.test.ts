/**
 * Issue 13: collStats and dbStats sizes come only from the tenant's own documents, computed by the
 * upstream with `$bsonSize` where the proxy's probe found it (DocumentDB, MongoDB), else summed by
 * the proxy (FerretDB v1). Runs on both upstreams; the sizes are compared with the tenant's
 * documents read directly as raw BSON (exact bytes, whatever their types).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Binary, Double, Int32, Long, MongoServerError, type MongoClient } from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName, upstreamFeatures } from '../helpers/upstream.js';

const CATALOGUE = uniqueDbName('mtpcatz');
const dbName = uniqueDbName('ten13z');

let tenants: TenantProxy;
let direct: MongoClient;
let acme: MongoClient;

beforeAll(async () => {
  direct = directClient();
  tenants = await startTenantProxy(['acme', 'globex'], {
    isolation: { tenancy: { catalogueDatabase: CATALOGUE, statsMaxDocuments: 20 } },
  });
  acme = tenants.clientFor('acme');
});

afterAll(async () => {
  await tenants?.stop();
  for (const db of [dbName, CATALOGUE]) await direct?.db(db).dropDatabase();
  await direct?.close();
});

/** The raw BSON bytes of a tenant's documents in a collection, read directly. */
async function rawSize(coll: string, tenant: string): Promise<{ count: number; size: number }> {
  const documents = await direct.db(dbName).collection(coll).find({ tenantId: tenant }, { raw: true }).toArray();
  return {
    count: documents.length,
    size: documents.reduce((sum, document) => sum + (document as unknown as Buffer).length, 0),
  };
}

describe(`issue 13: statistics sizes (${upstreamFeatures().bsonSize ? '$bsonSize upstream' : 'summed by the proxy'})`, () => {
  it("collStats and dbStats show exactly the bytes of acme's documents, never globex's", async () => {
    // Types whose size a driver round trip would change (double 1.0, int64): exact bytes count.
    await acme
      .db(dbName)
      .collection('sized')
      .insertMany([
        { n: new Double(1), l: Long.fromNumber(7), i: new Int32(3) },
        { s: 'é'.repeat(40), nested: { a: [1, 2, { b: 'c' }] }, bin: new Binary(Buffer.alloc(100, 1)) },
        { empty: {} },
      ]);
    await acme
      .db(dbName)
      .collection('other')
      .insertOne({ x: 'y'.repeat(10) });
    // globex: many more and larger documents in the same collections, written directly.
    for (const coll of ['sized', 'other'])
      await direct
        .db(dbName)
        .collection(coll)
        .insertMany(Array.from({ length: 7 }, (_, n) => ({ tenantId: 'globex', n, pad: 'z'.repeat(500) })));

    const sized = await rawSize('sized', 'acme');
    const other = await rawSize('other', 'acme');
    expect(sized.count).toBe(3);
    const coll = await acme.db(dbName).command({ collStats: 'sized' });
    expect(coll).toMatchObject({
      ok: 1,
      count: 3,
      size: sized.size,
      avgObjSize: Math.floor(sized.size / 3),
      storageSize: sized.size,
    });
    const scaled = await acme.db(dbName).command({ collStats: 'sized', scale: 16 });
    expect(scaled['size']).toBe(Math.floor(sized.size / 16));
    const db = await acme.db(dbName).command({ dbStats: 1 });
    expect(db).toMatchObject({ ok: 1, collections: 2, objects: 4, dataSize: sized.size + other.size });
    expect(JSON.stringify([coll, db])).not.toContain('zzzz');
  });

  it('the cost bound holds on both paths: more than statsMaxDocuments of the tenant is refused, not approximated', async () => {
    await acme
      .db(dbName)
      .collection('many')
      .insertMany(Array.from({ length: 21 }, (_, n) => ({ n })));
    for (const command of [{ collStats: 'many' }, { dbStats: 1 }]) {
      const error = await acme
        .db(dbName)
        .command(command)
        .catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(MongoServerError);
      expect((error as MongoServerError).message).toMatch(/tenancy\.stats-cost/);
    }
    // Exactly at the bound is answered.
    await direct.db(dbName).collection('many').deleteOne({ tenantId: 'acme', n: 0 });
    expect(await acme.db(dbName).command({ collStats: 'many' })).toMatchObject({ ok: 1, count: 20 });
  });
});
