/**
 * Upsert query fields (src/rewrite/upsert.ts; catalogue G4, 38): the fields MongoDB derives from an
 * upsert's query, and how the write handlers add them where the upstream does not derive them
 * through the tenant `$and` (FerretDB v1).
 */
import { BSONRegExp, DBRef, Long, deserialize, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import {
  insertEntriesForOperators,
  queryEqualities,
  replacementId,
  type Derivation,
} from '../../../src/rewrite/upsert.js';
import { findAndModify, update, bulkWrite } from '../../../src/rewrite/writes.js';
import { IsolationEngine, commandInput, type Decision } from '../../../src/rewrite/engine.js';
import { CursorRegistry } from '../../../src/policy/cursors.js';
import { configFromObject } from '../../../src/config/index.js';
import type { CommandInput, NamespaceResolver, RewriteResult, TenantContext } from '../../../src/policy/types.js';
import { RawDocument, type RawValue } from '../../../src/wire/raw-bson.js';

const FIELD = 'tenantId';

function raw(doc: Document): RawValue {
  return { type: 3, value: serialize(doc) };
}

/** The derivation as plain {path: value} pairs, in order. */
function derive(query: Document): Array<[string, unknown]> | string {
  const result: Derivation = queryEqualities(raw(query));
  if ('conflict' in result) return result.conflict;
  return result.fields.map((field) => [field.path, deserialize(wrap(field.value)).v]);
}

/** `{v: <value>}` bytes for decoding one raw value. */
function wrap(value: RawValue): Uint8Array {
  const doc = new RawDocument([{ name: 'v', type: value.type, value: value.value }]);
  return doc.toBytes();
}

describe('queryEqualities: the fields MongoDB derives from an upsert query', () => {
  it('top-level equalities, $eq, dotted paths and _id', () => {
    expect(derive({ _id: 4, sku: 'n1', 'a.b': 2, c: { $eq: 3 } })).toEqual([
      ['_id', 4],
      ['sku', 'n1'],
      ['a.b', 2],
      ['c', 3],
    ]);
  });

  it('members of $and at any depth, a single-branch $or, a single-value $in, $all values', () => {
    expect(
      derive({ $and: [{ a: 1 }, { $and: [{ b: 2 }] }], $or: [{ c: 3 }], d: { $in: [4] }, e: { $all: [5] } }),
    ).toEqual([
      ['a', 1],
      ['b', 2],
      ['c', 3],
      ['d', 4],
      ['e', 5],
    ]);
  });

  it('no field from ranges, $in of several values, $or of several branches, $nor, $not, $elemMatch, regex, $expr', () => {
    expect(
      derive({
        a: { $gt: 1 },
        b: { $in: [1, 2] },
        $or: [{ c: 1 }, { d: 1 }],
        $nor: [{ e: 1 }],
        f: { $not: { $eq: 1 } },
        g: { $elemMatch: { h: 1 } },
        i: new BSONRegExp('^x'),
        j: { $in: [new BSONRegExp('^x')] },
        $expr: { $eq: ['$k', 1] },
        l: { $exists: true },
      }),
    ).toEqual([]);
  });

  it('literal documents, arrays, null and DBRef-like documents are equalities; $eq of a regex too', () => {
    expect(
      derive({ a: { x: 1 }, b: [1, 2], c: null, d: { $ref: 'r', $id: 1 }, e: { $eq: new BSONRegExp('x') } }),
    ).toEqual([
      ['a', { x: 1 }],
      ['b', [1, 2]],
      ['c', null],
      ['d', new DBRef('r', 1 as never)],
      ['e', /x/],
    ]);
  });

  it('an equality next to other operators on the path still counts', () => {
    expect(derive({ a: { $eq: 1, $gt: 0 } })).toEqual([['a', 1]]);
  });

  it('two equalities on one path, or on a path and its prefix, cannot be inferred (the server fails the insert with 54)', () => {
    expect(derive({ $and: [{ a: 1 }, { a: 1 }] })).toBe("cannot infer query fields to set, path 'a' is matched twice");
    expect(derive({ a: { x: 1 }, 'a.x': 1 })).toBe(
      "cannot infer query fields to set, both paths 'a.x' and 'a' are matched",
    );
    expect(derive({ 'a.x': 1, a: { x: 1 } })).toMatch(/cannot infer query fields to set/);
    expect(derive({ a: { $all: [1, 2] } })).toMatch(/matched twice/);
  });

  it('a path MongoDB cannot build a document along is refused as a whole', () => {
    expect(derive({ 'a..b': 1 })).toMatch(/cannot infer/);
  });

  it('an absent or non-document query derives nothing', () => {
    expect(queryEqualities(undefined)).toEqual({ fields: [] });
  });

  it('a deep $and chain is walked without recursion', () => {
    let query: Document = { leaf: 1 };
    for (let i = 0; i < 5_000; i++) query = { $and: [query] };
    const bytes = serialize(query, { checkKeys: false });
    const result = queryEqualities({ type: 3, value: bytes });
    expect('fields' in result && result.fields.map((field) => field.path)).toEqual(['leaf']);
  });
});

function entries(update: Document, query: Document): Document {
  const derivation = queryEqualities(raw(query));
  if (!('fields' in derivation)) throw new Error(derivation.conflict);
  const elements = insertEntriesForOperators(RawDocument.parse(serialize(update)), derivation.fields, FIELD);
  return deserialize(new RawDocument(elements).toBytes());
}

describe('insertEntriesForOperators: $setOnInsert entries that never conflict with the update', () => {
  it('adds every derived field the update does not write', () => {
    expect(entries({ $set: { qty: 5 } }, { sku: 'n1', _id: 4 })).toEqual({ sku: 'n1', _id: 4 });
  });

  it("the update's own write of the same path wins ($set, $setOnInsert, $inc, $rename source and target)", () => {
    expect(entries({ $set: { sku: 'x' } }, { sku: 'n1' })).toEqual({});
    expect(entries({ $setOnInsert: { sku: 'x' } }, { sku: 'n1' })).toEqual({});
    expect(entries({ $inc: { n: 1 } }, { n: 5 })).toEqual({});
    expect(entries({ $rename: { a: 'b' } }, { a: 1, b: 2, c: 3 })).toEqual({ c: 3 });
  });

  it('a parent written by the update leaves nothing of the derived child', () => {
    expect(entries({ $set: { a: { z: 1 } } }, { 'a.b': 1 })).toEqual({});
  });

  it('a derived document the update writes below is split into its leaves', () => {
    expect(entries({ $set: { 'a.c': 2 } }, { a: { b: 1, d: { e: 2 } } })).toEqual({ 'a.b': 1, 'a.d': { e: 2 } });
    expect(entries({ $set: { 'a.d.f': 2 } }, { a: { b: 1, d: { e: 2 } } })).toEqual({ 'a.b': 1, 'a.d.e': 2 });
  });

  it('positional and numeric update paths are treated as touching everything below their parent', () => {
    expect(entries({ $set: { 'a.$[].b': 1 } }, { 'a.x': 1, y: 2 })).toEqual({ y: 2 });
    expect(entries({ $set: { 'a.0': 1 } }, { 'a.x': 1 })).toEqual({});
  });

  it('never the tenant field (or a path under it)', () => {
    expect(entries({ $set: { a: 1 } }, { [FIELD]: 'beta', b: 2 })).toEqual({ b: 2 });
    expect(entries({ $set: { a: 1 } }, { [`${FIELD}.x`]: 1, b: 2 })).toEqual({ b: 2 });
  });

  it('values with $-prefixed or dotted names inside are left to the server', () => {
    expect(entries({ $set: { a: 1 } }, { d: { $ref: 'r', $id: 1 }, e: 1 })).toEqual({ e: 1 });
  });
});

describe('replacementId', () => {
  it('only _id, only when the replacement has none', () => {
    const derivation = queryEqualities(raw({ _id: 'r1', other: 1 }));
    if (!('fields' in derivation)) throw new Error('conflict');
    expect(replacementId(RawDocument.parse(serialize({ v: 1 })), derivation.fields)).toBeDefined();
    expect(replacementId(RawDocument.parse(serialize({ _id: 'x', v: 1 })), derivation.fields)).toBeUndefined();
  });
});

// ---------------------------------------------------------------- the write handlers

const resolver: NamespaceResolver = {
  resolve: (db, coll) => ({ db, coll, model: 'shared-collection', access: 'scoped', tenantFiltered: true }),
  resolveDatabase: (db) => ({ db, model: 'shared-collection' }),
  toClient: (db, coll) => ({ db, coll }),
};

function context(upsertFieldsFromAnd: boolean | undefined, tenantFiltered = true): TenantContext {
  const bytes = serialize({ v: 'acme' });
  return {
    tenant: 'acme',
    tenantValue: { type: bytes[4]!, value: bytes.subarray(7, bytes.length - 1) },
    field: FIELD,
    namespaces: tenantFiltered
      ? resolver
      : { ...resolver, resolve: (db, coll) => ({ ...resolver.resolve(db, coll, 'write'), tenantFiltered: false }) },
    maxTimeMS: 5_000,
    pinSimpleCollation: false,
    ...(upsertFieldsFromAnd === undefined ? {} : { upsertFieldsFromAnd }),
  };
}

function command(body: Document): CommandInput {
  return {
    name: Object.keys(body)[0]!,
    db: 'app',
    body: RawDocument.parse(serialize({ ...body, $db: 'app' })),
    sequences: new Map(),
    moreToCome: false,
  };
}

const bodyOf = (result: RewriteResult): Document => deserialize(result.body.toBytes(), { useBigInt64: true });

describe('write handlers add the derived fields where the upstream does not derive them', () => {
  const ferret = context(false);

  it('update: $setOnInsert gets the query fields before the tenant stamp, noted upsert.query-fields', () => {
    const result = update(
      command({ update: 'c', updates: [{ q: { sku: 'n1', _id: 4 }, u: { $set: { qty: 5 } }, upsert: true }] }),
      ferret,
    );
    expect(bodyOf(result).updates[0].u).toEqual({
      $set: { qty: 5 },
      $setOnInsert: { sku: 'n1', _id: 4, [FIELD]: 'acme' },
    });
    expect(result.notes.map((note) => note.rule)).toContain('upsert.query-fields');
  });

  it("the client's own $setOnInsert entries stay first and win", () => {
    const result = update(
      command({
        update: 'c',
        updates: [{ q: { z: 0, k: Long.fromNumber(7) }, u: { $setOnInsert: { z: 1 } }, upsert: true }],
      }),
      ferret,
    );
    expect(bodyOf(result).updates[0].u).toEqual({ $setOnInsert: { z: 1, k: 7n, [FIELD]: 'acme' } });
  });

  it('only for upserts, only in tenant-filtered namespaces, not where the upstream derives them', () => {
    const plain = { update: 'c', updates: [{ q: { sku: 'n1' }, u: { $set: { qty: 5 } } }] };
    expect(bodyOf(update(command(plain), ferret)).updates[0].u.$setOnInsert).toEqual({ [FIELD]: 'acme' });
    const upsert = { update: 'c', updates: [{ q: { sku: 'n1' }, u: { $set: { qty: 5 } }, upsert: true }] };
    expect(bodyOf(update(command(upsert), context(true))).updates[0].u.$setOnInsert).toEqual({ [FIELD]: 'acme' });
    expect(bodyOf(update(command(upsert), context(undefined))).updates[0].u.$setOnInsert).toEqual({ [FIELD]: 'acme' });
    expect(bodyOf(update(command(upsert), context(false, false))).updates[0].u).toEqual({ $set: { qty: 5 } });
  });

  it('a query MongoDB cannot build a document from is forwarded as sent (the server decides when it inserts)', () => {
    const result = update(
      command({ update: 'c', updates: [{ q: { $and: [{ a: 1 }, { a: 2 }] }, u: { $set: { b: 1 } }, upsert: true }] }),
      ferret,
    );
    expect(bodyOf(result).updates[0].u.$setOnInsert).toEqual({ [FIELD]: 'acme' });
  });

  it('the query naming another tenant never reaches $setOnInsert', () => {
    const result = update(
      command({ update: 'c', updates: [{ q: { [FIELD]: 'beta', a: 1 }, u: { $set: { b: 1 } }, upsert: true }] }),
      ferret,
    );
    expect(bodyOf(result).updates[0].u.$setOnInsert).toEqual({ a: 1, [FIELD]: 'acme' });
  });

  it('a replacement upsert without _id takes the query _id first, then the stamp', () => {
    const result = update(
      command({ update: 'c', updates: [{ q: { _id: 'r2', v: 0 }, u: { v: 1 }, upsert: true }] }),
      ferret,
    );
    const u = bodyOf(result).updates[0].u;
    expect(u).toEqual({ _id: 'r2', [FIELD]: 'acme', v: 1 });
    expect(Object.keys(u)).toEqual(['_id', FIELD, 'v']);
    const own = update(
      command({ update: 'c', updates: [{ q: { _id: 'r2' }, u: { _id: 'r2', v: 1 }, upsert: true }] }),
      ferret,
    );
    expect(bodyOf(own).updates[0].u).toEqual({ _id: 'r2', [FIELD]: 'acme', v: 1 });
  });

  it('findAndModify and bulkWrite update ops get the same fields', () => {
    const fam = findAndModify(
      command({ findAndModify: 'c', query: { _id: 'f1' }, update: { $inc: { n: 1 } }, upsert: true, new: true }),
      ferret,
    );
    expect(bodyOf(fam).update).toEqual({ $inc: { n: 1 }, $setOnInsert: { _id: 'f1', [FIELD]: 'acme' } });
    const ops = [{ update: 0, filter: { k: 'b' }, updateMods: { $set: { v: 1 } }, upsert: true }];
    const body = RawDocument.parse(serialize({ bulkWrite: 1, ops, nsInfo: [{ ns: 'app.c' }], $db: 'admin' }));
    const bulk = bulkWrite({ name: 'bulkWrite', db: 'admin', body, sequences: new Map(), moreToCome: false }, ferret);
    expect(bodyOf(bulk).ops[0].updateMods).toEqual({ $set: { v: 1 }, $setOnInsert: { k: 'b', [FIELD]: 'acme' } });
  });

  it('pipeline updates are left as they are (FerretDB v1 refuses them; MongoDB derives itself)', () => {
    const result = update(
      command({ update: 'c', updates: [{ q: { a: 1 }, u: [{ $set: { b: 1 } }], upsert: true }] }),
      ferret,
    );
    expect(bodyOf(result).updates[0].u).toEqual([{ $set: { b: 1 } }, { $set: { [FIELD]: { $literal: 'acme' } } }]);
  });
});

describe("the engine follows the upstream's probed capability (src/upstream/capabilities.ts), never a product marker", () => {
  function engine(upsertFieldsFromAnd?: () => boolean): IsolationEngine {
    return new IsolationEngine({
      config: configFromObject({}).isolation,
      cursors: new CursorRegistry(),
      sessionKey: Buffer.alloc(32, 1),
      collationSupported: () => false,
      // A FerretDB v1 buildInfo: no longer read for this.
      upstreamFacts: () => ({ buildInfo: { version: '7.0.42', ferretdbVersion: 'v1.24.2', ok: 1 } }),
      ...(upsertFieldsFromAnd === undefined ? {} : { upsertFieldsFromAnd }),
    });
  }
  const upsert = () =>
    commandInput(
      'update',
      'app',
      serialize({
        update: 'c',
        updates: [{ q: { sku: 'n1', _id: 4 }, u: { $set: { qty: 5 } }, upsert: true }],
        $db: 'app',
      }),
      [],
      false,
    );
  const onInsert = (decision: Decision): unknown => {
    if (decision.action !== 'forward') throw new Error(`expected forward, got ${decision.action}`);
    return deserialize(decision.result.body.toBytes()).updates[0].u.$setOnInsert;
  };

  it('adds the query fields where the probe found the upstream does not derive them, not where it does', () => {
    expect(
      onInsert(
        engine(() => false)
          .forTenant('acme')
          .decide(upsert()),
      ),
    ).toEqual({
      sku: 'n1',
      _id: 4,
      [FIELD]: 'acme',
    });
    expect(
      onInsert(
        engine(() => true)
          .forTenant('acme')
          .decide(upsert()),
      ),
    ).toEqual({ [FIELD]: 'acme' });
  });

  it('without the capability wired it adds them (the value that never loses a field)', () => {
    expect(onInsert(engine().forTenant('acme').decide(upsert()))).toEqual({ sku: 'n1', _id: 4, [FIELD]: 'acme' });
  });

  it('reads the capability for every command: a tenant engine follows a failover to another server', () => {
    let derives = true;
    const acme = engine(() => derives).forTenant('acme');
    expect(onInsert(acme.decide(upsert()))).toEqual({ [FIELD]: 'acme' });
    derives = false;
    expect(onInsert(acme.decide(upsert()))).toEqual({ sku: 'n1', _id: 4, [FIELD]: 'acme' });
  });
});
