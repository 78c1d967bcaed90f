/**
 * Wire fidelity without giving up isolation (issue 14): what a driver, an ODM or a shell does
 * direct works the same through the proxy, and every value the proxy now lets through is proved
 * unable to cross tenants. Each test acts through a real client (Node driver 7 and 6, mongosh) as
 * tenant `acme`, then reads the upstream directly, bypassing the proxy.
 *
 * - catalogue 38 (G4): upserts store the query's equality fields (`_id` included) on every
 *   upstream, FerretDB v1 too, which derives nothing through the tenant `$and`.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Document } from 'bson';
import { MongoClient, type Db } from 'mongodb';
import { MongoClient as MongoClient6 } from 'mongodb6';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

const run = promisify(execFile);
const T = 'acme';
const B = 'globex';

let tenants: TenantProxy;
let direct: MongoClient;
let acme7: MongoClient;
let acme6: MongoClient6;
const dbName = uniqueDbName('fidelity');
/** The same operations run direct (no proxy, no tenant), to compare with. */
const directDbName = uniqueDbName('fidelity_direct');

beforeAll(async () => {
  direct = directClient();
  await direct.connect();
  tenants = await startTenantProxy([T, B]);
  acme7 = tenants.clientFor(T);
  acme6 = new MongoClient6(tenants.uriFor(T), { serverSelectionTimeoutMS: 10_000 });
  await acme6.connect();
});

afterAll(async () => {
  for (const name of [dbName, directDbName]) {
    await direct
      ?.db(name)
      .dropDatabase()
      .catch(() => undefined);
  }
  await acme6?.close();
  await tenants?.stop();
  await direct?.close();
});

/** The stored documents of a collection, read directly, sorted by `_id` as a string. */
async function stored(coll: string, db = dbName): Promise<Document[]> {
  const docs = await direct.db(db).collection(coll).find({}).toArray();
  return docs.sort((a, b) => String(a._id).localeCompare(String(b._id)));
}

/** A stored document without the tenant field, for comparing with what direct stores. */
function withoutTenant(doc: Document): Document {
  const { tenantId: _tenant, ...rest } = doc;
  return rest;
}

const drivers: ReadonlyArray<{ name: string; db: () => Db }> = [
  { name: 'driver 7', db: () => acme7.db(dbName) },
  { name: 'driver 6', db: () => acme6.db(dbName) as unknown as Db },
];

