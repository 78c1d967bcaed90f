/**
 * Proof for isolation catalogue items 1-21 and ground rules G1-G4
 * (docs/threat-catalogue.md): every item tries to break its rule as a tenant
 * ("acme", unless said otherwise) through the official driver, or a raw wire client where a
 * driver cannot send the attack, asserts the refusal (code, codeName, the rule named in errmsg,
 * no data in it) or the rewritten behaviour, then reads the upstream DIRECTLY to prove that no
 * other tenant's document was read, written or removed.
 *
 * Every collection is seeded directly upstream with two documents per tenant plus two documents
 * that belong to nobody (no tenant field; a null tenant: catalogue 10), so every read in this
 * file also proves item 10.
 *
 * Where an upstream lacks a feature ($text, geo queries, server-side JavaScript, collation,
 * bulkWrite…), the item is proven on the exact bytes the proxy sends upstream (in-process fake
 * upstream) and has an end-to-end case gated with `lacks(feature)`, which runs on every upstream
 * that has it (DocumentDB has most; MongoDB all).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code, Long, MongoServerError, UUID, type Db, type Document, type MongoClient } from 'mongodb';
import { serialize } from 'bson';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, lacks, uniqueDbName, upstreamFeatures } from '../helpers/upstream.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { startFakeUpstream, type FakeUpstream, type ReceivedMessage } from '../helpers/fake-upstream.js';
import { RawClient, opMsg, type BuiltFrame } from '../helpers/raw-client.js';
import { forwardedBy, settled } from '../helpers/metrics.js';

const TENANTS = ['acme', 'globex', 'initech'] as const;
type Tenant = (typeof TENANTS)[number];
const CAP = 60_000;

/** Values no refusal or foreign read may ever show acme. */
const FOREIGN_SECRETS = ['globex-secret', 'initech-secret', 'orphan-secret', 'null-secret', 'Acme-secret'];

const Codes = {
  BadValue: { code: 2, codeName: 'BadValue' },
  Unauthorized: { code: 13, codeName: 'Unauthorized' },
  TypeMismatch: { code: 14, codeName: 'TypeMismatch' },
  InvalidBSON: { code: 22, codeName: 'InvalidBSON' },
  CursorNotFound: { code: 43, codeName: 'CursorNotFound' },
  CommandNotFound: { code: 59, codeName: 'CommandNotFound' },
  InvalidNamespace: { code: 73, codeName: 'InvalidNamespace' },
  CommandNotSupported: { code: 115, codeName: 'CommandNotSupported' },
  InvalidPipelineOperator: { code: 168, codeName: 'InvalidPipelineOperator' },
} as const;
type Expected = { code: number; codeName: string; rule: string };
/** Seeded documents have string ids; the driver's default schema would insist on ObjectId. */
type AnyDoc = { _id: string; [key: string]: any };

let tp: TenantProxy;
let direct: MongoClient;
let dbName: string;
const dbs = {} as Record<Tenant, Db>;

beforeAll(async () => {
  // Reads are checked with the tenant field shown: each document read back names its owner.
  tp = await startTenantProxy(TENANTS, { isolation: { tenantFieldInReplies: 'show' } });
  direct = directClient();
  await direct.connect();
  dbName = uniqueDbName('catalogue01_21');
  for (const tenant of TENANTS) dbs[tenant] = tp.clientFor(tenant).db(dbName);
});

afterAll(async () => {
  await direct
    ?.db(dbName)
    .dropDatabase()
    .catch(() => undefined);
  await direct?.close();
  await tp?.stop();
});

// ---------------------------------------------------------------------------------------------
// Helpers

/** Two documents per tenant, one without a tenant field, one with a null tenant. */
function seedDocuments(): Document[] {
  const docs: Document[] = [];
  for (const tenant of TENANTS) {
    for (const n of [1, 2]) {
      docs.push({
        _id: `${tenant}-${n}`,
        tenantId: tenant,
        n,
        name: `name ${n}`,
        secret: `${tenant}-secret-${n}`,
        tags: ['x', tenant],
      });
    }
  }
  docs.push({ _id: 'orphan', n: 1, name: 'name 1', secret: 'orphan-secret', tags: ['x'] });
  docs.push({ _id: 'nulltenant', tenantId: null, n: 1, name: 'name 1', secret: 'null-secret', tags: ['x'] });
  return docs;
}

async function seed(coll: string, extra: Document[] = []): Promise<Document[]> {
  const docs = [...seedDocuments(), ...extra];
  await direct.db(dbName).collection(coll).insertMany(docs);
  return snapshot(coll);
}

/** Every document of the collection, read directly upstream, by _id. */
async function snapshot(coll: string, db = dbName): Promise<Document[]> {
  return direct.db(db).collection<AnyDoc>(coll).find({}).sort({ _id: 1 }).toArray();
}

function notOwnedBy(docs: Document[], tenant: string): Document[] {
  return docs.filter((doc) => doc.tenantId !== tenant);
}

function ownedBy(docs: Document[], tenant: string): Document[] {
  return docs.filter((doc) => doc.tenantId === tenant);
}

/** Upstream truth: nothing that is not `tenant`'s changed between two snapshots. */
function expectForeignUnchanged(before: Document[], after: Document[], tenant: string = 'acme'): void {
  expect(notOwnedBy(after, tenant)).toEqual(notOwnedBy(before, tenant));
}

/** Everything a tenant saw is its own. */
function expectOnlyOwn(docs: Document[], tenant: string = 'acme'): void {
  for (const doc of docs) expect(doc.tenantId, JSON.stringify(doc)).toBe(tenant);
}

function expectCleanMessage(message: string, extra: readonly string[] = []): void {
  for (const secret of [...FOREIGN_SECRETS, ...extra]) expect(message).not.toContain(secret);
}

/** The action fails with the proxy's refusal: code, codeName, the rule in errmsg, and no data. */
async function expectRefused(
  action: Promise<unknown> | (() => Promise<unknown>),
  expected: Expected,
  forbidden: readonly string[] = [],
): Promise<MongoServerError> {
  const promise = typeof action === 'function' ? action() : action;
  const outcome = await promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  if (outcome.ok) throw new Error(`expected a refusal (rule ${expected.rule}), got ${JSON.stringify(outcome.value)}`);
  const error = outcome.error as MongoServerError;
  expect(error).toBeInstanceOf(MongoServerError);
  expect({ code: error.code, codeName: error.codeName }).toEqual({ code: expected.code, codeName: expected.codeName });
  expect(error.message).toContain('mongo-tenant-proxy refused the command');
  expect(error.message).toContain(`(rule ${expected.rule})`);
  expectCleanMessage(error.message, forbidden);
  return error;
}

/** The same for a raw wire reply. */
function expectRefusedReply(reply: Document, expected: Expected, forbidden: readonly string[] = []): void {
  expect(reply.ok).toBe(0);
  expect({ code: reply.code, codeName: reply.codeName }).toEqual({ code: expected.code, codeName: expected.codeName });
  expect(reply.errmsg).toContain(`(rule ${expected.rule})`);
  expectCleanMessage(String(reply.errmsg), forbidden);
}

const refusedAs = (code: keyof typeof Codes, rule: string): Expected => ({ ...Codes[code], rule });

// Hand-built BSON (catalogue 7, G3): the bson library cannot encode a key twice.
const B = {
  cstring: (s: string): Buffer => Buffer.from(`${s}\0`, 'utf8'),
  doc(...elements: Buffer[]): Buffer {
    const body = Buffer.concat([...elements, Buffer.from([0])]);
    const length = Buffer.alloc(4);
    length.writeInt32LE(body.length + 4, 0);
    return Buffer.concat([length, body]);
  },
  str(name: string, value: string): Buffer {
    const bytes = Buffer.from(value, 'utf8');
    const length = Buffer.alloc(4);
    length.writeInt32LE(bytes.length + 1, 0);
    return Buffer.concat([Buffer.from([0x02]), B.cstring(name), length, bytes, Buffer.from([0])]);
  },
  int(name: string, value: number): Buffer {
    const v = Buffer.alloc(4);
    v.writeInt32LE(value, 0);
    return Buffer.concat([Buffer.from([0x10]), B.cstring(name), v]);
  },
  sub(name: string, doc: Buffer): Buffer {
    return Buffer.concat([Buffer.from([0x03]), B.cstring(name), doc]);
  },
  arr(name: string, ...docs: Buffer[]): Buffer {
    return Buffer.concat([Buffer.from([0x04]), B.cstring(name), B.doc(...docs.map((d, i) => B.sub(String(i), d)))]);
  },
};

/** OP_MSG with a body and kind-1 sequences of raw documents (which may repeat keys). */
function rawOpMsg(body: Buffer, sequences: { id: string; docs: Buffer[] }[] = []): BuiltFrame {
  const parts: Buffer[] = [Buffer.alloc(4), Buffer.from([0]), body];
  for (const sequence of sequences) {
    const id = B.cstring(sequence.id);
    const size = Buffer.alloc(4);
    size.writeInt32LE(4 + id.length + sequence.docs.reduce((n, d) => n + d.length, 0), 0);
    parts.push(Buffer.from([1]), size, id, ...sequence.docs);
  }
  const payload = Buffer.concat(parts);
  const requestId = Math.floor(Math.random() * 1e9);
  const header = Buffer.alloc(16);
  header.writeInt32LE(16 + payload.length, 0);
  header.writeInt32LE(requestId, 4);
  header.writeInt32LE(2013, 12);
  return { bytes: Buffer.concat([header, payload]), requestId };
}

async function rawCommand(tenant: Tenant, frame: BuiltFrame): Promise<Document> {
  const raw = await tp.rawFor(tenant);
  try {
    return await raw.command(frame);
  } finally {
    raw.close();
  }
}

const bsonDoc = (doc: Document): Buffer => Buffer.from(serialize(doc));

// ---------------------------------------------------------------------------------------------
// A proxy in front of an in-process fake upstream that records every byte it receives.

const FAKE_DB = 'fakedb';

