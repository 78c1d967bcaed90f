/**
 * The isolation models end to end (issue 4, "Isolation models"): shared collection + tenant
 * field (the default), database per tenant and collection prefix per tenant; namespace rules
 * (`shared-readonly`, `denied`); tenant value types (string, objectId, uuid, int64) and a custom
 * tenant field; audit-only mode. Every test writes through the proxy as two tenants and then
 * reads the upstream DIRECTLY to prove where the data landed and that it never mixed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Binary, ObjectId } from 'bson';
import type { MongoClient } from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';
import { scrape } from '../helpers/metrics.js';
import { opMsg } from '../helpers/raw-client.js';

const T = 'acme';
const B = 'globex';

let direct: MongoClient;
const cleanup: string[] = [];

beforeAll(() => {
  direct = directClient();
});

afterAll(async () => {
  for (const db of cleanup)
    await direct
      ?.db(db)
      .dropDatabase()
      .catch(() => undefined);
  await direct?.close();
});

/** Starts a proxy for `tenants`, runs `body`, stops it. */
async function withProxy(
  tenants: readonly string[],
  overrides: Parameters<typeof startTenantProxy>[1],
  body: (tp: TenantProxy) => Promise<void>,
): Promise<void> {
  const tp = await startTenantProxy(tenants, overrides);
  try {
    await body(tp);
  } finally {
    await tp.stop();
  }
}

/** Both tenants write the same client namespace; each reads back exactly its own documents. */
async function writeBoth(tp: TenantProxy, db: string, tenants: readonly [string, string] = [T, B]): Promise<void> {
  for (const tenant of tenants) {
    const coll = tp.clientFor(tenant).db(db).collection('orders');
    await coll.insertMany([
      { _id: `${tenant}-1` as never, who: tenant, n: 1 },
      { _id: `${tenant}-2` as never, who: tenant, n: 2 },
    ]);
    await coll.updateMany({}, { $inc: { n: 10 } });
    await coll.deleteOne({ n: 12 });
  }
  for (const tenant of tenants) {
    const coll = tp.clientFor(tenant).db(db).collection('orders');
    const seen = await coll.find({}, { projection: { _id: 1, who: 1, n: 1 } }).toArray();
    expect(seen, tenant).toEqual([{ _id: `${tenant}-1`, who: tenant, n: 11 }]);
    expect(await coll.countDocuments(), tenant).toBe(1);
    const other = tenants.find((t) => t !== tenant)!;
    expect(await coll.find({ who: other }).toArray(), tenant).toEqual([]);
  }
}

async function physicalCollections(db: string): Promise<string[]> {
  return (await direct.db(db).listCollections().toArray()).map((c) => c.name).sort();
}

async function databaseNames(): Promise<string[]> {
  return (await direct.db('admin').admin().listDatabases({ nameOnly: true })).databases.map((d) => d.name);
}

// ---------------------------------------------------------------------------------------------

