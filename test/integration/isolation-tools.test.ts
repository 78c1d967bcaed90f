/**
 * Issue 14 (Tools): what mongodump and mongorestore send, let through only where it cannot cross
 * tenants. Each value let through is sent by the official driver as tenant T with tenant B's
 * documents beside T's, then the upstream is read directly; a fake upstream shows what is
 * forwarded. The tools themselves run in mongo-tools.test.ts (when MTP_MONGO_TOOLS_DIR is set).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Long, type Document } from 'bson';
import { MongoServerError, type MongoClient } from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { startFakeUpstream, type FakeUpstream, type ReceivedMessage } from '../helpers/fake-upstream.js';
import { opMsg } from '../helpers/raw-client.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

const T = 'acme';
const B = 'globex';
const CATALOGUE = uniqueDbName('mtpcat');
const dbName = uniqueDbName('tools');

let tenants: TenantProxy;
let direct: MongoClient;
let acme: MongoClient;
let globex: MongoClient;

beforeAll(async () => {
  direct = directClient();
  tenants = await startTenantProxy([T, B], { isolation: { tenancy: { catalogueDatabase: CATALOGUE } } });
  acme = tenants.clientFor(T);
  globex = tenants.clientFor(B);
  await acme
    .db(dbName)
    .collection<Item>('items')
    .insertMany([
      { _id: 'a1', n: 1 },
      { _id: 'a2', n: 2 },
    ]);
  await globex
    .db(dbName)
    .collection<Item>('items')
    .insertMany([
      { _id: 'b1', n: 1, secret: 'b' },
      { _id: 'b2', n: 'not a number' },
    ]);
});

afterAll(async () => {
  await tenants?.stop();
  await direct?.db(dbName).dropDatabase();
  await direct?.db(CATALOGUE).dropDatabase();
  await direct?.close();
});

const stored = async (coll: string): Promise<Document[]> =>
  direct.db(dbName).collection(coll).find({}).sort({ _id: 1 }).toArray();

const codeOf = (error: unknown): unknown => (error instanceof MongoServerError ? error.code : undefined);

interface Item {
  _id: string;
  [key: string]: unknown;
}

describe('issue 14: what the tools send, through the official driver, read back directly', () => {
  it("catalogue 60: find, count and aggregate with $natural or _id hints (mongodump's) see only T's documents", async () => {
    const before = await stored('items');
    const items = acme.db(dbName).collection<Item>('items');
    for (const hint of [{ $natural: 1 }, { $natural: -1 }, { _id: 1 }, { _id: -1 }, '_id_']) {
      const ids = (await items.find({}, { hint }).toArray()).map((doc) => doc._id).sort();
      expect(ids, JSON.stringify(hint)).toEqual(['a1', 'a2']);
      expect(await items.find({ tenantId: B }, { hint }).toArray()).toEqual([]);
      expect(await items.find({ _id: 'b1' }, { hint }).toArray()).toEqual([]);
      expect(await items.countDocuments({}, { hint })).toBe(2);
      const grouped = await items.aggregate([{ $group: { _id: null, n: { $sum: 1 } } }], { hint }).toArray();
      expect(grouped).toEqual([{ _id: null, n: 2 }]);
    }
    // A hint of another shape on an index T does not have is still refused.
    const refused = await items
      .find({}, { hint: { n: 1 } })
      .toArray()
      .catch((error: unknown) => error);
    expect(codeOf(refused)).toBe(2);
    expect(await stored('items')).toEqual(before);
  });

  it("catalogue 23: create with the default idIndex creates only T's collection; another namespace or options are refused", async () => {
    const db = acme.db(dbName);
    const idIndex = { key: { _id: 1 }, name: '_id_', ns: `${dbName}.restored`, v: 2 };
    expect(await db.command({ create: 'restored', idIndex })).toMatchObject({ ok: 1 });
    expect((await db.listCollections({ name: 'restored' }).toArray()).map((entry) => entry.name)).toEqual(['restored']);
    expect(await globex.db(dbName).listCollections({ name: 'restored' }).toArray()).toEqual([]);
    for (const bad of [
      { ...idIndex, ns: `${dbName}.items` },
      { ...idIndex, ns: `other.restored` },
      { ...idIndex, key: { tenantId: 1 } },
      { ...idIndex, collation: { locale: 'en', strength: 1 } },
    ]) {
      const error = await db.command({ create: 'restored2', idIndex: bad }).catch((caught: unknown) => caught);
      expect(codeOf(error), JSON.stringify(bad)).toBeDefined();
      expect(String((error as Error).message)).toContain('ddl.id-index');
    }
    expect(await db.listCollections({ name: 'restored2' }).toArray()).toEqual([]);
    // The physical _id index is the default one.
    const physical = await direct.db(dbName).collection('restored').listIndexes().toArray();
    expect(physical.map((index) => [index.name, index.key])).toEqual([['_id_', { _id: 1 }]]);
  });

  it("catalogue 23: createIndexes with specs' ns and ignoreUnknownIndexOptions (mongorestore's) builds T's tenant-prefixed index only", async () => {
    const db = acme.db(dbName);
    const reply = await db.command({
      createIndexes: 'items',
      indexes: [{ key: { n: 1 }, name: 'n_1', ns: `${dbName}.items` }],
      ignoreUnknownIndexOptions: true,
    });
    expect(reply.ok).toBe(1);
    const physical = await direct.db(dbName).collection('items').listIndexes().toArray();
    expect(physical.filter((index) => index.name !== '_id_').map((index) => index.key)).toEqual([
      { tenantId: 1, n: 1 },
    ]);
    expect((await globex.db(dbName).collection('items').listIndexes().toArray()).map((index) => index.name)).toEqual([
      '_id_',
    ]);
    for (const ns of [`${dbName}.other`, `other.items`]) {
      const error = await db
        .command({
          createIndexes: 'items',
          indexes: [{ key: { m: 1 }, name: 'm_1', ns }],
          ignoreUnknownIndexOptions: true,
        })
        .catch((caught: unknown) => caught);
      expect(codeOf(error)).toBe(2);
    }
    // Unknown options are still the proxy's to refuse, with or without the flag.
    const unknown = await db
      .command({
        createIndexes: 'items',
        indexes: [{ key: { m: 1 }, name: 'm_1', storageEngine: {} }],
        ignoreUnknownIndexOptions: true,
      })
      .catch((caught: unknown) => caught);
    expect(String((unknown as Error).message)).toContain('ddl.storage-engine');
    expect((await db.collection('items').listIndexes().toArray()).map((index) => index.name)).toEqual(['_id_', 'n_1']);
  });

  it('catalogue 18: insert and update with bypassEmptyTsReplacement store T-stamped documents only; a document naming B is refused', async () => {
    const db = acme.db(dbName);
    expect(
      await db.command({ insert: 'ts', documents: [{ _id: 't1', v: 1 }], bypassEmptyTsReplacement: true }),
    ).toMatchObject({ ok: 1, n: 1 });
    const refused = await db
      .command({ insert: 'ts', documents: [{ _id: 't2', tenantId: B }], bypassEmptyTsReplacement: true })
      .catch((caught: unknown) => caught);
    expect(codeOf(refused)).toBe(13);
    await db.command({
      update: 'ts',
      updates: [{ q: { _id: 'b1' }, u: { $set: { v: 'from T' } }, upsert: false }],
      bypassEmptyTsReplacement: true,
    });
    expect(await stored('ts')).toEqual([{ _id: 't1', tenantId: T, v: 1 }]);
    expect((await stored('items')).find((doc) => doc._id === 'b1')).toEqual({
      _id: 'b1',
      tenantId: B,
      n: 1,
      secret: 'b',
    });
  });
});

describe('catalogue 60: $natural and _id hints never reach the upstream in shared collections (fake upstream)', () => {
  let fake: FakeUpstream;
  let fp: TenantProxy;

  beforeAll(async () => {
    fake = await startFakeUpstream((message) => {
      const name = Object.keys(message.body)[0]!;
      if (name === 'find' || name === 'aggregate')
        return [{ cursor: { id: Long.fromNumber(0), ns: `${message.body.$db}.x`, firstBatch: [] }, ok: 1 }];
      return [{ n: 0, ok: 1 }];
    });
    fp = await startTenantProxy([T, B], { upstream: { uri: fake.uri } });
  });

  afterAll(async () => {
    await fp?.stop();
    await fake?.close();
  });

  async function sent(command: Document): Promise<{ reply: Document; upstream: ReceivedMessage[] }> {
    const before = fake.received.length;
    const raw = await fp.rawFor(T);
    try {
      const reply = await raw.command(opMsg(command));
      return {
        reply,
        upstream: fake.received
          .slice(before)
          .filter((message) => !('find' in message.body) || message.body.find === 'c'),
      };
    } finally {
      raw.close();
    }
  }

  it('catalogue 60: the hint is dropped, the tenant predicate kept (find, count)', async () => {
    for (const hint of [{ $natural: 1 }, { $natural: -1 }, { _id: 1 }, '_id_']) {
      const find = await sent({ find: 'c', filter: {}, hint, $db: 'app' });
      expect(find.reply.ok).toBe(1);
      const forwarded = find.upstream.find((message) => message.body.find === 'c')!;
      expect(forwarded.body.hint).toBeUndefined();
      expect((forwarded.body.filter as { $and: Document[] }).$and[0]).toEqual({ tenantId: { $eq: T } });
      const count = await sent({ count: 'c', hint, $db: 'app' });
      const counted = count.upstream.find((message) => message.body.count === 'c')!;
      expect(counted.body.hint).toBeUndefined();
    }
  });
});

describe('issue 14 (Tools): mongodump --oplog gets a refusal naming the reason, and nothing reaches the upstream', () => {
  let fake: FakeUpstream;
  let fp: TenantProxy;

  beforeAll(async () => {
    fake = await startFakeUpstream(() => [{ cursor: { id: Long.fromNumber(0), ns: 'x.y', firstBatch: [] }, ok: 1 }]);
    fp = await startTenantProxy([T, B], { upstream: { uri: fake.uri } });
  });

  afterAll(async () => {
    await fp?.stop();
    await fake?.close();
  });

  it("its reads of config.transactions and local.oplog.rs / oplog.$main (every tenant's writes): 13 Unauthorized, the reason named, never forwarded", async () => {
    // What mongodump --oplog sends after isMaster (mongodump/oplog_dump.go): the oldest open
    // transaction, then the newest oplog entry ($natural: -1).
    const commands: Array<[Document, RegExp]> = [
      [
        {
          find: 'transactions',
          filter: { state: { $in: ['prepared', 'inProgress'] } },
          sort: { startOpTime: 1 },
          limit: 1,
          $db: 'config',
        },
        /config database .*span every tenant .*mongodump --oplog .*dump without --oplog/,
      ],
      [
        { find: 'oplog.rs', filter: {}, sort: { $natural: -1 }, limit: 1, $db: 'local' },
        /oplog \(local\.oplog\.rs\) records every tenant's writes .*mongodump --oplog/,
      ],
      [{ find: 'oplog.$main', filter: {}, limit: 1, $db: 'local' }, /local database is not reachable/],
      [{ aggregate: 'oplog.rs', pipeline: [], cursor: {}, $db: 'local' }, /oplog/],
    ];
    for (const [command, reason] of commands) {
      const before = fake.received.length;
      const raw = await fp.rawFor(T);
      try {
        const reply = await raw.command(opMsg(command));
        expect(reply, JSON.stringify(command)).toMatchObject({ ok: 0, code: 13, codeName: 'Unauthorized' });
        expect(String(reply.errmsg)).toMatch(reason);
        expect(String(reply.errmsg)).toMatch(/namespace\.system/);
      } finally {
        raw.close();
      }
      const forwarded = fake.received.slice(before).map((message) => message.body.$db);
      expect(forwarded).not.toContain('local');
      expect(forwarded).not.toContain('config');
    }
    // Through the driver: the same refusal, as the Go driver of the tools reports it.
    const driver = fp.clientFor(T);
    const error = await driver
      .db('local')
      .collection('oplog.rs')
      .findOne({}, { sort: { $natural: -1 } })
      .catch((caught: unknown) => caught);
    expect(codeOf(error)).toBe(13);
    expect((error as Error).message).toMatch(/oplog .*every tenant/);
  });
});
