/**
 * Issue 14 (Tools): mongodump and mongorestore of a tenant's databases round-trip through the
 * proxy, every stored document identical to the source, other tenants' documents untouched.
 *
 * Runs only when MTP_MONGO_TOOLS_DIR names a directory holding mongodump and mongorestore (they are
 * not on the Go module proxy): `export MTP_MONGO_TOOLS_DIR="$(node scripts/mongo-tools.mjs)"`, see
 * docs/testing.md. Every comparison reads the upstream directly.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EJSON } from 'bson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  Binary,
  BSON,
  BSONRegExp,
  Double,
  Int32,
  Long,
  ObjectId,
  Timestamp,
  UUID,
  type Document,
  type MongoClient,
} from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName, upstreamUri } from '../helpers/upstream.js';

const TOOLS_DIR = process.env.MTP_MONGO_TOOLS_DIR;
const SKIP_REASON = 'skipped: MTP_MONGO_TOOLS_DIR is unset (build the tools: node scripts/mongo-tools.mjs)';

const FIELD = 'tenantId';
// Tenant names of this file only: a whole-tenant dump lists exactly the databases of this test.
const suffix = `${process.pid.toString(36)}${Date.now().toString(36)}`;
const A = `tools-a-${suffix}`;
const B = `tools-b-${suffix}`;
const C = `tools-c-${suffix}`;
const CATALOGUE = uniqueDbName('mtpcat');
const SRC = uniqueDbName('tools_src');
const DST = uniqueDbName('tools_dst');
/** Where B restores A's dump (no _id of anyone there yet: _id is unique across a shared collection). */
const DST_B = uniqueDbName('tools_dstb');
const COLLECTIONS = ['people', 'orders', 'events'] as const;

function runTool(tool: 'mongodump' | 'mongorestore', args: string[]): Promise<{ code: number; log: string }> {
  return new Promise((resolve) => {
    execFile(
      join(TOOLS_DIR!, tool),
      args,
      { maxBuffer: 64 * 1024 * 1024, timeout: 120_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
        resolve({ code, log: `${stdout}${stderr}` });
      },
    );
  });
}

/** Documents with any _id type (the tools restore whatever was dumped). */
interface AnyId {
  _id: unknown;
  [key: string]: unknown;
}

/** Canonical Extended JSON: types are compared too (Int32 vs Double vs Long). */
const canonical = (doc: Document): string => EJSON.stringify(doc, { relaxed: false });

const withoutTenant = (doc: Document): Document => {
  const copy = { ...doc };
  delete copy[FIELD];
  return copy;
};

let tenants: TenantProxy;
let direct: MongoClient;
let work: string;

/** The stored documents of `tenant` in db.coll, read directly, by _id, tenant field removed. */
async function stored(db: string, coll: string, tenant: string): Promise<string[]> {
  const docs = await direct
    .db(db)
    .collection(coll)
    .find({ [FIELD]: tenant }, { promoteValues: false, promoteLongs: false, promoteBuffers: false })
    .toArray();
  return docs.map((doc) => canonical(withoutTenant(doc))).sort();
}

/** Every tenant's documents but `except`'s, in both databases (for "untouched" checks). */
async function othersSnapshot(except: string): Promise<string[]> {
  const out: string[] = [];
  for (const db of [SRC, DST])
    for (const coll of COLLECTIONS) {
      const docs = await direct
        .db(db)
        .collection(coll)
        .find({ [FIELD]: { $ne: except } }, { promoteValues: false, promoteLongs: false })
        .toArray();
      out.push(...docs.map((doc) => `${db}.${coll} ${canonical(doc)}`));
    }
  return out.sort();
}

/** The _ids of A's documents in db.coll, read directly, as strings. */
async function aIds(db: string, coll: string): Promise<string[]> {
  const docs = await direct
    .db(db)
    .collection<AnyId>(coll)
    .find({ [FIELD]: A })
    .toArray();
  return docs.map((doc) => String(doc._id));
}

