/**
 * Issue 13: the ownership catalogue is the same for every proxy replica. Two proxies on the same
 * upstream and catalogue race createIndexes for the same tenants; the per-tenant budget and the
 * collection's reserve must hold across them (slots taken by inserts with unique ids in the
 * catalogue, src/tenancy/catalogue.ts). Counted directly upstream: physical indexes, catalogue
 * records and slots.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoServerError, type MongoClient } from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName, upstreamFeatures } from '../helpers/upstream.js';

const CATALOGUE = uniqueDbName('mtpcatr');
const dbName = uniqueDbName('ten13r');
const TENANTS = ['acme', 'globex', 'initech', 'umbrella'];
const BUDGET = 4;
const MAX = 10;
const RESERVE = 2;

let replicas: TenantProxy[];
let direct: MongoClient;

beforeAll(async () => {
  direct = directClient();
  const settings = {
    isolation: {
      tenancy: {
        catalogueDatabase: CATALOGUE,
        indexesPerTenant: BUDGET,
        indexReserve: RESERVE,
        maxIndexesPerCollection: MAX,
      },
    },
  };
  replicas = [await startTenantProxy(TENANTS, settings), await startTenantProxy(TENANTS, settings)];
});

afterAll(async () => {
  await Promise.allSettled((replicas ?? []).map((replica) => replica.stop()));
  await direct?.db(dbName).dropDatabase();
  await direct?.db(CATALOGUE).dropDatabase();
  await direct?.close();
});

/** Unique indexes where the upstream builds per-tenant partial ones, so both mechanisms race. */
const unique = (index: number): boolean => upstreamFeatures().partialIndexes && index % 2 === 1;

/** Every createIndex of `jobs` at once, through the replica each job names; fulfilled names and refusals. */
async function race(
  coll: string,
  jobs: { replica: number; tenant: string; field: string; unique: boolean }[],
): Promise<{ created: string[]; refused: MongoServerError[] }> {
  const results = await Promise.allSettled(
    jobs.map((job) =>
      replicas[job.replica]!.clientFor(job.tenant)
        .db(dbName)
        .collection(coll)
        .createIndex({ [job.field]: 1 }, { name: `${job.tenant}_${job.field}`, unique: job.unique }),
    ),
  );
  const created: string[] = [];
  const refused: MongoServerError[] = [];
  for (const result of results) {
    if (result.status === 'fulfilled') created.push(result.value);
    else refused.push(result.reason as MongoServerError);
  }
  return { created, refused };
}

const physical = async (coll: string): Promise<string[]> =>
  (await direct.db(dbName).collection(coll).listIndexes().toArray()).map((index) => String(index.name));

