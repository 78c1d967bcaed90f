/**
 * isolation.tenantFieldInReplies (issue 14): with `hide` (the default) the application reads
 * exactly what it wrote, through a real driver: find batches and getMore, aggregate with
 * $lookup / $unionWith / $facet, findOneAndUpdate; writes are stamped all the same (read
 * directly). With `show` the field is there.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Document, MongoClient } from 'mongodb';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

/**
 * An upstream without a stage ($lookup, $unionWith… on FerretDB v1) answers "not implemented":
 * then the same pipeline read directly must fail the same way (the proxy relays the upstream's
 * answer), decided by what the upstream does, never by its name.
 */
async function unlessNotImplemented<T>(
  pipeline: Document[],
  run: (pipeline: Document[]) => Promise<T>,
  check: (result: T) => void,
): Promise<void> {
  const result = await run(pipeline).catch((error: Error) => error);
  if (result instanceof Error) {
    expect(result.message).toMatch(/not implemented/);
    const directly = await direct
      .db(dbName)
      .collection('orders')
      .aggregate(pipeline)
      .toArray()
      .catch((error: Error) => error);
    expect(directly, 'the upstream itself runs this pipeline').toBeInstanceOf(Error);
    expect((directly as Error).message).toMatch(/not implemented/);
    return;
  }
  check(result);
}

const TENANT = 'test-tenant';
let hidden: TestProxy;
let shown: TestProxy;
let client: MongoClient;
let direct: MongoClient;
const dbName = uniqueDbName('tfr');

beforeAll(async () => {
  [hidden, shown] = await Promise.all([
    startTestProxy(),
    startTestProxy({ isolation: { tenantFieldInReplies: 'show' } }),
  ]);
  client = hidden.client();
  direct = directClient();
  // Another tenant's documents in the same collections: never read, and never counted in anything.
  await direct
    .db(dbName)
    .collection('items')
    .insertMany([
      { _id: 'other-1' as never, tenantId: 'other', k: 1 },
      { _id: 'other-2' as never, tenantId: 'other', k: 2 },
    ]);
});

afterAll(async () => {
  await direct
    ?.db(dbName)
    .dropDatabase()
    .catch(() => undefined);
  await direct?.close();
  await Promise.all([hidden?.stop(), shown?.stop()]);
});

