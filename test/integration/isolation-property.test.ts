/**
 * Property-based proof of tenant isolation (issue 4, "Proof"): random sequences of operations from
 * three tenants, through the official driver and the proxy, against one small shared collection
 * (plus a second one for $lookup / $unionWith / $facet where the upstream supports them: FerretDB
 * v1 does not, so those operations run only when MONGODB_URI is a real MongoDB).
 *
 * The test keeps a MODEL of every document (owner included) and after EVERY step reads the
 * upstream DIRECTLY (bypassing the proxy) to check:
 *   - no document changed owner, and documents of tenants other than the actor (plus a fourth,
 *     never-connected tenant and an unstamped legacy document) are byte-for-byte unchanged;
 *   - every new document belongs to the actor (no unstamped or foreign-stamped document appears);
 *   - the actor's documents are what the operation's semantics allow (the model);
 *   - each tenant's view through the proxy (`find({})`) equals its own documents in the upstream;
 *   - no reply (documents, counts, errors) ever carried another tenant's document or secret;
 *   - DDL (issue 13: createIndex, dropIndex, dropIndexes, listIndexes, listCollections, drop,
 *     dropDatabase) acts on and shows only the actor's own indexes and documents (a model of each
 *     tenant's index names and keys); after every DDL step that can destroy, the other tenants'
 *     catalogue records (indexes, collections), their physical indexes, the physical collections
 *     and the second collection's documents are read directly and must be unchanged, and another
 *     tenant's listIndexes and listCollections through the proxy still match its model.
 *
 * Runs: MTP_PROPERTY_RUNS (default 300 sequences of 1-12 operations, about 25-30 s on FerretDB,
 * also in CI; `npm run test:property` runs 2000; see docs/isolation.md for nightly settings). MTP_PROPERTY_SEED replays a seed;
 * MTP_PROPERTY_PATH with it replays a shrunk counterexample. On failure fast-check shrinks and
 * the message prints the operation sequence, the failing step and what differed.
 */
import fc from 'fast-check';
import { EJSON } from 'bson';
import { ObjectId, type Document, type MongoClient, type AnyBulkWriteOperation } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName, upstreamFeatures } from '../helpers/upstream.js';

const TENANTS = ['acme', 'globex', 'initech'] as const;
type Tenant = (typeof TENANTS)[number];
/** Owns seeded documents but never connects: its data must never change or be seen. */
const BYSTANDER = 'umbrella';
const FIELD = 'tenantId';
// `npm test` (CI included) runs 300 sequences, which keeps the whole run within its time budget
// on a loaded machine; `npm run test:property` runs 2000, a nightly sets more.
const RUNS = Number(process.env.MTP_PROPERTY_RUNS ?? 300);
const MAX_OPS = Number(process.env.MTP_PROPERTY_MAX_OPS ?? 12);
const SEED = process.env.MTP_PROPERTY_SEED === undefined ? undefined : Number(process.env.MTP_PROPERTY_SEED);
const PATH = process.env.MTP_PROPERTY_PATH;
/** $lookup, $unionWith and $facet: FerretDB v1.24 answers "stage is not implemented yet". */
const FEATURES = upstreamFeatures();
const SUB_PIPELINES = FEATURES.lookup && FEATURES.lookupPipeline && FEATURES.unionWith && FEATURES.facet;

// ---------------------------------------------------------------------------------------------
// Operations (plain data, so fast-check prints and shrinks them).

type Leaf =
  | { k: number }
  | { k: { $gt: number } }
  | { k: { $in: number[] } }
  | { x: { $lt: number } }
  | { tag: string }
  | { tag: { $regex: string } }
  | { tag: { $exists: boolean } }
  // Attacks on the tenant field (catalogue 6): key present is not a constraint.
  | { tenantId: string }
  | { tenantId: { $ne: string } }
  | { tenantId: { $in: string[] } }
  | { tenantId: { $nin: string[] } }
  | { tenantId: { $regex: string } }
  | { tenantId: { $exists: boolean } };
type Filter = Record<string, never> | Leaf | { $or: Filter[] } | { $and: Filter[] } | { $nor: Filter[] };

interface Update {
  $set?: { tag?: string; k?: number };
  $inc?: { x?: number };
  $setOnInsert?: { tag?: string };
}
/** Updates that touch the tenant field: always refused (catalogue 37, 38). */
type TenantUpdate =
  | { $set: { tenantId: string } }
  | { $rename: { tag: string } }
  | { $setOnInsert: { tenantId: string } }
  | { $unset: { tenantId: '' } };

interface NewDoc {
  _id?: string;
  /** 'self': the actor's own tenant written explicitly (allowed); a name: a claim (refused unless own). */
  tenantId?: string;
  k: number;
  x: number;
  tag: string;
}

type AggKind = 'match' | 'group' | 'count' | 'project' | 'lookup' | 'lookupPipeline' | 'unionWith' | 'facet';

type Op =
  | { op: 'find'; t: Tenant; filter: Filter }
  | { op: 'countDocuments'; t: Tenant; filter: Filter }
  | { op: 'estimatedDocumentCount'; t: Tenant }
  | { op: 'distinct'; t: Tenant; key: 'tag' | 'tenantId'; filter: Filter }
  | { op: 'aggregate'; t: Tenant; kind: AggKind; filter: Filter; k: number }
  | { op: 'insertMany'; t: Tenant; docs: NewDoc[]; ordered: boolean }
  | { op: 'updateOne' | 'updateMany'; t: Tenant; filter: Filter; update: Update }
  | { op: 'upsert'; t: Tenant; many: boolean; k: number; update: Update }
  | { op: 'updateTenant'; t: Tenant; many: boolean; filter: Filter; update: TenantUpdate; upsert: boolean }
  | { op: 'replaceOne'; t: Tenant; filter: Filter; replacement: NewDoc; upsert: boolean }
  | { op: 'deleteOne' | 'deleteMany'; t: Tenant; filter: Filter }
  | { op: 'bulkWrite'; t: Tenant; ordered: boolean; ops: BulkOp[] }
  // DDL with a private database per tenant (issue 13): indexes, listings and drop act on the actor's own.
  | { op: 'createIndex'; t: Tenant; field: IndexField; name: string }
  | { op: 'dropIndex'; t: Tenant; name: string }
  | { op: 'listIndexes'; t: Tenant }
  | { op: 'listCollections'; t: Tenant }
  | { op: 'drop'; t: Tenant }
  | { op: 'dropIndexes'; t: Tenant }
  | { op: 'dropDatabase'; t: Tenant };

type DdlOp = Extract<
  Op,
  { op: 'createIndex' | 'dropIndex' | 'dropIndexes' | 'listIndexes' | 'listCollections' | 'drop' | 'dropDatabase' }
>;
/** DDL that changes something: after it, the other tenants' DDL state is read directly. */
const DESTRUCTIVE_DDL: ReadonlySet<Op['op']> = new Set([
  'createIndex',
  'dropIndex',
  'dropIndexes',
  'drop',
  'dropDatabase',
]);