/** The documents of a dump file (.bson), tenant field removed, canonical, sorted. */
async function dumpFile(file: string): Promise<string[]> {
  const bytes = await readFile(file);
  const docs: string[] = [];
  for (let offset = 0; offset < bytes.length;) {
    const size = bytes.readInt32LE(offset);
    const doc = BSON.deserialize(bytes.subarray(offset, offset + size), { promoteValues: false, promoteLongs: false });
    docs.push(canonical(withoutTenant(doc)));
    offset += size;
  }
  return docs.sort();
}

/** One document per BSON type FerretDB v1 stores, plus nesting. */
function variedDocuments(tag: string): AnyId[] {
  return [
    {
      _id: new ObjectId(),
      name: `${tag} ada`,
      email: `${tag}-ada@example.com`,
      int32: new Int32(7),
      int64: Long.fromString('9007199254740993'),
      double: new Double(1.5),
      wholeDouble: new Double(2),
      bool: true,
      nothing: null,
      when: new Date('2024-02-29T12:34:56.789Z'),
      bytes: new Binary(Buffer.from([0, 1, 2, 255])),
      uuid: new UUID('0f8fad5b-d9cb-469f-a165-70867728950e'),
      pattern: new BSONRegExp('^a.c$', 'i'),
      ts: new Timestamp({ t: 1_700_000_000, i: 3 }),
      nested: { deeper: { list: [1, 'two', { three: 3, arr: [4] }] }, empty: {} },
      emptyList: [],
      unicode: 'žluťoučký kůň 🐎',
    },
    { _id: `${tag}-string-id`, name: `${tag} bob`, email: `${tag}-bob@example.com`, tags: ['x', 'y'] },
    { _id: new Int32(tag === 'a' ? 42 : 43), name: `${tag} int id`, email: `${tag}-int@example.com` },
    { _id: { compound: tag, n: 1 }, name: `${tag} document id`, email: `${tag}-doc@example.com` },
  ];
}