describe('the three models', () => {
  it('shared-collection (default): both tenants land in ONE physical collection, every document stamped, never mixed', async () => {
    const db = uniqueDbName('model_shared');
    cleanup.push(db);
    await withProxy([T, B], {}, async (tp) => {
      await writeBoth(tp, db);
      expect(await physicalCollections(db)).toEqual(['orders']);
      const stored = await direct.db(db).collection('orders').find().sort({ _id: 1 }).toArray();
      expect(stored).toEqual([
        { _id: 'acme-1', tenantId: T, who: T, n: 11 },
        { _id: 'globex-1', tenantId: B, who: B, n: 11 },
      ]);
      // A tenant naming the other's value in a filter or a document gets nothing / a refusal.
      const acme = tp.clientFor(T).db(db).collection('orders');
      expect(await acme.find({ tenantId: B }).toArray()).toEqual([]);
      await expect(acme.insertOne({ tenantId: B, who: 'forged' })).rejects.toThrow();
      expect(await direct.db(db).collection('orders').countDocuments({ who: 'forged' })).toBe(0);
    });
  });

  it("database-per-tenant: each tenant's data lands in its own physical database; the client's database does not exist upstream", async () => {
    const db = `mdb${Math.random().toString(36).slice(2, 8)}`;
    cleanup.push(db, `${T}_${db}`, `${B}_${db}`);
    await withProxy([T, B], { isolation: { defaultModel: 'database-per-tenant' } }, async (tp) => {
      await writeBoth(tp, db);
      const names = await databaseNames();
      expect(names).toContain(`${T}_${db}`);
      expect(names).toContain(`${B}_${db}`);
      expect(names).not.toContain(db);
      expect(await direct.db(`${T}_${db}`).collection('orders').find().toArray()).toEqual([
        { _id: 'acme-1', who: T, n: 11 },
      ]);
      expect(await direct.db(`${B}_${db}`).collection('orders').find().toArray()).toEqual([
        { _id: 'globex-1', who: B, n: 11 },
      ]);
      // The client sees its own names only.
      const acme = tp.clientFor(T).db(db);
      expect((await acme.listCollections().toArray()).map((c) => c.name)).toEqual(['orders']);
      // DDL is the tenant's own business here: dropping touches only T's database.
      await acme.collection('orders').drop();
      expect(await physicalCollections(`${T}_${db}`)).toEqual([]);
      expect(await direct.db(`${B}_${db}`).collection('orders').countDocuments()).toBe(1);
    });
  });

  it("collection-prefix: each tenant's data lands in its own physical collection of the client's database", async () => {
    const db = uniqueDbName('model_prefix');
    cleanup.push(db);
    await withProxy([T, B], { isolation: { defaultModel: 'collection-prefix' } }, async (tp) => {
      await writeBoth(tp, db);
      expect(await physicalCollections(db)).toEqual([`${T}.orders`, `${B}.orders`].sort());
      expect(await direct.db(db).collection(`${T}.orders`).find().toArray()).toEqual([
        { _id: 'acme-1', who: T, n: 11 },
      ]);
      expect(await direct.db(db).collection(`${B}.orders`).find().toArray()).toEqual([
        { _id: 'globex-1', who: B, n: 11 },
      ]);
      // Naming the other tenant's physical collection does not reach it; names are the client's.
      const c = await tp.rawFor(T);
      const listed = await c.command(opMsg({ listCollections: 1, $db: db }));
      expect(listed.cursor.firstBatch.map((entry: { name: string }) => entry.name)).toEqual(['orders']);
      const stolen = await c.command(opMsg({ find: `${B}.orders`, filter: {}, $db: db }));
      expect(JSON.stringify(stolen)).not.toContain('globex-1');
      const found = await c.command(opMsg({ find: 'orders', filter: {}, $db: db }));
      expect(found.cursor.ns).toBe(`${db}.orders`);
      c.close();
      expect(await direct.db(db).collection(`${B}.orders`).countDocuments()).toBe(1);
    });
  });
});

describe('collection-prefix with the driver', () => {
  it("listCollections through the driver (which always sends filter: {}) lists the tenant's collections by their client names", async () => {
    const db = uniqueDbName('model_prefix_list');
    cleanup.push(db);
    await withProxy([T, B], { isolation: { defaultModel: 'collection-prefix' } }, async (tp) => {
      await tp.clientFor(T).db(db).collection('orders').insertOne({ who: T });
      await tp.clientFor(B).db(db).collection('invoices').insertOne({ who: B });
      // An empty filter is no filter at all; refusing it breaks `show collections` and every driver.
      expect((await tp.clientFor(T).db(db).listCollections().toArray()).map((c) => c.name)).toEqual(['orders']);
      expect((await tp.clientFor(T).db(db).listCollections({ name: 'orders' }).toArray()).map((c) => c.name)).toEqual([
        'orders',
      ]);
      expect(await tp.clientFor(T).db(db).listCollections({ name: 'invoices' }).toArray()).toEqual([]);
    });
  });
});