type IndexField = 'k' | 'x' | 'tag';

type BulkOp =
  | { insertOne: NewDoc }
  | { updateOne: { filter: Filter; update: Update } }
  | { updateMany: { filter: Filter; update: Update } }
  | { replaceOne: { filter: Filter; replacement: NewDoc } }
  | { deleteOne: Filter }
  | { deleteMany: Filter };

// ---------------------------------------------------------------------------------------------
// Seed data: fixed ids, owners and secrets, recreated before every run.

interface Doc extends Document {
  _id: unknown;
}

const SEED_IDS: string[] = [];
function seedItems(): Doc[] {
  const docs: Doc[] = [];
  let n = 0;
  for (const owner of [...TENANTS, BYSTANDER]) {
    for (let i = 0; i < 3; i++) {
      const _id = `i${n}`;
      docs.push({ _id, [FIELD]: owner, k: (n + i) % 5, x: n, tag: ['a', 'b', 'c'][i]!, secret: `sec_${owner}_${n}` });
      n++;
    }
  }
  // An unstamped legacy document (catalogue 10): seen by no tenant, changed by none.
  docs.push({ _id: 'legacy', k: 1, x: 0, tag: 'a', secret: 'sec_legacy' });
  SEED_IDS.splice(0, SEED_IDS.length, ...docs.map((doc) => String(doc._id)));
  return docs;
}
function seedRefs(): Doc[] {
  const docs: Doc[] = [];
  let n = 0;
  for (const owner of [...TENANTS, BYSTANDER]) {
    for (let i = 0; i < 2; i++) docs.push({ _id: `r${n}`, [FIELD]: owner, k: n % 5, secret: `sec_${owner}_r${n++}` });
  }
  return docs;
}
seedItems();

// ---------------------------------------------------------------------------------------------
// Generators.

const tenantArb = fc.constantFrom(...TENANTS);
const anyTenantName = fc.constantFrom(...TENANTS, BYSTANDER, 'ACME', '');
const kArb = fc.integer({ min: 0, max: 5 });
const tagArb = fc.constantFrom('a', 'b', 'c', 'd');

const leafArb: fc.Arbitrary<Leaf> = fc.oneof(
  kArb.map((k) => ({ k })),
  kArb.map((k) => ({ k: { $gt: k } })),
  fc.array(kArb, { maxLength: 3 }).map((ks) => ({ k: { $in: ks } })),
  fc.integer({ min: 0, max: 14 }).map((x) => ({ x: { $lt: x } })),
  tagArb.map((tag) => ({ tag })),
  fc.constantFrom('^[ab]', 'c', '.', '^z').map(($regex) => ({ tag: { $regex } })),
  fc.boolean().map(($exists) => ({ tag: { $exists } })),
  anyTenantName.map((tenantId) => ({ tenantId })),
  anyTenantName.map((tenantId) => ({ tenantId: { $ne: tenantId } })),
  fc.array(anyTenantName, { minLength: 1, maxLength: 3 }).map(($in) => ({ tenantId: { $in } })),
  fc.array(anyTenantName, { minLength: 1, maxLength: 2 }).map(($nin) => ({ tenantId: { $nin } })),
  fc.constantFrom('.', '^g', 'e', '^(acme|globex|initech|umbrella)$').map(($regex) => ({ tenantId: { $regex } })),
  fc.boolean().map(($exists) => ({ tenantId: { $exists } })),
);

const filterArb: fc.Arbitrary<Filter> = fc.letrec<{ filter: Filter }>((tie) => ({
  filter: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant({} as Record<string, never>),
    leafArb,
    leafArb,
    fc.array(tie('filter'), { minLength: 1, maxLength: 3 }).map(($or) => ({ $or })),
    fc.array(tie('filter'), { minLength: 1, maxLength: 2 }).map(($and) => ({ $and })),
    fc.array(tie('filter'), { minLength: 1, maxLength: 2 }).map(($nor) => ({ $nor })),
  ),
})).filter;

const updateArb: fc.Arbitrary<Update> = fc
  .record(
    {
      $set: fc.record({ tag: tagArb, k: kArb }, { requiredKeys: [] }),
      $inc: fc.record({ x: fc.integer({ min: -3, max: 3 }) }),
    },
    { requiredKeys: [] },
  )
  .map((update) => {
    const out: Update = {};
    if (update.$set !== undefined && Object.keys(update.$set).length > 0) out.$set = update.$set;
    if (update.$inc !== undefined) out.$inc = update.$inc;
    if (out.$set === undefined && out.$inc === undefined) out.$inc = { x: 1 };
    return out;
  });

const upsertUpdateArb: fc.Arbitrary<Update> = fc
  .tuple(updateArb, fc.option(tagArb, { nil: undefined }))
  .map(([update, onInsert]) => {
    // k is the upsert's query field: setting it too would conflict.
    const out: Update = { ...update };
    if (out.$set !== undefined) {
      const { k: _k, ...rest } = out.$set;
      if (Object.keys(rest).length > 0) out.$set = rest;
      else delete out.$set;
    }
    if (onInsert !== undefined && out.$set?.tag === undefined) out.$setOnInsert = { tag: onInsert };
    if (out.$set === undefined && out.$inc === undefined) out.$inc = { x: 1 };
    return out;
  });

const tenantUpdateArb: fc.Arbitrary<TenantUpdate> = fc.oneof(
  anyTenantName.map((tenantId) => ({ $set: { tenantId } })),
  fc.constant({ $rename: { tag: FIELD } }),
  anyTenantName.map((tenantId) => ({ $setOnInsert: { tenantId } })),
  fc.constant({ $unset: { tenantId: '' as const } }),
);

const idArb = fc.option(fc.oneof(fc.constantFrom(...SEED_IDS), fc.constantFrom('n0', 'n1', 'n2')), {
  nil: undefined,
  freq: 2,
});
const claimArb = fc.option(fc.oneof(fc.constant('self'), anyTenantName), { nil: undefined, freq: 3 });

const newDocArb = (withId: boolean): fc.Arbitrary<NewDoc> =>
  fc
    .record({
      _id: withId ? idArb : fc.constant(undefined),
      tenantId: claimArb,
      k: kArb,
      x: fc.integer({ min: 0, max: 9 }),
      tag: tagArb,
    })
    .map((doc) => {
      const out: NewDoc = { k: doc.k, x: doc.x, tag: doc.tag };
      if (doc._id !== undefined) out._id = doc._id;
      if (doc.tenantId !== undefined) out.tenantId = doc.tenantId;
      return out;
    });

const bulkOpArb: fc.Arbitrary<BulkOp> = fc.oneof(
  newDocArb(false).map((doc) => ({ insertOne: doc })),
  fc.record({ filter: filterArb, update: updateArb }).map((spec) => ({ updateOne: spec })),
  fc.record({ filter: filterArb, update: updateArb }).map((spec) => ({ updateMany: spec })),
  fc.record({ filter: filterArb, replacement: newDocArb(false) }).map((spec) => ({ replaceOne: spec })),
  filterArb.map((filter) => ({ deleteOne: filter })),
  filterArb.map((filter) => ({ deleteMany: filter })),
);