describe('bytes sent upstream (fake upstream)', () => {
  let fake: FakeUpstream;
  let proxy: TestProxy;
  let raw: RawClient;

  const forwarded = (name: string): ReceivedMessage[] => fake.received.filter((m) => Object.keys(m.body)[0] === name);
  const tenantEq = { tenantId: { $eq: 'acme' } };

  async function send(body: Document, sequences?: { id: string; docs: Document[] }[]): Promise<Document> {
    return raw.command(opMsg({ ...body }, sequences === undefined ? {} : { sequences }));
  }

  beforeAll(async () => {
    fake = await startFakeUpstream((message) => {
      const name = Object.keys(message.body)[0]!;
      const coll = String(message.body[name]);
      if (name === 'find' || name === 'aggregate')
        return [{ cursor: { id: Long.fromNumber(0), ns: `${FAKE_DB}.${coll}`, firstBatch: [] }, ok: 1 }];
      if (name === 'count') return [{ n: 0, ok: 1 }];
      if (name === 'distinct') return [{ values: [], ok: 1 }];
      if (name === 'explain') return [{ queryPlanner: {}, ok: 1 }];
      if (name === 'bulkWrite')
        return [
          {
            cursor: { id: Long.fromNumber(0), ns: 'admin.$cmd.bulkWrite', firstBatch: [] },
            nErrors: 0,
            nInserted: 1,
            ok: 1,
          },
        ];
      return [{ n: 0, ok: 1 }];
    });
    proxy = await startTestProxy({
      upstream: { uri: fake.uri },
      listeners: [
        { name: 'acme', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['static'], staticTenant: 'acme' },
      ],
    });
    raw = await RawClient.connect(proxy.proxy.address.host, proxy.proxy.address.port);
  });

  afterAll(async () => {
    raw?.close();
    await proxy?.stop();
    await fake?.close();
  });

  it('catalogue G4: a filter that already names the tenant is still wrapped, never merged; a non-document filter is refused', async () => {
    fake.received.length = 0;
    expect((await send({ find: 'c', filter: { tenantId: 'acme' }, $db: FAKE_DB })).ok).toBe(1);
    expect((await send({ find: 'c', filter: { tenantId: { $ne: 'acme' } }, $db: FAKE_DB })).ok).toBe(1);
    expect((await send({ find: 'c', $db: FAKE_DB })).ok).toBe(1);
    const [same, ne, none] = forwarded('find');
    expect(same!.body.filter).toEqual({ $and: [tenantEq, { tenantId: 'acme' }] });
    expect(Object.keys(same!.body.filter)).toEqual(['$and']);
    expect(ne!.body.filter).toEqual({ $and: [tenantEq, { tenantId: { $ne: 'acme' } }] });
    expect(none!.body.filter).toEqual({ $and: [tenantEq] });
    // G2: what is forwarded is the re-serialized parsed form, not the client's bytes.
    expect(same!.bytes.includes(bsonDoc({ tenantId: 'acme' }))).toBe(true);
    expect(same!.bytes.includes(bsonDoc({ find: 'c', filter: { tenantId: 'acme' }, $db: FAKE_DB }))).toBe(false);

    fake.received.length = 0;
    expectRefusedReply(
      await send({ find: 'c', filter: 'tenantId == acme', $db: FAKE_DB }),
      refusedAs('TypeMismatch', 'filter.not-document'),
    );
    expectRefusedReply(
      await send({ count: 'c', query: [{ tenantId: 'globex' }], $db: FAKE_DB }),
      refusedAs('TypeMismatch', 'filter.not-document'),
      ['globex'],
    );
    expect(fake.received).toHaveLength(0);
  });

  it('catalogue 6: key-present tenant filters reach the upstream ANDed behind the tenant equality in every filter command', async () => {
    fake.received.length = 0;
    const filter = { $or: [{ tenantId: 'globex' }, { tenantId: { $in: ['acme', 'globex'] } }] };
    await send({ find: 'c', filter, $db: FAKE_DB });
    await send({ count: 'c', query: filter, $db: FAKE_DB });
    await send({ distinct: 'c', key: 'secret', query: filter, $db: FAKE_DB });
    await send({ aggregate: 'c', pipeline: [{ $match: filter }], cursor: {}, $db: FAKE_DB });
    await send({ update: 'c', updates: [{ q: filter, u: { $set: { a: 1 } }, multi: true }], $db: FAKE_DB });
    await send({ delete: 'c', deletes: [{ q: filter, limit: 0 }], $db: FAKE_DB });
    await send({ findAndModify: 'c', query: filter, remove: true, $db: FAKE_DB });
    const wrapped = { $and: [tenantEq, filter] };
    expect(forwarded('find')[0]!.body.filter).toEqual(wrapped);
    expect(forwarded('count')[0]!.body.query).toEqual(wrapped);
    expect(forwarded('distinct')[0]!.body.query).toEqual(wrapped);
    expect(forwarded('aggregate')[0]!.body.pipeline[0]).toEqual({ $match: wrapped });
    expect(forwarded('update')[0]!.body.updates[0].q).toEqual(wrapped);
    expect(forwarded('delete')[0]!.body.deletes[0].q).toEqual(wrapped);
    expect(forwarded('findAndModify')[0]!.body.query).toEqual(wrapped);
  });

  it('catalogue 17: count without query and distinct without query carry the tenant predicate upstream', async () => {
    fake.received.length = 0;
    await send({ count: 'c', $db: FAKE_DB });
    await send({ distinct: 'c', key: 'tenantId', $db: FAKE_DB });
    expect(forwarded('count')[0]!.body.query).toEqual({ $and: [tenantEq] });
    expect(forwarded('distinct')[0]!.body.query).toEqual({ $and: [tenantEq] });
    expect(forwarded('distinct')[0]!.body.key).toBe('tenantId');
  });

  it('catalogue 13: an aggregate $text $match stays stage 0 with the tenant ANDed into it; misplaced $text is refused', async () => {
    fake.received.length = 0;
    const reply = await send({
      aggregate: 'c',
      pipeline: [{ $match: { $text: { $search: 'shared' } } }, { $limit: 5 }],
      cursor: {},
      $db: FAKE_DB,
    });
    expect(reply.ok).toBe(1);
    const pipeline = forwarded('aggregate')[0]!.body.pipeline as Document[];
    expect(pipeline).toHaveLength(2);
    expect(pipeline[0]).toEqual({ $match: { $and: [tenantEq, { $text: { $search: 'shared' } }] } });
    expect(pipeline[1]).toEqual({ $limit: 5 });

    await send({ find: 'c', filter: { $text: { $search: 'shared' } }, $db: FAKE_DB });
    expect(forwarded('find')[0]!.body.filter).toEqual({ $and: [tenantEq, { $text: { $search: 'shared' } }] });

    fake.received.length = 0;
    const bad = [
      { $or: [{ $text: { $search: 'x' } }, { n: 1 }] },
      { $nor: [{ $text: { $search: 'x' } }] },
      { $and: [{ $text: { $search: 'x' } }, { $text: { $search: 'y' } }] },
      { tags: { $elemMatch: { $text: { $search: 'x' } } } },
    ];
    for (const filter of bad) {
      const refused = await send({ find: 'c', filter, $db: FAKE_DB });
      expect(refused.ok).toBe(0);
      expect(String(refused.errmsg)).toMatch(/\(rule (filter\.text-placement|operator\.unknown)\)/);
    }
    expectRefusedReply(
      await send({ find: 'c', filter: bad[0], $db: FAKE_DB }),
      refusedAs('BadValue', 'filter.text-placement'),
    );
    expect(fake.received).toHaveLength(0);
  });

  it('catalogue 14: $near stays valid under the injected top-level $and; under $or/$nor/$not it is refused', async () => {
    fake.received.length = 0;
    const near = { loc: { $near: { $geometry: { type: 'Point', coordinates: [0, 0] }, $maxDistance: 1000 } } };
    expect((await send({ find: 'c', filter: near, $db: FAKE_DB })).ok).toBe(1);
    expect(forwarded('find')[0]!.body.filter).toEqual({ $and: [tenantEq, near] });
    const nearSphere = { $and: [{ loc: { $nearSphere: [0, 0] } }, { n: 1 }] };
    expect((await send({ find: 'c', filter: nearSphere, $db: FAKE_DB })).ok).toBe(1);
    expect(forwarded('find')[1]!.body.filter).toEqual({ $and: [tenantEq, nearSphere] });

    fake.received.length = 0;
    for (const filter of [{ $or: [near, { n: 1 }] }, { $nor: [near] }, { loc: { $not: near.loc } }]) {
      expectRefusedReply(
        await send({ find: 'c', filter, $db: FAKE_DB }),
        refusedAs('BadValue', 'filter.geo-placement'),
      );
    }
    expect(fake.received).toHaveLength(0);
  });

  it('catalogue 15: every command reaches the upstream with maxTimeMS at most the cap (added, clamped, 0 replaced)', async () => {
    fake.received.length = 0;
    const redos = { name: { $regex: '^(a+)+$' } };
    await send({ find: 'c', filter: redos, $db: FAKE_DB });
    await send({ find: 'c', filter: redos, maxTimeMS: 10_000_000, $db: FAKE_DB });
    await send({ find: 'c', filter: redos, maxTimeMS: 0, $db: FAKE_DB });
    await send({ find: 'c', filter: redos, maxTimeMS: Long.fromString('9223372036854775807'), $db: FAKE_DB });
    await send({ find: 'c', filter: redos, maxTimeMS: 1234, $db: FAKE_DB });
    const finds = forwarded('find').map((m) => m.body.maxTimeMS);
    expect(finds).toEqual([CAP, CAP, CAP, CAP, 1234]);

    await send({ count: 'c', query: redos, maxTimeMS: 999_999_999, $db: FAKE_DB });
    await send({ distinct: 'c', key: 'name', query: redos, $db: FAKE_DB });
    await send({
      aggregate: 'c',
      pipeline: [
        { $match: { $expr: { $regexMatch: { input: '$name', regex: '^(a+)+$' } } } },
        { $project: { m: { $regexFind: { input: '$name', regex: '(a|aa)+$' } } } },
      ],
      cursor: {},
      maxTimeMS: 86_400_000,
      $db: FAKE_DB,
    });
    await send({
      update: 'c',
      updates: [{ q: redos, u: { $set: { a: 1 } }, multi: true }],
      maxTimeMS: 86_400_000,
      $db: FAKE_DB,
    });
    await send({ delete: 'c', deletes: [{ q: redos, limit: 0 }], $db: FAKE_DB });
    await send({
      explain: { find: 'c', filter: redos },
      verbosity: 'queryPlanner',
      maxTimeMS: 86_400_000,
      $db: FAKE_DB,
    });
    for (const name of ['count', 'distinct', 'aggregate', 'update', 'delete', 'explain']) {
      const [message] = forwarded(name);
      expect(message, name).toBeDefined();
      expect(typeof message!.body.maxTimeMS, name).toBe('number');
      expect(message!.body.maxTimeMS, name).toBeGreaterThan(0);
      expect(message!.body.maxTimeMS, name).toBeLessThanOrEqual(CAP);
    }

    fake.received.length = 0;
    expectRefusedReply(
      await send({ find: 'c', filter: redos, maxTimeMS: -1, $db: FAKE_DB }),
      refusedAs('BadValue', 'maxTimeMS.invalid'),
    );
    expectRefusedReply(
      await send({ find: 'c', filter: redos, maxTimeMS: 'forever', $db: FAKE_DB }),
      refusedAs('TypeMismatch', 'maxTimeMS.invalid'),
    );
    expect(fake.received).toHaveLength(0);
  });

  it('catalogue 9: collation strength >= 3 is forwarded with the tenant predicate; strength 1-2 on a string tenant never leaves the proxy', async () => {
    fake.received.length = 0;
    await send({ find: 'c', filter: {}, collation: { locale: 'en', strength: 3 }, $db: FAKE_DB });
    const [strict] = forwarded('find');
    expect(strict!.body.collation).toEqual({ locale: 'en', strength: 3 });
    expect(strict!.body.filter).toEqual({ $and: [tenantEq, {}] });

    fake.received.length = 0;
    const loose = [
      { find: 'c', filter: {}, collation: { locale: 'en', strength: 2 } },
      { count: 'c', collation: { locale: 'en', strength: 1 } },
      { distinct: 'c', key: 'tenantId', collation: { locale: 'fr', strength: 2 } },
      { aggregate: 'c', pipeline: [], cursor: {}, collation: { locale: 'en', strength: 1 } },
      {
        aggregate: 'x',
        pipeline: [{ $lookup: { from: 'c', localField: 'a', foreignField: 'b', as: 'j' } }],
        cursor: {},
        collation: { locale: 'en', strength: 2 },
      },
      { update: 'c', updates: [{ q: {}, u: { $set: { a: 1 } }, collation: { locale: 'en', strength: 2 } }] },
      { delete: 'c', deletes: [{ q: {}, limit: 0, collation: { locale: 'en', strength: 1 } }] },
      { findAndModify: 'c', query: {}, remove: true, collation: { locale: 'en', strength: 2 } },
      { explain: { find: 'c', collation: { locale: 'en', strength: 2 } }, verbosity: 'queryPlanner' },
    ];
    for (const command of loose) {
      expectRefusedReply(
        await send({ ...command, $db: FAKE_DB }),
        refusedAs('Unauthorized', 'collation.tenant-string'),
      );
    }
    expect(fake.received).toHaveLength(0);
  });

  it('catalogue 9: without a client collation every tenant-filtered command reaches a MongoDB upstream with collation {locale: "simple"} (a default collation cannot widen the match)', async () => {
    // The fake answers the proxy's capability probe like MongoDB: the simple collation is accepted.
    expect(proxy.proxy.upstream.capabilities.collation).toBe(true);
    const simple = { locale: 'simple' };
    fake.received.length = 0;
    await send({ find: 'c', filter: { n: 1 }, $db: FAKE_DB });
    await send({ count: 'c', $db: FAKE_DB });
    await send({ distinct: 'c', key: 'secret', $db: FAKE_DB });
    await send({ aggregate: 'c', pipeline: [{ $match: { n: 1 } }], cursor: {}, $db: FAKE_DB });
    await send({
      update: 'c',
      updates: [
        { q: { n: 1 }, u: { $set: { a: 1 } } },
        { q: {}, u: { $set: { a: 2 } }, collation: { locale: 'en', strength: 3 } },
      ],
      $db: FAKE_DB,
    });
    await send({ delete: 'c', $db: FAKE_DB }, [{ id: 'deletes', docs: [{ q: {}, limit: 0 }] }]);
    await send({ findAndModify: 'c', query: { n: 1 }, update: { $set: { a: 1 } }, $db: FAKE_DB });
    await send({ explain: { find: 'c', filter: { n: 1 } }, verbosity: 'queryPlanner', $db: FAKE_DB });
    expect(forwarded('find')[0]!.body).toMatchObject({ filter: { $and: [tenantEq, { n: 1 }] }, collation: simple });
    expect(forwarded('count')[0]!.body).toMatchObject({ query: { $and: [tenantEq] }, collation: simple });
    expect(forwarded('distinct')[0]!.body).toMatchObject({ query: { $and: [tenantEq] }, collation: simple });
    expect(forwarded('aggregate')[0]!.body).toMatchObject({
      pipeline: [{ $match: { $and: [tenantEq, { n: 1 }] } }],
      collation: simple,
    });
    const [first, second] = forwarded('update')[0]!.body.updates as Document[];
    expect(first).toMatchObject({ q: { $and: [tenantEq, { n: 1 }] }, collation: simple });
    // A client collation of strength 3 is the client's choice, forwarded as sent.
    expect(second!.collation).toEqual({ locale: 'en', strength: 3 });
    // The delete statements travelled as a kind-1 sequence (the fake decodes only the body).
    expect(
      forwarded('delete')[0]!.bytes.includes(bsonDoc({ q: { $and: [tenantEq, {}] }, limit: 0, collation: simple })),
    ).toBe(true);
    expect(forwarded('findAndModify')[0]!.body).toMatchObject({
      query: { $and: [tenantEq, { n: 1 }] },
      collation: simple,
    });
    expect(forwarded('explain')[0]!.body.explain).toMatchObject({ find: 'c', collation: simple });

    fake.received.length = 0;
    const ok = await send({ bulkWrite: 1, $db: 'admin' }, [
      {
        id: 'ops',
        docs: [
          { insert: 0, document: { _id: 'bw-9' } },
          { update: 0, filter: {}, updateMods: { $set: { v: 9 } } },
          { delete: 0, filter: {}, multi: true },
        ],
      },
      { id: 'nsInfo', docs: [{ ns: `${FAKE_DB}.c` }] },
    ]);
    expect(ok.ok).toBe(1);
    const bulk = forwarded('bulkWrite')[0]!.bytes;
    expect(
      bulk.includes(
        bsonDoc({
          update: 0,
          filter: { $and: [tenantEq, {}] },
          updateMods: { $set: { v: 9 }, $setOnInsert: { tenantId: 'acme' } },
          collation: simple,
        }),
      ),
    ).toBe(true);
    expect(
      bulk.includes(bsonDoc({ delete: 0, filter: { $and: [tenantEq, {}] }, multi: true, collation: simple })),
    ).toBe(true);
    expect(bulk.includes(bsonDoc({ insert: 0, document: { _id: 'bw-9', tenantId: 'acme' } }))).toBe(true);
  });

  it("catalogue 9: an upstream that refuses the probe's simple collation (FerretDB v1, DocumentDB) gets no collation added", async () => {
    const ferret = await startFakeUpstream(
      (message) => {
        const name = Object.keys(message.body)[0]!;
        if (name === 'find') return [{ cursor: { id: Long.fromNumber(0), ns: `${FAKE_DB}.c`, firstBatch: [] }, ok: 1 }];
        return [{ n: 0, ok: 1 }];
      },
      { capabilities: { collation: false } },
    );
    const ferretProxy = await startTestProxy({
      upstream: { uri: ferret.uri },
      listeners: [
        { name: 'acme', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['static'], staticTenant: 'acme' },
      ],
    });
    const client = await RawClient.connect(ferretProxy.proxy.address.host, ferretProxy.proxy.address.port);
    try {
      expect(ferretProxy.proxy.upstream.capabilities.collation).toBe(false);
      expect((await client.command(opMsg({ find: 'c', filter: { n: 1 }, $db: FAKE_DB }))).ok).toBe(1);
      expect(
        (await client.command(opMsg({ update: 'c', updates: [{ q: {}, u: { $set: { a: 1 } } }], $db: FAKE_DB }))).ok,
      ).toBe(1);
      expect((await client.command(opMsg({ findAndModify: 'c', query: {}, remove: true, $db: FAKE_DB }))).ok).toBe(1);
      const names = ferret.received.map((m) => Object.keys(m.body)[0]);
      expect(names).toEqual(['find', 'update', 'findAndModify']);
      for (const message of ferret.received) {
        expect(message.body.filter ?? message.body.query ?? message.body.updates[0].q).toBeDefined();
        expect(message.bytes.includes(Buffer.from('collation\0'))).toBe(false);
      }
    } finally {
      client.close();
      await ferretProxy.stop();
      await ferret.close();
    }
  });

  it('catalogue 11: $expr is forwarded behind the tenant equality; $$USER_ROLES never leaves the proxy', async () => {
    fake.received.length = 0;
    const expr = { $expr: { $or: [{ $ne: ['$tenantId', 'acme'] }, true] } };
    await send({ find: 'c', filter: expr, $db: FAKE_DB });
    expect(forwarded('find')[0]!.body.filter).toEqual({ $and: [tenantEq, expr] });
    fake.received.length = 0;
    const roles = [
      { find: 'c', filter: { $expr: { $in: ['root', '$$USER_ROLES.role'] } } },
      { aggregate: 'c', pipeline: [{ $set: { r: '$$USER_ROLES' } }], cursor: {} },
      { aggregate: 'c', pipeline: [], cursor: {}, let: { r: { $concat: ['x', '$$USER_ROLES'] } } },
      { update: 'c', updates: [{ q: {}, u: [{ $set: { r: '$$USER_ROLES' } }] }] },
    ];
    for (const command of roles) {
      expectRefusedReply(await send({ ...command, $db: FAKE_DB }), refusedAs('Unauthorized', 'variable.user-roles'));
    }
    expect(fake.received).toHaveLength(0);
  });

  it('catalogue 12: $jsonSchema is allowed and forwarded behind the tenant equality; JavaScript inside it is not', async () => {
    fake.received.length = 0;
    const schema = {
      $jsonSchema: { bsonType: 'object', required: ['secret'], properties: { tenantId: { bsonType: 'string' } } },
    };
    expect((await send({ find: 'c', filter: schema, $db: FAKE_DB })).ok).toBe(1);
    expect(forwarded('find')[0]!.body.filter).toEqual({ $and: [tenantEq, schema] });
    fake.received.length = 0;
    const withWhere = { $jsonSchema: { bsonType: 'object', properties: { a: { $where: 'sleep(5000) || true' } } } };
    expectRefusedReply(
      await send({ find: 'c', filter: withWhere, $db: FAKE_DB }),
      refusedAs('Unauthorized', 'operator.where'),
      ['sleep('],
    );
    expect(fake.received).toHaveLength(0);
  });

  it('catalogue 19: bulkWrite naming an allowed namespace and a foreign database is refused whole; nothing is forwarded', async () => {
    fake.received.length = 0;
    const ops = [
      { insert: 0, document: { _id: 'bw-1', v: 1 } },
      { insert: 1, document: { _id: 'bw-2', v: 2 } },
      { delete: 0, filter: {}, multi: true },
    ];
    for (const foreign of ['local.oplog.rs', 'admin.bw', 'config.bw', `${FAKE_DB}.system.js`]) {
      const reply = await send({ bulkWrite: 1, ordered: true, $db: 'admin' }, [
        { id: 'ops', docs: ops },
        { id: 'nsInfo', docs: [{ ns: `${FAKE_DB}.c` }, { ns: foreign }] },
      ]);
      expectRefusedReply(reply, refusedAs('Unauthorized', 'namespace.system'));
    }
    // In the body rather than sequences: the same.
    expectRefusedReply(
      await send({ bulkWrite: 1, ops, nsInfo: [{ ns: `${FAKE_DB}.c` }, { ns: 'local.oplog.rs' }], $db: 'admin' }),
      refusedAs('Unauthorized', 'namespace.system'),
    );
    // An op smuggling another tenant's value in an allowed namespace refuses the whole command too.
    expectRefusedReply(
      await send({ bulkWrite: 1, $db: 'admin' }, [
        {
          id: 'ops',
          docs: [
            { insert: 0, document: { _id: 'bw-3' } },
            { insert: 0, document: { _id: 'bw-4', tenantId: 'globex' } },
          ],
        },
        { id: 'nsInfo', docs: [{ ns: `${FAKE_DB}.c` }] },
      ]),
      refusedAs('Unauthorized', 'insert.foreign-tenant'),
      ['globex'],
    );
    expect(forwarded('bulkWrite')).toHaveLength(0);
    expect(fake.received).toHaveLength(0);

    // The allowed form is rewritten op by op: inserts stamped, filters wrapped, updates checked.
    const ok = await send({ bulkWrite: 1, $db: 'admin' }, [
      {
        id: 'ops',
        docs: [
          { insert: 0, document: { _id: 'bw-5', v: 5 } },
          { update: 1, filter: { tenantId: 'globex' }, updateMods: { $set: { v: 6 } }, multi: true },
          { delete: 0, filter: {}, multi: true },
        ],
      },
      { id: 'nsInfo', docs: [{ ns: `${FAKE_DB}.c` }, { ns: `${FAKE_DB}.d` }] },
    ]);
    expect(ok.ok).toBe(1);
    const [message] = forwarded('bulkWrite');
    expect(message).toBeDefined();
    // The fake upstream decodes only the body: read the sequences from the recorded bytes.
    const text = message!.bytes.toString('latin1');
    expect(text).toContain('ops\0');
    expect(text).toContain('nsInfo\0');
    const stamped = bsonDoc({ _id: 'bw-5', tenantId: 'acme', v: 5 });
    expect(message!.bytes.includes(stamped)).toBe(true);
    expect(message!.bytes.includes(bsonDoc({ $and: [tenantEq, { tenantId: 'globex' }] }))).toBe(true);
    expect(message!.bytes.includes(bsonDoc({ $and: [tenantEq, {}] }))).toBe(true);
  });

  it('catalogue 21: explain rewrites the inner command exactly like the command itself (tenant predicate inside)', async () => {
    fake.received.length = 0;
    const attack = { tenantId: 'globex' };
    const inner: Document[] = [
      { find: 'c', filter: attack },
      { count: 'c', query: attack },
      { distinct: 'c', key: 'secret', query: attack },
      { aggregate: 'c', pipeline: [{ $match: attack }], cursor: {} },
      { update: 'c', updates: [{ q: attack, u: { $set: { a: 1 } }, multi: true }] },
      { delete: 'c', deletes: [{ q: attack, limit: 0 }] },
      { findAndModify: 'c', query: attack, update: { $set: { a: 1 } } },
      { findandmodify: 'c', query: attack, remove: true },
    ];
    for (const command of inner) {
      expect((await send({ explain: command, $db: FAKE_DB })).ok, JSON.stringify(command)).toBe(1);
    }
    const explains = forwarded('explain');
    expect(explains).toHaveLength(inner.length);
    const wrapped = { $and: [tenantEq, attack] };
    const innerOf = (i: number): Document => explains[i]!.body.explain as Document;
    expect(innerOf(0).filter).toEqual(wrapped);
    expect(innerOf(1).query).toEqual(wrapped);
    expect(innerOf(2).query).toEqual(wrapped);
    expect(innerOf(3).pipeline[0]).toEqual({ $match: wrapped });
    expect(innerOf(4).updates[0].q).toEqual(wrapped);
    expect(innerOf(5).deletes[0].q).toEqual(wrapped);
    expect(innerOf(6).query).toEqual(wrapped);
    expect(innerOf(7).query).toEqual(wrapped);
    for (const message of explains) {
      // Every verbosity runs; the reply withholds the figures that count other tenants' documents (catalogue 59).
      expect(message.body.verbosity).toBeUndefined();
      expect(message.body.maxTimeMS).toBeLessThanOrEqual(CAP);
      expect(message.body.$db).toBe(FAKE_DB);
    }
    // The same find, sent directly, is rewritten to the same bytes. (An explain on a shared
    // collection also reads the tenant's index names from the ownership catalogue: not that find.)
    await send({ find: 'c', filter: attack, $db: FAKE_DB });
    expect(forwarded('find').filter((message) => message.body.$db === FAKE_DB)[0]!.body.filter).toEqual(
      innerOf(0).filter,
    );

    fake.received.length = 0;
    expectRefusedReply(
      await send({ explain: { explain: { find: 'c' } }, $db: FAKE_DB }),
      refusedAs('BadValue', 'explain.nested'),
    );
    expectRefusedReply(
      await send({ explain: { insert: 'c', documents: [{ tenantId: 'globex' }] }, $db: FAKE_DB }),
      refusedAs('CommandNotSupported', 'explain.inner'),
      ['globex'],
    );
    expectRefusedReply(
      await send({ explain: { find: 'c', filter: { $where: 'true' } }, $db: FAKE_DB }),
      refusedAs('Unauthorized', 'operator.where'),
    );
    expect(fake.received).toHaveLength(0);
    expect((await send({ explain: { find: 'c', filter: attack }, verbosity: 'executionStats', $db: FAKE_DB })).ok).toBe(
      1,
    );
    const stats = forwarded('explain');
    expect(stats).toHaveLength(1);
    expect(stats[0]!.body.verbosity).toBe('executionStats');
    expect((stats[0]!.body.explain as Document).filter).toEqual(wrapped);
  });
});

