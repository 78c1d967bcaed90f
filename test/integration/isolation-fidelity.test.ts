/**
 * Wire fidelity without giving up isolation (issue 14): what a driver, an ODM or a shell does
 * direct works the same through the proxy, and every value the proxy now lets through is proved
 * unable to cross tenants. Each test acts through a real client (Node driver 7 and 6, mongosh) as
 * tenant `acme`, then reads the upstream directly, bypassing the proxy.
 *
 * - catalogue 38 (G4): upserts store the query's equality fields (`_id` included) on every
 *   upstream, FerretDB v1 too, which derives nothing through the tenant `$and`.
 * - catalogue 17, 18, 43, 53-56: harmless values are let through (`bypassDocumentValidation:
 *   false`, comments of any BSON type, read and write concerns, `let`, `maxTimeMS` on every
 *   command, API version fields, `$readPreference`, the generic fields drivers add to
 *   endSessions, killSessions / refreshSessions with per-tenant session ids, `noCursorTimeout:
 *   false`), each shown unable to cross tenants.
 * - G1: error fidelity: what the server would reject as malformed gets the server's code and shape
 *   (unknown update operator 9, unknown stage 40324, unknown field 40415, unknown query operator 2,
 *   unknown expression 168, removed command 59); 13 Unauthorized only for what is forbidden.
 * - catalogue 25, 26: server introspection (serverStatus, getParameter, hostInfo, getLog,
 *   currentOp…) answered by the proxy with what every tenant may see; mongosh starts without a
 *   single refusal.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Binary, Code, Long, UUID, type Document } from 'bson';
import { MongoClient, type Db } from 'mongodb';
import { MongoClient as MongoClient6 } from 'mongodb6';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { startFakeUpstream, type FakeUpstream, type ReceivedMessage } from '../helpers/fake-upstream.js';
import { opMsg } from '../helpers/raw-client.js';
import { directClient, needsMongoDB, uniqueDbName, upstreamUri } from '../helpers/upstream.js';
import { metricValue } from '../helpers/metrics.js';
import { MONGOSH } from '../helpers/mongosh.js';

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
  // Reads are checked with the tenant field shown: each document read back names its owner.
  tenants = await startTenantProxy([T, B], { isolation: { tenantFieldInReplies: 'show' } });
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
    await run(MONGOSH, ['--quiet', '--norc', tenants.uriFor(T), '--eval', script], {
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

// ---------------------------------------------------------------------------------------------
// Harmless values are let through; none of them reaches another tenant.

/** Seeds one document per tenant in `coll` directly; B's holds a secret. */
async function seedBoth(coll: string): Promise<void> {
  await direct
    .db(dbName)
    .collection(coll)
    .insertMany([
      { _id: `${coll}-a`, tenantId: T, k: 'mine', n: 1 },
      { _id: `${coll}-b`, tenantId: B, k: 'theirs', n: 1, secret: 'SECRET-B' },
    ] as Document[]);
}

/** B's document, read directly: it must never change. */
async function bDocument(coll: string): Promise<Document | null> {
  return direct
    .db(dbName)
    .collection(coll)
    .findOne({ _id: `${coll}-b` } as Document);
}

/** The refusals the proxy audited so far. */
function refusals(): Document[] {
  return tenants.proxy.auditEvents().filter((event) => event.decision === 'refused');
}