const aggKinds: AggKind[] = ['match', 'group', 'count', 'project'];
if (SUB_PIPELINES) aggKinds.push('lookup', 'lookupPipeline', 'unionWith', 'facet');

/** Triage aid: MTP_PROPERTY_EXCLUDE=upsert,bulkWrite leaves those operations out (never in CI). */
const EXCLUDED = new Set(
  (process.env.MTP_PROPERTY_EXCLUDE ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== ''),
);

const opArb: fc.Arbitrary<Op> = fc
  .oneof(
    { arbitrary: fc.record({ op: fc.constant('find' as const), t: tenantArb, filter: filterArb }), weight: 3 },
    fc.record({ op: fc.constant('countDocuments' as const), t: tenantArb, filter: filterArb }),
    fc.record({ op: fc.constant('estimatedDocumentCount' as const), t: tenantArb }),
    fc.record({
      op: fc.constant('distinct' as const),
      t: tenantArb,
      key: fc.constantFrom('tag' as const, 'tenantId' as const),
      filter: filterArb,
    }),
    {
      arbitrary: fc.record({
        op: fc.constant('aggregate' as const),
        t: tenantArb,
        kind: fc.constantFrom(...aggKinds),
        filter: filterArb,
        k: kArb,
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        op: fc.constant('insertMany' as const),
        t: tenantArb,
        docs: fc.array(newDocArb(true), { minLength: 1, maxLength: 4 }),
        ordered: fc.boolean(),
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        op: fc.constantFrom('updateOne' as const, 'updateMany' as const),
        t: tenantArb,
        filter: filterArb,
        update: updateArb,
      }),
      weight: 2,
    },
    fc.record({
      op: fc.constant('upsert' as const),
      t: tenantArb,
      many: fc.boolean(),
      k: kArb,
      update: upsertUpdateArb,
    }),
    fc.record({
      op: fc.constant('updateTenant' as const),
      t: tenantArb,
      many: fc.boolean(),
      filter: filterArb,
      update: tenantUpdateArb,
      upsert: fc.boolean(),
    }),
    fc.record({
      op: fc.constant('replaceOne' as const),
      t: tenantArb,
      filter: filterArb,
      replacement: newDocArb(false),
      upsert: fc.boolean(),
    }),
    {
      arbitrary: fc.record({
        op: fc.constantFrom('deleteOne' as const, 'deleteMany' as const),
        t: tenantArb,
        filter: filterArb,
      }),
      weight: 2,
    },
    {
      arbitrary: fc.record({
        op: fc.constant('bulkWrite' as const),
        t: tenantArb,
        ordered: fc.boolean(),
        ops: fc.array(bulkOpArb, { minLength: 1, maxLength: 5 }),
      }),
      weight: 2,
    },
    fc.record({
      op: fc.constant('createIndex' as const),
      t: tenantArb,
      field: fc.constantFrom<IndexField>('k', 'x', 'tag'),
      name: fc.constantFrom('i1', 'i2', 'i3'),
    }),
    fc.record({ op: fc.constant('dropIndex' as const), t: tenantArb, name: fc.constantFrom('i1', 'i2', 'i3') }),
    fc.record({ op: fc.constant('listIndexes' as const), t: tenantArb }),
    fc.record({ op: fc.constant('listCollections' as const), t: tenantArb }),
    // The destructive three share one weight: each is followed by a direct read of every other
    // tenant's records, indexes and collections, which costs more than the step itself.
    fc.oneof(
      fc.record({ op: fc.constant('drop' as const), t: tenantArb }),
      fc.record({ op: fc.constant('dropIndexes' as const), t: tenantArb }),
      fc.record({ op: fc.constant('dropDatabase' as const), t: tenantArb }),
    ),
  )
  .filter((op) => !EXCLUDED.has(op.op));

// ---------------------------------------------------------------------------------------------
// The model: a tiny evaluator of exactly the filters and updates generated above.

function getField(doc: Doc, name: string): unknown {
  return Object.prototype.hasOwnProperty.call(doc, name) ? doc[name] : undefined;
}

function matchLeaf(doc: Doc, name: string, cond: unknown): boolean {
  const value = getField(doc, name);
  if (typeof cond !== 'object' || cond === null) return value !== undefined && value === cond;
  const [[op, arg]] = Object.entries(cond as Record<string, unknown>) as [[string, unknown]];
  switch (op) {
    case '$gt':
      return typeof value === 'number' && value > (arg as number);
    case '$lt':
      return typeof value === 'number' && value < (arg as number);
    case '$in':
      return value !== undefined && (arg as unknown[]).includes(value);
    case '$nin':
      return value === undefined || !(arg as unknown[]).includes(value);
    case '$ne':
      return value !== arg;
    case '$regex':
      return typeof value === 'string' && new RegExp(arg as string).test(value);
    case '$exists':
      return (value !== undefined) === arg;
    default:
      throw new Error(`model: unknown operator ${op}`);
  }
}

function matches(doc: Doc, filter: Filter): boolean {
  return Object.entries(filter).every(([key, cond]) => {
    switch (key) {
      case '$or':
        return (cond as Filter[]).some((f) => matches(doc, f));
      case '$and':
        return (cond as Filter[]).every((f) => matches(doc, f));
      case '$nor':
        return !(cond as Filter[]).some((f) => matches(doc, f));
      default:
        return matchLeaf(doc, key, cond);
    }
  });
}

function applyUpdate(doc: Doc, update: Update): Doc {
  const out: Doc = { ...doc, ...update.$set };
  if (update.$inc?.x !== undefined) out.x = (typeof out.x === 'number' ? out.x : 0) + update.$inc.x;
  return out;
}

/** What the proxy stores for a client document: the actor's tenant, whatever the client said or omitted. */
function stored(doc: NewDoc, t: Tenant, id: unknown): Doc {
  const { _id: _ignored, tenantId: _claim, ...rest } = doc;
  return { _id: id, [FIELD]: t, ...rest };
}

/** A client document claims another tenant: the proxy must refuse the whole command (catalogue 8, 42). */
const claimsOther = (doc: NewDoc, t: Tenant): boolean =>
  doc.tenantId !== undefined && doc.tenantId !== 'self' && doc.tenantId !== t;
const toClientDoc = (doc: NewDoc, t: Tenant): Document => {
  const out: Document = { ...doc };
  if (doc.tenantId === 'self') out.tenantId = t;
  return out;
};

// Canonical forms for comparison: keys sorted, EJSON-typed.
function canon(value: unknown): string {
  return JSON.stringify(sortKeys(EJSON.serialize(value as Document, { relaxed: false })));
}
function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.keys(value)
        .sort()
        .map((key) => [key, sortKeys((value as Record<string, unknown>)[key])]),
    );
  }
  return value;
}
const idKey = (id: unknown): string => canon({ id });
const canonSet = (docs: readonly Doc[]): string => JSON.stringify(docs.map((doc) => canon(doc)).sort());