describe('tenantFieldInReplies: hide (the default)', () => {
  it('is the default', () => {
    expect(hidden.config.isolation.tenantFieldInReplies).toBe('hide');
  });

  it('find in several batches and getMore: every document exactly as written, the stored ones stamped', async () => {
    const items = client.db(dbName).collection('items');
    const written = Array.from({ length: 25 }, (_, k) => ({
      _id: k as never,
      k,
      tag: `t${k % 3}`,
      nested: { tenantId: 'mine' },
    }));
    await items.insertMany(written.map((doc) => ({ ...doc })));
    const read = await items.find({}, { batchSize: 4 }).sort({ _id: 1 }).toArray();
    expect(read).toEqual(written);
    // Field order and values kept: the raw bytes of a document equal what the driver wrote.
    const one = await items.findOne({ _id: 3 as never });
    expect(Object.keys(one!)).toEqual(['_id', 'k', 'tag', 'nested']);
    // Stored documents carry the tenant (read directly, bypassing the proxy).
    const stored = await direct.db(dbName).collection('items').find({ tenantId: TENANT }).toArray();
    expect(stored).toHaveLength(25);
    // An inclusion projection: the proxy adds nothing to it, the shape is the client's.
    expect(
      await items
        .find({ k: { $lt: 2 } }, { projection: { tag: 1 } })
        .sort({ _id: 1 })
        .toArray(),
    ).toEqual([
      { _id: 0, tag: 't0' },
      { _id: 1, tag: 't1' },
    ]);
    // Asking for the tenant field by name does not bring it back.
    const explicit = await items.find({ k: 0 }, { projection: { tenantId: 1, k: 1 } }).toArray();
    expect(explicit).toEqual([{ _id: 0, k: 0 }]);
  });

  it('aggregate: output, $lookup joined documents, $unionWith, $facet, $replaceRoot, over several batches', async () => {
    const db = client.db(dbName);
    await db.collection('orders').insertMany([
      { _id: 'o1' as never, item: 1, qty: 2 },
      { _id: 'o2' as never, item: 2, qty: 5 },
    ]);
    await direct
      .db(dbName)
      .collection('orders')
      .insertOne({ _id: 'other-o' as never, tenantId: 'other', item: 1, qty: 99 });
    const orders = db.collection('orders');
    const plain = await orders.aggregate([{ $sort: { _id: 1 } }], { batchSize: 1 }).toArray();
    expect(plain).toEqual([
      { _id: 'o1', item: 1, qty: 2 },
      { _id: 'o2', item: 2, qty: 5 },
    ]);
    const run = (pipeline: Document[]): Promise<Document[]> => orders.aggregate<Document>(pipeline).toArray();
    await unlessNotImplemented(
      [{ $unionWith: { coll: 'items', pipeline: [{ $match: { k: { $lt: 2 } } }] } }, { $sort: { _id: 1 } }],
      run,
      (unioned) => {
        expect(unioned).toHaveLength(4);
        for (const doc of unioned) expect(doc).not.toHaveProperty('tenantId');
      },
    );
    await unlessNotImplemented([{ $facet: { all: [{ $sort: { _id: 1 } }] } }], run, (facet) =>
      expect(facet).toEqual([{ all: plain }]),
    );
    await unlessNotImplemented([{ $replaceRoot: { newRoot: '$$ROOT' } }, { $sort: { _id: 1 } }], run, (rooted) =>
      expect(rooted).toEqual(plain),
    );
    const projected = await orders.aggregate([{ $project: { qty: 0 } }, { $sort: { _id: 1 } }]).toArray();
    expect(projected).toEqual([
      { _id: 'o1', item: 1 },
      { _id: 'o2', item: 2 },
    ]);
    const grouped = await orders.aggregate([{ $group: { _id: null, total: { $sum: '$qty' } } }]).toArray();
    expect(grouped).toEqual([{ _id: null, total: 7 }]);
    await unlessNotImplemented(
      [{ $sort: { _id: 1 } }, { $lookup: { from: 'items', localField: 'item', foreignField: 'k', as: 'item' } }],
      run,
      (joined) =>
        expect(joined).toEqual([
          { _id: 'o1', item: [{ _id: 1, k: 1, tag: 't1', nested: { tenantId: 'mine' } }], qty: 2 },
          { _id: 'o2', item: [{ _id: 2, k: 2, tag: 't2', nested: { tenantId: 'mine' } }], qty: 5 },
        ]),
    );
  });

  it('findOneAndUpdate returns the document without the field; a read document written back is stamped anyway', async () => {
    const coll = client.db(dbName).collection('fam');
    await coll.insertOne({ _id: 1 as never, n: 1 });
    const after = await coll.findOneAndUpdate({ _id: 1 as never }, { $inc: { n: 1 } }, { returnDocument: 'after' });
    expect(after).toEqual({ _id: 1, n: 2 });
    const before = await coll.findOneAndUpdate({ _id: 1 as never }, { $inc: { n: 1 } }, { returnDocument: 'before' });
    expect(before).toEqual({ _id: 1, n: 2 });
    const upserted = await coll.findOneAndUpdate(
      { _id: 2 as never },
      { $set: { n: 7 } },
      { upsert: true, returnDocument: 'after' },
    );
    expect(upserted).toEqual({ _id: 2, n: 7 });
    // Round trip: what was read (no tenant field) replaced as it is: still the tenant's.
    const read = await coll.findOne({ _id: 1 as never });
    expect(read).toEqual({ _id: 1, n: 3 });
    await coll.replaceOne({ _id: 1 as never }, { ...read!, n: 4 });
    const replaced = await coll.findOneAndReplace({ _id: 2 as never }, { n: 8 }, { returnDocument: 'after' });
    expect(replaced).toEqual({ _id: 2, n: 8 });
    expect(await direct.db(dbName).collection('fam').find().sort({ _id: 1 }).toArray()).toEqual([
      { _id: 1, n: 4, tenantId: TENANT },
      { _id: 2, n: 8, tenantId: TENANT },
    ]);
  });
});

describe('tenantFieldInReplies: show', () => {
  it('find, getMore, aggregate and findOneAndUpdate carry the tenant field', async () => {
    const coll = shown.client().db(dbName).collection('items');
    const read = await coll
      .find({ k: { $lt: 6 } }, { batchSize: 2 })
      .sort({ _id: 1 })
      .toArray();
    expect(read).toHaveLength(6);
    for (const doc of read) expect(doc['tenantId']).toBe(TENANT);
    const aggregated = await coll.aggregate([{ $match: { k: 1 } }]).toArray();
    expect(aggregated[0]!['tenantId']).toBe(TENANT);
    const value = await coll.findOneAndUpdate({ k: 1 }, { $set: { seen: true } }, { returnDocument: 'after' });
    expect(value!['tenantId']).toBe(TENANT);
  });
});
