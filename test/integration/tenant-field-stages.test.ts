/**
 * isolation.tenantFieldInReplies: hide (issue 14) through every stage that can move a document:
 * joined documents ($lookup, nested $lookup, $graphLookup, $unionWith) and the tenant's own
 * documents pushed, renamed, replaced, bucketed or faceted. Each pipeline runs through the proxy
 * on the tenant's tagged data (another tenant's documents in the same collections) and directly
 * on an untagged copy: where the upstream runs it directly, the proxy's result must be the same
 * (so no tenant field anywhere, nothing of the other tenant, the application's own values,
 * `meta.tenantId` included, unchanged); where it does not (FerretDB v1 lacks most of these
 * stages), the proxy must fail too. Which is which is decided by the upstream, never by its name.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Document, MongoClient } from 'mongodb';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

const TENANT = 'test-tenant';
const tagged = uniqueDbName('tfs');
const plain = uniqueDbName('tfsplain');
let proxy: TestProxy;
let shown: TestProxy;
let client: MongoClient;
let direct: MongoClient;

const people = [
  { _id: 1, name: 'ann', age: 30, manager: null, meta: { tenantId: 'app-own' } },
  { _id: 2, name: 'bob', age: 60, manager: 1, meta: { tenantId: 'app-own' } },
  { _id: 3, name: 'cid', age: 45, manager: 2, meta: { tenantId: 'app-own' } },
];
const pets = [
  { _id: 10, owner: 1, kind: 'cat', name: 'tom' },
  { _id: 11, owner: 1, kind: 'dog', name: 'rex' },
  { _id: 12, owner: 3, kind: 'cat', name: 'kit' },
];

/** Everything in `value` that names a tenant: the tenant field (outside `meta`) or a tenant's value. */
function tenantTraces(value: unknown, path = ''): string[] {
  if (Array.isArray(value)) return value.flatMap((item, i) => tenantTraces(item, `${path}[${i}]`));
  if (value === null || typeof value !== 'object' || value instanceof Date) {
    return value === TENANT || value === 'other' || value === 'OTHER' ? [`${path} = ${String(value)}`] : [];
  }
  return Object.entries(value as Record<string, unknown>).flatMap(([key, child]) => [
    ...(key === 'tenantId' && !path.endsWith('meta') ? [`${path}.${key}`] : []),
    ...tenantTraces(child, `${path}.${key}`),
  ]);
}

/** Sorts the arrays of found documents $graphLookup returns in no particular order. */
function byId(docs: Document[], field: string): Document[] {
  return docs.map((doc) => ({
    ...doc,
    [field]: [...(doc[field] as Document[])].sort((a, b) => Number(a['_id']) - Number(b['_id'])),
  }));
}

type Outcome = { ran: true; docs: Document[] } | { ran: false; error: Error };

async function outcome(run: () => Promise<Document[]>): Promise<Outcome> {
  try {
    return { ran: true, docs: await run() };
  } catch (error) {
    return { ran: false, error: error as Error };
  }
}

const ran: string[] = [];

/**
 * The pipeline on `coll` through the proxy and directly on the untagged copy: the same documents
 * where the upstream runs it, a failure through the proxy too where it does not.
 */
async function same(
  label: string,
  coll: string,
  pipeline: Document[],
  normalise: (docs: Document[]) => Document[] = (docs) => docs,
): Promise<void> {
  const proxied = await outcome(() => client.db(tagged).collection(coll).aggregate(pipeline).toArray());
  const expected = await outcome(() => direct.db(plain).collection(coll).aggregate(pipeline).toArray());
  if (!expected.ran) {
    expect(proxied.ran, `${label}: the upstream refuses it directly (${expected.error.message})`).toBe(false);
    return;
  }
  if (!proxied.ran) throw new Error(`${label}: runs directly, fails through the proxy: ${proxied.error.message}`);
  expect(tenantTraces(proxied.docs), label).toEqual([]);
  expect(normalise(proxied.docs), label).toEqual(normalise(expected.docs));
  ran.push(label);
}