describe('catalogue 18, 43: harmless values are let through and cannot cross tenants', () => {
  it('catalogue 43: bypassDocumentValidation false is forwarded on insert, update, findAndModify, aggregate; the writes stay T’s, true is still refused', async () => {
    const coll = 'bypass';
    await seedBoth(coll);
    const db = acme7.db(dbName);
    const before = refusals().length;
    await db.command({ insert: coll, documents: [{ _id: 'bdv-1', k: 'new' }], bypassDocumentValidation: false });
    await db.collection(coll).updateMany({}, { $set: { touched: true } }, { bypassDocumentValidation: false });
    await db.command({
      findAndModify: coll,
      query: {},
      update: { $inc: { n: 1 } },
      bypassDocumentValidation: false,
    });
    await db.command({ aggregate: coll, pipeline: [{ $match: {} }], cursor: {}, bypassDocumentValidation: false });
    expect(refusals().length).toBe(before);
    // A document claiming B is still refused with the flag off; the flag on is still refused.
    await expect(
      db.command({ insert: coll, documents: [{ k: 'x', tenantId: B }], bypassDocumentValidation: false }),
    ).rejects.toThrow(/rule insert.foreign-tenant/);
    await expect(db.command({ insert: coll, documents: [{ k: 'x' }], bypassDocumentValidation: true })).rejects.toThrow(
      /rule field.bypass-validation/,
    );
    expect(await bDocument(coll)).toEqual({ _id: `${coll}-b`, tenantId: B, k: 'theirs', n: 1, secret: 'SECRET-B' });
    const mine = await direct.db(dbName).collection(coll).find({ tenantId: T }).toArray();
    expect(mine.map((doc) => doc._id).sort()).toEqual(['bdv-1', `${coll}-a`]);
    for (const doc of mine) expect(doc.touched).toBe(true);
    expect(await direct.db(dbName).collection(coll).countDocuments({})).toBe(3);
  });

  it('catalogue 17, 18: a comment naming B or holding operator-looking text, write and read concerns, maxTimeMS and noCursorTimeout: false change nothing about what T reaches', async () => {
    const coll = 'generic';
    await seedBoth(coll);
    const db = acme7.db(dbName);
    const before = refusals().length;
    const comment = `tenantId: ${B} $where $$USER_ROLES {"$function": 1}`;
    const found = await db.command({
      find: coll,
      filter: {},
      comment,
      readConcern: { level: 'local' },
      noCursorTimeout: false,
      oplogReplay: false,
      maxTimeMS: 5_000,
    });
    expect(found.cursor.firstBatch.map((doc: Document) => doc._id)).toEqual([`${coll}-a`]);
    const updated = await db.command({
      update: coll,
      updates: [{ q: {}, u: { $set: { seen: comment } }, multi: true }],
      comment,
      writeConcern: { w: 1, j: true },
    });
    expect(updated.n).toBe(1);
    await db.command({ ping: 1, maxTimeMS: 1 });
    // Text that mentions $$USER_ROLES is data: stored and matched literally, never evaluated.
    await db.collection(coll).insertOne({ _id: 'roles-text', note: 'see $$USER_ROLES' } as Document);
    expect(await db.collection(coll).find({ note: 'see $$USER_ROLES' }).toArray()).toEqual([
      { _id: 'roles-text', tenantId: T, note: 'see $$USER_ROLES' },
    ]);
    expect(refusals().length).toBe(before);
    expect(await bDocument(coll)).toEqual({ _id: `${coll}-b`, tenantId: B, k: 'theirs', n: 1, secret: 'SECRET-B' });
    // noCursorTimeout: true is still refused (cursors of a shared server must time out).
    await expect(db.command({ find: coll, filter: {}, noCursorTimeout: true })).rejects.toThrow(
      /rule find.no-cursor-timeout/,
    );
  });

  it('catalogue 53: API version fields and $readPreference from the driver reach only T’s documents (driver 7 and 6)', async () => {
    const coll = 'api';
    await seedBoth(coll);
    const before = refusals().length;
    const strict = tenants.clientFor(T, {
      serverApi: { version: '1', strict: true, deprecationErrors: true },
      readPreference: 'primaryPreferred',
    });
    const old = new MongoClient6(tenants.uriFor(T), {
      serverSelectionTimeoutMS: 10_000,
      serverApi: { version: '1' },
      readPreference: 'secondaryPreferred',
    });
    try {
      expect((await strict.db(dbName).collection(coll).find({}).toArray()).map((doc) => doc._id)).toEqual([
        `${coll}-a`,
      ]);
      expect((await old.db(dbName).collection(coll).find({}).toArray()).map((doc) => doc._id)).toEqual([`${coll}-a`]);
      expect(await strict.db(dbName).collection(coll).countDocuments({ tenantId: B })).toBe(0);
    } finally {
      await old.close();
    }
    expect(refusals().length).toBe(before);
  });

  it('catalogue 56: endSessions with every generic field a driver adds (pymongo closing) is not refused', async () => {
    const before = refusals().length;
    const raw = await tenants.rawFor(T);
    try {
      const reply = await raw.command(
        opMsg({
          endSessions: [{ id: new UUID() }],
          $readPreference: { mode: 'primaryPreferred' },
          writeConcern: { w: 0 },
          maxTimeMS: 1_000,
          comment: 'closing',
          apiVersion: '1',
          $db: 'admin',
        }),
      );
      // FerretDB v1 has no endSessions (CommandNotFound from the upstream); MongoDB answers ok.
      expect(reply.errmsg ?? '').not.toMatch(/refused/);
    } finally {
      raw.close();
    }
    expect(refusals().length).toBe(before);
  });

  it.skipIf(needsMongoDB('FerretDB v1 does not implement let variables'))(
    'catalogue 11 (MongoDB): a let variable naming B used in $expr finds nothing of B',
    async () => {
      const coll = 'let11';
      await seedBoth(coll);
      const found = await acme7
        .db(dbName)
        .collection(coll)
        .find({ $expr: { $eq: ['$tenantId', '$$owner'] } }, { let: { owner: B } })
        .toArray();
      expect(found).toEqual([]);
    },
  );

  it.skipIf(
    needsMongoDB(
      'FerretDB v1 has no transactions: killSessions of B’s client lsid from T must leave B’s transaction alive',
    ),
  )(
    'catalogue 56 (MongoDB): killSessions of B’s client lsid from T kills T’s mapped session only; B’s transaction commits',
    async () => {
      const coll = 'kill56';
      await direct.db(dbName).createCollection(coll);
      const bClient = tenants.clientFor(B);
      const session = bClient.startSession();
      try {
        session.startTransaction();
        await bClient
          .db(dbName)
          .collection(coll)
          .insertOne({ _id: 'b-txn' } as Document, { session });
        const lsid = session.id!;
        await acme7.db('admin').command({ killSessions: [lsid] });
        await session.commitTransaction();
      } finally {
        await session.endSession();
      }
      expect(
        await direct
          .db(dbName)
          .collection(coll)
          .findOne({ _id: 'b-txn' } as Document),
      ).toMatchObject({
        tenantId: B,
      });
    },
  );
});

