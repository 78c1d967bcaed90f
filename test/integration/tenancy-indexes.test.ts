/**
 * Issue 13: a private database for each tenant in shared collections. Indexes (catalogue 23, 24,
 * 60, 61), through the official driver as tenants acme and globex, then read directly upstream:
 * the ownership catalogue, the physical indexes and every tenant's documents.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoServerError, type Document, type MongoClient } from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, lacks, uniqueDbName, upstreamFeatures } from '../helpers/upstream.js';

const CATALOGUE = uniqueDbName('mtpcat');
const dbName = uniqueDbName('ten13i');

let tenants: TenantProxy;
let direct: MongoClient;
let acme: MongoClient;
let globex: MongoClient;

beforeAll(async () => {
  direct = await directClient();
  tenants = await startTenantProxy(['acme', 'globex', 'initech'], {
    isolation: {
      tenancy: {
        catalogueDatabase: CATALOGUE,
        indexesPerTenant: 3,
        indexReserve: 2,
        maxIndexesPerCollection: 8,
        sharedIndexes: [{ namespace: `${dbName}.users`, name: 'email_1', key: ['email'], unique: true }],
      },
    },
  });
  acme = tenants.clientFor('acme');
  globex = tenants.clientFor('globex');
  await direct.db(dbName).collection('users').createIndex({ tenantId: 1, email: 1 }, { name: 'email_1', unique: true });
  await direct
    .db(dbName)
    .collection<{ _id: string; [key: string]: unknown }>('items')
    .insertMany([
      { _id: 'g1', tenantId: 'globex', sku: 'x' },
      { _id: 'g2', tenantId: 'globex', sku: 'x' },
    ]);
});

afterAll(async () => {
  await tenants?.stop();
  await direct?.db(dbName).dropDatabase();
  await direct?.db(CATALOGUE).dropDatabase();
  await direct?.close();
});

const physicalIndexes = async (coll: string): Promise<Document[]> =>
  direct.db(dbName).collection(coll).listIndexes().toArray();

describe('issue 13: tenant-scoped indexes', () => {
  it('createIndexes (non-unique) gives acme its index under its name; globex does not see it; one shared physical index, refcounted in the catalogue', async () => {
    await acme
      .db(dbName)
      .collection<{ _id: string; [key: string]: unknown }>('items')
      .insertOne({ _id: 'a1', sku: 'y' });
    expect(await acme.db(dbName).collection('items').createIndex({ sku: 1 }, { name: 'sku_idx' })).toBe('sku_idx');
    // Re-creation (what ODMs do on every start) is a no-op.
    const again = await acme
      .db(dbName)
      .command({ createIndexes: 'items', indexes: [{ key: { sku: 1 }, name: 'sku_idx' }] });
    expect(again).toMatchObject({ ok: 1, note: 'all indexes already exist', numIndexesBefore: 2, numIndexesAfter: 2 });
    const listed = await acme.db(dbName).collection('items').listIndexes().toArray();
    expect(listed.map((index) => [index.name, index.key])).toEqual([
      ['_id_', { _id: 1 }],
      ['sku_idx', { sku: 1 }],
    ]);
    expect((await globex.db(dbName).collection('items').listIndexes().toArray()).map((index) => index.name)).toEqual([
      '_id_',
    ]);
    // globex asks for the same key under another name: the same physical index serves both.
    await globex.db(dbName).collection('items').createIndex({ sku: 1 }, { name: 'by_sku' });
    const physical = (await physicalIndexes('items')).filter((index) => index.name !== '_id_');
    expect(physical).toHaveLength(1);
    expect(physical[0]!.key).toEqual({ tenantId: 1, sku: 1 });
    const record = await direct.db(CATALOGUE).collection('indexes').findOne({ physical: physical[0]!.name });
    expect(record?.owners).toEqual([
      { t: 'acme', name: 'sku_idx' },
      { t: 'globex', name: 'by_sku' },
    ]);
    // acme drops its own: globex keeps the physical index; the last owner's drop removes it.
    await acme.db(dbName).collection('items').dropIndex('sku_idx');
    expect((await physicalIndexes('items')).map((index) => index.name)).toContain(physical[0]!.name);
    expect((await globex.db(dbName).collection('items').listIndexes().toArray()).map((index) => index.name)).toEqual([
      '_id_',
      'by_sku',
    ]);
    await globex.db(dbName).collection('items').dropIndex('by_sku');
    expect((await physicalIndexes('items')).map((index) => index.name)).toEqual(['_id_']);
    expect(await direct.db(CATALOGUE).collection('indexes').countDocuments({ coll: 'items' })).toBe(0);
  });

  it('name squatting gives acme nothing: globex creates the same name with other keys; conflicting re-creation gets 85/86', async () => {
    await acme.db(dbName).collection('orders').createIndex({ status: 1 }, { name: 'status_1' });
    await globex.db(dbName).collection('orders').createIndex({ customer: 1 }, { name: 'status_1' });
    const err = await acme
      .db(dbName)
      .collection('orders')
      .createIndex({ other: 1 }, { name: 'status_1' })
      .catch((error: unknown) => error);
    expect(err).toBeInstanceOf(MongoServerError);
    expect((err as MongoServerError).code).toBe(86);
    const sameKey = await acme
      .db(dbName)
      .collection('orders')
      .createIndex({ status: 1 }, { name: 'other_name' })
      .catch((error: unknown) => error);
    expect((sameKey as MongoServerError).code).toBe(85);
    const globexListed = await globex.db(dbName).collection('orders').listIndexes().toArray();
    expect(globexListed.map((index) => [index.name, index.key])).toEqual([
      ['_id_', { _id: 1 }],
      ['status_1', { customer: 1 }],
    ]);
  });

  it('unique: a declared shared index is a no-op success for every tenant and listed; an undeclared unique index is refused on an upstream without partial indexes, nothing changes upstream', async () => {
    const users = acme.db(dbName).collection('users');
    expect(await users.createIndex({ email: 1 }, { unique: true, name: 'email_1' })).toBe('email_1');
    await users.insertOne({ email: 'a@x' });
    await globex.db(dbName).collection('users').insertOne({ email: 'a@x' });
    // Unique within acme only.
    const duplicate = await users.insertOne({ email: 'a@x' }).catch((error: unknown) => error);
    expect((duplicate as MongoServerError).code).toBe(11000);
    expect((await users.listIndexes().toArray()).map((index) => [index.name, index.key, index.unique])).toEqual([
      ['_id_', { _id: 1 }, undefined],
      ['email_1', { email: 1 }, true],
    ]);
    const before = await physicalIndexes('users');
    const result = await users
      .createIndex({ nick: 1 }, { unique: true, name: 'nick_1' })
      .catch((error: unknown) => error);
    if (!upstreamFeatures().partialIndexes) {
      expect((result as MongoServerError).code).toBe(67);
      expect((result as MongoServerError).message).toMatch(/tenancy\.index-per-tenant-unsupported.*sharedIndexes/);
      expect(await physicalIndexes('users')).toEqual(before);
      expect(await direct.db(CATALOGUE).collection('indexes').countDocuments({ coll: 'users' })).toBe(0);
    } else {
      expect(result).toBe('nick_1');
      // The unique index constrains acme only: globex can still insert duplicates (distinct
      // emails: the declared email_1 is unique per tenant, and a missing email is null).
      await globex
        .db(dbName)
        .collection('users')
        .insertMany([
          { nick: 'n', email: 'n1@x' },
          { nick: 'n', email: 'n2@x' },
        ]);
      const taken = await users
        .insertOne({ nick: 'n', email: 'n1@x' })
        .then(() => users.insertOne({ nick: 'n', email: 'n2@x' }))
        .catch((error: unknown) => error);
      expect((taken as MongoServerError).code).toBe(11000);
      // acme's documents without a nick collide on null under its unique index (as on MongoDB):
      // dropped again, so later tests can add such documents.
      await users.dropIndex('nick_1');
    }
  });

  it('the budget: a tenant cannot own more than indexesPerTenant indexes on a collection (67), others still can', async () => {
    const coll = acme.db(dbName).collection('budget');
    for (const field of ['a', 'b', 'c']) await coll.createIndex({ [field]: 1 });
    const spent = await coll.createIndex({ d: 1 }).catch((error: unknown) => error);
    expect((spent as MongoServerError).code).toBe(67);
    expect((spent as MongoServerError).message).toMatch(/tenancy\.index-budget/);
    expect(await globex.db(dbName).collection('budget').createIndex({ d: 1 })).toBe('d_1');
  });

  it('the reserve: the index-limit exhaustion stops at maxIndexesPerCollection - indexReserve; an existing shared index can still be used', async () => {
    // max 8, reserve 2: _id + 5 tenant indexes at most.
    const make = (tenant: MongoClient, field: string): Promise<unknown> =>
      tenant
        .db(dbName)
        .collection('limit')
        .createIndex({ [field]: 1 })
        .catch((error: unknown) => error);
    for (const field of ['a', 'b', 'c']) expect(await make(acme, field)).toBe(`${field}_1`);
    for (const field of ['d', 'e']) expect(await make(globex, field)).toBe(`${field}_1`);
    const full = await make(globex, 'f');
    expect((full as MongoServerError).code).toBe(67);
    expect((full as MongoServerError).message).toMatch(/tenancy\.index-reserve/);
    expect(await make(tenants.clientFor('initech'), 'a')).toBe('a_1');
    expect(await physicalIndexes('limit')).toHaveLength(6);
  });

  it("dropIndexes: acme cannot drop globex's index or a declared one; '*' drops only acme's", async () => {
    const coll = 'drops';
    await acme.db(dbName).collection(coll).createIndex({ q: 1 }, { name: 'q' });
    await globex.db(dbName).collection(coll).createIndex({ r: 1 }, { name: 'r' });
    const notFound = await acme
      .db(dbName)
      .collection(coll)
      .dropIndex('r')
      .catch((error: unknown) => error);
    expect((notFound as MongoServerError).code).toBe(27);
    await acme.db(dbName).command({ dropIndexes: coll, index: '*' });
    expect((await globex.db(dbName).collection(coll).listIndexes().toArray()).map((index) => index.name)).toEqual([
      '_id_',
      'r',
    ]);
    expect((await physicalIndexes(coll)).map((index) => index.key)).toEqual([{ _id: 1 }, { tenantId: 1, r: 1 }]);
    await acme.db(dbName).collection('users').insertOne({ email: 'drop@x' });
    const declared = await acme
      .db(dbName)
      .collection('users')
      .dropIndex('email_1')
      .catch((error: unknown) => error);
    expect(String(declared)).toMatch(/tenancy\.index-declared/);
    expect((declared as MongoServerError).code).toBe(13);
  });

  it('hints by name or key resolve through the tenant mapping (find, count, aggregate, update, delete, findAndModify); an unknown name is BadValue', async () => {
    const coll = acme.db(dbName).collection('hinted');
    await coll.insertMany([{ h: 1 }, { h: 2 }]);
    await coll.createIndex({ h: 1 }, { name: 'by_h' });
    expect(await coll.find({ h: 1 }).hint('by_h').toArray()).toHaveLength(1);
    expect(await coll.find({ h: 1 }).hint({ h: 1 }).toArray()).toHaveLength(1);
    expect(await coll.countDocuments({}, { hint: 'by_h' })).toBe(2);
    expect(await coll.aggregate([{ $match: { h: 2 } }], { hint: 'by_h' }).toArray()).toHaveLength(1);
    expect((await coll.updateOne({ h: 1 }, { $set: { u: 1 } }, { hint: 'by_h' })).modifiedCount).toBe(1);
    // DocumentDB: "findAndModify.hint is not implemented yet" (the server's own refusal).
    if (upstreamFeatures().findAndModifyHint) {
      expect((await coll.findOneAndUpdate({ h: 2 }, { $set: { u: 2 } }, { hint: { h: 1 } }))?.['h']).toBe(2);
    }
    expect((await coll.deleteOne({ h: 2 }, { hint: 'by_h' })).deletedCount).toBe(1);
    // globex has no index of that name: its hint is the server's BadValue, nothing of acme's shown.
    const unknown = await globex
      .db(dbName)
      .collection('hinted')
      .find({})
      .hint('by_h')
      .toArray()
      .catch((error: unknown) => error);
    expect((unknown as MongoServerError).code).toBe(2);
    expect((unknown as MongoServerError).message).toMatch(/hint\.unknown-index/);
  });

  it("explain at every verbosity shows the tenant's own index names, never the physical ones or another tenant's", async () => {
    const unique = upstreamFeatures().partialIndexes;
    for (const [tenant, client] of [
      ['acme', acme],
      ['globex', globex],
    ] as const) {
      const coll = client.db(dbName).collection<{ _id: string; [key: string]: unknown }>('explained');
      await coll.insertMany([1, 2, 3].map((n) => ({ _id: `${tenant}${n}`, sku: `s${n}`, code: `${tenant}${n}` })));
      // The same key for both: one shared physical index under two tenants' names.
      await coll.createIndex({ sku: 1 }, { name: `${tenant}_sku` });
      // A per-tenant (partial) index where the upstream builds them.
      if (unique) await coll.createIndex({ code: 1 }, { name: `${tenant}_code`, unique: true });
    }
    const physical = (await physicalIndexes('explained'))
      .map((index) => String(index.name))
      .filter((name) => name.startsWith('mtp_'));
    expect(physical).toHaveLength(unique ? 3 : 1);
    // Read directly: does this upstream name the index in its explain at all?
    const shared = physical.find((name) => name.startsWith('mtp_s_'))!;
    // (Its echo of the command names the hint, so that is left out.)
    const { command: _echo, ...directPlan } = await direct
      .db(dbName)
      .collection('explained')
      .find({ tenantId: 'acme', sku: 's1' })
      .hint(shared)
      .explain('executionStats');
    const named = JSON.stringify(directPlan).includes(shared);
    for (const verbosity of ['queryPlanner', 'executionStats', 'allPlansExecution'] as const) {
      const coll = acme.db(dbName).collection('explained');
      const plans = [
        JSON.stringify(await coll.find({ sku: 's1' }).hint('acme_sku').explain(verbosity)),
        JSON.stringify(await coll.find({ sku: 's1' }).hint({ sku: 1 }).explain(verbosity)),
        JSON.stringify(await coll.aggregate([{ $match: { sku: 's2' } }], { hint: 'acme_sku' }).explain(verbosity)),
      ];
      if (unique) plans.push(JSON.stringify(await coll.find({ code: 'acme1' }).explain(verbosity)));
      for (const plan of plans) {
        expect(plan, verbosity).not.toMatch(/mtp_[st]_/);
        expect(plan, verbosity).not.toContain('globex');
      }
      if (named) expect(plans[0], verbosity).toContain('"acme_sku"');
    }
    // globex sees the same physical index under its own name.
    const globexPlan = JSON.stringify(
      await globex.db(dbName).collection('explained').find({ sku: 's1' }).hint('globex_sku').explain('executionStats'),
    );
    expect(globexPlan).not.toMatch(/mtp_[st]_|acme/);
    if (named) expect(globexPlan).toContain('"globex_sku"');
  });

  it.skipIf(lacks('lookup', 'FerretDB v1 has no $lookup to explain'))(
    "explain of $lookup / $unionWith (nested too): the other collection's indexes show under the tenant's own names, another tenant's stay redacted",
    async () => {
      type Doc = { _id: string; [key: string]: unknown };
      // Enough documents that the upstream's planner prefers the index on the looked-up collection.
      const rows = (tenant: string, n: number) =>
        Array.from({ length: n }, (_, i) => ({ _id: `${tenant}-${i}`, tenantId: tenant, sku: `s${i}`, secret: i }));
      await direct
        .db(dbName)
        .collection<Doc>('lkItems')
        .insertMany([...rows('acme', 3000), ...rows('globex', 3000)]);
      await direct.db(dbName).collection<Doc>('lkGlobexOnly').insertMany(rows('globex', 3000));
      await acme
        .db(dbName)
        .collection<Doc>('lkOrders')
        .insertMany([1, 2].map((n) => ({ _id: `o${n}`, sku: `s${n}` })));
      await globex
        .db(dbName)
        .collection<Doc>('lkOrders')
        .insertMany([1, 2].map((n) => ({ _id: `g${n}`, sku: `s${n}` })));
      // One shared physical index under each tenant's name; one only globex has (also on a collection acme owns nothing in).
      await acme.db(dbName).collection('lkItems').createIndex({ sku: 1 }, { name: 'acme_item_sku' });
      await globex.db(dbName).collection('lkItems').createIndex({ sku: 1 }, { name: 'globex_item_sku' });
      await globex.db(dbName).collection('lkItems').createIndex({ secret: 1 }, { name: 'globex_secret' });
      await globex.db(dbName).collection('lkGlobexOnly').createIndex({ sku: 1 }, { name: 'globex_only_sku' });
      const lookup = (from: string) => ({ $lookup: { from, localField: 'sku', foreignField: 'sku', as: 'j' } });
      const pipelines = (from: string): Document[][] => [
        [lookup(from)],
        [{ $lookup: { from, let: { s: '$sku' }, pipeline: [{ $match: { sku: 's1' } }], as: 'j' } }],
        [{ $unionWith: { coll: from, pipeline: [{ $match: { sku: 's1' } }] } }],
        // Nested: a $lookup inside a $unionWith's pipeline.
        [{ $unionWith: { coll: 'lkOrders', pipeline: [lookup(from)] } }],
      ];
      const physical = (await physicalIndexes('lkItems')).map((index) => String(index.name));
      const shared = physical.find((name) => name.startsWith('mtp_s_'))!;
      // Read directly: does this upstream name the looked-up collection's index in its explain at all?
      const directPlans = await Promise.all(
        pipelines('lkItems').map((pipeline) =>
          direct.db(dbName).command({
            explain: { aggregate: 'lkOrders', pipeline: tenantPipeline(pipeline, 'acme'), cursor: {} },
            verbosity: 'queryPlanner',
          }),
        ),
      );
      const named = directPlans.some((plan) => JSON.stringify(plan).includes(shared));
      for (const verbosity of ['queryPlanner', 'executionStats'] as const) {
        for (const [tenant, client, own, other] of [
          ['acme', acme, 'acme_item_sku', 'globex'],
          ['globex', globex, 'globex_item_sku', 'acme'],
        ] as const) {
          const plans = await Promise.all(
            pipelines('lkItems').map(async (pipeline) =>
              JSON.stringify(await client.db(dbName).collection('lkOrders').aggregate(pipeline).explain(verbosity)),
            ),
          );
          for (const plan of plans) {
            expect(plan, `${tenant} ${verbosity}`).not.toMatch(/mtp_[st]_/);
            expect(plan, `${tenant} ${verbosity}`).not.toContain(`${other}_`);
          }
          if (named) expect(plans.join('\n'), `${tenant} ${verbosity}`).toContain(`"${own}"`);
        }
        // A collection acme owns no index in: globex's index there stays redacted for acme.
        const foreign = await Promise.all(
          pipelines('lkGlobexOnly').map(async (pipeline) =>
            JSON.stringify(await acme.db(dbName).collection('lkOrders').aggregate(pipeline).explain(verbosity)),
          ),
        );
        for (const plan of foreign) expect(plan).not.toMatch(/mtp_[st]_|globex/);
      }
      if (!named) console.info(`explain of $lookup on ${dbName}: this upstream names no looked-up index`);
    },
  );

  it('the catalogue database is not reachable through the proxy', async () => {
    const err = await acme
      .db(CATALOGUE)
      .collection('indexes')
      .find()
      .toArray()
      .catch((error: unknown) => error);
    expect((err as MongoServerError).message).toMatch(/namespace\.catalogue/);
  });
});

/** The pipeline as the proxy sends it for `tenant` (each read collection filtered by the tenant field). */
function tenantPipeline(pipeline: Document[], tenant: string): Document[] {
  const match = { $match: { tenantId: tenant } };
  return [
    match,
    ...pipeline.map((stage): Document => {
      const [name, spec] = Object.entries(stage)[0]! as [string, Document];
      if (name === '$lookup' && spec['pipeline'] === undefined)
        return {
          $lookup: {
            from: spec['from'],
            let: { s: '$sku' },
            pipeline: [match, { $match: { $expr: { $eq: ['$sku', '$$s'] } } }],
            as: spec['as'],
          },
        };
      if (name === '$lookup' || name === '$unionWith')
        return { [name]: { ...spec, pipeline: tenantPipeline(spec['pipeline'] as Document[], tenant) } };
      return stage;
    }),
  ];
}
