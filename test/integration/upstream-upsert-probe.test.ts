/**
 * Issue 12: whether the upstream derives an upsert's fields and `_id` from the tenant `$and` is
 * probed (src/upstream/capabilities.ts), never read from a product marker. Runs on both test
 * upstreams: FerretDB v1 does not derive them (the proxy adds them), DocumentDB does (the proxy
 * leaves them to it); through the proxy the stored documents are the same on both, read directly.
 * The fallback used when the probe cannot run (the proxy derives) is shown harmless where the
 * upstream derives too: the proxy's own rewrite of that case, sent straight to the upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deserialize, serialize } from 'bson';
import type { Document, MongoClient } from 'mongodb';
import { configFromObject } from '../../src/config/index.js';
import { CursorRegistry } from '../../src/policy/cursors.js';
import { IsolationEngine, commandInput } from '../../src/rewrite/engine.js';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName, upstreamKind } from '../helpers/upstream.js';

const dbName = uniqueDbName('upsprobe');
const T = 'acme';

let tenants: TenantProxy;
let direct: MongoClient;
let acme: MongoClient;

beforeAll(async () => {
  direct = directClient();
  tenants = await startTenantProxy([T]);
  acme = tenants.clientFor(T);
});

afterAll(async () => {
  await tenants?.stop();
  await direct?.db(dbName).dropDatabase();
  await direct?.close();
});

/** The answers expected of the probe on the upstreams the tests know (FerretDB v1 builds from top-level equalities only). */
const DERIVES: Record<ReturnType<typeof upstreamKind>, boolean> = {
  ferretdb1: false,
  ferretdb2: true,
  documentdb: true,
  mongodb: true,
};

const storedDirectly = (coll: string): Promise<Document[]> =>
  direct.db(dbName).collection(coll).find({}).sort({ qty: 1 }).toArray();

describe(`issue 12: upsert fields from $and, probed (${upstreamKind()})`, () => {
  it(`the start probe's answer is ${DERIVES[upstreamKind()]} here, and is what the upstream does with an $and upsert`, async () => {
    const capabilities = tenants.proxy.proxy.upstream.capabilities;
    expect(capabilities.upsertFieldsFromAnd).toBe(DERIVES[upstreamKind()]);
    // The upstream itself, asked directly the way the proxy wraps a tenant's query.
    const coll = direct.db(dbName).collection('raw_and');
    await coll.updateOne(
      { $and: [{ tenantId: { $eq: T } }, { _id: 'and-1', k: 1 }] } as Document,
      { $set: { v: 1 } },
      { upsert: true },
    );
    const [stored] = await coll.find({ v: 1 }).toArray();
    expect((stored!._id as unknown) === 'and-1' && stored!.k === 1).toBe(capabilities.upsertFieldsFromAnd);
    // It probed in the catalogue's database (no tenant can name it, listings hide it), and its
    // collections are gone again: only other proxies' probes in flight may leave any.
    const catalogueDb = tenants.proxy.config.isolation.tenancy!.catalogueDatabase;
    const probeCollections = await direct
      .db(catalogueDb)
      .listCollections({ name: /^probe_/ }, { nameOnly: true })
      .toArray();
    expect(probeCollections.filter((c) => c.name.endsWith('_upsert')).length).toBeLessThanOrEqual(1);
    const listed = await acme.db('admin').admin().listDatabases({ nameOnly: true });
    expect(listed.databases.map((d) => d.name)).not.toContain(catalogueDb);
    await expect(acme.db(catalogueDb).collection('x').findOne({})).rejects.toThrow(/catalogue/);
  });

  it('through the proxy, updateOne({sku}) and updateOne({_id: 4}) with upsert store sku and _id 4, read directly', async () => {
    const coll = acme.db(dbName).collection('sku');
    const first = await coll.updateOne({ sku: 'n1' }, { $set: { qty: 5 } }, { upsert: true });
    expect(first.upsertedCount).toBe(1);
    const second = await coll.updateOne({ _id: 4 } as Document, { $set: { qty: 6 } }, { upsert: true });
    expect(second.upsertedId).toBe(4);
    const docs = await storedDirectly('sku');
    expect(docs).toHaveLength(2);
    expect(docs[0]).toMatchObject({ sku: 'n1', qty: 5, tenantId: T });
    expect(docs[1]).toEqual({ _id: 4, qty: 6, tenantId: T });
    // Run again, they match the documents they made: no second document, no conflict.
    await coll.updateOne({ sku: 'n1' }, { $set: { qty: 5 } }, { upsert: true });
    await coll.updateOne({ _id: 4 } as Document, { $set: { qty: 6 } }, { upsert: true });
    expect(await storedDirectly('sku')).toHaveLength(2);
  });

  it('the fallback (the proxy derives the fields too) stores the same documents on this upstream, with no conflict', async () => {
    const engine = new IsolationEngine({
      config: configFromObject({}).isolation,
      cursors: new CursorRegistry(),
      sessionKey: Buffer.alloc(32, 1),
      collationSupported: () => false,
      upsertFieldsFromAnd: () => false,
    });
    const tenant = engine.forTenant(T);
    /** The command the proxy forwards for `statement`, sent to the upstream directly. */
    const forward = async (statement: Document): Promise<Document> => {
      const input = commandInput(
        'update',
        dbName,
        serialize({ update: 'fallback', updates: [statement], $db: dbName }),
        [],
        false,
      );
      const decision = tenant.decide(input);
      if (decision.action !== 'forward') throw new Error(`expected forward, got ${decision.action}`);
      const { $db: _db, ...body } = deserialize(decision.result.body.toBytes());
      return direct.db(dbName).command(body);
    };
    const replies = [
      await forward({ q: { sku: 'f1' }, u: { $set: { qty: 1 } }, upsert: true }),
      await forward({ q: { _id: 40, 'a.b': 2 }, u: { $set: { qty: 2 } }, upsert: true }),
      await forward({ q: { $and: [{ _id: 41 }, { k: { $eq: 'x' } }] }, u: { $inc: { qty: 3 } }, upsert: true }),
      await forward({ q: { _id: 42, k: 'y' }, u: { qty: 4, k: 'y' }, upsert: true }),
    ];
    for (const reply of replies) expect(reply).toMatchObject({ ok: 1, n: 1 });
    const docs = await storedDirectly('fallback');
    expect(docs).toHaveLength(4);
    expect(docs[0]).toMatchObject({ sku: 'f1', qty: 1, tenantId: T });
    expect(docs.slice(1)).toEqual([
      { _id: 40, a: { b: 2 }, qty: 2, tenantId: T },
      { _id: 41, k: 'x', qty: 3, tenantId: T },
      { _id: 42, tenantId: T, qty: 4, k: 'y' },
    ]);
  });
});