describe('catalogue 43, 54-56: the values let through reach the upstream as sent, or mapped per tenant (fake upstream)', () => {
  let fake: FakeUpstream;
  let fp: TenantProxy;

  beforeAll(async () => {
    fake = await startFakeUpstream((message) => {
      const name = Object.keys(message.body)[0]!;
      if (name === 'find' || name === 'aggregate') {
        return [{ cursor: { id: Long.fromNumber(0), ns: `${message.body.$db}.x`, firstBatch: [] }, ok: 1 }];
      }
      return [{ n: 1, ok: 1 }];
    });
    fp = await startTenantProxy([T, B], { upstream: { uri: fake.uri } });
  });

  afterAll(async () => {
    await fp?.stop();
    await fake?.close();
  });

  async function sent(tenant: string, command: Document): Promise<{ reply: Document; upstream: ReceivedMessage[] }> {
    const before = fake.received.length;
    const raw = await fp.rawFor(tenant);
    try {
      const reply = await raw.command(opMsg(command));
      return { reply, upstream: fake.received.slice(before) };
    } finally {
      raw.close();
    }
  }

  it('catalogue 43, 17: bypassDocumentValidation false and a comment of any BSON type are forwarded as sent, next to the tenant predicate and stamp', async () => {
    const comment = { tenantId: B, $where: new Code('sleep(1)'), roles: '$$USER_ROLES', n: 7 };
    const insert = await sent(T, {
      insert: 'c',
      documents: [{ k: 1 }],
      bypassDocumentValidation: false,
      comment,
      $db: 'app',
    });
    expect(insert.reply.ok).toBe(1);
    expect(insert.upstream[0]!.body.bypassDocumentValidation).toBe(false);
    expect(insert.upstream[0]!.body.documents).toEqual([expect.objectContaining({ tenantId: T, k: 1 })]);
    expect(insert.upstream[0]!.body.comment).toEqual(comment);
    const find = await sent(T, { find: 'c', filter: { tenantId: B }, comment, $db: 'app' });
    expect(find.upstream[0]!.body.filter).toEqual({ $and: [{ tenantId: { $eq: T } }, { tenantId: B }] });
    expect(find.upstream[0]!.body.comment).toEqual(comment);
  });

  it('catalogue 11, 17: let variables are forwarded as sent behind the tenant predicate (a variable naming B selects nothing of B); operators inside them are still checked', async () => {
    const find = await sent(T, {
      find: 'c',
      filter: { $expr: { $eq: ['$tenantId', '$$owner'] } },
      let: { owner: B },
      $db: 'app',
    });
    expect(find.reply.ok).toBe(1);
    expect(find.upstream[0]!.body.filter).toEqual({
      $and: [{ tenantId: { $eq: T } }, { $expr: { $eq: ['$tenantId', '$$owner'] } }],
    });
    expect(find.upstream[0]!.body.let).toEqual({ owner: B });
    for (const variables of [
      { f: { $function: { body: 'return 1', args: [], lang: 'js' } } },
      { r: '$$USER_ROLES' },
      { u: { $foo: 1 } },
    ]) {
      const refused = await sent(T, { find: 'c', filter: {}, let: variables, $db: 'app' });
      expect(refused.reply.ok, JSON.stringify(variables)).toBe(0);
      expect(refused.upstream, JSON.stringify(variables)).toEqual([]);
    }
  });

  it('catalogue 54-56: killSessions and refreshSessions carry only ids derived for the sending tenant', async () => {
    const lsid = { id: new UUID() };
    const hex = (id: Binary): string => Buffer.from(id.buffer).toString('hex');
    const b = await sent(B, { find: 'c', filter: {}, lsid, $db: 'app' });
    const bUpstream = hex(b.upstream[0]!.body.lsid.id as Binary);
    for (const name of ['killSessions', 'refreshSessions', 'endSessions']) {
      const t = await sent(T, { [name]: [lsid], $readPreference: { mode: 'primaryPreferred' }, $db: 'admin' });
      expect(t.reply.ok, name).toBe(1);
      const ids = (t.upstream[0]!.body[name] as Array<{ id: Binary }>).map((entry) => hex(entry.id));
      expect(ids, name).toHaveLength(1);
      expect(ids[0], name).not.toBe(bUpstream);
      expect(ids[0], name).not.toBe(Buffer.from(lsid.id.buffer).toString('hex'));
    }
    // The empty list (every session of the shared backend user) never leaves the proxy.
    const all = await sent(T, { killSessions: [], $db: 'admin' });
    expect(all.reply.ok).toBe(0);
    expect(all.reply.errmsg).toMatch(/rule killSessions.all/);
    expect(all.upstream).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------
// Error fidelity.

/** The error a promise rejects with (a MongoServerError from the driver). */
async function failure(run: () => Promise<unknown>): Promise<Document> {
  try {
    await run();
  } catch (error) {
    return error as Document;
  }
  throw new Error('expected the command to fail');
}

describe('G1: malformed input gets the server’s code and shape; 13 only for what is forbidden', () => {
  it('catalogue 16, 41: an unknown update operator is FailedToParse (9) as direct, for updateOne, findOneAndUpdate and bulk; nothing changes', async () => {
    const coll = 'errors-update';
    await seedBoth(coll);
    const viaProxy = acme7.db(dbName).collection(coll);
    const directColl = direct.db(directDbName).collection(coll);
    await directColl.insertOne({ k: 'mine' });
    const directError = await failure(() => directColl.updateOne({}, { $foo: { a: 1 } } as Document));
    for (const run of [
      () => viaProxy.updateOne({}, { $foo: { a: 1 } } as Document),
      () => viaProxy.findOneAndUpdate({}, { $foo: { a: 1 } } as Document),
      () => viaProxy.bulkWrite([{ updateMany: { filter: {}, update: { $foo: { a: 1 } } as Document } }]),
    ]) {
      const error = await failure(run);
      expect(error.code).toBe(9);
      expect(error.code).toBe(directError.code);
      expect(error.codeName ?? 'FailedToParse').toBe('FailedToParse');
      expect(error.errorLabels ?? []).toEqual([]);
    }
    expect(await bDocument(coll)).toEqual({ _id: `${coll}-b`, tenantId: B, k: 'theirs', n: 1, secret: 'SECRET-B' });
    expect(
      await direct
        .db(dbName)
        .collection(coll)
        .findOne({ _id: `${coll}-a` } as Document),
    ).toEqual({
      _id: `${coll}-a`,
      tenantId: T,
      k: 'mine',
      n: 1,
    });
  });

  it('an unknown stage is 40324, an unknown command field 40415, an unknown query operator 2, an unknown expression 168, a removed command 59', async () => {
    const db = acme7.db(dbName);
    const stage = await failure(() =>
      db
        .collection('errors')
        .aggregate([{ $foo: {} }])
        .toArray(),
    );
    expect(stage.code).toBe(40324);
    expect(stage.codeName).toBe('Location40324');
    const field = await failure(() => db.command({ find: 'errors', filter: {}, foo: 1 }));
    expect(field.code).toBe(40415);
    const query = await failure(() =>
      db
        .collection('errors')
        .find({ a: { $foo: 1 } })
        .toArray(),
    );
    expect(query.code).toBe(2);
    expect(query.codeName).toBe('BadValue');
    // MongoDB: "unknown operator: $foo" (BadValue); FerretDB on an empty collection never parses it.
    const expression = await failure(() =>
      db
        .collection('errors')
        .find({ $expr: { $foo: ['$a'] } })
        .toArray(),
    );
    expect(expression.code).toBe(168);
    expect(expression.codeName).toBe('InvalidPipelineOperator');
    const removed = await failure(() => db.command({ eval: 'db.x.find()' }));
    expect(removed.code).toBe(59);
    expect(removed.code).toBe((await failure(() => direct.db(directDbName).command({ eval: 'db.x.find()' }))).code);
  });

  it('what is forbidden stays 13 Unauthorized: $where, the tenant path, a diagnostic stage, killOp', async () => {
    const db = acme7.db(dbName);
    expect((await failure(() => db.collection('errors').find({ $where: 'true' }).toArray())).code).toBe(13);
    expect((await failure(() => db.collection('errors').updateOne({}, { $set: { tenantId: B } }))).code).toBe(13);
    expect(
      (
        await failure(() =>
          db
            .collection('errors')
            .aggregate([{ $collStats: {} }])
            .toArray(),
        )
      ).code,
    ).toBe(13);
    expect((await failure(() => acme7.db('admin').command({ killOp: 1, op: 1 }))).code).toBe(13);
  });
});

// ---------------------------------------------------------------------------------------------
// Introspection.

describe('catalogue 25, 26: introspection answered with what every tenant may see; tools start silently', () => {
  it('catalogue 26: mongosh starts (connection info, FCV, atlasVersion, admin.atlascli, banners) and runs --eval without one refusal', async () => {
    const refusedBefore = await metricValue(tenants.proxy.proxy, 'policy_decisions_total', { decision: 'refused' });
    const auditBefore = refusals().length;
    const { stdout } = await run(
      MONGOSH,
      ['--norc', tenants.uriFor(T), '--eval', 'print(db.version()); print(db.serverStatus().version)'],
      { timeout: 60_000 },
    );
    const buildInfo = await direct.db('admin').command({ buildInfo: 1 });
    expect(stdout).toContain(buildInfo.version as string);
    expect(refusals().length).toBe(auditBefore);
    expect(await metricValue(tenants.proxy.proxy, 'policy_decisions_total', { decision: 'refused' })).toBe(
      refusedBefore,
    );
  }, 90_000);

  for (const driver of [
    { name: 'driver 7', admin: () => acme7.db('admin') },
    { name: 'driver 6', admin: () => acme6.db('admin') as unknown as Db },
  ]) {
    it(`catalogue 25, 26: ${driver.name}: serverStatus carries the upstream version (Mongoose reads it); harness commands answer without a refusal`, async () => {
      const auditBefore = refusals().length;
      const admin = driver.admin();
      const { version } = await direct.db('admin').command({ buildInfo: 1 });
      const status = await admin.command({ serverStatus: 1 });
      expect(status.version).toBe(version);
      expect(status.ok).toBe(1);
      expect(
        (await admin.command({ getParameter: 1, featureCompatibilityVersion: 1 })).featureCompatibilityVersion,
      ).toEqual({ version: (version as string).split('.').slice(0, 2).join('.') });
      for (const command of [
        { hostInfo: 1 },
        { getCmdLineOpts: 1 },
        { getLog: 'startupWarnings' },
        { getLog: '*' },
        { currentOp: 1 },
        { top: 1 },
        { listCommands: 1 },
        { whatsmyuri: 1 },
        { getFreeMonitoringStatus: 1 },
        { startSession: 1 },
        { connectionStatus: 1 },
        { buildInfo: 1 },
      ]) {
        expect((await admin.command(command)).ok, JSON.stringify(command)).toBe(1);
      }
      // Forwarded: the server answers (FerretDB has neither: CommandNotFound, not a refusal).
      for (const command of [{ atlasVersion: 1 }, { getDefaultRWConcern: 1 }]) {
        const reply = await admin.command(command).catch((error: Document) => error);
        expect(String(reply.errmsg ?? reply.message ?? ''), JSON.stringify(command)).not.toMatch(/refused/);
      }
      expect(await admin.collection('atlascli').countDocuments({ managedClusterType: 'atlasCliLocalDevCluster' })).toBe(
        0,
      );
      expect(refusals().length).toBe(auditBefore);
    });
  }

  it("catalogue 25, 26: nothing in the answers shows another tenant's work or the upstream: B busy, T looks", async () => {
    const coll = 'busy';
    await seedBoth(coll);
    const bClient = tenants.clientFor(B);
    const cursor = bClient.db(dbName).collection(coll).find({}, { batchSize: 1 });
    await cursor.next();
    const admin = acme7.db('admin');
    const answers = [
      await admin.command({ serverStatus: 1 }),
      await admin.command({ currentOp: 1, $all: true, idleCursors: true }),
      await admin.command({ top: 1 }),
      await admin.command({ getLog: 'global' }),
      await admin.command({ getLog: 'startupWarnings' }),
      await admin.command({ hostInfo: 1 }),
      await admin.command({ getCmdLineOpts: 1 }),
      await admin.command({ getParameter: '*' }),
    ];
    await cursor.close();
    const text = JSON.stringify(answers);
    for (const value of [B, 'SECRET-B', coll, dbName, new URL(upstreamUri()).host]) expect(text).not.toContain(value);
    expect(answers[1]!.inprog).toEqual([]);
    expect(answers[2]!.totals).toEqual({ note: 'all times in microseconds' });
    // The shared admin database stays out of reach for writes.
    await expect(admin.collection('atlascli').insertOne({ x: 1 })).rejects.toThrow(/rule namespace.system/);
  });

  it('catalogue 25: whatsmyuri answers the caller its own address', async () => {
    const raw = await tenants.rawFor(T);
    try {
      const reply = await raw.command(opMsg({ whatsmyuri: 1, $db: 'admin' }));
      expect(reply.ok).toBe(1);
      expect(reply.you).toMatch(/^(127\.0\.0\.1|\[::ffff:127\.0\.0\.1\]|\[::1\]):\d+$/);
    } finally {
      raw.close();
    }
  });
});

describe('catalogue 15, 60: capability-aware rewriting (issue 14)', () => {
  it('catalogue 15: collection.distinct works through the proxy wherever it works direct, and returns only T’s values', async () => {
    const coll = 'distinct_cap';
    await direct
      .db(dbName)
      .collection(coll)
      .insertMany([
        { _id: 'd-a1', tenantId: T, x: 'a1' },
        { _id: 'd-a2', tenantId: T, x: 'a2' },
        { _id: 'd-b1', tenantId: B, x: 'b-secret' },
      ] as Document[]);
    const before = refusals().length;
    for (const { db } of drivers) {
      expect((await db().collection(coll).distinct('x')).sort()).toEqual(['a1', 'a2']);
    }
    // What a direct read of T's documents holds.
    const directValues = await direct.db(dbName).collection(coll).distinct('x', { tenantId: T });
    expect(directValues.sort()).toEqual(['a1', 'a2']);
    // A client's own maxTimeMS is forwarded: the upstream answers as it does direct (accepted, or
    // refused with the same code where the upstream refuses the field on distinct).
    const outcome = (run: Promise<unknown>): Promise<string> =>
      run.then(
        () => 'ok',
        (error: { code?: number }) => `error ${error.code}`,
      );
    const directOutcome = await outcome(direct.db(dbName).collection(coll).distinct('x', {}, { maxTimeMS: 5_000 }));
    const proxiedOutcome = await outcome(acme7.db(dbName).collection(coll).distinct('x', {}, { maxTimeMS: 5_000 }));
    expect(proxiedOutcome).toBe(directOutcome);
    expect(refusals().length).toBe(before);
  });

  it('catalogue 60: collection-scan hints on updateOne, updateMany, deleteOne, deleteMany and findOneAndUpdate change only T’s documents', async () => {
    const coll = 'write_hints';
    await direct
      .db(dbName)
      .collection(coll)
      .insertMany([
        { _id: 'h-b0', tenantId: B, n: 0 },
        { _id: 'h-a1', tenantId: T, n: 1 },
        { _id: 'h-b1', tenantId: B, n: 1 },
        { _id: 'h-a2', tenantId: T, n: 2 },
        { _id: 'h-a3', tenantId: T, n: 3 },
        { _id: 'h-b2', tenantId: B, n: 2 },
      ] as Document[]);
    const bBefore = await direct.db(dbName).collection(coll).find({ tenantId: B }).sort({ _id: 1 }).toArray();
    const before = refusals().length;
    const c = acme7.db(dbName).collection(coll);
    // A single-document write with a scan hint affects one of T's documents, never B's first one.
    expect((await c.updateOne({}, { $set: { one: true } }, { hint: { _id: 1 } })).modifiedCount).toBe(1);
    expect((await c.updateMany({}, { $inc: { n: 10 } }, { hint: '_id_' })).modifiedCount).toBe(3);
    const found = await c.findOneAndUpdate({}, { $set: { fam: true } }, { hint: { $natural: 1 } });
    expect(found?.tenantId).toBe(T);
    expect((await c.deleteOne({}, { hint: { $natural: -1 } })).deletedCount).toBe(1);
    expect((await c.deleteMany({ n: { $gte: 0 } }, { hint: { _id: -1 } })).deletedCount).toBe(2);
    expect(refusals().length).toBe(before);
    // Read directly: B's documents are exactly as seeded; T has none left.
    expect(await direct.db(dbName).collection(coll).find({ tenantId: B }).sort({ _id: 1 }).toArray()).toEqual(bBefore);
    expect(await direct.db(dbName).collection(coll).countDocuments({ tenantId: T })).toBe(0);
  });
});