describe('catalogue 38 (G4): upserts store the query equality fields', () => {
  for (const driver of drivers) {
    it(`catalogue 38: ${driver.name}: updateOne({sku}, {$set}, {upsert}) stores sku and qty; {_id: 4} keeps _id 4`, async () => {
      const coll = `sku_${driver.name.replace(' ', '')}`;
      const first = await driver
        .db()
        .collection(coll)
        .updateOne({ sku: 'n1' }, { $set: { qty: 5 } }, { upsert: true });
      expect(first.upsertedCount).toBe(1);
      const second = await driver
        .db()
        .collection(coll)
        .updateOne({ _id: 4 } as Document, { $set: { qty: 6 } }, { upsert: true });
      expect(second.upsertedId).toBe(4);
      const docs = await stored(coll);
      expect(docs).toHaveLength(2);
      expect(docs.find((doc) => doc._id === 4)).toEqual({ _id: 4, qty: 6, tenantId: T });
      const bySku = docs.find((doc) => doc.sku === 'n1');
      expect(bySku).toMatchObject({ sku: 'n1', qty: 5, tenantId: T });
      // The same two operations direct store the same documents (but the tenant field).
      const directColl = direct.db(directDbName).collection(coll);
      await directColl.updateOne({ sku: 'n1' }, { $set: { qty: 5 } }, { upsert: true });
      await directColl.updateOne({ _id: 4 } as Document, { $set: { qty: 6 } }, { upsert: true });
      const directDocs = await stored(coll, directDbName);
      expect(docs.map(withoutTenant).map(({ _id, ...rest }) => rest)).toEqual(
        directDocs.map(({ _id, ...rest }) => rest),
      );
    });
  }

  it("catalogue 38: updateOne({_id: 'some-id'}, {$inc: {n: 1}}, {upsert: true}) three times leaves one document with n: 3, as direct", async () => {
    for (let i = 0; i < 3; i++) {
      await acme7
        .db(dbName)
        .collection('counter')
        .updateOne({ _id: 'some-id' } as Document, { $inc: { n: 1 } }, { upsert: true });
      await direct
        .db(directDbName)
        .collection('counter')
        .updateOne({ _id: 'some-id' } as Document, { $inc: { n: 1 } }, { upsert: true });
    }
    expect(await stored('counter')).toEqual([{ _id: 'some-id', n: 3, tenantId: T }]);
    expect((await stored('counter')).map(withoutTenant)).toEqual(await stored('counter', directDbName));
  });

  it('catalogue 38: $and members, $eq, dotted paths, single-value $in, replacement _id and findOneAndUpdate are derived as MongoDB does', async () => {
    const coll = acme7.db(dbName).collection('forms');
    await coll.updateOne({ $and: [{ a: 1 }, { b: { $eq: 2 } }] }, { $set: { form: 'and' } }, { upsert: true });
    await coll.updateOne({ 'p.q': 3, r: { $in: [4] } }, { $set: { form: 'dotted' } }, { upsert: true });
    await coll.updateOne({ x: { $gt: 1 }, y: { $in: [1, 2] } }, { $set: { form: 'none' } }, { upsert: true });
    await coll.updateOne({ d: { b: 1 } }, { $set: { 'd.c': 2, form: 'split' } }, { upsert: true });
    await coll.updateOne({ z: 0 }, { $setOnInsert: { z: 1, form: 'own-wins' } }, { upsert: true });
    await coll.replaceOne({ _id: 'r1' } as Document, { form: 'replacement' }, { upsert: true });
    const fam = await coll.findOneAndUpdate(
      { _id: 'f1' } as Document,
      { $set: { form: 'fam' } },
      { upsert: true, returnDocument: 'after' },
    );
    expect(fam).toEqual({ _id: 'f1', form: 'fam', tenantId: T });
    await coll.bulkWrite([{ updateOne: { filter: { k: 'bulk' }, update: { $set: { form: 'bulk' } }, upsert: true } }]);
    const byForm = new Map((await stored('forms')).map((doc) => [doc.form as string, withoutTenant(doc)]));
    const withoutId = (form: string): Document => {
      const { _id, ...rest } = byForm.get(form)!;
      return rest;
    };
    expect(withoutId('and')).toEqual({ a: 1, b: 2, form: 'and' });
    expect(withoutId('dotted')).toEqual({ p: { q: 3 }, r: 4, form: 'dotted' });
    expect(withoutId('none')).toEqual({ form: 'none' });
    expect(withoutId('split')).toEqual({ d: { b: 1, c: 2 }, form: 'split' });
    expect(withoutId('own-wins')).toEqual({ z: 1, form: 'own-wins' });
    expect(byForm.get('replacement')).toEqual({ _id: 'r1', form: 'replacement' });
    expect(withoutId('bulk')).toEqual({ k: 'bulk', form: 'bulk' });
    for (const doc of await stored('forms')) expect(doc.tenantId).toBe(T);
  });

  it('catalogue 38: mongosh upserts store the query fields too', async () => {
    const script = `
      const c = db.getSiblingDB('${dbName}').shell;
      c.updateOne({sku: 'm1'}, {$set: {qty: 1}}, {upsert: true});
      c.updateOne({_id: 'shell-id'}, {$inc: {n: 1}}, {upsert: true});
      c.updateOne({_id: 'shell-id'}, {$inc: {n: 1}}, {upsert: true});
    `;
    await run('npx', ['--no-install', 'mongosh', '--quiet', '--norc', tenants.uriFor(T), '--eval', script], {
      timeout: 60_000,
    });
    const docs = await stored('shell');
    expect(docs.find((doc) => doc._id === 'shell-id')).toEqual({ _id: 'shell-id', n: 2, tenantId: T });
    expect(docs.find((doc) => doc.sku === 'm1')).toMatchObject({ sku: 'm1', qty: 1, tenantId: T });
    expect(docs).toHaveLength(2);
  }, 90_000);

  it("catalogue 38: the query's tenant field is never derived: q naming B with upsert stores T or fails, B sees nothing", async () => {
    const coll = acme7.db(dbName).collection('claims');
    await coll.updateOne({ tenantId: B, k: 'claim' }, { $set: { v: 1 } }, { upsert: true }).catch(() => undefined);
    await coll
      .updateOne({ 'tenantId.x': 1, k: 'claim-dotted' }, { $set: { v: 1 } }, { upsert: true })
      .catch(() => undefined);
    for (const doc of await stored('claims')) expect(doc.tenantId).toBe(T);
    expect(await tenants.clientFor(B).db(dbName).collection('claims').countDocuments({})).toBe(0);
  });

  it("catalogue 38: an upsert by B's _id through T's query never touches B's document", async () => {
    await direct
      .db(dbName)
      .collection('owned')
      .insertOne({ _id: 'b-doc', tenantId: B, n: 1 } as Document);
    const result = await acme7
      .db(dbName)
      .collection('owned')
      .updateOne({ _id: 'b-doc' } as Document, { $inc: { n: 100 } }, { upsert: true })
      .catch((error: unknown) => error);
    // The _id index is global: T's insert of B's _id is a duplicate-key error (the documented
    // existence oracle), never a change of B's document.
    expect(result).toBeInstanceOf(Error);
    expect(await stored('owned')).toEqual([{ _id: 'b-doc', tenantId: B, n: 1 }]);
  });
});