describe.skipIf(TOOLS_DIR === undefined)(
  `mongodump / mongorestore through the proxy${TOOLS_DIR === undefined ? ` (${SKIP_REASON})` : ''}`,
  () => {
    beforeAll(async () => {
      for (const tool of ['mongodump', 'mongorestore'])
        if (!existsSync(join(TOOLS_DIR!, tool))) throw new Error(`MTP_MONGO_TOOLS_DIR has no ${tool}`);
      work = await mkdtemp(join(tmpdir(), 'mtp-tools-'));
      direct = directClient();
      // Unique indexes in shared collections: declared by the operator (FerretDB builds no partial
      // per-tenant ones), unique within each tenant; the same in the namespace restored into.
      const unique = (db: string) => ({ namespace: `${db}.people`, name: 'email_1', key: ['email'], unique: true });
      tenants = await startTenantProxy([A, B, C], {
        isolation: {
          tenancy: { catalogueDatabase: CATALOGUE, sharedIndexes: [unique(SRC), unique(DST), unique(DST_B)] },
        },
      });
      const a = tenants.clientFor(A);
      const c = tenants.clientFor(C);
      await a.db(SRC).collection<AnyId>('people').insertMany(variedDocuments('a'));
      await a.db(SRC).collection<AnyId>('people').createIndex({ email: 1 }, { name: 'email_1', unique: true });
      // More than one batch of find/getMore, and a tenant index (mapped to {tenantId: 1, sku: 1}).
      await a
        .db(SRC)
        .collection<AnyId>('orders')
        .insertMany(Array.from({ length: 250 }, (_, n) => ({ _id: n, sku: `sku-${n % 7}`, qty: n * 1.25 })));
      await a.db(SRC).collection<AnyId>('orders').createIndex({ sku: 1, qty: -1 }, { name: 'by_sku' });
      await a.db(SRC).createCollection('events');
      // Tenant C in the same collections, the one restored into included, with other _ids.
      await c.db(SRC).collection<AnyId>('people').insertMany(variedDocuments('c'));
      await c
        .db(SRC)
        .collection<AnyId>('orders')
        .insertMany([{ _id: 'c-1', sku: 'c' }]);
      await c.db(DST).collection<AnyId>('orders').insertOne({ _id: 'c-dst', sku: 'c' });
      await c.db(DST).collection<AnyId>('people').createIndex({ email: 1 }, { name: 'email_1', unique: true });
    });

    afterAll(async () => {
      await tenants?.stop();
      for (const db of [SRC, DST, DST_B, CATALOGUE]) await direct?.db(db).dropDatabase();
      await direct?.close();
      if (work !== undefined) await rm(work, { recursive: true, force: true });
    });

    const dumpDir = () => join(work, 'proxy');

    it("mongodump through the proxy writes exactly A's documents, as a direct dump filtered on A does", async () => {
      const before = await othersSnapshot(A);
      const viaProxy = await runTool('mongodump', ['--uri', tenants.uriFor(A), '--db', SRC, '-o', dumpDir()]);
      expect(viaProxy.code, viaProxy.log).toBe(0);
      // Direct, filtered on A (a query needs one collection per run).
      const directDir = join(work, 'direct');
      for (const coll of COLLECTIONS) {
        const viaDirect = await runTool('mongodump', [
          '--uri',
          upstreamUri(),
          '--db',
          SRC,
          '--collection',
          coll,
          '--query',
          JSON.stringify({ [FIELD]: A }),
          '-o',
          directDir,
        ]);
        expect(viaDirect.code, viaDirect.log).toBe(0);
      }
      expect((await readdir(join(dumpDir(), SRC))).filter((name) => name !== 'prelude.json').sort()).toEqual(
        COLLECTIONS.flatMap((coll) => [`${coll}.bson`, `${coll}.metadata.json`]).sort(),
      );
      for (const coll of COLLECTIONS) {
        const dumped = await dumpFile(join(dumpDir(), SRC, `${coll}.bson`));
        expect(dumped).toEqual(await stored(SRC, coll, A));
        expect(dumped).toEqual(await dumpFile(join(directDir, SRC, `${coll}.bson`)));
      }
      expect(await dumpFile(join(dumpDir(), SRC, 'orders.bson'))).toHaveLength(250);
      // The metadata shows A's indexes as A created them (no tenant prefix), nothing of C's.
      const orders = JSON.parse(await readFile(join(dumpDir(), SRC, 'orders.metadata.json'), 'utf8')) as {
        indexes: { name: string; key: Document }[];
      };
      expect(orders.indexes.map((index) => index.name).sort()).toEqual(['_id_', 'by_sku']);
      const people = await readFile(join(dumpDir(), SRC, 'people.metadata.json'), 'utf8');
      expect(people).toContain('email_1');
      expect(people).not.toContain(FIELD);
      expect(await othersSnapshot(A)).toEqual(before);
    });

    it("a whole-tenant dump (no --db) lists only A's databases", async () => {
      const out = join(work, 'all');
      const result = await runTool('mongodump', ['--uri', tenants.uriFor(A), '-o', out]);
      expect(result.code, result.log).toBe(0);
      expect((await readdir(out)).filter((name) => name !== 'prelude.json')).toEqual([SRC]);
    });

    it('mongodump --oplog is refused with the reason (the oplog spans every tenant); nothing is written', async () => {
      const out = join(work, 'oplog');
      const result = await runTool('mongodump', ['--uri', tenants.uriFor(A), '--oplog', '-o', out]);
      expect(result.code, result.log).not.toBe(0);
      // mongodump asks config.transactions first (then local.oplog.rs): its log quotes the refusal.
      expect(result.log).toMatch(/\(Unauthorized\).*rule namespace\.system.*span every tenant.*dump without --oplog/);
      expect(await readdir(out).catch(() => [])).toEqual([]);
    });

    const restoreArgs = (tenant: string, ...extra: string[]) => [
      '--uri',
      tenants.uriFor(tenant),
      '--nsFrom',
      `${SRC}.*`,
      '--nsTo',
      `${DST}.*`,
      ...extra,
      dumpDir(),
    ];

    const expectRestored = async () => {
      for (const coll of COLLECTIONS) expect(await stored(DST, coll, A)).toEqual(await stored(SRC, coll, A));
    };

    it('mongorestore through the proxy into a fresh database: every document identical, indexes tenant-scoped, C untouched', async () => {
      const before = await othersSnapshot(A);
      const result = await runTool('mongorestore', restoreArgs(A));
      expect(result.code, result.log).toBe(0);
      expect(result.log).toMatch(/254 document\(s\) restored successfully\. 0 document\(s\) failed/);
      await expectRestored();
      expect(await othersSnapshot(A)).toEqual(before);
      const a = tenants.clientFor(A);
      const indexes = await a.db(DST).collection<AnyId>('orders').listIndexes().toArray();
      expect(indexes.map((index) => [index.name, index.key])).toEqual([
        ['_id_', { _id: 1 }],
        ['by_sku', { sku: 1, qty: -1 }],
      ]);
      // Physically one tenant-prefixed index; C (and B) do not see A's index.
      const physical = await direct.db(DST).collection<AnyId>('orders').listIndexes().toArray();
      expect(physical.filter((index) => index.name !== '_id_').map((index) => index.key)).toEqual([
        { [FIELD]: 1, sku: 1, qty: -1 },
      ]);
      // C sees only the _id index of its own orders; B has no orders collection in its view at all.
      const cIndexes = await tenants.clientFor(C).db(DST).collection<AnyId>('orders').listIndexes().toArray();
      expect(cIndexes.map((index) => index.name)).toEqual(['_id_']);
      await expect(
        tenants.clientFor(B).db(DST).collection<AnyId>('orders').listIndexes().toArray(),
      ).rejects.toMatchObject({
        code: 26,
      });
      // The unique index holds within A after the restore; C may use the same email.
      await expect(
        a.db(DST).collection<AnyId>('people').insertOne({ _id: 'a-dup', email: 'a-ada@example.com' }),
      ).rejects.toMatchObject({
        code: 11000,
      });
      await tenants
        .clientFor(C)
        .db(DST)
        .collection<AnyId>('people')
        .insertOne({ _id: 'c-ada', email: 'a-ada@example.com' });
    });

    it("mongorestore --drop replaces A's collections with the dump (a virtual drop: C's documents stay)", async () => {
      const a = tenants.clientFor(A);
      await a
        .db(DST)
        .collection('orders')
        .deleteMany({ _id: { $lt: 10 } } as Document);
      await a.db(DST).collection<AnyId>('orders').insertOne({ _id: 'extra', sku: 'extra' });
      await a
        .db(DST)
        .collection('people')
        .updateOne({ _id: 'a-string-id' } as Document, { $set: { name: 'changed' } });
      const before = await othersSnapshot(A);
      expect(before.some((line) => line.includes('c-dst'))).toBe(true);
      const result = await runTool('mongorestore', restoreArgs(A, '--drop'));
      expect(result.code, result.log).toBe(0);
      expect(result.log).toMatch(/254 document\(s\) restored successfully\. 0 document\(s\) failed/);
      await expectRestored();
      expect(await othersSnapshot(A)).toEqual(before);
      expect((await a.db(DST).collection<AnyId>('orders').listIndexes().toArray()).map((index) => index.name)).toEqual([
        '_id_',
        'by_sku',
      ]);
    });

    it('mongorestore without --drop over existing documents fails on their _ids only, as it does direct', async () => {
      const before = await othersSnapshot(A);
      const result = await runTool('mongorestore', restoreArgs(A));
      expect(result.log).toMatch(/0 document\(s\) restored successfully\. 254 document\(s\) failed/);
      await expectRestored();
      expect(await othersSnapshot(A)).toEqual(before);
    });

    it('--archive --gzip round trip through the proxy, restored with --drop: every document identical, C untouched', async () => {
      const archive = join(work, 'a.archive.gz');
      const dumped = await runTool('mongodump', [
        '--uri',
        tenants.uriFor(A),
        '--db',
        SRC,
        `--archive=${archive}`,
        '--gzip',
      ]);
      expect(dumped.code, dumped.log).toBe(0);
      await tenants
        .clientFor(A)
        .db(DST)
        .collection('orders')
        .deleteMany({ sku: 'sku-1' } as Document);
      const before = await othersSnapshot(A);
      const restored = await runTool('mongorestore', [
        '--uri',
        tenants.uriFor(A),
        `--archive=${archive}`,
        '--gzip',
        '--drop',
        '--nsFrom',
        `${SRC}.*`,
        '--nsTo',
        `${DST}.*`,
      ]);
      expect(restored.code, restored.log).toBe(0);
      expect(restored.log).toMatch(/254 document\(s\) restored successfully\. 0 document\(s\) failed/);
      await expectRestored();
      expect(await othersSnapshot(A)).toEqual(before);
    });

    it("B restoring A's dump writes only into B: exactly the dumped documents, stamped B; A's and C's untouched; nothing else of A's visible to B", async () => {
      const beforeOthers = await othersSnapshot(B);
      const result = await runTool('mongorestore', [
        '--uri',
        tenants.uriFor(B),
        '--nsFrom',
        `${SRC}.*`,
        '--nsTo',
        `${DST_B}.*`,
        '--drop',
        dumpDir(),
      ]);
      expect(result.code, result.log).toBe(0);
      expect(result.log).toMatch(/254 document\(s\) restored successfully\. 0 document\(s\) failed/);
      // Read directly: every restored document is B's and is exactly what A's dump holds.
      for (const coll of COLLECTIONS) {
        expect(await stored(DST_B, coll, B)).toEqual(await dumpFile(join(dumpDir(), SRC, `${coll}.bson`)));
        expect(
          await direct
            .db(DST_B)
            .collection(coll)
            .countDocuments({ [FIELD]: { $ne: B } }),
        ).toBe(0);
      }
      expect(await othersSnapshot(B)).toEqual(beforeOthers);
      // Through the proxy, B sees its restored copy and nothing else of A's.
      const b = tenants.clientFor(B);
      const databases = (await b.db('admin').admin().listDatabases({ nameOnly: true })).databases.map((db) => db.name);
      expect(databases).toEqual([DST_B]);
      for (const db of [SRC, DST]) {
        expect(await b.db(db).listCollections({}, { nameOnly: true }).toArray()).toEqual([]);
        for (const coll of COLLECTIONS) expect(await b.db(db).collection(coll).countDocuments({})).toBe(0);
      }
      const orders = await b.db(DST_B).collection<AnyId>('orders').listIndexes().toArray();
      expect(orders.map((index) => [index.name, index.key])).toEqual([
        ['_id_', { _id: 1 }],
        ['by_sku', { sku: 1, qty: -1 }],
      ]);
      const people = await b.db(DST_B).collection<AnyId>('people').find({}).toArray();
      expect(JSON.stringify(people)).not.toContain(A);
      expect(people.map((doc) => String(doc._id)).sort()).toEqual((await aIds(SRC, 'people')).sort());
    });

    it("mongodump --query on one collection through the proxy: A's matching documents only, none for a query naming C", async () => {
      const out = join(work, 'query');
      const dumped = await runTool('mongodump', [
        '--uri',
        tenants.uriFor(A),
        '--db',
        SRC,
        '--collection',
        'orders',
        '--query',
        JSON.stringify({ sku: 'sku-3' }),
        '-o',
        out,
      ]);
      expect(dumped.code, dumped.log).toBe(0);
      const docs = await dumpFile(join(out, SRC, 'orders.bson'));
      expect(docs).toHaveLength(36);
      expect(docs).toEqual((await stored(SRC, 'orders', A)).filter((line) => line.includes('"sku":"sku-3"')));
      const foreign = join(work, 'foreign');
      const none = await runTool('mongodump', [
        '--uri',
        tenants.uriFor(A),
        '--db',
        SRC,
        '--collection',
        'orders',
        '--query',
        JSON.stringify({ [FIELD]: C }),
        '-o',
        foreign,
      ]);
      expect(none.code, none.log).toBe(0);
      expect(await dumpFile(join(foreign, SRC, 'orders.bson'))).toEqual([]);
    });
  },
);