// ---------------------------------------------------------------------------------------------
// End to end through the driver, against the shared upstream, every result checked directly.

describe('end to end: catalogue 1-21', () => {
  const acme = (): Db => dbs.acme;

  it('catalogue 1: $where is refused anywhere (top level, $or, $elemMatch, $lookup.pipeline, $facet, count, delete), fast, nothing forwarded', async () => {
    const before = await seed('c01');
    const coll = acme().collection<AnyDoc>('c01');
    const where = 'sleep(5000) || true';
    const whereRule = refusedAs('Unauthorized', 'operator.where');
    const attempts: Array<[string, () => Promise<unknown>, Expected]> = [
      ['find top level', () => coll.find({ $where: where }).toArray(), whereRule],
      ['find $where as BSON Code', () => coll.find({ $where: new Code(where) } as Document).toArray(), whereRule],
      ['find under $or', () => coll.find({ $or: [{ n: 1 }, { $where: where }] }).toArray(), whereRule],
      ['find under $and/$nor', () => coll.find({ $and: [{ $nor: [{ $where: where }] }] }).toArray(), whereRule],
      ['find under $elemMatch', () => coll.find({ tags: { $elemMatch: { $where: where } } }).toArray(), whereRule],
      ['aggregate $match', () => coll.aggregate([{ $match: { $where: where } }]).toArray(), whereRule],
      [
        'aggregate $lookup.pipeline',
        () =>
          coll.aggregate([{ $lookup: { from: 'c01', pipeline: [{ $match: { $where: where } }], as: 'j' } }]).toArray(),
        whereRule,
      ],
      [
        'aggregate $facet',
        () => coll.aggregate([{ $facet: { a: [{ $match: { $where: where } }] } }]).toArray(),
        whereRule,
      ],
      ['count', () => acme().command({ count: 'c01', query: { $where: where } }), whereRule],
      ['distinct', () => coll.distinct('secret', { $where: where }), whereRule],
      ['deleteMany', () => coll.deleteMany({ $where: 'this.tenantId != "acme"' }), whereRule],
      ['updateMany', () => coll.updateMany({ $where: where }, { $set: { pwned: true } }), whereRule],
      [
        'BSON Code value anywhere',
        () => coll.find({ name: new Code('function () { return true }') }).toArray(),
        refusedAs('Unauthorized', 'bson.code'),
      ],
      [
        'BSON code-with-scope value',
        () => coll.find({ name: { $eq: new Code('function () { return x }', { x: 1 }) } }).toArray(),
        refusedAs('Unauthorized', 'bson.code'),
      ],
    ];
    for (const [label, attempt, expected] of attempts) {
      // Refused before anything reached the upstream (so sleep() never ran), whatever the load.
      const { outcome, forwarded } = await forwardedBy(tp.proxy.proxy, attempt);
      expect(forwarded, `${label}: commands forwarded upstream`).toBe(0);
      await expectRefused(settled(outcome), expected, ['sleep(', 'this.tenantId']).catch((error: Error) => {
        throw new Error(`${label}: ${error.message}`);
      });
    }
    // The count sees forwarding: the same kind of read without $where reaches the upstream.
    const control = await forwardedBy(tp.proxy.proxy, () => coll.find({ secret: 'none' }).toArray());
    expect(control.outcome.status).toBe('fulfilled');
    expect(control.forwarded).toBeGreaterThanOrEqual(1);
    const after = await snapshot('c01');
    expect(after).toEqual(before);
  });

  it('catalogue 2: $function / $accumulator are refused in a filter $expr, a projection, an update pipeline, findAndModify, $group and $setWindowFields', async () => {
    const before = await seed('c02');
    const coll = acme().collection<AnyDoc>('c02');
    const fn = { $function: { body: 'function () { while (1) {} }', args: [], lang: 'js' } };
    const acc = {
      $accumulator: {
        init: 'function () { return 0 }',
        accumulate: 'function (s) { return s }',
        accumulateArgs: [],
        merge: 'function (a) { return a }',
        lang: 'js',
      },
    };
    const fnRule = refusedAs('Unauthorized', 'operator.function');
    const accRule = refusedAs('Unauthorized', 'operator.accumulator');
    await expectRefused(coll.find({ $expr: fn }).toArray(), fnRule, ['while (1)']);
    await expectRefused(coll.find({}, { projection: { x: fn } }).toArray(), fnRule);
    await expectRefused(coll.updateMany({}, [{ $set: { x: fn } }]), fnRule);
    await expectRefused(
      coll.updateOne({ tenantId: 'globex' }, [{ $replaceWith: { $mergeObjects: ['$$ROOT', { x: fn }] } }]),
      fnRule,
      ['globex'],
    );
    await expectRefused(coll.findOneAndUpdate({}, [{ $set: { x: fn } }]), fnRule);
    await expectRefused(
      acme().command({ findandmodify: 'c02', query: {}, update: { $set: { a: 1 } }, fields: { x: fn } }),
      fnRule,
    );
    await expectRefused(coll.aggregate([{ $group: { _id: '$tenantId', all: acc } }]).toArray(), accRule);
    await expectRefused(coll.aggregate([{ $project: { x: fn } }]).toArray(), fnRule);
    await expectRefused(
      coll
        .aggregate([
          {
            $setWindowFields: {
              sortBy: { n: 1 },
              output: { w: { ...acc, window: { documents: ['unbounded', 'current'] } } },
            },
          },
        ])
        .toArray(),
      accRule,
    );
    await expectRefused(coll.aggregate([{ $match: { $expr: { $gt: [fn, 0] } } }]).toArray(), fnRule);
    await expectRefused(coll.countDocuments({ $expr: fn }), fnRule);
    expect(await snapshot('c02')).toEqual(before);
  });

  it('catalogue 3: mapReduce and mapreduce are refused by name, out:{db:<other>} writes nothing', async () => {
    await seed('c03');
    const otherDb = `${dbName}_mr`;
    const map = new Code('function () { emit(this.tenantId, this.secret) }');
    const reduce = new Code('function (k, v) { return v.join(",") }');
    for (const name of ['mapReduce', 'mapreduce']) {
      await expectRefused(
        acme().command({ [name]: 'c03', map, reduce, out: { replace: 'stolen', db: otherDb } }),
        refusedAs('Unauthorized', 'command.server-js'),
        ['emit('],
      );
      // Functions as strings (no BSON code type): still refused by the command name.
      await expectRefused(
        acme().command({
          [name]: 'c03',
          map: 'function () { emit(1, 1) }',
          reduce: 'function () { return 1 }',
          out: { inline: 1 },
        }),
        refusedAs('Unauthorized', 'command.server-js'),
      );
    }
    const collections = await direct.db(otherDb).listCollections().toArray();
    expect(collections).toEqual([]);
    const here = (await direct.db(dbName).listCollections({ name: 'stolen' }).toArray()).map((c) => c.name);
    expect(here).toEqual([]);
  });

  it('catalogue 4: removed commands (group, eval, $eval, copydb, clone, geoNear, parallelCollectionScan) are refused by name', async () => {
    const before = await seed('c04');
    const target = `${dbName}_copy`;
    const commands: Document[] = [
      { group: { ns: 'c04', key: { tenantId: 1 }, $reduce: new Code('function (c, r) {}'), initial: {} } },
      { eval: 'db.c04.find().toArray()' },
      { $eval: 'db.c04.remove({})' },
      { copydb: 1, fromdb: dbName, todb: target },
      { clone: 'localhost:27017' },
      { geoNear: 'c04', near: [0, 0] },
      { parallelCollectionScan: 'c04', numCursors: 1 },
    ];
    for (const command of commands) {
      await expectRefused(acme().command(command), refusedAs('CommandNotFound', 'command.removed'), ['db.c04']);
    }
    expect(await direct.db(target).listCollections().toArray()).toEqual([]);
    expect(await snapshot('c04')).toEqual(before);
  });

  it('catalogue 5: system.* namespaces (system.js, system.views, system.profile, system.buckets) are refused for reads, writes and sub-pipelines', async () => {
    await seed('c05');
    const rule = refusedAs('Unauthorized', 'namespace.system');
    await expectRefused(acme().collection<AnyDoc>('system.js').find({}).toArray(), rule);
    await expectRefused(
      acme()
        .collection<AnyDoc>('system.js')
        .insertOne({ _id: 'steal', value: new Code('function () { return db }') }),
      rule,
    );
    await expectRefused(
      acme()
        .collection<AnyDoc>('system.views')
        .insertOne({ _id: `${dbName}.v05`, viewOn: 'c05', pipeline: [] }),
      rule,
    );
    await expectRefused(acme().collection<AnyDoc>('system.views').find({}).toArray(), rule);
    await expectRefused(acme().collection<AnyDoc>('system.profile').find({}).toArray(), rule);
    await expectRefused(acme().collection<AnyDoc>('system.buckets.metrics').find({}).toArray(), rule);
    await expectRefused(
      acme()
        .collection<AnyDoc>('c05')
        .aggregate([{ $lookup: { from: 'system.js', pipeline: [], as: 'j' } }])
        .toArray(),
      rule,
    );
    await expectRefused(
      acme()
        .collection<AnyDoc>('c05')
        .aggregate([{ $unionWith: { coll: 'system.views' } }])
        .toArray(),
      rule,
    );
    await expectRefused(acme().collection<AnyDoc>('system.views').deleteMany({}), rule);
    const names = (await direct.db(dbName).listCollections().toArray()).map((c) => c.name);
    expect(names.filter((name) => name.startsWith('system.'))).toEqual([]);
  });

  describe('catalogue 6: a filter that merely mentions the tenant is no constraint', () => {
    const filters: Array<[string, Document, number]> = [
      ['$ne', { tenantId: { $ne: 'acme' } }, 0],
      ['$in', { tenantId: { $in: ['acme', 'globex', 'initech'] } }, 2],
      ['regex', { tenantId: { $regex: '^(glo|ini|acm)' } }, 2],
      ['$or branch', { $or: [{ tenantId: 'globex' }, { n: { $gte: 0 } }] }, 2],
      ['$nor', { $nor: [{ tenantId: 'acme' }] }, 0],
      ['nested $and/$or', { $and: [{ $or: [{ tenantId: { $exists: true } }, { tenantId: { $exists: false } }] }] }, 2],
      ['foreign equality', { tenantId: 'globex' }, 0],
    ];
    for (const [label, filter, own] of filters) {
      it(`catalogue 6: ${label} across find/count/distinct/aggregate/update/delete/findAndModify sees only acme`, async () => {
        const coll = `c06_${label.replace(/[^a-z]/gi, '')}`;
        const before = await seed(coll);
        const c = acme().collection<AnyDoc>(coll);

        const found = await c.find(filter).toArray();
        expectOnlyOwn(found);
        expect(found).toHaveLength(own);
        expect((await acme().command({ count: coll, query: filter })).n).toBe(own);
        expect(await c.countDocuments(filter)).toBe(own);
        const aggregated = await c.aggregate([{ $match: filter }]).toArray();
        expectOnlyOwn(aggregated);
        expect(aggregated).toHaveLength(own);

        const fam = await c.findOneAndUpdate(filter, { $set: { famBy: 'acme' } }, { returnDocument: 'after' });
        if (own === 0) expect(fam).toBeNull();
        else expect(fam?.tenantId).toBe('acme');
        const updated = await c.updateMany(filter, { $set: { touchedBy: 'acme' } });
        expect(updated.matchedCount).toBe(own);
        let after = await snapshot(coll);
        expectForeignUnchanged(before, after);
        expect(after.filter((d) => d.touchedBy === 'acme').map((d) => d._id)).toEqual(
          own > 0 ? ['acme-1', 'acme-2'] : [],
        );

        const deleted = await c.deleteMany(filter);
        expect(deleted.deletedCount).toBe(own);
        after = await snapshot(coll);
        expectForeignUnchanged(before, after);
        expect(ownedBy(after, 'acme')).toHaveLength(2 - own);
      });
    }

    it('catalogue 6 (MongoDB): distinct with every key-present filter returns only acme values', async () => {
      await seed('c06_distinct');
      const c = acme().collection<AnyDoc>('c06_distinct');
      for (const [label, filter, own] of filters) {
        const secrets = await c.distinct('secret', filter);
        expect(
          secrets.every((s: string) => s.startsWith('acme-secret')),
          label,
        ).toBe(true);
        expect(secrets, label).toHaveLength(own);
        expect(await c.distinct('tenantId', filter), label).toEqual(own > 0 ? ['acme'] : []);
      }
    });
  });

  it('catalogue 7 / G3: duplicate keys (two tenantId keys, two filter fields, two $set, in documents and sequences) are refused; nothing stored', async () => {
    const before = await seed('c07');
    const dupFilter = B.doc(B.str('tenantId', 'acme'), B.str('tenantId', 'globex'));
    const wireRefusal = (reply: Document): void => {
      expect(reply.ok).toBe(0);
      expect({ code: reply.code, codeName: reply.codeName }).toEqual(Codes.InvalidBSON);
      expect(String(reply.errmsg)).toContain('duplicate key');
      expectCleanMessage(String(reply.errmsg), ['globex']);
    };
    // Two tenantId keys in a filter.
    wireRefusal(
      await rawCommand('acme', rawOpMsg(B.doc(B.str('find', 'c07'), B.sub('filter', dupFilter), B.str('$db', dbName)))),
    );
    wireRefusal(
      await rawCommand(
        'acme',
        rawOpMsg(
          B.doc(
            B.str('count', 'c07'),
            B.sub('query', B.doc(B.sub('$and', B.doc(B.sub('0', dupFilter))))),
            B.str('$db', dbName),
          ),
        ),
      ),
    );
    // Two filter fields.
    wireRefusal(
      await rawCommand(
        'acme',
        rawOpMsg(
          B.doc(
            B.str('find', 'c07'),
            B.sub('filter', B.doc(B.str('tenantId', 'acme'))),
            B.sub('filter', B.doc()),
            B.str('$db', dbName),
          ),
        ),
      ),
    );
    // A delete whose statement names q twice (the second one empty).
    wireRefusal(
      await rawCommand(
        'acme',
        rawOpMsg(
          B.doc(
            B.str('delete', 'c07'),
            B.arr('deletes', B.doc(B.sub('q', B.doc(B.str('_id', 'acme-1'))), B.sub('q', B.doc()), B.int('limit', 0))),
            B.str('$db', dbName),
          ),
        ),
      ),
    );
    // A document with two tenantId keys, in the body and in a kind-1 sequence.
    const dupDoc = B.doc(B.str('_id', 'dup-1'), B.str('tenantId', 'acme'), B.str('tenantId', 'globex'));
    wireRefusal(
      await rawCommand(
        'acme',
        rawOpMsg(B.doc(B.str('insert', 'c07'), B.arr('documents', dupDoc), B.str('$db', dbName))),
      ),
    );
    wireRefusal(
      await rawCommand(
        'acme',
        rawOpMsg(B.doc(B.str('insert', 'c07'), B.str('$db', dbName)), [
          { id: 'documents', docs: [bsonDoc({ _id: 'dup-0' }), dupDoc] },
        ]),
      ),
    );
    // Two $set operators, the second writing the tenant (catalogue 41).
    const dupSet = B.doc(B.sub('$set', B.doc(B.int('a', 1))), B.sub('$set', B.doc(B.str('tenantId', 'globex'))));
    wireRefusal(
      await rawCommand(
        'acme',
        rawOpMsg(B.doc(B.str('update', 'c07'), B.str('$db', dbName)), [
          { id: 'updates', docs: [B.doc(B.sub('q', B.doc()), B.sub('u', dupSet), B.int('multi', 1))] },
        ]),
      ),
    );
    expect(await snapshot('c07')).toEqual(before);
    // And the same commands without the duplicate go through, scoped (the proxy is still serving).
    expect(await acme().collection<AnyDoc>('c07').find({ tenantId: 'globex' }).toArray()).toEqual([]);
  });

  it('catalogue 8: an array (or null) tenant is never stored; inserts are stamped with a scalar', async () => {
    const before = await seed('c08');
    const c = acme().collection<AnyDoc>('c08');
    await expectRefused(
      c.insertOne({ _id: 'arr-1', tenantId: ['acme', 'globex'], v: 1 }),
      refusedAs('Unauthorized', 'insert.tenant-not-scalar'),
      ['globex'],
    );
    await expectRefused(
      c.insertMany([
        { _id: 'arr-2', v: 2 },
        { _id: 'arr-3', tenantId: ['globex'], v: 3 },
      ]),
      refusedAs('Unauthorized', 'insert.tenant-not-scalar'),
    );
    await expectRefused(
      c.insertOne({ _id: 'arr-4', tenantId: 'globex' }),
      refusedAs('Unauthorized', 'insert.foreign-tenant'),
      ['globex'],
    );
    await expectRefused(
      c.replaceOne({ _id: 'acme-1' }, { tenantId: ['acme', 'globex'], v: 4 }),
      refusedAs('Unauthorized', 'replacement.tenant-not-scalar'),
    );
    await expectRefused(
      c.updateOne({ _id: 'acme-1' }, { $set: { tenantId: ['acme', 'globex'] } }),
      refusedAs('Unauthorized', 'update.tenant-field'),
    );
    await expectRefused(
      c.updateOne({ _id: 'acme-1' }, { $push: { tenantId: 'globex' } } as Document),
      refusedAs('Unauthorized', 'update.tenant-field'),
    );
    await expectRefused(
      c.updateOne({ _id: 'acme-1' }, { $addToSet: { 'tenantId.$[]': 'globex' } }),
      refusedAs('Unauthorized', 'update.tenant-field'),
    );
    await c.insertOne({ _id: 'scalar-1', v: 5 });
    const after = await snapshot('c08');
    expectForeignUnchanged(before, after);
    expect(after.filter((d) => Array.isArray(d.tenantId))).toEqual([]);
    expect(after.find((d) => d._id === 'scalar-1')).toEqual({ _id: 'scalar-1', tenantId: 'acme', v: 5 });
    expect(after.find((d) => d._id === 'acme-1')).toEqual(before.find((d) => d._id === 'acme-1'));
    expect(
      await dbs.globex
        .collection<AnyDoc>('c08')
        .find({ _id: { $in: ['arr-1', 'arr-2', 'arr-3', 'scalar-1'] } })
        .toArray(),
    ).toEqual([]);
  });

  it('catalogue 9: collation strength 1 or 2 with a string tenant is refused on find/count/distinct/aggregate/$lookup/update/delete/findAndModify', async () => {
    const before = await seed('c09', [
      { _id: 'Acme-1', tenantId: 'Acme', n: 1, secret: 'Acme-secret-1' },
      { _id: 'ACME-1', tenantId: 'ACME', n: 1, secret: 'Acme-secret-2' },
    ]);
    const c = acme().collection<AnyDoc>('c09');
    for (const strength of [1, 2]) {
      const collation = { locale: 'en', strength };
      const rule = refusedAs('Unauthorized', 'collation.tenant-string');
      await expectRefused(c.find({}, { collation }).toArray(), rule);
      await expectRefused(acme().command({ count: 'c09', query: {}, collation }), rule);
      await expectRefused(c.countDocuments({}, { collation }), rule);
      await expectRefused(c.distinct('secret', {}, { collation }), rule);
      await expectRefused(c.aggregate([{ $match: {} }], { collation }).toArray(), rule);
      await expectRefused(
        dbs.acme
          .collection<AnyDoc>('c05')
          .aggregate([{ $lookup: { from: 'c09', pipeline: [], as: 'j' } }], { collation })
          .toArray(),
        rule,
      );
      await expectRefused(c.updateMany({}, { $set: { hit: 1 } }, { collation }), rule);
      await expectRefused(c.deleteMany({}, { collation }), rule);
      await expectRefused(c.findOneAndDelete({}, { collation }), rule);
    }
    expect(await snapshot('c09')).toEqual(before);
  });

  it.skipIf(lacks('collation', 'without collations (FerretDB, DocumentDB) "acme" never matches "Acme"'))(
    'catalogue 9 (MongoDB): with strength 3 acme never sees "Acme"/"ACME"; a collection default collation of strength 2 must not widen the tenant match',
    async () => {
      await seed('c09m', [{ _id: 'Acme-1', tenantId: 'Acme', n: 1, secret: 'Acme-secret-1' }]);
      const strict = await acme()
        .collection<AnyDoc>('c09m')
        .find({}, { collation: { locale: 'en', strength: 3 } })
        .toArray();
      expectOnlyOwn(strict);
      // A collection created by an operator with a case-insensitive default collation: a command
      // without a collation option uses it, so the injected `tenantId: {$eq: "acme"}` would match
      // "Acme" too unless the proxy pins the comparison (catalogue 9: "a collection's default
      // collation applies even when no option is sent").
      await direct.db(dbName).createCollection('c09ci', { collation: { locale: 'en', strength: 2 } });
      await direct
        .db(dbName)
        .collection('c09ci')
        .insertMany(seedDocuments().concat([{ _id: 'Acme-1', tenantId: 'Acme', secret: 'Acme-secret-1' }]));
      const seen = await acme().collection<AnyDoc>('c09ci').find({}).toArray();
      expectOnlyOwn(seen);
      expect(await acme().collection<AnyDoc>('c09ci').countDocuments({})).toBe(2);
      expect(await acme().collection<AnyDoc>('c09ci').distinct('tenantId')).toEqual(['acme']);
    },
  );

  it.runIf(!upstreamFeatures().collation)(
    "catalogue 9 (upstream without collations): nothing is pinned, so tenant commands work; a client's own collation gets the server's own refusal",
    async () => {
      await seed('c09n');
      const c = acme().collection<AnyDoc>('c09n');
      // No collation reached the server: it refuses any (FerretDB v1: 238, DocumentDB: 115).
      expectOnlyOwn(await c.find({}).toArray());
      expect(await c.countDocuments({})).toBe(2);
      expect((await c.updateMany({}, { $set: { touched: true } })).matchedCount).toBe(2);
      expect(await c.aggregate([{ $match: {} }]).toArray()).toHaveLength(2);
      const collation = { locale: 'en', strength: 3 };
      const refusedDirectly = await direct
        .db(dbName)
        .collection('c09n')
        .find({}, { collation })
        .toArray()
        .catch((error: unknown) => error);
      const proxied = await c
        .find({}, { collation })
        .toArray()
        .catch((error: unknown) => error);
      expect(refusedDirectly).toBeInstanceOf(MongoServerError);
      expect(proxied).toBeInstanceOf(MongoServerError);
      expect((proxied as MongoServerError).code).toBe((refusedDirectly as MongoServerError).code);
    },
  );

  it('catalogue 10: documents without a tenant or with a null tenant are seen, changed and removed by no tenant; a null tenant is never written', async () => {
    const before = await seed('c10');
    for (const tenant of TENANTS) {
      const c = dbs[tenant].collection<AnyDoc>('c10');
      const all = await c.find({}).toArray();
      expect(all.map((d) => d._id).sort()).toEqual([`${tenant}-1`, `${tenant}-2`]);
      expect(await c.find({ tenantId: null }).toArray()).toEqual([]);
      expect(await c.find({ tenantId: { $exists: false } }).toArray()).toEqual([]);
      expect(await c.find({ _id: { $in: ['orphan', 'nulltenant'] } }).toArray()).toEqual([]);
      expect(await c.countDocuments({})).toBe(2);
      expect(await c.estimatedDocumentCount()).toBe(2);
      expect((await c.updateMany({ tenantId: null }, { $set: { claimed: tenant } })).matchedCount).toBe(0);
      expect((await c.deleteMany({ _id: { $in: ['orphan', 'nulltenant'] } })).deletedCount).toBe(0);
    }
    const c = acme().collection<AnyDoc>('c10');
    await expectRefused(
      c.insertOne({ _id: 'null-2', tenantId: null }),
      refusedAs('Unauthorized', 'insert.tenant-not-scalar'),
    );
    await expectRefused(
      c.replaceOne({ _id: 'acme-1' }, { tenantId: null }),
      refusedAs('Unauthorized', 'replacement.tenant-not-scalar'),
    );
    await expectRefused(
      c.updateOne({ _id: 'acme-1' }, { $unset: { tenantId: '' } }),
      refusedAs('Unauthorized', 'update.tenant-field'),
    );
    await c.insertOne({ _id: 'unstamped-by-client' });
    const after = await snapshot('c10');
    expectForeignUnchanged(before, after);
    expect(after.find((d) => d._id === 'unstamped-by-client')).toEqual({
      _id: 'unstamped-by-client',
      tenantId: 'acme',
    });
    expect(after.find((d) => d._id === 'orphan')).toEqual(before.find((d) => d._id === 'orphan'));
    expect(after.find((d) => d._id === 'nulltenant')).toEqual(before.find((d) => d._id === 'nulltenant'));
  });

  it("catalogue 11: $expr sees only the tenant's documents; $$USER_ROLES is refused in filters, projections, pipelines and let", async () => {
    const before = await seed('c11');
    const c = acme().collection<AnyDoc>('c11');
    const rule = refusedAs('Unauthorized', 'variable.user-roles');
    await expectRefused(c.aggregate([{ $project: { roles: '$$USER_ROLES' } }]).toArray(), rule);
    await expectRefused(c.find({ $expr: { $in: ['root', '$$USER_ROLES.role'] } }).toArray(), rule);
    await expectRefused(c.find({}, { projection: { r: '$$USER_ROLES' } }).toArray(), rule);
    await expectRefused(c.aggregate([{ $match: {} }], { let: { r: '$$USER_ROLES' } }).toArray(), rule);
    await expectRefused(c.updateMany({}, [{ $set: { roles: '$$USER_ROLES' } }]), rule);
    await expectRefused(
      c.find({ $expr: { $eq: [{ $foo: '$tenantId' }, 1] } }).toArray(),
      // An unknown expression: the server's own code (Unrecognized expression), not Unauthorized.
      refusedAs('InvalidPipelineOperator', 'operator.unknown'),
    );
    expect(await snapshot('c11')).toEqual(before);
  });

  it.skipIf(lacks('expr', 'FerretDB v1 implements too little of $expr'))(
    "catalogue 11 (MongoDB): $expr only ever sees the tenant's documents",
    async () => {
      await seed('c11m');
      const c = acme().collection<AnyDoc>('c11m');
      expect(await c.find({ $expr: { $eq: ['$tenantId', 'globex'] } }).toArray()).toEqual([]);
      const own = await c.find({ $expr: { $eq: ['$n', 1] } }).toArray();
      expect(own.map((d) => d._id)).toEqual(['acme-1']);
      const always = await c
        .aggregate([{ $match: { $expr: { $or: [{ $ne: ['$tenantId', 'acme'] }, true] } } }])
        .toArray();
      expectOnlyOwn(always);
      expect(always).toHaveLength(2);
      const updated = await c.updateMany({ $expr: { $ne: ['$tenantId', 'acme'] } }, { $set: { stolen: true } });
      expect(updated.matchedCount).toBe(0);
    },
  );

  it.skipIf(lacks('jsonSchema', 'FerretDB has no $jsonSchema query operator'))(
    'catalogue 12 (MongoDB): $jsonSchema matching every tenant returns only acme',
    async () => {
      await seed('c12m');
      const result = await acme()
        .collection<AnyDoc>('c12m')
        .find({ $jsonSchema: { required: ['n'] } })
        .toArray();
      expectOnlyOwn(result);
      expect(result).toHaveLength(2);
    },
  );

  it('catalogue 13: $text under $or/$nor/$elemMatch, or twice, is refused before reaching the upstream', async () => {
    const before = await seed('c13');
    const c = acme().collection<AnyDoc>('c13');
    const rule = refusedAs('BadValue', 'filter.text-placement');
    await expectRefused(c.find({ $or: [{ $text: { $search: 'secret' } }, { tenantId: 'globex' }] }).toArray(), rule);
    await expectRefused(c.find({ $nor: [{ $text: { $search: 'secret' } }] }).toArray(), rule);
    await expectRefused(
      c.aggregate([{ $match: { $and: [{ $text: { $search: 'a' } }, { $text: { $search: 'b' } }] } }]).toArray(),
      rule,
    );
    await expectRefused(c.deleteMany({ $or: [{ $text: { $search: 'secret' } }, { n: 1 }] }), rule);
    expect(await snapshot('c13')).toEqual(before);
  });

  it.skipIf(lacks('text', 'FerretDB v1 has no $text'))(
    'catalogue 13 (MongoDB): [{$match: {$text}}] works and returns only acme',
    async () => {
      await seed('c13m');
      await direct.db(dbName).collection<AnyDoc>('c13m').createIndex({ tenantId: 1, secret: 'text' });
      const c = acme().collection<AnyDoc>('c13m');
      const viaAggregate = await c.aggregate([{ $match: { $text: { $search: 'secret' } } }]).toArray();
      expectOnlyOwn(viaAggregate);
      expect(viaAggregate).toHaveLength(2);
      const viaFind = await c.find({ $text: { $search: 'globex' } }).toArray();
      expect(viaFind).toEqual([]);
    },
  );

  it.skipIf(lacks('nearQuery', 'FerretDB v1 has no geospatial queries'))(
    'catalogue 14 (MongoDB): find with $near works and returns only acme',
    async () => {
      const extra = TENANTS.map((tenant, i) => ({
        _id: `${tenant}-geo`,
        tenantId: tenant,
        loc: { type: 'Point', coordinates: [i * 0.001, 0] },
      }));
      await seed('c14m', extra);
      await direct.db(dbName).collection<AnyDoc>('c14m').createIndex({ loc: '2dsphere' });
      const near = await acme()
        .collection<AnyDoc>('c14m')
        .find({ loc: { $near: { $geometry: { type: 'Point', coordinates: [0, 0] }, $maxDistance: 100_000 } } })
        .toArray();
      expect(near.map((d) => d._id)).toEqual(['acme-geo']);
    },
  );

  it('catalogue 14: $near under $or, $nor or $not is refused; nothing changes', async () => {
    const before = await seed('c14');
    const near = { $near: { $geometry: { type: 'Point', coordinates: [0, 0] } } };
    const rule = refusedAs('BadValue', 'filter.geo-placement');
    await expectRefused(
      acme()
        .collection<AnyDoc>('c14')
        .find({ $or: [{ loc: near }, { tenantId: 'globex' }] })
        .toArray(),
      rule,
    );
    await expectRefused(
      acme()
        .collection<AnyDoc>('c14')
        .find({ $nor: [{ loc: near }] })
        .toArray(),
      rule,
    );
    await expectRefused(
      acme()
        .collection<AnyDoc>('c14')
        .deleteMany({ $or: [{ loc: near }, { n: 1 }] }),
      rule,
    );
    expect(await snapshot('c14')).toEqual(before);
  });

  it("catalogue 15: a ReDoS regular expression runs with maxTimeMS capped and touches only the tenant's documents", async () => {
    await seed('c15', [
      { _id: 'globex-redos', tenantId: 'globex', name: `${'a'.repeat(40)}!`, secret: 'globex-secret-redos' },
    ]);
    const c = acme().collection<AnyDoc>('c15');
    // The client asks for 10,000,000 ms; what the proxy forwards is capped at CAP (checked on the
    // forwarded commands by the fake-upstream test "catalogue 15" above). A MaxTimeMSExpired here
    // can only come from the cap.
    const result = await c
      .find({ name: { $regex: '^(a+)+$' } }, { maxTimeMS: 10_000_000 })
      .toArray()
      .catch((error: unknown) => error);
    if (Array.isArray(result)) expect(result).toEqual([]);
    else expect((result as MongoServerError).code).toBe(50); // MaxTimeMSExpired (codeName differs on DocumentDB)
  });

  it.skipIf(lacks('backtrackingRegex', 'FerretDB v1 uses a linear-time regex engine and never hits the time limit'))(
    'catalogue 15 (MongoDB): ^(a+)+$ backtracking fails with MaxTimeMSExpired within a 500 ms cap although the client asked for an hour',
    async () => {
      const capped = await startTenantProxy(['acme'], { isolation: { maxTimeMS: 500 } });
      try {
        // Each string costs ~2^22 backtracking steps (under PCRE's match limit); 200 of them take seconds.
        const docs = Array.from({ length: 200 }, (_, i) => ({
          _id: `acme-redos-${i}`,
          tenantId: 'acme',
          name: `${'a'.repeat(22)}!`,
        }));
        await direct.db(dbName).collection<AnyDoc>('c15m').insertMany(docs);
        const error = await capped
          .clientFor('acme')
          .db(dbName)
          .collection<AnyDoc>('c15m')
          .find({ name: { $regex: '^(a+)+$' } }, { maxTimeMS: 3_600_000 })
          .toArray()
          .catch((e: unknown) => e);
        // MaxTimeMSExpired; DocumentDB names code 50 after PostgreSQL's query_canceled, SqlState(E57014).
        // The client's own limit is an hour: the server stopping the query proves the 500 ms cap.
        expect((error as MongoServerError).code).toBe(50);
      } finally {
        await capped.stop();
      }
    },
  );

  it('catalogue 16: unknown or JavaScript operators under $elemMatch/$not/$nor/$or are refused; those operators cannot escape the tenant $and', async () => {
    const before = await seed('c16');
    const c = acme().collection<AnyDoc>('c16');
    // An unknown query operator: the server's own code ("unknown operator"), not Unauthorized.
    const unknown = refusedAs('BadValue', 'operator.unknown');
    await expectRefused(c.find({ tags: { $elemMatch: { $foo: 1 } } }).toArray(), unknown);
    await expectRefused(c.find({ n: { $not: { $foo: 1 } } }).toArray(), unknown);
    await expectRefused(c.find({ $nor: [{ $foo: 1 }] }).toArray(), unknown);
    await expectRefused(c.find({ $or: [{ n: { $bar: 1 } }] }).toArray(), unknown);
    await expectRefused(c.find({ $foo: [{ tenantId: 'globex' }] }).toArray(), unknown, ['globex']);
    await expectRefused(
      c.find({ tags: { $elemMatch: { $where: 'true' } } }).toArray(),
      refusedAs('Unauthorized', 'operator.where'),
    );
    await expectRefused(c.deleteMany({ $or: [{ n: { $bar: 1 } }] }), unknown);

    expect(await c.find({ tenantId: { $not: { $eq: 'acme' } } }).toArray()).toEqual([]);
    expect(await c.find({ tags: { $elemMatch: { $eq: 'globex' } } }).toArray()).toEqual([]);
    expect(
      await c
        .find({
          $or: [{ tenantId: { $not: { $eq: 'acme' } } }, { tags: { $elemMatch: { $in: ['globex', 'initech'] } } }],
        })
        .toArray(),
    ).toEqual([]);
    const all = await c
      .find({ $nor: [{ tenantId: { $exists: false } }, { tags: { $elemMatch: { $eq: 'nobody' } } }] })
      .toArray();
    expectOnlyOwn(all);
    expect(all).toHaveLength(2);
    const removed = await c.deleteMany({ tenantId: { $not: { $eq: 'acme' } } });
    expect(removed.deletedCount).toBe(0);
    expect(await snapshot('c16')).toEqual(before);
  });

  it("catalogue 17: reads: UUID collection refused; count without query, estimatedDocumentCount and distinct tenantId are the tenant's own", async () => {
    const before = await seed('c17');
    expect(before.length).toBe(8);
    const uuid = new UUID();
    const uuidRule = refusedAs('InvalidNamespace', 'namespace.uuid');
    await expectRefused(acme().command({ find: uuid }), uuidRule);
    await expectRefused(acme().command({ listIndexes: uuid }), uuidRule);
    await expectRefused(acme().command({ count: uuid }), uuidRule);
    // The raw wire form (a legacy-UUID binary, subtype 3) too.
    const legacy = new UUID().toBinary();
    legacy.sub_type = 3;
    expectRefusedReply(await rawCommand('acme', opMsg({ find: legacy, filter: {}, $db: dbName })), uuidRule);

    for (const tenant of TENANTS) {
      const c = dbs[tenant].collection<AnyDoc>('c17');
      expect((await dbs[tenant].command({ count: 'c17' })).n).toBe(2);
      expect(await c.estimatedDocumentCount()).toBe(2);
      expect(await c.countDocuments()).toBe(2);
    }
    // The upstream's own metadata count covers everyone: that is what the proxy kept from acme.
    expect(await direct.db(dbName).collection<AnyDoc>('c17').estimatedDocumentCount()).toBe(8);

    await expectRefused(
      acme().collection<AnyDoc>('c17').find({}, { noCursorTimeout: true }).toArray(),
      refusedAs('Unauthorized', 'find.no-cursor-timeout'),
    );
    await expectRefused(
      acme().command({ find: 'c17', filter: {}, oplogReplay: true }),
      refusedAs('Unauthorized', 'find.oplog-replay'),
    );
    await expectRefused(
      acme().command({ find: 'c17', filter: {}, $tenant: 'globex' }),
      refusedAs('Unauthorized', 'field.internal'),
      ['globex'],
    );
  });

  it('catalogue 17 (MongoDB): distinct tenantId is [own tenant] for every tenant', async () => {
    await seed('c17m');
    for (const tenant of TENANTS) {
      const c = dbs[tenant].collection<AnyDoc>('c17m');
      expect(await c.distinct('tenantId')).toEqual([tenant]);
      expect((await c.distinct('secret')).sort()).toEqual([`${tenant}-secret-1`, `${tenant}-secret-2`]);
    }
  });

  it('catalogue 18: writes: delete {} removes only own documents; update and findAndModify (both spellings) change only own', async () => {
    const before = await seed('c18');
    const c = acme().collection<AnyDoc>('c18');

    const famA = await acme().command({
      findAndModify: 'c18',
      query: { tenantId: 'globex' },
      update: { $set: { stolen: true } },
      new: true,
    });
    expect(famA.value).toBeNull();
    const famB = await acme().command({ findandmodify: 'c18', query: {}, sort: { _id: -1 }, remove: true });
    expect(famB.value?.tenantId).toBe('acme');
    const famC = await acme().command({ findandmodify: 'c18', query: { _id: 'globex-1' }, remove: true });
    expect(famC.value).toBeNull();
    const famD = await acme().command({
      findAndModify: 'c18',
      query: { _id: 'initech-1' },
      update: { n: 99 },
      upsert: false,
      new: true,
    });
    expect(famD.value).toBeNull();
    const replaced = await c.replaceOne({ _id: 'globex-2' }, { n: 9 });
    expect(replaced.matchedCount).toBe(0);
    const updated = await c.updateMany({}, { $set: { touchedBy: 'acme' } });
    expect(updated.matchedCount).toBe(1);
    let after = await snapshot('c18');
    expectForeignUnchanged(before, after);
    expect(after.filter((d) => d.touchedBy === 'acme').map((d) => d._id)).toEqual(['acme-1']);
    expect(after.find((d) => d._id === 'acme-2')).toBeUndefined();

    const removed = await c.deleteMany({});
    expect(removed.deletedCount).toBe(1);
    after = await snapshot('c18');
    expectForeignUnchanged(before, after);
    expect(ownedBy(after, 'acme')).toEqual([]);
    expect(after).toHaveLength(before.length - 2);

    // bypassDocumentValidation never reaches the upstream: the engine refuses the field outright
    // (stricter than the catalogue's "strip"); nothing is written.
    const bypass = refusedAs('Unauthorized', 'field.bypass-validation');
    await expectRefused(
      c.insertOne({ _id: 'bypass-1', tenantId: 'globex' }, { bypassDocumentValidation: true }),
      bypass,
      ['globex'],
    );
    await expectRefused(
      c.updateMany({}, { $set: { tenantId: 'globex' } }, { bypassDocumentValidation: true }),
      bypass,
      ['globex'],
    );
    expect(await snapshot('c18')).toEqual(after);
  });

  it("catalogue 18 / G8: every upsert stores a document stamped with the tenant, never another tenant's or an unstamped one", async () => {
    const before = await seed('c18u');
    const c = acme().collection<AnyDoc>('c18u');
    const upserts: Array<[string, () => Promise<unknown>]> = [
      [
        'update upsert, operators, foreign tenant equality',
        () => c.updateOne({ k: 'ups-1', tenantId: 'globex' }, { $set: { v: 1 } }, { upsert: true }),
      ],
      [
        'findAndModify upsert, operators, foreign tenant equality',
        () =>
          acme().command({
            findAndModify: 'c18u',
            query: { k: 'ups-2', tenantId: 'globex' },
            update: { $set: { v: 2 } },
            upsert: true,
            new: true,
          }),
      ],
      [
        'update upsert, operators, no tenant in the query',
        () => c.updateOne({ k: 'ups-3' }, { $set: { v: 3 } }, { upsert: true }),
      ],
      [
        'update upsert, operators, $in tenants',
        () => c.updateOne({ k: 'ups-4', tenantId: { $in: ['globex', 'acme'] } }, { $set: { v: 4 } }, { upsert: true }),
      ],
      [
        'update upsert, replacement without a tenant',
        () => c.replaceOne({ k: 'ups-5' }, { k: 'ups-5', v: 5 }, { upsert: true }),
      ],
      [
        'findAndModify upsert, pipeline',
        () =>
          acme().command({
            findAndModify: 'c18u',
            query: { k: 'ups-6' },
            update: [{ $set: { v: 6 } }],
            upsert: true,
            new: true,
          }),
      ],
    ];
    const failures: string[] = [];
    for (const [label, attempt] of upserts) {
      const known = new Set((await snapshot('c18u')).map((d) => String(d._id)));
      const outcome = await attempt().catch((error: unknown) => error);
      // MongoDB refuses two equalities on tenantId (code 54); that is fine, a leak is not.
      if (outcome instanceof Error) expectCleanMessage(outcome.message);
      const created = (await snapshot('c18u')).filter((d) => !known.has(String(d._id)));
      for (const doc of created) {
        if (doc.tenantId !== 'acme') failures.push(`${label}: stored ${JSON.stringify(doc)}`);
      }
    }
    await expectRefused(
      c.updateOne({ k: 'ups-7' }, { $setOnInsert: { tenantId: 'globex' } }, { upsert: true }),
      refusedAs('Unauthorized', 'update.tenant-field'),
      ['globex'],
    );
    const after = await snapshot('c18u');
    expect(after.filter((d) => d.tenantId === 'globex')).toEqual(before.filter((d) => d.tenantId === 'globex'));
    expect(
      await dbs.globex
        .collection<AnyDoc>('c18u')
        .find({ k: { $exists: true } })
        .toArray(),
    ).toEqual([]);
    // G8 "stamp writes unconditionally": every document an upsert created is acme's.
    expect(failures).toEqual([]);
  });

  it('catalogue 18: kind-1 sequences (documents, updates, deletes) are stamped and scoped like body arrays', async () => {
    const before = await seed('c18s');
    const seq = (command: Document, id: string, docs: Document[]): BuiltFrame =>
      opMsg({ ...command, $db: dbName }, { sequences: [{ id, docs }] });

    // One foreign document in a two-document sequence refuses the whole insert.
    const refused = await rawCommand(
      'acme',
      seq({ insert: 'c18s' }, 'documents', [{ _id: 'seq-1' }, { _id: 'seq-2', tenantId: 'globex' }]),
    );
    expectRefusedReply(refused, refusedAs('Unauthorized', 'insert.foreign-tenant'), ['globex']);
    let after = await snapshot('c18s');
    expect(after).toEqual(before);

    const inserted = await rawCommand(
      'acme',
      seq({ insert: 'c18s' }, 'documents', [{ _id: 'seq-3' }, { _id: 'seq-4', tenantId: 'acme' }]),
    );
    expect(inserted).toMatchObject({ ok: 1, n: 2 });
    const updated = await rawCommand(
      'acme',
      seq({ update: 'c18s' }, 'updates', [
        { q: {}, u: { $set: { viaSequence: true } }, multi: true },
        { q: { tenantId: 'globex' }, u: { $set: { stolen: true } }, multi: true },
      ]),
    );
    expect(updated).toMatchObject({ ok: 1, n: 4 });
    after = await snapshot('c18s');
    expectForeignUnchanged(before, after);
    expect(ownedBy(after, 'acme').map((d) => [d._id, d.viaSequence])).toEqual([
      ['acme-1', true],
      ['acme-2', true],
      ['seq-3', true],
      ['seq-4', true],
    ]);
    const deleted = await rawCommand('acme', seq({ delete: 'c18s' }, 'deletes', [{ q: {}, limit: 0 }]));
    expect(deleted).toMatchObject({ ok: 1, n: 4 });
    after = await snapshot('c18s');
    expectForeignUnchanged(before, after);
    expect(ownedBy(after, 'acme')).toEqual([]);

    // A sequence the command does not take is refused (catalogue 47), nothing written.
    const wrong = await rawCommand('acme', seq({ insert: 'c18s' }, 'updates', [{ q: {}, u: { $set: { x: 1 } } }]));
    expect(wrong.ok).toBe(0);
    expect(await snapshot('c18s')).toEqual(after);
  });

  it('catalogue 19: bulkWrite with an allowed and a foreign namespace is refused whole (through the wire, any upstream)', async () => {
    const before = await seed('c19');
    const reply = await rawCommand(
      'acme',
      opMsg(
        { bulkWrite: 1, $db: 'admin' },
        {
          sequences: [
            {
              id: 'ops',
              docs: [
                { insert: 0, document: { _id: 'bw-1' } },
                { delete: 1, filter: {}, multi: true },
              ],
            },
            { id: 'nsInfo', docs: [{ ns: `${dbName}.c19` }, { ns: 'local.oplog.rs' }] },
          ],
        },
      ),
    );
    expectRefusedReply(reply, refusedAs('Unauthorized', 'namespace.system'));
    const tenantOp = await rawCommand(
      'acme',
      opMsg(
        { bulkWrite: 1, $db: 'admin' },
        {
          sequences: [
            {
              id: 'ops',
              docs: [
                { insert: 0, document: { _id: 'bw-2' } },
                { update: 0, filter: {}, updateMods: { $set: { tenantId: 'globex' } }, multi: true },
              ],
            },
            { id: 'nsInfo', docs: [{ ns: `${dbName}.c19` }] },
          ],
        },
      ),
    );
    expectRefusedReply(tenantOp, refusedAs('Unauthorized', 'update.tenant-field'), ['globex']);
    expect(await snapshot('c19')).toEqual(before);
  });

  it.skipIf(lacks('bulkWrite', 'bulkWrite is a MongoDB 8.0 command'))(
    'catalogue 19 (MongoDB): client.bulkWrite is rewritten per op; a foreign namespace refuses all of it',
    async () => {
      const before = await seed('c19m');
      const client = tp.clientFor('acme');
      await expectRefused(
        client.bulkWrite<AnyDoc>([
          { name: 'insertOne', namespace: `${dbName}.c19m`, document: { _id: 'bw-1' } },
          { name: 'deleteMany', namespace: 'local.oplog.rs', filter: {} },
        ]),
        refusedAs('Unauthorized', 'namespace.system'),
      );
      expect(await snapshot('c19m')).toEqual(before);
      const result = await client.bulkWrite<AnyDoc>([
        { name: 'insertOne', namespace: `${dbName}.c19m`, document: { _id: 'bw-2' } },
        {
          name: 'updateMany',
          namespace: `${dbName}.c19m`,
          filter: { tenantId: 'globex' },
          update: { $set: { stolen: true } },
        },
        { name: 'deleteMany', namespace: `${dbName}.c19m`, filter: { _id: { $ne: 'bw-2' } } },
      ]);
      expect(result.insertedCount).toBe(1);
      expect(result.matchedCount).toBe(0);
      expect(result.deletedCount).toBe(2);
      const after = await snapshot('c19m');
      expectForeignUnchanged(before, after);
      expect(ownedBy(after, 'acme').map((d) => d._id)).toEqual(['bw-2']);
    },
  );

  it("catalogue 20: getMore/killCursors with another tenant's cursor id get CursorNotFound 43; the cursor stays alive for its owner", async () => {
    const extra = [3, 4, 5].map((n) => ({ _id: `globex-${n}`, tenantId: 'globex', n, secret: `globex-secret-${n}` }));
    await seed('c20', extra);
    const globexClient = tp.clientFor('globex');
    const session = globexClient.startSession();
    try {
      const globexDb = globexClient.db(dbName);
      const first = await globexDb.command(
        { find: 'c20', filter: {}, sort: { _id: 1 }, batchSize: 1 },
        { session, promoteLongs: false },
      );
      const id = first.cursor.id as Long;
      expect(id.isZero()).toBe(false);
      expect(first.cursor.firstBatch.map((d: Document) => d._id)).toEqual(['globex-1']);

      const stolen = await expectRefused(
        acme().command({ getMore: id, collection: 'c20', batchSize: 10 }),
        refusedAs('CursorNotFound', 'cursor.foreign'),
        ['globex'],
      );
      expect(JSON.stringify(stolen)).not.toContain('globex-secret');
      // Through the wire too, on a fresh connection, and with a made-up id: the same answer.
      const rawStolen = await rawCommand('acme', opMsg({ getMore: id, collection: 'c20', $db: dbName }));
      expectRefusedReply(rawStolen, refusedAs('CursorNotFound', 'cursor.foreign'));
      const madeUp = await rawCommand(
        'acme',
        opMsg({ getMore: Long.fromString('1234567890123'), collection: 'c20', $db: dbName }),
      );
      expectRefusedReply(madeUp, refusedAs('CursorNotFound', 'cursor.foreign'));
      // initech neither.
      await expectRefused(
        dbs.initech.command({ getMore: id, collection: 'c20' }),
        refusedAs('CursorNotFound', 'cursor.foreign'),
      );

      const killed = await acme().command({ killCursors: 'c20', cursors: [id] });
      expect(killed.cursorsKilled).toEqual([]);
      expect(killed.cursorsNotFound.map(String)).toEqual([id.toString()]);

      // Still alive for globex, with exactly the next document.
      const next = await globexDb.command({ getMore: id, collection: 'c20', batchSize: 1 }, { session });
      expect(next.cursor.nextBatch.map((d: Document) => d._id)).toEqual(['globex-2']);
      const own = await globexDb.command({ killCursors: 'c20', cursors: [id] }, { session });
      expect(own.cursorsKilled.map(String)).toEqual([id.toString()]);
    } finally {
      await session.endSession();
    }
  });

  it("catalogue 21: explain of find {tenantId: B} plans the tenant's predicate; execution figures are withheld at every verbosity", async () => {
    await seed('c21');
    const c = acme().collection<AnyDoc>('c21');
    const plan = await c.find({ tenantId: 'globex' }).explain('queryPlanner');
    const text = JSON.stringify(plan);
    expect(text).not.toContain('globex-secret');
    // The explain output echoes the command the server ran: the tenant predicate the proxy injected.
    // MongoDB echoes it as a document, DocumentDB as the shell text of the command (docs/upstreams.md).
    const expectTenantPredicate = (command: unknown): void => {
      if (typeof command === 'string') {
        expect(command).toContain("'$and': [{ 'tenantId': { '$eq': 'acme' } }, { 'tenantId': 'globex' }]");
      } else {
        expect((command as Document | undefined)?.filter).toEqual({
          $and: [{ tenantId: { $eq: 'acme' } }, { tenantId: 'globex' }],
        });
      }
    };
    expectTenantPredicate(plan.command);
    for (const verbosity of ['executionStats', 'allPlansExecution'] as const) {
      const stats = await c.find({ tenantId: 'globex' }).explain(verbosity);
      // The figures' names may appear in the proxy's own note of what it withheld, never as figures.
      const shown = JSON.stringify(stats, (key: string, value: unknown) => (key === 'mtpWithheld' ? undefined : value));
      expect(shown).not.toContain('globex-secret');
      expectTenantPredicate(stats.command);
      // The upstream's host never reaches a client; no figure counting documents or keys does.
      expect(stats.serverInfo?.host).toBeUndefined();
      for (const figure of ['totalDocsExamined', 'totalKeysExamined', 'docsExamined', 'keysExamined', 'works'])
        expect(shown).not.toContain(`"${figure}"`);
      // MongoDB reports statistics (then named in mtpWithheld); FerretDB v1 answers the plan only.
      if (stats.executionStats !== undefined) expect(stats.mtpWithheld?.fields).toContain('totalDocsExamined');
    }
    await expectRefused(
      acme().command({
        explain: { mapReduce: 'c21', map: 'function(){}', reduce: 'function(){}', out: { inline: 1 } },
        verbosity: 'queryPlanner',
      }),
      refusedAs('CommandNotSupported', 'explain.inner'),
    );
    await expectRefused(
      acme().command({
        explain: { find: 'c21', filter: { tenantId: 'globex' }, lsid: { id: new UUID() } },
        verbosity: 'queryPlanner',
      }),
      refusedAs('BadValue', 'explain.inner'),
      ['globex'],
    );
  });

  it('catalogue G1: command names are case-sensitive; other spellings are unknown, aliases are classified', async () => {
    await seed('cG1');
    for (const name of ['Find', 'FIND', 'findandModify', 'MapReduce', 'Delete']) {
      await expectRefused(
        acme().command({ [name]: 'cG1', filter: {} }),
        refusedAs('CommandNotFound', 'command.unknown'),
      );
    }
    const alias = await acme().command({
      findandmodify: 'cG1',
      query: { _id: 'globex-1' },
      update: { $set: { x: 1 } },
    });
    expect(alias.value).toBeNull();
    const doc = (await snapshot('cG1')).find((d) => d._id === 'globex-1');
    expect(doc?.x).toBeUndefined();
  });
});
