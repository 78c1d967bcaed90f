import { describe, expect, it } from 'vitest';
import { hideTenantField } from '../../../src/rewrite/tenant-field.js';
import { joinedPaths } from '../../../src/rewrite/reads.js';
import { arrayOf, valueOf } from '../../../src/wire/raw-bson.js';
import {
  Binary,
  Decimal128,
  Double,
  Int32,
  Long,
  ObjectId,
  deserialize,
  serialize,
  type Document,
} from '../../../src/wire/bson.js';

const F = 'tenantId';
const T = 'acme';

function cursorReply(batch: Document[], name: 'firstBatch' | 'nextBatch' = 'firstBatch'): Document {
  return { cursor: { [name]: batch, id: new Long(0), ns: 'app.items' }, ok: 1 };
}

/** The spliced bytes equal the encoding of the expected document byte for byte. */
function expectSpliced(input: Document, expected: Document, joined?: string[], where: 'cursor' | 'value' = 'cursor') {
  const out = hideTenantField(serialize(input), F, joined === undefined ? { in: where } : { in: where, joined });
  expect(out).toBeDefined();
  expect(Buffer.from(out!).equals(Buffer.from(serialize(expected)))).toBe(true);
  expect(deserialize(out!)).toEqual(deserialize(serialize(expected)));
}

