/**
 * Catalogue 22: the pure decisions about views an operator created on the server: which
 * namespaces a read names, and whether a view's definition keeps a tenant to its own documents.
 */
import { describe, expect, it } from 'vitest';
import { Int32, Long, serialize, type Document } from 'bson';
import { RawDocument, valueOf } from '../../../src/wire/raw-bson.js';
import { joinTargets, pinsTenant, readTargets, viewVerdict, type ViewScope } from '../../../src/policy/views.js';

const acme = valueOf('acme');
const shared: ViewScope = { tenantFiltered: true, field: 'tenantId', tenantValue: acme };
const perTenant: ViewScope = { ...shared, tenantFiltered: false };

function body(command: Document): RawDocument {
  return RawDocument.parse(serialize(command));
}

describe('pinsTenant: a $match that keeps only the tenant by equality', () => {
  it.each<[string, Document]>([
    ['a top-level equality', { tenantId: 'acme' }],
    ['$eq', { tenantId: { $eq: 'acme' } }],
    ['$eq next to other operators (conjunctive)', { tenantId: { $eq: 'acme', $exists: true } }],
    ['next to other fields', { status: 'open', tenantId: 'acme' }],
    ['next to an $or of other fields', { $or: [{ a: 1 }, { b: 2 }], tenantId: 'acme' }],
    ['inside a top-level $and', { $and: [{ a: 1 }, { tenantId: 'acme' }] }],
    ['inside a nested $and', { $and: [{ $and: [{ tenantId: { $eq: 'acme' } }] }] }],
  ])('pinned: %s', (_what, match) => {
    expect(pinsTenant(match, shared)).toBe(true);
  });

  it.each<[string, Document]>([
    ['no tenant at all', { status: 'open' }],
    ['another tenant', { tenantId: 'globex' }],
    ['$in of several tenants', { tenantId: { $in: ['acme', 'globex'] } }],
    ['$in of the tenant alone (not an equality)', { tenantId: { $in: ['acme'] } }],
    ['$ne', { tenantId: { $ne: 'globex' } }],
    ['$exists', { tenantId: { $exists: true } }],
    ['a regular expression', { tenantId: /acme/ }],
    ['$regex', { tenantId: { $regex: '^acme' } }],
    ['inside $or (widens)', { $or: [{ tenantId: 'acme' }, { a: 1 }] }],
    ['inside $nor', { $nor: [{ tenantId: 'globex' }] }],
    ['$expr', { $expr: { $eq: ['$tenantId', 'acme'] } }],
    ['another field of the same name under a document', { meta: { tenantId: 'acme' } }],
    ['a different type (array)', { tenantId: ['acme'] }],
    ['a different case', { tenantId: 'ACME' }],
  ])('not pinned: %s', (_what, match) => {
    expect(pinsTenant(match, shared)).toBe(false);
  });

  it('catalogue 22: compares the BSON type exactly: int32 5 pins an int32 tenant, a long or a string does not', () => {
    const scope = { field: 't', tenantValue: valueOf(new Int32(5)) };
    expect(pinsTenant({ t: new Int32(5) }, scope)).toBe(true);
    expect(pinsTenant({ t: Long.fromNumber(5) }, scope)).toBe(false);
    expect(pinsTenant({ t: '5' }, scope)).toBe(false);
  });
});