beforeAll(async () => {
  [proxy, shown] = await Promise.all([
    startTestProxy({ isolation: { namespaces: [{ match: `${tagged}.out_*`, model: 'collection-prefix' }] } }),
    startTestProxy({ isolation: { tenantFieldInReplies: 'show' } }),
  ]);
  client = proxy.client();
  direct = directClient();
  await client
    .db(tagged)
    .collection('people')
    .insertMany(people.map((doc) => ({ ...doc })) as never[]);
  await client
    .db(tagged)
    .collection('pets')
    .insertMany(pets.map((doc) => ({ ...doc })) as never[]);
  // Another tenant in the same collections, with keys that would join: never read.
  await direct
    .db(tagged)
    .collection('people')
    .insertMany([
      { _id: 101, tenantId: 'other', name: 'OTHER', age: 40, manager: 1, meta: { tenantId: 'OTHER' } },
    ] as never[]);
  await direct
    .db(tagged)
    .collection('pets')
    .insertMany([{ _id: 110, tenantId: 'other', owner: 1, kind: 'cat', name: 'OTHER' }] as never[]);
  await direct
    .db(plain)
    .collection('people')
    .insertMany(people.map((doc) => ({ ...doc })) as never[]);
  await direct
    .db(plain)
    .collection('pets')
    .insertMany(pets.map((doc) => ({ ...doc })) as never[]);
});

afterAll(async () => {
  for (const db of [tagged, plain]) {
    await direct
      ?.db(db)
      .dropDatabase()
      .catch(() => undefined);
  }
  await direct?.close();
  await Promise.all([proxy?.stop(), shown?.stop()]);
});

const JOIN = { $lookup: { from: 'pets', localField: '_id', foreignField: 'owner', as: 'pets' } };
const SORT = { $sort: { _id: 1 } };

