/**
 * Issue 13: virtual drop / dropDatabase and listings answered from what the tenant owns
 * (catalogue 23, 24, 59), through the official driver, then read directly upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoServerError, type MongoClient } from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

const CATALOGUE = uniqueDbName('mtpcat');
const dbName = uniqueDbName('ten13d');
const otherDb = uniqueDbName('ten13o');

let tenants: TenantProxy;
let direct: MongoClient;
let acme: MongoClient;
let globex: MongoClient;

beforeAll(async () => {
  direct = await directClient();
  tenants = await startTenantProxy(['acme', 'globex'], {
    isolation: { tenancy: { catalogueDatabase: CATALOGUE, deleteBatchSize: 7 } },
  });
  acme = tenants.clientFor('acme');
  globex = tenants.clientFor('globex');
  // Data written before the proxy: globex's collection exists for globex without a catalogue entry.
  await direct
    .db(dbName)
    .collection('legacy')
    .insertMany([{ tenantId: 'globex', n: 1 }]);
});

afterAll(async () => {
  await tenants?.stop();
  for (const db of [dbName, otherDb, CATALOGUE]) await direct?.db(db).dropDatabase();
  await direct?.close();
});

const names = async (client: MongoClient, db: string): Promise<string[]> =>
  (await client.db(db).listCollections().toArray()).map((entry) => entry.name).sort();

describe('issue 13: listings', () => {
  it("listCollections shows acme only what it created or holds documents in; globex's names are never shown", async () => {
    await acme.db(dbName).createCollection('acme_created');
    await acme.db(dbName).collection('acme_data').insertOne({ n: 1 });
    await globex.db(dbName).createCollection('globex_secret_name');
    expect(await names(acme, dbName)).toEqual(['acme_created', 'acme_data']);
    expect(await names(globex, dbName)).toEqual(['globex_secret_name', 'legacy']);
    // Filters and nameOnly as drivers send them.
    const filtered = await acme.db(dbName).listCollections({ name: 'acme_data' }, { nameOnly: true }).toArray();
    expect(filtered).toEqual([{ name: 'acme_data', type: 'collection' }]);
    expect(await acme.db(dbName).listCollections({ name: 'globex_secret_name' }).toArray()).toEqual([]);
    // create of a collection the tenant already has: NamespaceExists, as the server says.
    const exists = await acme
      .db(dbName)
      .createCollection('acme_created')
      .catch((error: unknown) => error);
    expect((exists as MongoServerError).code).toBe(48);
    // globex creating a collection acme has is fine (each tenant's own database).
    await globex.db(dbName).createCollection('acme_created');
  });

  it('listDatabases (empty filter, name filter, nameOnly) lists the databases the tenant has something in', async () => {
    await acme.db(otherDb).collection('x').insertOne({ n: 1 });
    const all = await acme.db('admin').admin().listDatabases();
    const listed = all.databases.map((entry) => entry.name);
    expect(listed).toContain(dbName);
    expect(listed).toContain(otherDb);
    expect(listed).not.toContain(CATALOGUE);
    const globexListed = (await globex.db('admin').admin().listDatabases({ nameOnly: true })).databases.map(
      (entry) => entry.name,
    );
    expect(globexListed).toContain(dbName);
    expect(globexListed).not.toContain(otherDb);
    const byName = await acme.db('admin').command({ listDatabases: 1, filter: { name: otherDb }, nameOnly: true });
    expect(byName.databases).toEqual([{ name: otherDb }]);
    const empty = await acme.db('admin').command({ listDatabases: 1, filter: {} });
    expect(empty.ok).toBe(1);
  });
});

describe('issue 13: virtual drop and dropDatabase', () => {
  it("acme's drop deletes its documents (in batches) and its indexes; globex's documents and indexes stay; acme can re-create it", async () => {
    const acmeDocs = Array.from({ length: 30 }, (_, n) => ({ n, owner: 'acme' }));
    await acme.db(dbName).collection('shared').insertMany(acmeDocs);
    await globex
      .db(dbName)
      .collection('shared')
      .insertMany([{ n: 1 }, { n: 2 }]);
    await acme.db(dbName).collection('shared').createIndex({ n: 1 }, { name: 'acme_n' });
    await globex.db(dbName).collection('shared').createIndex({ owner: 1 }, { name: 'globex_owner' });
    expect(await acme.db(dbName).collection('shared').drop()).toBe(true);
    expect(await direct.db(dbName).collection('shared').countDocuments({ tenantId: 'acme' })).toBe(0);
    expect(await direct.db(dbName).collection('shared').countDocuments({ tenantId: 'globex' })).toBe(2);
    const physical = (await direct.db(dbName).collection('shared').listIndexes().toArray()).map((entry) => entry.key);
    expect(physical).toEqual([{ _id: 1 }, { tenantId: 1, owner: 1 }]);
    expect(await names(acme, dbName)).not.toContain('shared');
    const listed = await acme
      .db(dbName)
      .collection('shared')
      .listIndexes()
      .toArray()
      .catch((error: unknown) => error);
    expect((listed as MongoServerError).code).toBe(26);
    // Re-created from scratch.
    await acme.db(dbName).collection('shared').insertOne({ n: 99 });
    expect(await acme.db(dbName).collection('shared').countDocuments()).toBe(1);
    expect((await globex.db(dbName).collection('shared').listIndexes().toArray()).map((entry) => entry.name)).toEqual([
      '_id_',
      'globex_owner',
    ]);
  });

  it("acme's dropDatabase empties acme's view of the database only", async () => {
    await acme.db(dbName).collection('more').insertOne({ n: 1 });
    await globex.db(dbName).collection('more').insertOne({ n: 2 });
    expect(await acme.db(dbName).dropDatabase()).toBe(true);
    expect(await names(acme, dbName)).toEqual([]);
    expect(await direct.db(dbName).collection('more').countDocuments({ tenantId: 'globex' })).toBe(1);
    expect(await direct.db(dbName).collection('more').countDocuments({ tenantId: 'acme' })).toBe(0);
    expect(await names(globex, dbName)).toEqual(['acme_created', 'globex_secret_name', 'legacy', 'more', 'shared']);
    expect(await direct.db(CATALOGUE).collection('collections').countDocuments({ t: 'acme', db: dbName })).toBe(0);
  });
});