describe('namespace rules', () => {
  it('shared-readonly: every tenant reads the reference data unfiltered; every write is refused and nothing changes', async () => {
    const app = uniqueDbName('rules_app');
    const ref = uniqueDbName('rules_ref');
    cleanup.push(app, ref);
    await direct
      .db(ref)
      .collection('countries')
      .insertMany([
        { _id: 'fr' as never, name: 'France' },
        { _id: 'de' as never, name: 'Germany' },
      ]);
    const namespaces = [{ match: `${ref}.*`, access: 'shared-readonly' as const }];
    await withProxy([T, B], { isolation: { namespaces } }, async (tp) => {
      for (const tenant of [T, B]) {
        const countries = tp.clientFor(tenant).db(ref).collection('countries');
        expect(await countries.find().sort({ _id: 1 }).toArray()).toEqual([
          { _id: 'de', name: 'Germany' },
          { _id: 'fr', name: 'France' },
        ]);
        expect(await countries.countDocuments()).toBe(2);
        await expect(countries.insertOne({ _id: `${tenant}` as never })).rejects.toThrow(/read-only|refused/);
        await expect(countries.updateMany({}, { $set: { name: 'x' } })).rejects.toThrow(/read-only|refused/);
        await expect(countries.deleteMany({})).rejects.toThrow(/read-only|refused/);
        await expect(countries.drop()).rejects.toThrow(/read-only|refused/);
        await expect(countries.createIndex({ name: 1 })).rejects.toThrow(/read-only|refused/);
        await expect(countries.findOneAndUpdate({ _id: 'fr' as never }, { $set: { name: 'x' } })).rejects.toThrow(
          /read-only|refused/,
        );
        // A pipeline writing into it is refused as well.
        await expect(
          tp
            .clientFor(tenant)
            .db(app)
            .collection('x')
            .aggregate([{ $match: {} }, { $out: { db: ref, coll: 'countries' } }])
            .toArray(),
        ).rejects.toThrow();
      }
      // Other namespaces stay scoped.
      await writeBoth(tp, app);
    });
    expect(await direct.db(ref).collection('countries').find().sort({ _id: 1 }).toArray()).toEqual([
      { _id: 'de', name: 'Germany' },
      { _id: 'fr', name: 'France' },
    ]);
    expect(await physicalCollections(ref)).toEqual(['countries']);
  });

  it('denied: every command on the namespace is refused, reads included; nothing is written', async () => {
    const app = uniqueDbName('rules_denied');
    cleanup.push(app);
    await direct
      .db(app)
      .collection('secrets')
      .insertOne({ _id: 's' as never, tenantId: T, value: 'hidden' });
    const namespaces = [{ match: `${app}.secrets`, access: 'denied' as const }];
    await withProxy([T, B], { isolation: { namespaces } }, async (tp) => {
      const secrets = tp.clientFor(T).db(app).collection('secrets');
      await expect(secrets.find().toArray()).rejects.toThrow(/denied/);
      await expect(secrets.countDocuments()).rejects.toThrow(/denied/);
      await expect(secrets.insertOne({ value: 'x' })).rejects.toThrow(/denied/);
      await expect(secrets.deleteMany({})).rejects.toThrow(/denied/);
      await expect(
        tp
          .clientFor(T)
          .db(app)
          .collection('orders')
          .aggregate([{ $lookup: { from: 'secrets', pipeline: [], as: 's' } }])
          .toArray(),
      ).rejects.toThrow(/denied/);
      await expect(
        tp
          .clientFor(T)
          .db(app)
          .collection('orders')
          .aggregate([{ $unionWith: { coll: 'secrets' } }])
          .toArray(),
      ).rejects.toThrow(/denied/);
      const names = (await tp.clientFor(T).db(app).listCollections().toArray()).map((c) => c.name);
      expect(names).not.toContain('secrets');
      // The rest of the database is scoped as usual.
      await writeBoth(tp, app);
    });
    expect(await direct.db(app).collection('secrets').find().toArray()).toEqual([
      { _id: 's', tenantId: T, value: 'hidden' },
    ]);
  });
});