describe('hideTenantField (raw splice)', () => {
  it('removes the tenant field wherever it is in each document: first, middle, last, only field', () => {
    const id = new ObjectId();
    expectSpliced(
      cursorReply([
        { [F]: T, _id: 1, a: 'x' },
        { _id: 2, [F]: T, b: new Double(1.5) },
        { _id: 3, c: new Decimal128('1.10'), [F]: T },
        { [F]: T },
        {},
        { _id: id, bin: new Binary(Buffer.from([0, 1, 2]), 4), n: new Int32(7), l: new Long(9) },
      ]),
      cursorReply([
        { _id: 1, a: 'x' },
        { _id: 2, b: new Double(1.5) },
        { _id: 3, c: new Decimal128('1.10') },
        {},
        {},
        { _id: id, bin: new Binary(Buffer.from([0, 1, 2]), 4), n: new Int32(7), l: new Long(9) },
      ]),
    );
  });

  it('getMore batches, and every other element of the reply, keep their bytes', () => {
    const input = {
      ...cursorReply([{ _id: 1, [F]: T, nested: { [F]: 'own', deep: [{ [F]: 'own' }] } }], 'nextBatch'),
      $clusterTime: { clusterTime: new Long(5), signature: { hash: new Binary(Buffer.alloc(20)), keyId: new Long(0) } },
      operationTime: new Long(5),
    };
    const expected = {
      ...cursorReply([{ _id: 1, nested: { [F]: 'own', deep: [{ [F]: 'own' }] } }], 'nextBatch'),
      $clusterTime: input.$clusterTime,
      operationTime: input.operationTime,
    };
    // Only the top level of a returned document: the nested fields are the application's own.
    expectSpliced(input, expected);
  });

  it('joined documents at $lookup / $graphLookup / $facet paths, arrays and unwound documents, dotted paths', () => {
    expectSpliced(
      cursorReply([
        {
          _id: 1,
          [F]: T,
          j: [{ _id: 10, [F]: T, v: 1 }, { _id: 11, [F]: T }, 'not a document'],
          one: { _id: 12, [F]: T, keep: { [F]: 'own' } },
          d: { e: [{ g: [{ [F]: T, x: 1 }] }, { g: { [F]: T, y: 2 } }] },
          other: [{ [F]: 'own' }],
        },
        { _id: 2, [F]: T, j: [] },
        { _id: 3, j: 'no array here' },
      ]),
      cursorReply([
        {
          _id: 1,
          j: [{ _id: 10, v: 1 }, { _id: 11 }, 'not a document'],
          one: { _id: 12, keep: { [F]: 'own' } },
          d: { e: [{ g: [{ x: 1 }] }, { g: { y: 2 } }] },
          other: [{ [F]: 'own' }],
        },
        { _id: 2, j: [] },
        { _id: 3, j: 'no array here' },
      ]),
      ['j', 'one', 'd.e.g', 'j', 'missing.path', `${F}.x`],
    );
  });

  it('$facet outputs and the joins inside them', () => {
    expectSpliced(
      cursorReply([{ byA: [{ [F]: T, a: 1, j: [{ [F]: T }] }], count: [{ n: 1 }] }]),
      cursorReply([{ byA: [{ a: 1, j: [{}] }], count: [{ n: 1 }] }]),
      ['byA', 'count', 'byA.j'],
    );
  });

  it("findAndModify's value (and nothing else of the reply)", () => {
    expectSpliced(
      { lastErrorObject: { n: 1, updatedExisting: true, [F]: 'x' }, value: { _id: 1, [F]: T, n: 2 }, ok: 1 },
      { lastErrorObject: { n: 1, updatedExisting: true, [F]: 'x' }, value: { _id: 1, n: 2 }, ok: 1 },
      undefined,
      'value',
    );
    expect(hideTenantField(serialize({ lastErrorObject: { n: 0 }, value: null, ok: 1 }), F, { in: 'value' })).toBe(
      undefined,
    );
  });

  it('answers undefined when there is nothing to remove (the upstream bytes go out as they are)', () => {
    expect(hideTenantField(serialize(cursorReply([{ _id: 1 }, {}])), F, { in: 'cursor' })).toBeUndefined();
    expect(hideTenantField(serialize(cursorReply([])), F, { in: 'cursor' })).toBeUndefined();
    expect(hideTenantField(serialize({ ok: 0, errmsg: 'x', code: 2 }), F, { in: 'cursor' })).toBeUndefined();
    expect(hideTenantField(serialize({ cursor: 'not a document', ok: 1 }), F, { in: 'cursor' })).toBeUndefined();
    expect(hideTenantField(serialize({ cursor: { firstBatch: 3 }, ok: 1 }), F, { in: 'cursor' })).toBeUndefined();
  });

  it('a field whose name only starts like the tenant field stays; a duplicate tenant field goes too', () => {
    expectSpliced(cursorReply([{ tenantIdx: 1, tenant: 2, [F]: T }]), cursorReply([{ tenantIdx: 1, tenant: 2 }]));
    // Duplicate names are legal BSON: both elements go.
    const one = serialize({ [F]: T });
    const doc = Buffer.concat([
      Buffer.from([0, 0, 0, 0]),
      one.subarray(4, one.length - 1),
      one.subarray(4, one.length - 1),
      Buffer.from(serialize({ k: 1 }).subarray(4)),
    ]);
    doc.writeInt32LE(doc.length, 0);
    const batch = Buffer.concat([Buffer.from([0, 0, 0, 0, 3, 0x30, 0]), doc, Buffer.from([0])]);
    batch.writeInt32LE(batch.length, 0);
    const cursorDoc = Buffer.concat([
      Buffer.from([0, 0, 0, 0, 4]),
      Buffer.from('firstBatch\0'),
      batch,
      Buffer.from([0]),
    ]);
    cursorDoc.writeInt32LE(cursorDoc.length, 0);
    const reply = Buffer.concat([Buffer.from([0, 0, 0, 0, 3]), Buffer.from('cursor\0'), cursorDoc, Buffer.from([0])]);
    reply.writeInt32LE(reply.length, 0);
    const out = hideTenantField(reply, F, { in: 'cursor' });
    expect(Buffer.from(out!).equals(Buffer.from(serialize({ cursor: { firstBatch: [{ k: 1 }] } })))).toBe(true);
  });

  it('a malformed reply passes through untouched (undefined), never throws or cuts at random', () => {
    const good = Buffer.from(serialize(cursorReply([{ _id: 1, [F]: T }])));
    for (const bad of [
      good.subarray(0, good.length - 3),
      Buffer.concat([good.subarray(0, 10), Buffer.from([0xee]), good.subarray(11)]),
      (() => {
        const copy = Buffer.from(good);
        copy.writeInt32LE(copy.length + 50, 0);
        return copy;
      })(),
      Buffer.from([1, 2]),
    ]) {
      expect(hideTenantField(bad, F, { in: 'cursor' })).toBeUndefined();
    }
    // An inner document whose length lies.
    const inner = Buffer.from(good);
    const at = inner.indexOf(Buffer.from('firstBatch\0')) + 'firstBatch\0'.length;
    inner.writeInt32LE(1_000, at);
    expect(hideTenantField(inner, F, { in: 'cursor' })).toBeUndefined();
  });
});

describe('joinedPaths', () => {
  it('lists the as of $lookup/$graphLookup and $facet outputs with their joins', () => {
    const pipeline = arrayOf([
      valueOf({ $match: { a: 1 } }),
      valueOf({ $lookup: { from: 'b', localField: 'a', foreignField: 'a', as: 'j' } }),
      valueOf({ $graphLookup: { from: 'b', startWith: '$a', connectFromField: 'a', connectToField: 'a', as: 'g.h' } }),
      valueOf({ $facet: { f: [{ $lookup: { from: 'c', pipeline: [], as: 'k' } }], n: [{ $count: 'n' }] } }),
      valueOf({ $unionWith: 'c' }),
    ]);
    expect(joinedPaths(pipeline)).toEqual(['j', 'g.h', 'f', 'f.k', 'n']);
  });
});