describe('tenantFieldInReplies: hide, through every stage (issue 14)', () => {
  it('$lookup results followed through $project, $addFields/$set, $unset, $replaceRoot/$replaceWith, $unwind', async () => {
    await same('$lookup', 'people', [SORT, JOIN]);
    await same('$lookup + $project renaming', 'people', [SORT, JOIN, { $project: { name: 1, animals: '$pets' } }]);
    await same('$lookup + $addFields', 'people', [
      SORT,
      JOIN,
      { $addFields: { first: { $arrayElemAt: ['$pets', 0] } } },
    ]);
    await same('$lookup + $set', 'people', [SORT, JOIN, { $set: { copy: '$pets', self: '$$ROOT' } }]);
    await same('$lookup + $unset', 'people', [SORT, JOIN, { $unset: 'pets._id' }]);
    await same('$lookup + $replaceRoot', 'people', [
      SORT,
      JOIN,
      { $replaceRoot: { newRoot: { $mergeObjects: [{ $arrayElemAt: ['$pets', 0] }, { by: '$name' }] } } },
    ]);
    await same('$lookup + $unwind + $replaceWith', 'people', [
      SORT,
      JOIN,
      { $unwind: '$pets' },
      { $replaceWith: '$pets' },
      SORT,
    ]);
    await same('$project $$ROOT', 'people', [SORT, { $project: { copy: '$$ROOT' } }]);
  });

  it('$group ($push, $first of $$ROOT and of joined documents), $bucket, $sortByCount', async () => {
    await same('$group $push $$ROOT', 'people', [SORT, { $group: { _id: null, all: { $push: '$$ROOT' } } }]);
    await same('$group $first', 'people', [SORT, { $group: { _id: null, doc: { $first: '$$ROOT' } } }]);
    await same('$group over joined', 'people', [
      SORT,
      JOIN,
      { $group: { _id: null, joined: { $push: '$pets' }, first: { $first: '$pets' } } },
    ]);
    await same('$bucket', 'people', [
      SORT,
      { $bucket: { groupBy: '$age', boundaries: [0, 50, 200], default: 'x', output: { docs: { $push: '$$ROOT' } } } },
    ]);
    await same('$sortByCount of the tenant field name', 'people', [{ $sortByCount: '$tenantId' }]);
    await same('$sortByCount', 'pets', [{ $sortByCount: '$kind' }, SORT]);
  });

  it('$facet, nested $lookup, $unionWith, $graphLookup', async () => {
    await same('$facet', 'people', [
      SORT,
      { $facet: { joined: [JOIN], all: [{ $group: { _id: null, docs: { $push: '$$ROOT' } } }] } },
    ]);
    await same('$lookup in $lookup', 'people', [
      SORT,
      {
        $lookup: {
          from: 'pets',
          let: { id: '$_id' },
          pipeline: [
            { $match: { $expr: { $eq: ['$owner', '$$id'] } } },
            SORT,
            { $lookup: { from: 'people', localField: 'owner', foreignField: '_id', as: 'ownedBy' } },
            { $group: { _id: '$owner', docs: { $push: '$$ROOT' } } },
          ],
          as: 'pets',
        },
      },
    ]);
    await same('$unionWith', 'people', [
      { $unionWith: { coll: 'pets', pipeline: [SORT, { $group: { _id: '$kind', docs: { $push: '$$ROOT' } } }] } },
      SORT,
    ]);
    await same('$unionWith a string', 'people', [{ $unionWith: 'pets' }, SORT]);
    await same(
      '$graphLookup',
      'people',
      [
        SORT,
        {
          $graphLookup: {
            from: 'people',
            startWith: '$manager',
            connectFromField: 'manager',
            connectToField: '_id',
            as: 'chain',
          },
        },
      ],
      (docs) => byId(docs, 'chain'),
    );
  });

  it('$out and $merge into a tenant-private collection store what the tenant read; the source keeps its stamp', async () => {
    for (const [stage, target] of [
      [{ $out: 'out_joined' }, 'out_joined'],
      [{ $merge: { into: 'out_merged' } }, 'out_merged'],
    ] as const) {
      const pipeline = [SORT, JOIN, stage];
      const proxied = await outcome(() => client.db(tagged).collection('people').aggregate(pipeline).toArray());
      const expected = await outcome(() => direct.db(plain).collection('people').aggregate(pipeline).toArray());
      expect(proxied.ran, `${target}: the same outcome as direct`).toBe(expected.ran);
      if (!expected.ran) continue;
      const written = await client.db(tagged).collection(target).find().sort({ _id: 1 }).toArray();
      expect(written).toEqual(await direct.db(plain).collection(target).find().sort({ _id: 1 }).toArray());
      expect(tenantTraces(written)).toEqual([]);
      // Physically too: the tenant-private collection holds no tenant field (it is not needed there).
      const names = await direct.db(tagged).listCollections({}, { nameOnly: true }).toArray();
      const physical = names.map((entry) => entry.name).filter((name) => name.endsWith(`.${target}`));
      expect(physical).toHaveLength(1);
      const stored = await direct.db(tagged).collection(physical[0]!).find().toArray();
      expect(stored).toHaveLength(people.length);
      expect(tenantTraces(stored)).toEqual([]);
      ran.push(Object.keys(stage)[0]!);
    }
    // The stored documents of the shared collections keep the tenant field.
    const source = await direct.db(tagged).collection('people').find({ tenantId: TENANT }).toArray();
    expect(source).toHaveLength(people.length);
    const joinedSource = await direct.db(tagged).collection('pets').find({ tenantId: TENANT }).toArray();
    expect(joinedSource).toHaveLength(pets.length);
  });

  it('show: the pushed and joined documents carry the field (the rewrite only applies with hide)', async () => {
    const all = await outcome(() =>
      shown
        .client()
        .db(tagged)
        .collection('people')
        .aggregate([SORT, { $group: { _id: null, all: { $push: '$$ROOT' } } }])
        .toArray(),
    );
    if (all.ran) for (const doc of all.docs[0]!['all'] as Document[]) expect(doc['tenantId']).toBe(TENANT);
  });

  afterAll(() => {
    // Which pipelines the upstream ran (the rest it refuses directly too): shown in the test output.
    console.info(`tenant-field-stages: ${ran.length} pipelines compared with direct: ${ran.join(', ')}`);
  });
});