describe('viewVerdict where data is shared (the view or its source is tenant-filtered)', () => {
  it('catalogue 22: a view starting with a $match pinning the caller is scoped; it reads its viewOn', () => {
    const verdict = viewVerdict(
      {
        viewOn: 'items',
        pipeline: [{ $match: { tenantId: 'acme' } }, { $group: { _id: '$k', n: { $sum: 1 } } }],
      },
      shared,
    );
    expect(verdict).toEqual({ scoped: true, reads: ['items'] });
  });

  it.each<[string, Document[], RegExp]>([
    ['an empty pipeline', [], /does not start with a \$match/],
    ['a $group first', [{ $group: { _id: null, all: { $push: '$$ROOT' } } }], /does not start with a \$match/],
    ['a $lookup first', [{ $lookup: { from: 'items', pipeline: [], as: 'x' } }], /does not start with/],
    ['a $match on another tenant', [{ $match: { tenantId: 'globex' } }], /does not start with/],
    ['a $match after another stage', [{ $set: { x: 1 } }, { $match: { tenantId: 'acme' } }], /does not start with/],
    [
      'a $lookup after the tenant $match (reads the joined collection for every tenant)',
      [{ $match: { tenantId: 'acme' } }, { $lookup: { from: 'orders', localField: 'a', foreignField: 'b', as: 'x' } }],
      /joins another collection/,
    ],
    [
      'a $unionWith inside a $facet after the match',
      [{ $match: { tenantId: 'acme' } }, { $facet: { all: [{ $unionWith: 'orders' }] } }],
      /joins another collection/,
    ],
    [
      'a $graphLookup after the match',
      [
        { $match: { tenantId: 'acme' } },
        { $graphLookup: { from: 'items', startWith: '$a', connectFromField: 'a', connectToField: 'b', as: 'g' } },
      ],
      /joins another collection/,
    ],
    [
      'a $lookup of $documents only (no from) after the match',
      [{ $match: { tenantId: 'acme' } }, { $lookup: { pipeline: [{ $documents: [{ a: 1 }] }], as: 'x' } }],
      /joins another collection/,
    ],
    [
      'a $lookup from another database',
      [{ $match: { tenantId: 'acme' } }, { $lookup: { from: { db: 'other', coll: 'x' }, pipeline: [], as: 'x' } }],
      /not named by a string/,
    ],
    ['a stage with two keys', [{ $match: { tenantId: 'acme' }, $limit: 1 } as Document], /does not start with/],
  ])('refused: %s', (_what, pipeline, reason) => {
    const verdict = viewVerdict({ viewOn: 'items', pipeline }, shared);
    expect(verdict.scoped).toBe(false);
    if (!verdict.scoped) expect(verdict.reason).toMatch(reason);
  });

  it('catalogue 22: a collation other than simple compares the tenant loosely: refused; simple is fine', () => {
    const pipeline = [{ $match: { tenantId: 'acme' } }];
    const loose = viewVerdict({ viewOn: 'items', pipeline, collation: { locale: 'en', strength: 2 } }, shared);
    expect(loose.scoped).toBe(false);
    expect(viewVerdict({ viewOn: 'items', pipeline, collation: { locale: 'simple' } }, shared).scoped).toBe(true);
  });
});

describe('viewVerdict in per-tenant namespaces (database-per-tenant, collection-prefix)', () => {
  it('catalogue 22: any pipeline is scoped; what it reads (viewOn, every join) is returned for the caller to check', () => {
    const verdict = viewVerdict(
      {
        viewOn: 'orders',
        pipeline: [
          { $group: { _id: '$k' } },
          { $lookup: { from: 'items', localField: '_id', foreignField: 'k', as: 'i' } },
          { $unionWith: { coll: 'archive', pipeline: [{ $lookup: { from: 'deep', pipeline: [], as: 'd' } }] } },
        ],
      },
      perTenant,
    );
    expect(verdict).toEqual({ scoped: true, reads: ['orders', 'items', 'archive', 'deep'] });
  });

  it('catalogue 22: a join not named by a string is refused even there', () => {
    const verdict = viewVerdict(
      { viewOn: 'orders', pipeline: [{ $unionWith: { coll: 5 } as unknown as Document }] },
      perTenant,
    );
    expect(verdict.scoped).toBe(false);
  });
});

describe('readTargets: the namespaces a read names', () => {
  it.each<[string, Document, string[] | undefined]>([
    ['find', { find: 'items', filter: {}, $db: 'app' }, ['items']],
    ['count', { count: 'items', $db: 'app' }, ['items']],
    ['distinct', { distinct: 'items', key: 'k', $db: 'app' }, ['items']],
    ['aggregate: 1 without joins', { aggregate: 1, pipeline: [{ $documents: [] }], cursor: {} }, []],
    [
      'aggregate with every kind of join, at any depth',
      {
        aggregate: 'orders',
        pipeline: [
          { $lookup: { from: 'items', localField: 'a', foreignField: 'b', as: 'x' } },
          { $graphLookup: { from: 'tree', startWith: '$a', connectFromField: 'a', connectToField: 'b', as: 'g' } },
          { $unionWith: 'archive' },
          {
            $facet: {
              f: [{ $unionWith: { coll: 'more', pipeline: [{ $lookup: { from: 'deep', as: 'd', pipeline: [] } }] } }],
            },
          },
        ],
        cursor: {},
      },
      ['orders', 'items', 'tree', 'archive', 'more', 'deep'],
    ],
    ['explain of a find', { explain: { find: 'items', filter: {} }, verbosity: 'queryPlanner' }, ['items']],
    ['an insert (a write to a view is a server error)', { insert: 'items', documents: [] }, undefined],
    ['listCollections', { listCollections: 1 }, undefined],
  ])('%s', (_what, command, colls) => {
    expect(readTargets(body(command))?.colls).toEqual(colls);
  });

  it('catalogue 22: a join naming a database marks the read foreign', () => {
    expect(joinTargets([{ $lookup: { from: { db: 'x', coll: 'y' }, pipeline: [], as: 'z' } }]).foreign).toBe(true);
    expect(joinTargets([{ $unionWith: { pipeline: [{ $documents: [] }] } }])).toEqual({ colls: [], foreign: false });
  });
});