describe('tenant value types and field', () => {
  it('objectId: tenants stored as ObjectIds; a tenant that is not 24 hex digits gets a clear error on every command', async () => {
    const db = uniqueDbName('type_oid');
    cleanup.push(db);
    const t1 = '65a1b2c3d4e5f60718293a4b';
    const t2 = '65a1b2c3d4e5f60718293a4c';
    await withProxy([t1, t2, 'acme'], { isolation: { tenantValueType: 'objectId' } }, async (tp) => {
      await writeBoth(tp, db, [t1, t2]);
      const stored = await direct.db(db).collection('orders').find().sort({ _id: 1 }).toArray();
      expect(stored.map((d) => d.tenantId)).toEqual([new ObjectId(t1), new ObjectId(t2)]);
      // The string spelling of the other tenant is not the tenant.
      expect(await tp.clientFor(t1).db(db).collection('orders').find({ tenantId: t2 }).toArray()).toEqual([]);
      await expect(
        tp
          .clientFor(t1)
          .db(db)
          .collection('orders')
          .insertOne({ tenantId: new ObjectId(t2) }),
      ).rejects.toThrow();
      // "acme" is not representable: every command fails clearly, nothing is written.
      const bad = await tp.rawFor('acme');
      for (const command of [
        { find: 'orders', filter: {}, $db: db },
        { insert: 'orders', documents: [{ who: 'acme' }], $db: db },
        { count: 'orders', $db: db },
        { aggregate: 'orders', pipeline: [], cursor: {}, $db: db },
        { listCollections: 1, $db: db },
      ]) {
        const reply = await bad.command(opMsg(command));
        expect(reply.ok, Object.keys(command)[0]).toBe(0);
        expect(reply.errmsg).toMatch(/objectId|represent/i);
      }
      bad.close();
      expect(await direct.db(db).collection('orders').countDocuments({ who: 'acme' })).toBe(0);
    });
  });

  it('uuid: tenants stored as UUIDs (binary subtype 4)', async () => {
    const db = uniqueDbName('type_uuid');
    cleanup.push(db);
    const t1 = '0e7c8a4e-5b0a-4a4c-9a43-0e1e2f3a4b5c';
    const t2 = '5f0c1d2e-3a4b-4c5d-8e6f-708192a3b4c5';
    await withProxy([t1, t2, 'not-a-uuid'], { isolation: { tenantValueType: 'uuid' } }, async (tp) => {
      await writeBoth(tp, db, [t1, t2]);
      const stored = await direct.db(db).collection('orders').find().sort({ who: 1 }).toArray();
      expect(stored.map((d) => (d.tenantId as Binary).sub_type)).toEqual([4, 4]);
      expect(stored.map((d) => (d.tenantId as Binary).toUUID().toHexString())).toEqual([t1, t2]);
      const bad = await tp.rawFor('not-a-uuid');
      const reply = await bad.command(opMsg({ find: 'orders', filter: {}, $db: db }));
      bad.close();
      expect(reply.ok).toBe(0);
      expect(reply.errmsg).toMatch(/uuid|represent/i);
    });
  });

  it('int64: tenants stored as 64-bit integers', async () => {
    const db = uniqueDbName('type_long');
    cleanup.push(db);
    await withProxy(['42', '9000000000', 'x42'], { isolation: { tenantValueType: 'int64' } }, async (tp) => {
      await writeBoth(tp, db, ['42', '9000000000']);
      const stored = await direct.db(db).collection('orders').find().sort({ who: 1 }).toArray();
      expect(stored.map((d) => String(d.tenantId))).toEqual(['42', '9000000000']);
      const raw = await direct
        .db(db)
        .collection('orders')
        .find({ tenantId: { $type: 'long' } })
        .toArray();
      expect(raw).toHaveLength(2);
      const bad = await tp.rawFor('x42');
      const reply = await bad.command(opMsg({ insert: 'orders', documents: [{ who: 'x42' }], $db: db }));
      bad.close();
      expect(reply.ok).toBe(0);
      expect(reply.errmsg).toMatch(/int64|represent/i);
      expect(await direct.db(db).collection('orders').countDocuments({ who: 'x42' })).toBe(0);
    });
  });

  // Two DIFFERENT tenant ids must never be encoded as the same BSON value, or they share data
  // (G8: the tenant value is the only thing separating them in a shared collection).
  it.each([
    ['int64 with a leading zero', 'int64', '42', '042'],
    ['int64 beyond 2^63-1 wrapping around', 'int64', '-9223372036854775808', '9223372036854775808'],
    ['int64 "-0" and "0"', 'int64', '0', '-0'],
    ['objectId in upper case', 'objectId', '65a1b2c3d4e5f60718293a4b', '65A1B2C3D4E5F60718293A4B'],
    ['uuid without hyphens', 'uuid', '0e7c8a4e-5b0a-4a4c-9a43-0e1e2f3a4b5c', '0e7c8a4e5b0a4a4c9a430e1e2f3a4b5c'],
  ] as const)('tenant ids are encoded injectively: %s', async (_label, type, owner, lookalike) => {
    const db = uniqueDbName('type_inj');
    cleanup.push(db);
    await withProxy([owner, lookalike], { isolation: { tenantValueType: type } }, async (tp) => {
      await tp
        .clientFor(owner)
        .db(db)
        .collection('orders')
        .insertOne({ _id: 'owned' as never, secret: 'owner-only' });
      const c = await tp.rawFor(lookalike);
      const read = await c.command(opMsg({ find: 'orders', filter: {}, $db: db }));
      const write = await c.command(
        opMsg({ update: 'orders', updates: [{ q: {}, u: { $set: { secret: 'overwritten' } }, multi: true }], $db: db }),
      );
      c.close();
      // The look-alike is refused (not representable canonically) or sees and changes nothing.
      expect(JSON.stringify(read)).not.toContain('owner-only');
      if (write.ok === 1) expect(write.n).toBe(0);
      expect(
        await direct
          .db(db)
          .collection('orders')
          .findOne({ _id: 'owned' as never }),
      ).toMatchObject({ secret: 'owner-only' });
    });
  });

  it('a custom tenantField (organization_id): stamped, filtered, and a forged value refused', async () => {
    const db = uniqueDbName('field_org');
    cleanup.push(db);
    await withProxy([T, B], { isolation: { tenantField: 'organization_id' } }, async (tp) => {
      await writeBoth(tp, db);
      const stored = await direct.db(db).collection('orders').find().sort({ _id: 1 }).toArray();
      expect(stored).toEqual([
        { _id: 'acme-1', organization_id: T, who: T, n: 11 },
        { _id: 'globex-1', organization_id: B, who: B, n: 11 },
      ]);
      const acme = tp.clientFor(T).db(db).collection('orders');
      await expect(acme.insertOne({ organization_id: B, who: 'forged' })).rejects.toThrow();
      await expect(acme.updateMany({}, { $set: { organization_id: B } })).rejects.toThrow();
      expect(await acme.find({ organization_id: B }).toArray()).toEqual([]);
      // `tenantId` is an ordinary field now: it neither selects nor protects anything.
      await acme.insertOne({ _id: 'plain' as never, tenantId: B });
      expect(
        await direct
          .db(db)
          .collection('orders')
          .findOne({ _id: 'plain' as never }),
      ).toEqual({ _id: 'plain', organization_id: T, tenantId: B });
      expect(
        await tp
          .clientFor(B)
          .db(db)
          .collection('orders')
          .findOne({ _id: 'plain' as never }),
      ).toBeNull();
      expect(await direct.db(db).collection('orders').countDocuments({ who: 'forged' })).toBe(0);
    });
  });
});