describe('issue 13: the index budget and the reserve hold across proxy replicas', () => {
  it('one tenant racing 12 createIndexes through two replicas gets exactly its budget, no more', async () => {
    const jobs = Array.from({ length: 12 }, (_, index) => ({
      replica: index % 2,
      tenant: 'acme',
      field: `f${index}`,
      unique: unique(index),
    }));
    const { created, refused } = await race('budget', jobs);
    expect(created).toHaveLength(BUDGET);
    expect(refused).toHaveLength(12 - BUDGET);
    for (const error of refused) {
      expect(`${error.code} ${error.message}`).toMatch(/^67 /);
      expect(error.message).toMatch(/tenancy\.index-budget/);
    }
    // Read directly: the physical indexes, the catalogue's records and slots agree.
    expect((await physical('budget')).filter((name) => name !== '_id_')).toHaveLength(BUDGET);
    const records = await direct.db(CATALOGUE).collection('indexes').find({ db: dbName, coll: 'budget' }).toArray();
    expect(records.flatMap((record) => record['owners'] as unknown[])).toHaveLength(BUDGET);
    expect(
      await direct
        .db(CATALOGUE)
        .collection('slots')
        .countDocuments({ scope: { $regex: 'budget' } }),
    ).toBe(
      2 * BUDGET, // BUDGET tenant slots and BUDGET physical slots
    );
    // Both replicas list the same indexes for acme.
    const listed = await Promise.all(
      replicas.map(async (replica) =>
        (await replica.clientFor('acme').db(dbName).collection('budget').listIndexes().toArray())
          .map((index) => String(index.name))
          .sort(),
      ),
    );
    expect(listed[0]).toEqual(listed[1]);
    expect(listed[0]!.sort()).toEqual(['_id_', ...created].sort());
  });

  it('four tenants racing 16 createIndexes through two replicas never take the reserve; drops give the room back', async () => {
    const jobs = TENANTS.flatMap((tenant, t) =>
      Array.from({ length: BUDGET }, (_, index) => ({
        replica: (t + index) % 2,
        tenant,
        field: `${tenant}_g${index}`,
        unique: unique(index + t),
      })),
    );
    const room = MAX - RESERVE;
    const { created, refused } = await race('room', jobs);
    // Non-unique indexes with the same key are shared by tenants: count physical indexes, not names.
    const names = await physical('room');
    expect(names.length).toBeLessThanOrEqual(room);
    for (const error of refused) {
      expect(error.code).toBe(67);
      expect(error.message).toMatch(/tenancy\.index-reserve/);
    }
    expect(created.length + refused.length).toBe(jobs.length);
    expect(refused.length).toBeGreaterThan(0);
    expect(names).toHaveLength(room); // the room is used up exactly
    expect(
      await direct
        .db(CATALOGUE)
        .collection('slots')
        .countDocuments({ scope: JSON.stringify(['p', dbName, 'room']) }),
    ).toBe(room - 1); // every physical index but _id_ holds a slot

    // Every tenant drops its indexes through the replica it did not use: the room comes back whole.
    await Promise.all(
      TENANTS.map((tenant, t) =>
        replicas[(t + 1) % 2]!.clientFor(tenant).db(dbName).command({ dropIndexes: 'room', index: '*' }),
      ),
    );
    expect(await physical('room')).toEqual(['_id_']);
    expect(
      await direct
        .db(CATALOGUE)
        .collection('slots')
        .countDocuments({ scope: { $regex: '"room"' } }),
    ).toBe(0);
    const again = await race(
      'room',
      Array.from({ length: room - 1 }, (_, index) => ({
        replica: index % 2,
        tenant: TENANTS[index % TENANTS.length]!,
        field: `h${index}`,
        unique: false,
      })),
    );
    expect(again.refused).toEqual([]);
    expect(await physical('room')).toHaveLength(room);
  });

  describe('a limit lowered later (hot reload, or replicas started with a lower one): what is held stays, nothing new beyond the new limit', () => {
    // Replicas configured lower than the two above: budget 3 instead of 4, room for 4 proxy-built
    // indexes instead of 7 (maxIndexesPerCollection 7 - reserve 2 - _id_).
    const LOW = { budget: 3, max: 7 };
    let low: TenantProxy[] = [];
    const create = (proxy: TenantProxy, tenant: string, coll: string, field: string) =>
      proxy
        .clientFor(tenant)
        .db(dbName)
        .collection(coll)
        .createIndex({ [field]: 1 }, { name: field });
    const refusal = (promise: Promise<unknown>) => promise.then(() => undefined).catch((error: unknown) => error);
    const slotCount = (scope: unknown[]) =>
      direct
        .db(CATALOGUE)
        .collection('slots')
        .countDocuments({ scope: JSON.stringify(scope) });

    beforeAll(async () => {
      const settings = {
        isolation: {
          tenancy: {
            catalogueDatabase: CATALOGUE,
            indexesPerTenant: LOW.budget,
            indexReserve: RESERVE,
            maxIndexesPerCollection: LOW.max,
          },
        },
      };
      low = [await startTenantProxy(TENANTS, settings), await startTenantProxy(TENANTS, settings)];
    });
    afterAll(async () => {
      await Promise.allSettled(low.map((replica) => replica.stop()));
    });

    it('the reserve: slots numbered above the lowered room stay taken; a new index waits until fewer than the room are held', async () => {
      // Through a replica with the larger room: acme and globex take slots 0..6 in order.
      for (const field of ['a0', 'a1', 'a2', 'a3']) await create(replicas[0]!, 'acme', 'lowroom', field);
      for (const field of ['g0', 'g1', 'g2']) await create(replicas[0]!, 'globex', 'lowroom', field);
      // acme drops its first three: slots 0..2 are free, 3..6 held, four indexes: the lower room is full.
      for (const field of ['a0', 'a1', 'a2'])
        await replicas[0]!.clientFor('acme').db(dbName).collection('lowroom').dropIndex(field);
      expect(await slotCount(['p', dbName, 'lowroom'])).toBe(4);
      const refused = await refusal(create(low[0]!, 'initech', 'lowroom', 'i0'));
      expect(refused).toBeInstanceOf(MongoServerError);
      expect((refused as MongoServerError).code).toBe(67);
      expect((refused as MongoServerError).message).toMatch(/tenancy\.index-reserve/);
      expect(await physical('lowroom')).toHaveLength(5); // _id_ and the four held
      // What is held stays: every index is still there and listed to its owner through the lower replica.
      const listed = await low[1]!.clientFor('globex').db(dbName).collection('lowroom').listIndexes().toArray();
      expect(listed.map((index) => String(index.name)).sort()).toEqual(['_id_', 'g0', 'g1', 'g2']);
      // Re-creating an index the tenant has is still a no-op success.
      expect(await create(low[0]!, 'globex', 'lowroom', 'g0')).toBe('g0');
      // globex drops one: three held, one new index fits, then the lower room is full again.
      await low[1]!.clientFor('globex').db(dbName).collection('lowroom').dropIndex('g0');
      expect(await create(low[0]!, 'initech', 'lowroom', 'i0')).toBe('i0');
      const again = await refusal(create(low[1]!, 'initech', 'lowroom', 'i1'));
      expect((again as MongoServerError).message).toMatch(/tenancy\.index-reserve/);
      expect(await slotCount(['p', dbName, 'lowroom'])).toBe(4);
    });

    it('the budget: a tenant holding slots above its lowered budget gets only what is left of it, even racing two replicas', async () => {
      // Budget 4 (slots 0..3), then 0 and 1 dropped: two held, numbered 2 and 3.
      for (const field of ['u0', 'u1', 'u2', 'u3']) await create(replicas[0]!, 'umbrella', 'lowbudget', field);
      for (const field of ['u0', 'u1'])
        await replicas[1]!.clientFor('umbrella').db(dbName).collection('lowbudget').dropIndex(field);
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, (_, index) => create(low[index % 2]!, 'umbrella', 'lowbudget', `n${index}`)),
      );
      const created = results.filter((result) => result.status === 'fulfilled');
      expect(created).toHaveLength(LOW.budget - 2);
      for (const result of results)
        if (result.status === 'rejected') expect(String(result.reason)).toMatch(/tenancy\.index-budget/);
      expect(await slotCount(['t', dbName, 'lowbudget', 'umbrella'])).toBe(LOW.budget);
      const listed = await low[0]!.clientFor('umbrella').db(dbName).collection('lowbudget').listIndexes().toArray();
      expect(listed).toHaveLength(1 + LOW.budget);
      // Through a replica still configured with the larger budget, the tenant may take its fourth.
      expect(await create(replicas[0]!, 'umbrella', 'lowbudget', 'later')).toBe('later');
    });
  });
});