/** State of one collection: _id → document. */
type World = Map<string, Doc>;
const ownerOf = (doc: Doc): unknown => getField(doc, FIELD);
const docsOf = (world: World, t: string): Doc[] => [...world.values()].filter((doc) => ownerOf(doc) === t);

/**
 * Possible states of the actor's documents after a write (several when updateOne / deleteOne /
 * replaceOne match more than one document: the server picks one).
 */
type Outcomes = { strict: true; states: Doc[][] } | { strict: false; why: string };

function oneOrMany(state: Doc[], filter: Filter, many: boolean, apply: (doc: Doc) => Doc | undefined): Doc[][] {
  const hits = state.filter((doc) => matches(doc, filter));
  if (hits.length === 0) return [state];
  const chosen = many ? [hits] : hits.map((hit) => [hit]);
  return chosen.map((set) =>
    state.flatMap((doc) => (set.includes(doc) ? [apply(doc)].filter((d): d is Doc => d !== undefined) : [doc])),
  );
}

// ---------------------------------------------------------------------------------------------
// The test.

interface Failure {
  step: number;
  message: string;
}

describe('isolation property: three tenants, random operations, upstream read directly after every step', () => {
  let tenants: TenantProxy;
  let direct: MongoClient;
  const dbName = uniqueDbName('isoprop');
  const catalogueDb = uniqueDbName('isopropcat');
  /** The model of each tenant's indexes on items (name → field) and whether the catalogue has its collection. */
  const indexModel = new Map<Tenant, Map<string, IndexField>>();
  const createdModel = new Set<Tenant>();
  /** Tenants whose refs documents a dropDatabase deleted (refs is only ever seeded). */
  const refsDropped = new Set<Tenant>();
  const clients = new Map<Tenant, MongoClient>();

  beforeAll(async () => {
    // The model compares reads with the stored documents, tenant field included (shown).
    tenants = await startTenantProxy(TENANTS, {
      isolation: { tenantFieldInReplies: 'show', tenancy: { catalogueDatabase: catalogueDb } },
    });
    direct = directClient();
    await direct.connect();
    for (const t of TENANTS) {
      const client = tenants.clientFor(t);
      await client.connect();
      clients.set(t, client);
    }
  });

  afterAll(async () => {
    for (const db of [dbName, catalogueDb])
      await direct
        ?.db(db)
        .dropDatabase()
        .catch(() => undefined);
    await direct?.close();
    await tenants?.stop();
  });

  const items = (t: Tenant) => clients.get(t)!.db(dbName).collection<Document>('items');
  const upstreamItems = () => direct.db(dbName).collection<Doc>('items');
  const upstreamRefs = () => direct.db(dbName).collection<Doc>('refs');

  async function reset(): Promise<World> {
    await upstreamItems().deleteMany({});
    await upstreamRefs().deleteMany({});
    await upstreamItems()
      .dropIndexes()
      .catch(() => undefined);
    await direct.db(catalogueDb).collection('indexes').deleteMany({});
    await direct.db(catalogueDb).collection('collections').deleteMany({});
    await direct.db(catalogueDb).collection('slots').deleteMany({});
    indexModel.clear();
    createdModel.clear();
    refsDropped.clear();
    await upstreamItems().insertMany(seedItems());
    await upstreamRefs().insertMany(seedRefs());
    return readWorld();
  }

  async function readWorld(): Promise<World> {
    const docs = await upstreamItems().find({}).toArray();
    return new Map(docs.map((doc) => [idKey(doc._id), doc]));
  }

  /** Every secret and tenant document in `value` must be `t`'s (catalogue 6, 60, 61: replies and errors). */
  function assertNoForeignData(t: Tenant, value: unknown, what: string): void {
    const text = EJSON.stringify(value as Document, { relaxed: true });
    const leaked = text.match(/sec_([a-z]+)/g)?.filter((secret: string) => secret !== `sec_${t}`);
    if (leaked !== undefined && leaked.length > 0)
      throw new Error(`${what}: ${t} received foreign secrets ${[...new Set(leaked)].join(', ')}`);
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node !== null && typeof node === 'object' && !(node instanceof ObjectId)) {
        const owner = (node as Record<string, unknown>)[FIELD];
        if (owner !== undefined && owner !== t)
          throw new Error(
            `${what}: ${t} received a document of ${String(owner)}: ${EJSON.stringify(node as Document)}`,
          );
        Object.values(node).forEach(walk);
      }
    };
    walk(value);
  }

  const isRefusal = (error: unknown): boolean =>
    error instanceof Error && /mongo-tenant-proxy refused the command \(rule /.test(error.message);
  const isDuplicate = (error: unknown): boolean =>
    typeof error === 'object' &&
    error !== null &&
    ((error as { code?: number }).code === 11000 || /E11000|duplicate key/i.test(String((error as Error).message)));

  const sortedById = (docs: Doc[]): Doc[] => [...docs].sort((a, b) => (idKey(a._id) < idKey(b._id) ? -1 : 1));

  /** Runs one operation; returns the expected outcomes for the actor's documents. Throws on a read mismatch or a leak. */
  async function execute(op: Op, before: World): Promise<Outcomes> {
    const t = op.t;
    const mine = docsOf(before, t);
    const coll = items(t);
    const capture = async <T>(
      what: string,
      run: () => Promise<T>,
    ): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> => {
      try {
        const value = await run();
        assertNoForeignData(t, value, what);
        return { ok: true, value };
      } catch (error) {
        if (error instanceof Error && /received (foreign|a document)/.test(error.message)) throw error;
        assertNoForeignData(
          t,
          { message: (error as Error).message, errInfo: (error as { errorResponse?: unknown }).errorResponse },
          `${what} (error)`,
        );
        return { ok: false, error };
      }
    };
    const expectOk = <T>(res: { ok: true; value: T } | { ok: false; error: unknown }, what: string): T => {
      if (!res.ok) throw new Error(`${what} failed unexpectedly: ${(res.error as Error).message}`);
      return res.value;
    };
    const expectRefused = (res: { ok: boolean; error?: unknown }, what: string): void => {
      if (res.ok) throw new Error(`${what} was NOT refused`);
      if (!isRefusal(res.error))
        throw new Error(`${what} failed, but not as a policy refusal: ${(res.error as Error).message}`);
    };
    const sameDocs = (got: Doc[], want: Doc[], what: string): void => {
      if (canonSet(got) !== canonSet(want)) {
        throw new Error(
          `${what}: got ${EJSON.stringify(sortedById(got))}\n  expected ${EJSON.stringify(sortedById(want))}`,
        );
      }
    };
    const unchanged: Outcomes = { strict: true, states: [mine] };

    switch (op.op) {
      case 'find': {
        const got = expectOk(await capture('find', () => coll.find(op.filter as Document).toArray()), 'find') as Doc[];
        sameDocs(
          got,
          mine.filter((doc) => matches(doc, op.filter)),
          'find',
        );
        return unchanged;
      }
      case 'countDocuments': {
        const got = expectOk(
          await capture('countDocuments', () => coll.countDocuments(op.filter as Document)),
          'countDocuments',
        );
        expect(got, 'countDocuments').toBe(mine.filter((doc) => matches(doc, op.filter)).length);
        return unchanged;
      }
      case 'estimatedDocumentCount': {
        // Catalogue 17, 59: without a query the server would answer from metadata (every tenant).
        const got = expectOk(
          await capture('estimatedDocumentCount', () => coll.estimatedDocumentCount()),
          'estimatedDocumentCount',
        );
        expect(got, 'estimatedDocumentCount').toBe(mine.length);
        return unchanged;
      }
      case 'distinct': {
        const res = await capture('distinct', () => coll.distinct(op.key, op.filter as Document));
        const got = expectOk(res, 'distinct') as unknown[];
        const want = [
          ...new Set(
            mine
              .filter((doc) => matches(doc, op.filter))
              .map((doc) => getField(doc, op.key))
              .filter((v) => v !== undefined),
          ),
        ];
        expect([...got].sort(), `distinct ${op.key}`).toEqual(want.sort());
        return unchanged;
      }
      case 'aggregate':
        await aggregate(op, mine, capture, expectOk, sameDocs);
        return unchanged;
      case 'insertMany': {
        const docs = op.docs.map((doc) => toClientDoc(doc, t));
        const res = await capture('insertMany', () => coll.insertMany(docs, { ordered: op.ordered }));
        if (op.docs.some((doc) => claimsOther(doc, t))) {
          expectRefused(res, 'insertMany with a document claiming another tenant');
          return unchanged;
        }
        // The driver gave every document without an _id one of its own (in `docs`).
        const taken = new Set(before.keys());
        const state = [...mine];
        let duplicate = false;
        for (const [index, doc] of op.docs.entries()) {
          const id = docs[index]!._id as unknown;
          if (taken.has(idKey(id))) {
            duplicate = true;
            if (op.ordered) break;
            continue;
          }
          taken.add(idKey(id));
          state.push(stored(doc, t, id));
        }
        if (duplicate) {
          if (res.ok || !isDuplicate(res.error))
            throw new Error(
              `insertMany of a taken _id: expected a duplicate-key error, got ${res.ok ? 'success' : (res.error as Error).message}`,
            );
        } else expectOk(res, 'insertMany');
        return { strict: true, states: [state] };
      }
      case 'updateOne':
      case 'updateMany': {
        const many = op.op === 'updateMany';
        const res = await capture(op.op, () =>
          many ? coll.updateMany(op.filter as Document, op.update) : coll.updateOne(op.filter as Document, op.update),
        );
        expectOk(res, op.op);
        return { strict: true, states: oneOrMany(mine, op.filter, many, (doc) => applyUpdate(doc, op.update)) };
      }
      case 'upsert': {
        // Catalogue 38: the upserted document is the actor's, built from the query's equality (k).
        const filter = { k: op.k };
        const res = await capture('upsert', () =>
          op.many
            ? coll.updateMany(filter, op.update, { upsert: true })
            : coll.updateOne(filter, op.update, { upsert: true }),
        );
        const result = expectOk(res, 'upsert');
        const hits = mine.filter((doc) => matches(doc, filter));
        if (hits.length > 0)
          return { strict: true, states: oneOrMany(mine, filter, op.many, (doc) => applyUpdate(doc, op.update)) };
        const id = result.upsertedId;
        if (id === null || id === undefined) throw new Error('upsert with no match reported no upsertedId');
        // The proxy stamps the tenant ($setOnInsert); the query's other equality fields (k) come
        // out of the wrapping $and: MongoDB derives them, and on FerretDB 1.x the proxy adds them.
        const inserted = applyUpdate({ _id: id, [FIELD]: t, k: op.k, ...op.update.$setOnInsert }, op.update);
        return { strict: true, states: [[...mine, inserted]] };
      }
      case 'updateTenant': {
        // Catalogue 37, 38: any update naming the tenant field is refused, upsert or not.
        const options = { upsert: op.upsert };
        const res = await capture('updateTenant', () =>
          op.many
            ? coll.updateMany(op.filter as Document, op.update as Document, options)
            : coll.updateOne(op.filter as Document, op.update as Document, options),
        );
        expectRefused(res, `update ${JSON.stringify(op.update)}`);
        return unchanged;
      }
      case 'replaceOne': {
        const replacement = toClientDoc(op.replacement, t);
        const res = await capture('replaceOne', () =>
          coll.replaceOne(op.filter as Document, replacement, { upsert: op.upsert }),
        );
        if (claimsOther(op.replacement, t)) {
          expectRefused(res, 'replaceOne with a replacement claiming another tenant');
          return unchanged;
        }
        const result = expectOk(res, 'replaceOne');
        const hits = mine.filter((doc) => matches(doc, op.filter));
        if (hits.length === 0 && op.upsert) {
          const id = result.upsertedId;
          if (id === null || id === undefined)
            throw new Error('replaceOne upsert with no match reported no upsertedId');
          return { strict: true, states: [[...mine, stored(op.replacement, t, id)]] };
        }
        return { strict: true, states: oneOrMany(mine, op.filter, false, (doc) => stored(op.replacement, t, doc._id)) };
      }
      case 'deleteOne':
      case 'deleteMany': {
        const many = op.op === 'deleteMany';
        const res = await capture(op.op, () =>
          many ? coll.deleteMany(op.filter as Document) : coll.deleteOne(op.filter as Document),
        );
        expectOk(res, op.op);
        return { strict: true, states: oneOrMany(mine, op.filter, many, () => undefined) };
      }
      case 'bulkWrite':
        return bulkWrite(op, mine, capture, expectRefused);
      case 'createIndex':
      case 'dropIndex':
      case 'listIndexes':
      case 'listCollections':
      case 'drop':
      case 'dropIndexes':
      case 'dropDatabase':
        return ddl(op, mine, capture);
    }
  }

  /** DDL of the actor: checked against the index model; only the actor's documents may change (drop). */
  async function ddl(
    op: DdlOp,
    mine: Doc[],
    capture: <T>(
      what: string,
      run: () => Promise<T>,
    ) => Promise<{ ok: true; value: T } | { ok: false; error: unknown }>,
  ): Promise<Outcomes> {
    const t = op.t;
    const coll = items(t);
    const own = indexModel.get(t) ?? new Map<string, IndexField>();
    indexModel.set(t, own);
    const codeOf = (res: { ok: boolean; error?: unknown }): number | undefined =>
      res.ok ? undefined : (res.error as { code?: number }).code;
    const exists = (): boolean => mine.length > 0 || createdModel.has(t) || own.size > 0;
    const unchanged: Outcomes = { strict: true, states: [mine] };
    switch (op.op) {
      case 'createIndex': {
        const res = await capture('createIndex', () => coll.createIndex({ [op.field]: 1 }, { name: op.name }));
        const sameName = own.get(op.name);
        const sameKey = [...own].find(([, field]) => field === op.field)?.[0];
        const expected =
          sameName === undefined ? (sameKey === undefined ? undefined : 85) : sameName === op.field ? undefined : 86;
        if (codeOf(res) !== expected)
          throw new Error(`createIndex ${op.name}: expected code ${String(expected)}, got ${String(codeOf(res))}`);
        if (res.ok) {
          own.set(op.name, op.field);
          createdModel.add(t);
        }
        return unchanged;
      }
      case 'dropIndex': {
        const had = exists();
        const res = await capture('dropIndex', () => coll.dropIndex(op.name));
        const expected = !had ? 26 : own.has(op.name) ? undefined : 27;
        if (codeOf(res) !== expected)
          throw new Error(`dropIndex ${op.name}: expected code ${String(expected)}, got ${String(codeOf(res))}`);
        own.delete(op.name);
        return unchanged;
      }
      case 'listIndexes': {
        const res = await capture('listIndexes', () => coll.listIndexes().toArray());
        if (!exists()) {
          if (codeOf(res) !== 26)
            throw new Error(`listIndexes of a collection ${t} does not have: ${String(codeOf(res))}`);
          return unchanged;
        }
        if (!res.ok) throw new Error(`listIndexes failed: ${(res.error as Error).message}`);
        const got = res.value.map((index) => `${String(index.name)}:${JSON.stringify(index.key)}`).sort();
        const want = [
          '_id_:{"_id":1}',
          ...[...own].map(([name, field]) => `${name}:${JSON.stringify({ [field]: 1 })}`),
        ].sort();
        if (JSON.stringify(got) !== JSON.stringify(want))
          throw new Error(`listIndexes by ${t}: got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
        return unchanged;
      }
      case 'listCollections': {
        const res = await capture('listCollections', () =>
          clients.get(t)!.db(dbName).listCollections({}, { nameOnly: true }).toArray(),
        );
        if (!res.ok) throw new Error(`listCollections failed: ${(res.error as Error).message}`);
        const names = res.value.map((entry) => entry.name);
        if (names.includes('items') !== exists())
          throw new Error(
            `listCollections by ${t}: items ${exists() ? 'missing' : 'shown'} (${JSON.stringify(names)})`,
          );
        if (names.some((name) => name !== 'items' && name !== 'refs'))
          throw new Error(`listCollections by ${t} shows ${JSON.stringify(names)}`);
        return unchanged;
      }
      case 'drop': {
        const res = await capture('drop', () => coll.drop());
        if (!res.ok) throw new Error(`drop failed: ${(res.error as Error).message}`);
        own.clear();
        createdModel.delete(t);
        return { strict: true, states: [[]] };
      }
      case 'dropIndexes': {
        const had = exists();
        // The driver answers false for NamespaceNotFound (26): a collection the tenant does not have.
        const res = await capture('dropIndexes', () => coll.dropIndexes());
        if (!res.ok) throw new Error(`dropIndexes failed: ${(res.error as Error).message}`);
        if (res.value !== had) throw new Error(`dropIndexes: expected ${String(had)}, got ${String(res.value)}`);
        own.clear();
        return unchanged;
      }
      case 'dropDatabase': {
        const res = await capture('dropDatabase', () => clients.get(t)!.db(dbName).dropDatabase());
        if (!res.ok) throw new Error(`dropDatabase failed: ${(res.error as Error).message}`);
        own.clear();
        createdModel.delete(t);
        refsDropped.add(t);
        return { strict: true, states: [[]] };
      }
    }
  }

  /** What DDL may change, read directly: catalogue records per tenant, physical indexes and collections, refs. */
  interface DdlState {
    records: Map<string, string[]>;
    collections: Map<string, string[]>;
    physicalIndexes: Set<string>;
    physicalCollections: Set<string>;
    refs: Doc[];
  }

  async function readDdl(): Promise<DdlState> {
    const records = new Map<string, string[]>();
    const collections = new Map<string, string[]>();
    for (const record of await direct.db(catalogueDb).collection('indexes').find({}).toArray())
      for (const owner of record['owners'] as { t: string; name: string }[])
        records.set(owner.t, [
          ...(records.get(owner.t) ?? []),
          `${owner.name}|${String(record['spec'])}|${String(record['physical'])}`,
        ]);
    for (const entry of await direct.db(catalogueDb).collection('collections').find({}).toArray())
      collections.set(String(entry['t']), [
        ...(collections.get(String(entry['t'])) ?? []),
        `${String(entry['db'])}.${String(entry['coll'])}`,
      ]);
    const physicalIndexes = new Set(
      (await upstreamItems().listIndexes().toArray()).map((index) => String(index['name'])),
    );
    const physicalCollections = new Set(
      (await direct.db(dbName).listCollections({}, { nameOnly: true }).toArray()).map((entry) => entry.name),
    );
    return {
      records,
      collections,
      physicalIndexes,
      physicalCollections,
      refs: await upstreamRefs().find({}).toArray(),
    };
  }

  /**
   * After destructive DDL by `t`: every other tenant's (and the bystander's) catalogue records,
   * physical indexes, refs documents and collection names are unchanged; the physical collections
   * stay (other tenants' documents live in them); the others' listings through the proxy still
   * match their models (one of them per step).
   */
  async function checkDdl(op: DdlOp, before: DdlState, world: World): Promise<void> {
    const t = op.t;
    const after = await readDdl();
    const sorted = (list: string[] | undefined): string => JSON.stringify([...(list ?? [])].sort());
    for (const other of [...TENANTS, BYSTANDER]) {
      if (other === t) continue;
      if (sorted(after.records.get(other)) !== sorted(before.records.get(other)))
        throw new Error(
          `${op.op} by ${t} changed ${other}'s index records: ${sorted(before.records.get(other))} → ${sorted(after.records.get(other))}`,
        );
      if (sorted(after.collections.get(other)) !== sorted(before.collections.get(other)))
        throw new Error(
          `${op.op} by ${t} changed ${other}'s collections: ${sorted(before.collections.get(other))} → ${sorted(after.collections.get(other))}`,
        );
      for (const entry of after.records.get(other) ?? []) {
        const physical = entry.split('|').at(-1)!;
        if (!after.physicalIndexes.has(physical))
          throw new Error(`${op.op} by ${t} dropped the physical index ${physical} that ${other} owns`);
      }
      const refsOf = (state: DdlState): string => canonSet(state.refs.filter((ref) => ownerOf(ref) === other));
      if (refsOf(after) !== refsOf(before)) throw new Error(`${op.op} by ${t} changed ${other}'s refs documents`);
    }
    for (const name of ['items', 'refs'])
      if (!after.physicalCollections.has(name))
        throw new Error(`${op.op} by ${t} dropped the shared collection ${name}`);
    const myRefs = after.refs.filter((ref) => ownerOf(ref) === t);
    const wantRefs = refsDropped.has(t) ? [] : seedRefs().filter((ref) => ref[FIELD] === t);
    if (canonSet(myRefs) !== canonSet(wantRefs))
      throw new Error(`${t}'s refs documents after ${op.op} differ from the model`);
    // One other tenant (the next one), through the proxy: its indexes and collections as its model
    // says. One, not both, keeps the run as long as before; which one varies with the actor.
    for (const other of [TENANTS[(TENANTS.indexOf(t) + 1) % TENANTS.length]!]) {
      const own = indexModel.get(other) ?? new Map<string, IndexField>();
      const exists = docsOf(world, other).length > 0 || createdModel.has(other) || own.size > 0;
      const names = (await clients.get(other)!.db(dbName).listCollections({}, { nameOnly: true }).toArray()).map(
        (entry) => entry.name,
      );
      if (names.includes('items') !== exists)
        throw new Error(`after ${op.op} by ${t}, ${other}'s listCollections ${exists ? 'lost' : 'shows'} items`);
      if (!exists) continue;
      const got = (await items(other).listIndexes().toArray())
        .map((index) => `${String(index.name)}:${JSON.stringify(index.key)}`)
        .sort();
      const want = [
        '_id_:{"_id":1}',
        ...[...own].map(([name, field]) => `${name}:${JSON.stringify({ [field]: 1 })}`),
      ].sort();
      if (JSON.stringify(got) !== JSON.stringify(want))
        throw new Error(
          `after ${op.op} by ${t}, ${other}'s listIndexes: got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`,
        );
    }
  }

  async function aggregate(
    op: Extract<Op, { op: 'aggregate' }>,
    mine: Doc[],
    capture: <T>(
      what: string,
      run: () => Promise<T>,
    ) => Promise<{ ok: true; value: T } | { ok: false; error: unknown }>,
    expectOk: <T>(res: { ok: true; value: T } | { ok: false; error: unknown }, what: string) => T,
    sameDocs: (got: Doc[], want: Doc[], what: string) => void,
  ): Promise<void> {
    const t = op.t;
    const hits = mine.filter((doc) => matches(doc, op.filter));
    const match = { $match: op.filter };
    const run = async (pipeline: Document[]): Promise<Doc[]> =>
      expectOk(
        await capture(`aggregate ${op.kind}`, () => items(t).aggregate<Doc>(pipeline).toArray()),
        `aggregate ${op.kind}`,
      );
    // Expected refs of the actor (read-only collection: the seed).
    const myRefs = refsDropped.has(t) ? [] : seedRefs().filter((ref) => ref[FIELD] === t);
    switch (op.kind) {
      case 'match':
        sameDocs(await run([match]), hits, 'aggregate $match');
        return;
      case 'group': {
        const got = await run([match, { $group: { _id: `$${FIELD}`, n: { $sum: 1 } } }]);
        expect(got, 'aggregate $group by tenant').toEqual(hits.length === 0 ? [] : [{ _id: t, n: hits.length }]);
        return;
      }
      case 'count': {
        const got = await run([match, { $count: 'n' }]);
        // Nothing to count: MongoDB returns no document, DocumentDB {n: 0} (docs/upstreams.md).
        if (hits.length === 0 && got.length === 1) expect(got, 'aggregate $count').toEqual([{ n: 0 }]);
        else expect(got, 'aggregate $count').toEqual(hits.length === 0 ? [] : [{ n: hits.length }]);
        return;
      }
      case 'project': {
        const got = await run([match, { $project: { secret: 0 } }]);
        sameDocs(
          got,
          hits.map(({ secret: _s, ...rest }) => rest as Doc),
          'aggregate $project',
        );
        return;
      }
      case 'lookup': {
        // Catalogue 30: the joined arrays hold only the actor's refs.
        const got = await run([match, { $lookup: { from: 'refs', localField: 'k', foreignField: 'k', as: 'j' } }]);
        sameDocs(
          got,
          hits.map((doc) => ({ ...doc, j: myRefs.filter((ref) => ref.k === doc.k) })),
          'aggregate $lookup',
        );
        return;
      }
      case 'lookupPipeline': {
        const got = await run([
          match,
          {
            $lookup: {
              from: 'refs',
              let: { kk: '$k' },
              pipeline: [{ $match: { $expr: { $lte: ['$k', '$$kk'] } } }],
              as: 'j',
            },
          },
        ]);
        sameDocs(
          got,
          hits.map((doc) => ({ ...doc, j: myRefs.filter((ref) => (ref.k as number) <= (doc.k as number)) })),
          'aggregate $lookup pipeline',
        );
        return;
      }
      case 'unionWith': {
        // Catalogue 32.
        const got = await run([match, { $unionWith: { coll: 'refs', pipeline: [{ $match: { k: { $gte: op.k } } }] } }]);
        sameDocs(got, [...hits, ...myRefs.filter((ref) => (ref.k as number) >= op.k)], 'aggregate $unionWith');
        return;
      }
      case 'facet': {
        // Catalogue 32: $facet sub-pipelines, one with a $unionWith inside.
        const got = await run([{ $facet: { a: [match], b: [{ $unionWith: { coll: 'refs' } }, { $count: 'n' }] } }]);
        expect(got.length, 'aggregate $facet').toBe(1);
        sameDocs(got[0]!.a as Doc[], hits, 'aggregate $facet.a');
        expect(got[0]!.b, 'aggregate $facet.b').toEqual([{ n: mine.length + myRefs.length }]);
        return;
      }
    }
  }

  async function bulkWrite(
    op: Extract<Op, { op: 'bulkWrite' }>,
    mine: Doc[],
    capture: <T>(
      what: string,
      run: () => Promise<T>,
    ) => Promise<{ ok: true; value: T } | { ok: false; error: unknown }>,
    expectRefused: (res: { ok: boolean; error?: unknown }, what: string) => void,
  ): Promise<Outcomes> {
    const t = op.t;
    const models: AnyBulkWriteOperation<Document>[] = op.ops.map((item) => {
      if ('insertOne' in item) return { insertOne: { document: toClientDoc(item.insertOne, t) } };
      if ('updateOne' in item)
        return { updateOne: { filter: item.updateOne.filter as Document, update: item.updateOne.update } };
      if ('updateMany' in item)
        return { updateMany: { filter: item.updateMany.filter as Document, update: item.updateMany.update } };
      if ('replaceOne' in item)
        return {
          replaceOne: {
            filter: item.replaceOne.filter as Document,
            replacement: toClientDoc(item.replaceOne.replacement, t),
          },
        };
      if ('deleteOne' in item) return { deleteOne: { filter: item.deleteOne as Document } };
      return { deleteMany: { filter: item.deleteMany as Document } };
    });
    const res = await capture('bulkWrite', () => items(t).bulkWrite(models, { ordered: op.ordered }));
    const claims = op.ops.some(
      (item) =>
        ('insertOne' in item && claimsOther(item.insertOne, t)) ||
        ('replaceOne' in item && claimsOther(item.replaceOne.replacement, t)),
    );
    if (claims) {
      // The batch holding the claim is refused; which other batches ran depends on the driver's
      // batching: the isolation invariants are still checked on the upstream.
      expectRefused(res, 'bulkWrite with a document claiming another tenant');
      return { strict: false, why: 'a refused batch inside a bulk write' };
    }
    if (!res.ok) throw new Error(`bulkWrite failed unexpectedly: ${(res.error as Error).message}`);
    if (!op.ordered) return { strict: false, why: 'unordered bulk write (the driver regroups operations by type)' };
    let states: Doc[][] = [mine];
    models.forEach((model, index) => {
      const item = op.ops[index]!;
      states = states.flatMap((state): Doc[][] => {
        if ('insertOne' in item)
          return [
            [
              ...state,
              stored(item.insertOne, t, (model as { insertOne: { document: Document } }).insertOne.document._id),
            ],
          ];
        if ('updateOne' in item)
          return oneOrMany(state, item.updateOne.filter, false, (doc) => applyUpdate(doc, item.updateOne.update));
        if ('updateMany' in item)
          return oneOrMany(state, item.updateMany.filter, true, (doc) => applyUpdate(doc, item.updateMany.update));
        if ('replaceOne' in item)
          return oneOrMany(state, item.replaceOne.filter, false, (doc) =>
            stored(item.replaceOne.replacement, t, doc._id),
          );
        if ('deleteOne' in item) return oneOrMany(state, item.deleteOne, false, () => undefined);
        return oneOrMany(state, item.deleteMany, true, () => undefined);
      });
      if (states.length > 256) states = states.slice(0, 256); // bounded; the match check below then may be lenient
    });
    return { strict: true, states };
  }

  /** Reads the upstream directly and checks every invariant; returns the new world. */
  async function check(op: Op, before: World, outcomes: Outcomes): Promise<World> {
    const after = await readWorld();
    const t = op.t;
    // 1. Documents of everyone but the actor (other tenants, the bystander, the legacy document): unchanged.
    for (const [key, doc] of before) {
      if (ownerOf(doc) === t) continue;
      const now = after.get(key);
      if (now === undefined) throw new Error(`document ${key} of ${String(ownerOf(doc))} was REMOVED by ${t}`);
      if (canon(now) !== canon(doc))
        throw new Error(`document ${key} of ${String(ownerOf(doc))} was CHANGED by ${t}: ${EJSON.stringify(now)}`);
    }
    // 2. No document changed owner; every new document is the actor's.
    for (const [key, doc] of after) {
      const was = before.get(key);
      if (was !== undefined && ownerOf(was) !== ownerOf(doc)) {
        throw new Error(
          `document ${key} CHANGED OWNER from ${String(ownerOf(was))} to ${String(ownerOf(doc))}: ${EJSON.stringify(doc)}`,
        );
      }
      if (was === undefined && ownerOf(doc) !== t) {
        throw new Error(
          `a write by ${t} created a document owned by ${JSON.stringify(ownerOf(doc)) ?? 'NOBODY (no tenant field)'}: ${EJSON.stringify(doc)}`,
        );
      }
    }
    // 3. The actor's documents are one of the outcomes the operation allows.
    if (outcomes.strict) {
      const got = canonSet(docsOf(after, t));
      if (!outcomes.states.some((state) => canonSet(state) === got)) {
        throw new Error(
          `${t}'s documents after ${op.op} differ from the model:\n  upstream ${EJSON.stringify(sortedById(docsOf(after, t)))}\n  expected ${outcomes.states
            .slice(0, 3)
            .map((state) => EJSON.stringify(sortedById(state)))
            .join('\n   or    ')}`,
        );
      }
    }
    // 4. Every tenant's view through the proxy is exactly its own documents upstream.
    for (const viewer of TENANTS) {
      const view = (await items(viewer).find({}).toArray()) as Doc[];
      assertNoForeignData(viewer, view, `find({}) by ${viewer}`);
      const own = docsOf(after, viewer);
      if (canonSet(view) !== canonSet(own)) {
        throw new Error(
          `${viewer}'s view through the proxy differs from its documents upstream:\n  view ${EJSON.stringify(sortedById(view))}\n  upstream ${EJSON.stringify(sortedById(own))}`,
        );
      }
    }
    return after;
  }

  const describeOps = (ops: readonly Op[]): string =>
    ops.map((op, i) => `  ${i + 1}. ${JSON.stringify(op)}`).join('\n');

  it(
    `keeps every tenant to its own documents (${RUNS} runs of up to ${MAX_OPS} operations${SUB_PIPELINES ? ', with $lookup/$unionWith/$facet' : ''})`,
    async () => {
      const started = Date.now();
      let steps = 0;
      const tally = new Map<string, number>();
      const property = fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: MAX_OPS }), async (ops) => {
        let world = await reset();
        for (const [index, op] of ops.entries()) {
          let failure: Failure | undefined;
          try {
            const ddlBefore = DESTRUCTIVE_DDL.has(op.op) ? await readDdl() : undefined;
            const outcomes = await execute(op, world);
            world = await check(op, world, outcomes);
            if (ddlBefore !== undefined) await checkDdl(op as DdlOp, ddlBefore, world);
            steps++;
            const kind = `${op.op}${op.op === 'aggregate' ? `.${op.kind}` : ''}`;
            tally.set(kind, (tally.get(kind) ?? 0) + 1);
          } catch (error) {
            failure = { step: index + 1, message: error instanceof Error ? error.message : String(error) };
          }
          if (failure !== undefined) {
            throw new Error(
              `isolation property failed at step ${failure.step} of:\n${describeOps(ops.slice(0, failure.step))}\n→ ${failure.message}`,
            );
          }
        }
      });
      const details = await fc.check(property, {
        numRuns: RUNS,
        ...(SEED !== undefined ? { seed: SEED } : {}),
        ...(PATH !== undefined ? { path: PATH } : {}),
        endOnFailure: process.env.MTP_PROPERTY_SHRINK === '0',
        interruptAfterTimeLimit: Number(process.env.MTP_PROPERTY_SHRINK_LIMIT_MS ?? 120_000) + RUNS * 1_000,
      });
      const seconds = ((Date.now() - started) / 1000).toFixed(1);
      process.stderr.write(
        `[isolation-property] ${details.numRuns} runs, ${steps} steps, ${seconds} s, seed ${details.seed}\n` +
          // The time limit bounds shrinking on a slow machine; when it also cut the runs short, say so.
          (details.interrupted ? `  INTERRUPTED by the time limit after ${details.numRuns} of ${RUNS} runs\n` : '') +
          `  steps by operation: ${[...tally]
            .sort()
            .map(([kind, n]) => `${kind} ${n}`)
            .join(', ')}\n`,
      );
      if (details.failed) {
        const error =
          details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
        throw new Error(
          `isolation property failed after ${details.numRuns} runs (${details.numShrinks} shrinks).\n` +
            `Replay: MTP_PROPERTY_SEED=${details.seed} MTP_PROPERTY_PATH=${details.counterexamplePath ?? ''} npx vitest run test/integration/isolation-property.test.ts\n${error}`,
        );
      }
    },
    Math.max(60_000, RUNS * 2_000),
  );
});