describe('audit-only mode', () => {
  it('forwards what enforcement would refuse, counts it as would-refuse, and sets the audit-only gauge', async () => {
    const db = uniqueDbName('audit_only');
    cleanup.push(db);
    await direct
      .db(db)
      .collection('orders')
      .insertOne({ _id: 'b' as never, tenantId: B });
    await withProxy([T, B], { isolation: { mode: 'audit-only' } }, async (tp) => {
      const before = await scrape(tp.proxy.proxy);
      expect(before).toMatch(/^mongo_tenant_proxy_isolation_audit_only 1$/m);
      const c = await tp.rawFor(T);
      // Refused under enforcement (statistics of the shared server), forwarded here. (dbStats and
      // collStats of shared collections are computed per tenant now: issue 13.)
      const stats = await c.command(opMsg({ dataSize: `${db}.orders`, $db: db }));
      // DocumentDB has no dataSize: its own refusal (CommandNotSupported 115, not the proxy's
      // Unauthorized) proves the command reached it.
      if (stats.ok !== 1) expect([stats.code, stats.errmsg]).toEqual([115, expect.stringMatching(/dataSize/)]);
      // A write enforcement refuses (a foreign tenant value) is forwarded as sent: NOT enforced.
      const forged = await c.command(opMsg({ insert: 'orders', documents: [{ _id: 'forged', tenantId: B }], $db: db }));
      expect(forged.ok).toBe(1);
      c.close();
      expect(
        await direct
          .db(db)
          .collection('orders')
          .findOne({ _id: 'forged' as never }),
      ).toEqual({ _id: 'forged', tenantId: B });
      const after = await scrape(tp.proxy.proxy);
      const count = (rule: string): number => {
        const match = new RegExp(
          `^mongo_tenant_proxy_policy_decisions_total\\{decision="would-refuse",rule="${rule.replace('.', '\\.')}"\\} (\\d+)`,
          'm',
        ).exec(after);
        return match === null ? 0 : Number(match[1]);
      };
      expect(count('command.stats')).toBe(1);
      expect(after).toMatch(
        /^mongo_tenant_proxy_policy_decisions_total\{decision="would-refuse",rule="[^"]+"\} [1-9]/m,
      );
      expect(after).not.toMatch(/decision="refused"/);
    });
  });

  it('enforce (the default) refuses the same commands and the gauge is 0', async () => {
    const db = uniqueDbName('enforce');
    cleanup.push(db);
    await withProxy([T, B], {}, async (tp) => {
      expect(await scrape(tp.proxy.proxy)).toMatch(/^mongo_tenant_proxy_isolation_audit_only 0$/m);
      const c = await tp.rawFor(T);
      expect((await c.command(opMsg({ dataSize: `${db}.orders`, $db: db }))).ok).toBe(0);
      expect(
        (await c.command(opMsg({ insert: 'orders', documents: [{ _id: 'forged', tenantId: B }], $db: db }))).ok,
      ).toBe(0);
      c.close();
      expect(await direct.db(db).collection('orders').countDocuments()).toBe(0);
      expect(await scrape(tp.proxy.proxy)).toMatch(
        /^mongo_tenant_proxy_policy_decisions_total\{decision="refused",rule="command\.stats"\} 1$/m,
      );
    });
  });
});
