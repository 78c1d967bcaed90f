/**
 * Read handlers (src/rewrite/reads.ts): catalogue items 6-17, 21, 24, 59, 60 and G1/G3/G4/G8.
 * Inputs are built with the `bson` package; outputs are checked through `deserialize` for their
 * structure and as bytes for the client values that must travel untouched (an int64 literal, a
 * `{"2": …, "1": …}` document in its key order, the tenant value of its configured type).
 */
import { Binary, Long, ObjectId, UUID, deserialize, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import type { IsolationModel } from '../../../src/config/types.js';
import { ErrorCodes, PolicyRefusal } from '../../../src/errors.js';
import {
  aggregate,
  count,
  createExplainHandler,
  createReadHandlers,
  distinct,
  explain,
  find,
  listCollections,
  listIndexes,
} from '../../../src/rewrite/reads.js';
import type {
  Access,
  CommandHandler,
  CommandInput,
  NamespaceResolver,
  ResolvedNamespace,
  RewriteResult,
  TenantContext,
} from '../../../src/policy/types.js';
import { RawDocument, encodeElements } from '../../../src/wire/raw-bson.js';

const FIELD = 'tenantId';
const CAP = 5_000;
const T = new ObjectId('65a1b2c3d4e5f60718293a4b');
const B = new ObjectId('65ffffffffffffffffffffff');

// ---------------------------------------------------------------- fake namespace resolvers

function refuseNamespace(db: string, coll: string, access: Access): void {
  if (['admin', 'local', 'config'].includes(db) || coll.startsWith('system.'))
    throw new PolicyRefusal('namespace.system', 'system namespace');
  if (coll === 'denied') throw new PolicyRefusal('namespace.denied', 'denied namespace');
  if (coll === 'ref' && access === 'write') throw new PolicyRefusal('namespace.readonly', 'shared-readonly namespace');
}

/** Shared collections (identity mapping); `ref` is shared-readonly reference data, not filtered. */
function sharedResolver(): NamespaceResolver {
  return {
    resolve(db, coll, access): ResolvedNamespace {
      refuseNamespace(db, coll, access);
      if (coll === 'ref')
        return { db, coll, model: 'shared-collection', access: 'shared-readonly', tenantFiltered: false };
      return { db, coll, model: 'shared-collection', access: 'scoped', tenantFiltered: true };
    },
    resolveDatabase: (db) => ({ db, model: 'shared-collection' }),
    toClient: (db, coll) => ({ db, coll }),
  };
}

/** Database per tenant: db → `t_acme_<db>`; collection prefix: coll → `acme.<coll>`. Nothing filtered. */
function perTenantResolver(model: IsolationModel = 'database-per-tenant'): NamespaceResolver {
  return {
    resolve(db, coll, access): ResolvedNamespace {
      refuseNamespace(db, coll, access);
      return model === 'database-per-tenant'
        ? { db: `t_acme_${db}`, coll, model, access: 'scoped', tenantFiltered: false }
        : { db, coll: `acme.${coll}`, model, access: 'scoped', tenantFiltered: false };
    },
    resolveDatabase: (db) => ({ db: model === 'database-per-tenant' ? `t_acme_${db}` : db, model }),
    toClient: (db, coll) => ({ db, coll }),
  };
}

function rawValue(value: unknown): { type: number; value: Uint8Array } {
  const bytes = serialize({ v: value });
  return { type: bytes[4]!, value: bytes.subarray(7, bytes.length - 1) };
}

function context(
  namespaces: NamespaceResolver = sharedResolver(),
  tenantValue: unknown = T,
  pinSimpleCollation = false,
): TenantContext {
  return {
    tenant: 'acme',
    tenantValue: rawValue(tenantValue),
    field: FIELD,
    namespaces,
    maxTimeMS: CAP,
    pinSimpleCollation,
  };
}
const shared = (): TenantContext => context();
const perTenant = (): TenantContext => context(perTenantResolver());

type Doc = Document | Map<string, unknown>;

function command(body: Doc, db = 'app'): CommandInput {
  const bytes = serialize(body instanceof Map ? new Map([...body, ['$db', db]]) : { ...body, $db: db });
  const first = body instanceof Map ? [...body.keys()][0]! : Object.keys(body)[0]!;
  return { name: first, db, body: RawDocument.parse(bytes), sequences: new Map(), moreToCome: false };
}

function out(result: RewriteResult): Document {
  return deserialize(result.body.toBytes(), { useBigInt64: true, promoteValues: true });
}

function bytesOf(result: RewriteResult): Buffer {
  return Buffer.from(result.body.toBytes());
}

/** The tenant predicate as it must appear: `{tenantId: {$eq: T}}`. */
const eqT = { [FIELD]: { $eq: T } };

function refusal(run: () => unknown, rule?: string | RegExp): PolicyRefusal {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(PolicyRefusal);
  const error = caught as PolicyRefusal;
  if (typeof rule === 'string') expect(error.rule).toBe(rule);
  else if (rule !== undefined) expect(error.rule).toMatch(rule);
  return error;
}

/** A document whose keys look numeric, in a key order JavaScript objects would not keep. */
const numericKeys = new Map<string, unknown>([
  ['2', 1],
  ['1', Long.fromString('9007199254740993')],
]);

describe('find (catalogue 6, 17, G4)', () => {
  it('6: a "key present" filter is ANDed after the tenant predicate, never trusted', () => {
    for (const filter of [
      { [FIELD]: { $ne: T } },
      { [FIELD]: { $in: [T, B] } },
      { $or: [{ [FIELD]: T }, { x: 1 }] },
      { $nor: [{ [FIELD]: T }] },
    ]) {
      const result = find(command({ find: 'c', filter }), shared());
      const body = out(result);
      expect(body.filter).toEqual({ $and: [eqT, filter] });
      expect(Object.keys(body.filter.$and[0])).toEqual([FIELD]);
      expect(result.notes.some((note) => note.rule === 'filter.tenant')).toBe(true);
    }
  });

  it('G4: no filter becomes the tenant predicate alone; a client filter naming T is still wrapped', () => {
    expect(out(find(command({ find: 'c' }), shared())).filter).toEqual({ $and: [eqT] });
    expect(out(find(command({ find: 'c', filter: { [FIELD]: T } }), shared())).filter).toEqual({
      $and: [eqT, { [FIELD]: T }],
    });
  });

  it('G4: a filter that is not a document is refused', () => {
    refusal(() => find(command({ find: 'c', filter: [1] }), shared()), 'filter.not-document');
    refusal(() => find(command({ find: 'c', filter: 'x' }), shared()), 'filter.not-document');
  });

  it('forwards untouched client values byte for byte (int64 literal, numeric-looking keys in order)', () => {
    const filter = new Map<string, unknown>([
      ['n', Long.fromString('9007199254740993')],
      ['d', numericKeys],
    ]);
    const result = find(
      command(
        new Map<string, unknown>([
          ['find', 'c'],
          ['filter', filter],
          ['projection', numericKeys],
        ]),
      ),
      shared(),
    );
    const bytes = bytesOf(result);
    expect(bytes.indexOf(Buffer.from(serialize(filter)))).toBeGreaterThan(0);
    expect(bytes.indexOf(Buffer.from(serialize(numericKeys)))).toBeGreaterThan(0);
    expect(out(result).filter.$and[1].n).toBe(9007199254740993n);
  });

  it('G8: the tenant value keeps its configured BSON type (ObjectId, int64, UUID)', () => {
    for (const tenant of [T, Long.fromNumber(42), new UUID('0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0')]) {
      const result = find(command({ find: 'c' }), context(sharedResolver(), tenant));
      const expected = Buffer.from(serialize({ [FIELD]: { $eq: tenant } }));
      expect(bytesOf(result).indexOf(expected)).toBeGreaterThan(0);
    }
  });

  it('17: the collection must be a string: a UUID (useUUID) is refused', () => {
    const error = refusal(
      () => find(command({ find: new UUID('0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0') }), shared()),
      'namespace.uuid',
    );
    expect(error.code).toBe(ErrorCodes.InvalidNamespace);
    expect(error.message).toContain('rule namespace.uuid');
    refusal(() => find(command({ find: new Binary(Buffer.alloc(16), 3) }), shared()), 'namespace.uuid');
    refusal(() => find(command({ find: 5 }), shared()), 'namespace.not-string');
  });

  it('17: noCursorTimeout and oplogReplay are refused; unknown fields too (G1)', () => {
    refusal(() => find(command({ find: 'c', noCursorTimeout: true }), shared()), 'find.no-cursor-timeout');
    refusal(() => find(command({ find: 'c', oplogReplay: true }), shared()), 'find.oplog-replay');
    refusal(() => find(command({ find: 'c', maxScan: 5 }), shared()), 'field.unknown');
    refusal(() => find(command({ find: 'c', $tenant: 'other' }), shared()), 'field.internal');
  });

  it('17: projection, sort, let and collation are validated (JavaScript refused in each)', () => {
    const js = { $function: { body: 'function(){while(1){}}', args: [], lang: 'js' } };
    refusal(() => find(command({ find: 'c', projection: { a: js } }), shared()));
    refusal(() => find(command({ find: 'c', let: { v: js } }), shared()));
    refusal(() => find(command({ find: 'c', sort: { a: 'sideways' } }), shared()));
    refusal(() => find(command({ find: 'c', collation: { strength: 2 } }), shared()));
    const ok = find(
      command({
        find: 'c',
        projection: { a: 1 },
        sort: { a: -1 },
        let: { v: 1 },
        collation: { locale: 'en', strength: 2 },
      }),
      shared(),
    );
    expect(out(ok).collation).toEqual({ locale: 'en', strength: 2 });
  });

  it('17: tailable/awaitData, skip, limit and friends pass through', () => {
    const body = out(
      find(
        command({ find: 'c', tailable: true, awaitData: true, skip: 1, limit: 2, batchSize: 3, singleBatch: false }),
        shared(),
      ),
    );
    expect(body).toMatchObject({
      tailable: true,
      awaitData: true,
      skip: 1,
      limit: 2,
      batchSize: 3,
      singleBatch: false,
    });
  });

  it('registers the cursor on the physical namespace and scrubs errors', () => {
    const result = find(command({ find: 'c' }), shared());
    expect(result.reply).toEqual({
      registerCursor: { db: 'app', coll: 'c', documents: { in: 'cursor' } },
      tenantDocuments: { in: 'cursor' },
      mapNames: false,
      scrubErrors: true,
    });
    expect(result.sequences.size).toBe(0);
  });

  it('database-per-tenant: `$db` mapped, no predicate, filter still validated, names mapped back', () => {
    const result = find(command({ find: 'c', filter: { a: 1 } }), perTenant());
    const body = out(result);
    expect(body.$db).toBe('t_acme_app');
    expect(body.filter).toEqual({ a: 1 });
    expect(result.reply).toMatchObject({ registerCursor: { db: 't_acme_app', coll: 'c' }, mapNames: true });
    refusal(() => find(command({ find: 'c', filter: { $where: 'true' } }), perTenant()));
  });

  it('collection-prefix: the collection is mapped in place (still the first field)', () => {
    const body = out(find(command({ find: 'c' }), context(perTenantResolver('collection-prefix'))));
    expect(Object.keys(body)[0]).toBe('find');
    expect(body.find).toBe('acme.c');
  });

  it('5: system namespaces are refused through the resolver', () => {
    refusal(() => find(command({ find: 'system.js' }), shared()), 'namespace.system');
    refusal(() => find(command({ find: 'c' }, 'admin'), shared()), 'namespace.system');
  });
});

describe('filters (catalogue 7-16)', () => {
  it('7: a filter with the tenant key twice is refused (G3)', () => {
    const dup = encodeElements([
      { name: FIELD, type: 0x02, value: rawValue('acme').value },
      { name: FIELD, type: 0x02, value: rawValue('other').value },
    ]);
    const body = RawDocument.parse(serialize({ find: 'c', $db: 'app' })).with('filter', { type: 0x03, value: dup });
    refusal(() => find({ name: 'find', db: 'app', body, sequences: new Map(), moreToCome: false }, shared()));
  });

  it('7: two `filter` fields are refused (G3)', () => {
    const base = RawDocument.parse(serialize({ find: 'c', filter: { a: 1 }, $db: 'app' }));
    const body = new RawDocument([...base.elements, { name: 'filter', ...rawValue({ b: 1 }) }]);
    refusal(
      () => find({ name: 'find', db: 'app', body, sequences: new Map(), moreToCome: false }, shared()),
      'field.duplicate',
    );
  });

  it('8: an array tenant in a filter cannot widen the predicate', () => {
    const filter = { [FIELD]: [T, B] };
    expect(out(find(command({ find: 'c', filter }), shared())).filter).toEqual({ $and: [eqT, filter] });
  });

  it('9: collations are allowed with a non-string tenant; strength 1-2 refused for a string tenant', () => {
    const collation = { locale: 'en', strength: 1 };
    expect(out(find(command({ find: 'c', collation }), shared())).collation).toEqual(collation);
    refusal(
      () => find(command({ find: 'c', collation }), context(sharedResolver(), 'acme')),
      'collation.tenant-string',
    );
    refusal(
      () => count(command({ count: 'c', collation }), context(sharedResolver(), 'acme')),
      'collation.tenant-string',
    );
    refusal(
      () => distinct(command({ distinct: 'c', key: 'a', collation }), context(sharedResolver(), 'acme')),
      'collation.tenant-string',
    );
  });

  it('10: {tenant: null} still gets the tenant equality first', () => {
    expect(out(find(command({ find: 'c', filter: { [FIELD]: null } }), shared())).filter).toEqual({
      $and: [eqT, { [FIELD]: null }],
    });
  });

  it('11: $expr is allowed; $$USER_ROLES is refused', () => {
    const filter = { $expr: { $eq: ['$a', 1] } };
    expect(out(find(command({ find: 'c', filter }), shared())).filter).toEqual({ $and: [eqT, filter] });
    refusal(() => find(command({ find: 'c', filter: { $expr: { $in: ['admin', '$$USER_ROLES.role'] } } }), shared()));
  });

  it('12: $jsonSchema is allowed', () => {
    const filter = { $jsonSchema: { required: ['a'] } };
    expect(out(find(command({ find: 'c', filter }), shared())).filter).toEqual({ $and: [eqT, filter] });
  });

  it('13/14: $text and $near stay valid under the top-level $and', () => {
    for (const filter of [
      { $text: { $search: 'x' } },
      { loc: { $near: { $geometry: { type: 'Point', coordinates: [0, 0] } } } },
    ]) {
      expect(out(find(command({ find: 'c', filter }), shared())).filter).toEqual({ $and: [eqT, filter] });
    }
  });

  it('15: maxTimeMS is set when absent, clamped when above the cap or 0, kept byte for byte within it', () => {
    expect(out(find(command({ find: 'c' }), shared())).maxTimeMS).toBe(CAP);
    expect(out(find(command({ find: 'c', maxTimeMS: 60_000 }), shared())).maxTimeMS).toBe(CAP);
    expect(out(find(command({ find: 'c', maxTimeMS: 0 }), shared())).maxTimeMS).toBe(CAP);
    const kept = find(command({ find: 'c', maxTimeMS: Long.fromNumber(100) }), shared());
    expect(out(kept).maxTimeMS).toBe(100n);
    expect(kept.notes.some((note) => note.rule === 'maxTimeMS.cap')).toBe(false);
    refusal(() => find(command({ find: 'c', maxTimeMS: 'soon' }), shared()), 'maxTimeMS.invalid');
    expect(out(count(command({ count: 'c' }), shared())).maxTimeMS).toBe(CAP);
    expect(out(distinct(command({ distinct: 'c', key: 'a' }), shared())).maxTimeMS).toBe(CAP);
    expect(
      out(aggregate(command({ aggregate: 'c', pipeline: [], cursor: {}, maxTimeMS: 1e9 }), shared())).maxTimeMS,
    ).toBe(CAP);
  });

  it('16: $elemMatch/$not/$nor/$or are wrapped; unknown $-operators refused', () => {
    const filter = { a: { $elemMatch: { b: 1 } }, c: { $not: { $gt: 1 } } };
    expect(out(find(command({ find: 'c', filter }), shared())).filter).toEqual({ $and: [eqT, filter] });
    refusal(() => find(command({ find: 'c', filter: { a: { $foo: 1 } } }), shared()));
  });

  it('1-2: $where and $function anywhere are refused', () => {
    refusal(() => find(command({ find: 'c', filter: { $where: 'sleep(5000)||true' } }), shared()));
    refusal(() => find(command({ find: 'c', filter: { $or: [{ $where: 'true' }] } }), shared()));
    refusal(() =>
      find(command({ find: 'c', filter: { $expr: { $function: { body: 'x', args: [], lang: 'js' } } } }), shared()),
    );
  });
});

describe('count and distinct (catalogue 6, 17, 59)', () => {
  it('17/59: count without a query (estimatedDocumentCount) gets the tenant query', () => {
    const result = count(command({ count: 'c' }), shared());
    expect(out(result).query).toEqual({ $and: [eqT] });
    expect(result.reply).toEqual({ mapNames: false, scrubErrors: true });
  });

  it('6: count with a query wraps it', () => {
    expect(out(count(command({ count: 'c', query: { [FIELD]: B } }), shared())).query).toEqual({
      $and: [eqT, { [FIELD]: B }],
    });
  });

  it('17: distinct of the tenant field is filtered to T; the key must be a string', () => {
    expect(out(distinct(command({ distinct: 'c', key: FIELD }), shared())).query).toEqual({ $and: [eqT] });
    expect(out(distinct(command({ distinct: 'c', key: 'a', query: { a: 1 } }), shared())).query).toEqual({
      $and: [eqT, { a: 1 }],
    });
    refusal(() => distinct(command({ distinct: 'c', key: 1 }), shared()), 'distinct.key');
    refusal(() => distinct(command({ distinct: 'c' }), shared()), 'distinct.key');
  });

  it('15: distinct gets no added maxTimeMS where the upstream refuses it there; a client value is forwarded', () => {
    const refusing = (): TenantContext => ({ ...shared(), distinctMaxTimeMS: false });
    expect(out(distinct(command({ distinct: 'c', key: 'a' }), refusing())).maxTimeMS).toBeUndefined();
    expect(out(distinct(command({ distinct: 'c', key: 'a', maxTimeMS: 10 }), refusing())).maxTimeMS).toBe(10);
    // Other commands keep the cap; upstreams that accept it get it on distinct too.
    expect(out(count(command({ count: 'c' }), refusing())).maxTimeMS).toBeDefined();
    expect(out(distinct(command({ distinct: 'c', key: 'a' }), shared())).maxTimeMS).toBeDefined();
  });

  it('60: hints must name a tenant-prefixed key pattern in shared collections', () => {
    refusal(() => count(command({ count: 'c', hint: { x: 1 } }), shared()), 'hint.not-tenant-prefixed');
    // A collection-scan hint ($natural, _id; mongodump's) is dropped, never forwarded: the plan stays
    // on the tenant-prefixed index (issue 14). Other single keys are still refused.
    for (const hint of [{ $natural: 1 }, { $natural: -1 }, { _id: 1 }, { _id: -1 }, '_id_']) {
      const forwarded = out(find(command({ find: 'c', filter: { a: 1 }, hint }), shared()));
      expect(forwarded.hint).toBeUndefined();
      expect(forwarded.filter).toEqual({ $and: [eqT, { a: 1 }] });
      expect(out(count(command({ count: 'c', hint }), shared())).hint).toBeUndefined();
    }
    refusal(() => find(command({ find: 'c', hint: { _id: 1, x: 1 } }), shared()), 'hint.not-tenant-prefixed');
    refusal(() => find(command({ find: 'c', hint: { $natural: 2 } }), shared()), 'hint.not-tenant-prefixed');
    expect(out(find(command({ find: 'c', hint: { $natural: 1 } }), perTenant())).hint).toEqual({ $natural: 1 });
    expect(out(find(command({ find: 'c', hint: { [FIELD]: 1, x: 1 } }), shared())).hint).toEqual({ [FIELD]: 1, x: 1 });
    expect(out(find(command({ find: 'c', hint: { x: 1 } }), perTenant())).hint).toEqual({ x: 1 });
  });

  it('60: find min/max must start with the tenant field equal to T in shared collections', () => {
    refusal(() => find(command({ find: 'c', hint: { [FIELD]: 1, x: 1 }, min: { x: 1 } }), shared()), 'find.bounds');
    refusal(
      () => find(command({ find: 'c', hint: { [FIELD]: 1, x: 1 }, max: { [FIELD]: B, x: 1 } }), shared()),
      'find.bounds',
    );
    const ok = find(
      command({ find: 'c', hint: { [FIELD]: 1, x: 1 }, min: { [FIELD]: T, x: 1 }, max: { [FIELD]: T, x: 9 } }),
      shared(),
    );
    expect(out(ok).min).toEqual({ [FIELD]: T, x: 1 });
    expect(out(find(command({ find: 'c', hint: { x: 1 }, min: { x: 1 } }), perTenant())).min).toEqual({ x: 1 });
  });

  it('reference data (shared-readonly) is readable and not filtered', () => {
    expect(out(count(command({ count: 'ref' }), shared())).query).toBeUndefined();
  });
});

describe('aggregate (catalogue 13, 28-36 through the handler)', () => {
  it('prepends the tenant $match, registers the cursor', () => {
    const result = aggregate(
      command({ aggregate: 'c', pipeline: [{ $group: { _id: '$a', n: { $sum: 1 } } }], cursor: {} }),
      shared(),
    );
    expect(out(result).pipeline).toEqual([{ $match: eqT }, { $group: { _id: '$a', n: { $sum: 1 } } }]);
    expect(result.reply).toEqual({
      registerCursor: { db: 'app', coll: 'c', documents: { in: 'cursor' } },
      tenantDocuments: { in: 'cursor' },
      mapNames: false,
      scrubErrors: true,
    });
    expect(result.notes.some((note) => note.rule === 'pipeline.match' && note.namespace === 'app.c')).toBe(true);
  });

  it('requires a cursor document unless explain: true, which registers no cursor', () => {
    refusal(() => aggregate(command({ aggregate: 'c', pipeline: [] }), shared()), 'aggregate.cursor');
    const result = aggregate(command({ aggregate: 'c', pipeline: [], explain: true }), shared());
    expect(result.reply.registerCursor).toBeUndefined();
    refusal(() => aggregate(command({ aggregate: 'c', cursor: {} }), shared()), 'aggregate.pipeline');
  });

  it('35: aggregate: 1 runs only with $documents first; nothing to filter there', () => {
    const result = aggregate(
      command({ aggregate: 1, pipeline: [{ $documents: [{ a: 1 }] }, { $project: { a: 1 } }], cursor: {} }),
      shared(),
    );
    expect(out(result).pipeline).toEqual([{ $documents: [{ a: 1 }] }, { $project: { a: 1 } }]);
    expect(result.reply.registerCursor).toEqual({ db: 'app', coll: '$cmd.aggregate' });
    refusal(
      () => aggregate(command({ aggregate: 1, pipeline: [{ $match: {} }], cursor: {} }), shared()),
      'aggregate.db-level',
    );
  });

  it('28: a change stream is refused (collection and database level)', () => {
    refusal(
      () => aggregate(command({ aggregate: 'c', pipeline: [{ $changeStream: {} }], cursor: {} }), shared()),
      'pipeline.change-stream',
    );
    refusal(() => aggregate(command({ aggregate: 1, pipeline: [{ $changeStream: {} }], cursor: {} }), shared()));
  });

  it('60: hint is checked; let, collation validated; bypassDocumentValidation refused', () => {
    refusal(
      () => aggregate(command({ aggregate: 'c', pipeline: [], cursor: {}, hint: { x: 1 } }), shared()),
      'hint.not-tenant-prefixed',
    );
    refusal(() =>
      aggregate(command({ aggregate: 'c', pipeline: [], cursor: {}, let: { v: { $function: {} } } }), shared()),
    );
    refusal(
      () => aggregate(command({ aggregate: 'c', pipeline: [], cursor: {}, bypassDocumentValidation: true }), shared()),
      'field.bypass-validation',
    );
  });

  it('database-per-tenant: $db mapped, no $match, embedded namespaces resolved', () => {
    const result = aggregate(
      command({
        aggregate: 'c',
        pipeline: [{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }],
        cursor: {},
      }),
      perTenant(),
    );
    const body = out(result);
    expect(body.$db).toBe('t_acme_app');
    expect(body.pipeline).toEqual([{ $lookup: { from: 'd', localField: 'a', foreignField: 'b', as: 'j' } }]);
    expect(result.reply).toMatchObject({ registerCursor: { db: 't_acme_app', coll: 'c' }, mapNames: true });
  });

  it('keeps untouched stages byte for byte', () => {
    const stage = new Map<string, unknown>([
      [
        '$match',
        new Map<string, unknown>([
          ['n', Long.fromString('9007199254740993')],
          ['d', numericKeys],
        ]),
      ],
    ]);
    const result = aggregate(
      command(
        new Map<string, unknown>([
          ['aggregate', 'c'],
          ['pipeline', [{ $limit: 1 }, stage]],
          ['cursor', {}],
        ]),
      ),
      shared(),
    );
    expect(bytesOf(result).indexOf(Buffer.from(serialize(stage)))).toBeGreaterThan(0);
  });
});

describe('explain (catalogue 21, 59)', () => {
  it('21: the inner find is rewritten identically (the plan shows the tenant predicate)', () => {
    const result = explain(
      command({ explain: { find: 'c', filter: { [FIELD]: B } }, verbosity: 'queryPlanner' }),
      shared(),
    );
    const body = out(result);
    expect(body.explain).toEqual({ find: 'c', filter: { $and: [eqT, { [FIELD]: B }] } });
    expect(body.verbosity).toBe('queryPlanner');
    expect(body.maxTimeMS).toBe(CAP);
    expect(result.reply).toEqual({ mapNames: false, scrubErrors: true, explain: { withholdFigures: true } });
  });

  it('21: count, distinct and aggregate inside explain get the same rewrite', () => {
    expect(out(explain(command({ explain: { count: 'c' } }), shared())).explain).toEqual({
      count: 'c',
      query: { $and: [eqT] },
    });
    expect(out(explain(command({ explain: { distinct: 'c', key: 'a' } }), shared())).explain).toEqual({
      distinct: 'c',
      key: 'a',
      query: { $and: [eqT] },
    });
    expect(out(explain(command({ explain: { aggregate: 'c', pipeline: [], cursor: {} } }), shared())).explain).toEqual({
      aggregate: 'c',
      pipeline: [{ $match: eqT }],
      cursor: {},
    });
  });

  it('59: every verbosity runs in shared collections, the reply told to withhold the figures; no verbosity stays absent', () => {
    for (const verbosity of ['queryPlanner', 'executionStats', 'allPlansExecution']) {
      const result = explain(command({ explain: { find: 'c' }, verbosity }), shared());
      expect(out(result).verbosity).toBe(verbosity);
      expect(result.reply.explain).toEqual({ withholdFigures: true });
    }
    const result = explain(command({ explain: { find: 'c' } }), shared());
    expect(out(result).verbosity).toBeUndefined();
    expect(result.reply.explain).toEqual({ withholdFigures: true });
    expect(result.notes.map((note) => note.rule)).toContain('explain.withhold-figures');
    refusal(() => explain(command({ explain: { find: 'c' }, verbosity: 'everything' }), shared()), 'explain.verbosity');
    // A $lookup into a shared collection from a private one counts other tenants' documents too.
    const mixed = context({
      ...perTenantResolver('collection-prefix'),
      resolve: (db, coll, access) =>
        coll === 'sharedc'
          ? sharedResolver().resolve(db, coll, access)
          : perTenantResolver('collection-prefix').resolve(db, coll, access),
    });
    const lookup = { $lookup: { from: 'sharedc', localField: 'a', foreignField: 'b', as: 'j' } };
    const joined = explain(
      command({ explain: { aggregate: 'c', pipeline: [lookup], cursor: {} }, verbosity: 'executionStats' }),
      mixed,
    );
    expect(joined.reply.explain).toEqual({ withholdFigures: true });
    // aggregate's own explain option too.
    expect(aggregate(command({ aggregate: 'c', pipeline: [lookup], explain: true }), mixed).reply.explain).toEqual({
      withholdFigures: true,
    });
  });

  it("59: database-per-tenant: execution statistics are the tenant's own; `$db` mapped", () => {
    const result = explain(command({ explain: { find: 'c' }, verbosity: 'executionStats' }), perTenant());
    expect(result.reply.explain).toEqual({ withholdFigures: false });
    const body = out(result);
    expect(body.verbosity).toBe('executionStats');
    expect(body.$db).toBe('t_acme_app');
    expect(body.explain).toEqual({ find: 'c' });
  });

  it('21: nested explain and non-explainable inner commands are refused', () => {
    refusal(() => explain(command({ explain: { explain: { find: 'c' } } }), shared()), 'explain.nested');
    refusal(
      () => explain(command({ explain: { aggregate: 'c', pipeline: [], explain: true } }), shared()),
      'explain.nested',
    );
    for (const inner of [
      { mapReduce: 'c' },
      { mapreduce: 'c' },
      { insert: 'c', documents: [] },
      { listIndexes: 'c' },
      { Find: 'c' },
    ]) {
      refusal(() => explain(command({ explain: inner }), shared()), 'explain.inner');
    }
    refusal(() => explain(command({ explain: 'find' }), shared()), 'explain.inner');
    for (const field of ['$db', 'lsid', 'txnNumber', '$clusterTime']) {
      refusal(() => explain(command({ explain: { find: 'c', [field]: 'x' } }), shared()), 'explain.inner');
    }
  });

  it('21: update/delete/findAndModify go through the write handlers the engine passes in', () => {
    const seen: string[] = [];
    const fake: CommandHandler = (input) => {
      seen.push(input.name);
      return {
        body: input.body.with('$db', rawValue('app')).with('rewritten', rawValue(true)),
        sequences: new Map(),
        reply: { scrubErrors: true },
        notes: [{ kind: 'rewrite', rule: 'filter.tenant' }],
      };
    };
    const handler = createExplainHandler({ update: fake, delete: fake, findAndModify: fake });
    for (const inner of [
      { update: 'c', updates: [] },
      { delete: 'c', deletes: [] },
      { findAndModify: 'c', query: {} },
      { findandmodify: 'c', query: {} },
    ]) {
      const result = handler(command({ explain: inner, verbosity: 'queryPlanner' }), shared());
      const body = out(result);
      expect(body.explain.rewritten).toBe(true);
      expect(body.explain.$db).toBeUndefined();
      expect(result.notes.map((note) => note.rule)).toContain('filter.tenant');
    }
    expect(seen).toEqual(['update', 'delete', 'findAndModify', 'findandmodify']);
    refusal(() => explain(command({ explain: { update: 'c', updates: [] } }), shared()), 'explain.inner');
    refusal(() => handler(command({ explain: { update: 'ref', updates: [] } }), shared()), 'namespace.readonly');
  });

  it('the registry holds every read handler, explain wrapping the given writes', () => {
    const handlers = createReadHandlers({});
    expect(Object.keys(handlers).sort()).toEqual([
      'aggregate',
      'count',
      'distinct',
      'explain',
      'find',
      'listCollections',
      'listIndexes',
    ]);
  });
});

describe('listIndexes and listCollections (catalogue 24)', () => {
  it('24: listIndexes: string collection, cursor registered, listing filtered by the reply layer', () => {
    const result = listIndexes(command({ listIndexes: 'c', cursor: {} }), shared());
    expect(result.reply).toEqual({
      registerCursor: { db: 'app', coll: 'c' },
      filterListing: 'indexes',
      mapNames: false,
      scrubErrors: true,
    });
    refusal(
      () => listIndexes(command({ listIndexes: new UUID('0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0') }), shared()),
      'namespace.uuid',
    );
    refusal(() => listIndexes(command({ listIndexes: 'system.views' }), shared()), 'namespace.system');
  });

  it('24: listCollections in a shared database: nameOnly forced, filter kept, names filtered by the reply layer', () => {
    const result = listCollections(command({ listCollections: 1, filter: { name: 'c' }, nameOnly: false }), shared());
    const body = out(result);
    expect(body.nameOnly).toBe(true);
    expect(body.filter).toEqual({ name: 'c' });
    expect(result.reply).toEqual({
      registerCursor: { db: 'app', coll: '$cmd.listCollections' },
      filterListing: 'collections',
      mapNames: false,
      scrubErrors: true,
    });
    refusal(() => listCollections(command({ listCollections: 1, filter: { $where: 'true' } }), shared()));
    refusal(() => listCollections(command({ listCollections: 1, filter: 'c' }), shared()), 'filter.not-document');
  });

  it("24: database-per-tenant: $db mapped, options kept for the tenant's own collections", () => {
    const result = listCollections(command({ listCollections: 1 }), perTenant());
    const body = out(result);
    expect(body.$db).toBe('t_acme_app');
    expect(body.nameOnly).toBeUndefined();
    expect(result.reply).toMatchObject({
      registerCursor: { db: 't_acme_app', coll: '$cmd.listCollections' },
      mapNames: true,
    });
  });

  it('24: collection-prefix: only {name: "<collection>"} filters, mapped to the physical name', () => {
    const prefix = context(perTenantResolver('collection-prefix'));
    expect(out(listCollections(command({ listCollections: 1, filter: { name: 'c' } }), prefix)).filter).toEqual({
      name: 'acme.c',
    });
    refusal(
      () => listCollections(command({ listCollections: 1, filter: { type: 'view' } }), prefix),
      'listCollections.filter',
    );
  });
});

describe('catalogue 9: the simple collation pinned for a string tenant (pinSimpleCollation)', () => {
  const SIMPLE = { locale: 'simple' };
  const pinned = (namespaces: NamespaceResolver = sharedResolver()): TenantContext => context(namespaces, 'acme', true);
  const unpinned = (namespaces: NamespaceResolver = sharedResolver()): TenantContext =>
    context(namespaces, 'acme', false);
  const mixed = (): NamespaceResolver => ({
    ...perTenantResolver('collection-prefix'),
    resolve: (db, coll, access) =>
      coll === 'sharedc'
        ? sharedResolver().resolve(db, coll, access)
        : perTenantResolver('collection-prefix').resolve(db, coll, access),
  });
  const commands: Array<[CommandHandler, Document]> = [
    [find, { find: 'c', filter: { a: 1 } }],
    [count, { count: 'c', query: { a: 1 } }],
    [distinct, { distinct: 'c', key: 'a' }],
    [aggregate, { aggregate: 'c', pipeline: [{ $match: { a: 1 } }], cursor: {} }],
  ];

  it('find, count, distinct and aggregate without a collation get {locale: "simple"}, the rest unchanged', () => {
    for (const [handler, body] of commands) {
      const withPin = handler(command(body), pinned());
      const without = handler(command(body), unpinned());
      expect(out(withPin).collation, body[Object.keys(body)[0]!]).toEqual(SIMPLE);
      expect(withPin.body.elements.filter((element) => element.name === 'collation')).toHaveLength(1);
      // Exactly one element more: the forwarded bytes are otherwise those of the unpinned rewrite.
      expect(Buffer.from(withPin.body.without('collation').toBytes()).equals(Buffer.from(without.body.toBytes()))).toBe(
        true,
      );
      expect(withPin.notes).toContainEqual({ kind: 'rewrite', rule: 'collation.simple', namespace: 'app.c' });
    }
  });

  it('pinSimpleCollation false leaves the bytes as before: no collation added, no note', () => {
    for (const [handler, body] of commands) {
      const result = handler(command(body), unpinned());
      expect(out(result).collation).toBeUndefined();
      expect(result.notes.map((note) => note.rule)).not.toContain('collation.simple');
    }
  });

  it('a client collation (strength >= 3) is forwarded as sent, never replaced; strength 1-2 still refused', () => {
    const collation = new Map<string, unknown>([
      ['strength', 3],
      ['locale', 'en'],
    ]);
    const result = find(
      command(
        new Map<string, unknown>([
          ['find', 'c'],
          ['collation', collation],
        ]),
      ),
      pinned(),
    );
    expect(bytesOf(result).includes(Buffer.from(serialize(collation)))).toBe(true);
    expect(result.notes.map((note) => note.rule)).not.toContain('collation.simple');
    refusal(
      () => find(command({ find: 'c', collation: { locale: 'en', strength: 2 } }), pinned()),
      'collation.tenant-string',
    );
  });

  it('only tenant-filtered namespaces are pinned (shared-readonly reference data, database-per-tenant, collection-prefix are not)', () => {
    expect(out(find(command({ find: 'ref' }), pinned())).collation).toBeUndefined();
    expect(out(find(command({ find: 'c' }), pinned(perTenantResolver()))).collation).toBeUndefined();
    expect(
      out(count(command({ count: 'c' }), pinned(perTenantResolver('collection-prefix')))).collation,
    ).toBeUndefined();
    expect(
      out(aggregate(command({ aggregate: 1, pipeline: [{ $documents: [{ a: 1 }] }], cursor: {} }), pinned())).collation,
    ).toBeUndefined();
  });

  it('$lookup / $unionWith into a tenant-filtered collection pin the whole aggregate', () => {
    const lookup = { $lookup: { from: 'sharedc', localField: 'a', foreignField: 'b', as: 'j' } };
    expect(
      out(aggregate(command({ aggregate: 'c', pipeline: [lookup], cursor: {} }), pinned(mixed()))).collation,
    ).toEqual(SIMPLE);
    expect(
      out(aggregate(command({ aggregate: 'c', pipeline: [{ $unionWith: 'sharedc' }], cursor: {} }), pinned(mixed())))
        .collation,
    ).toEqual(SIMPLE);
    expect(
      out(aggregate(command({ aggregate: 'c', pipeline: [{ $unionWith: 'other' }], cursor: {} }), pinned(mixed())))
        .collation,
    ).toBeUndefined();
    const documents = { aggregate: 1, pipeline: [{ $documents: [{ a: 1 }] }, lookup], cursor: {} };
    expect(out(aggregate(command(documents), pinned(mixed()))).collation).toEqual(SIMPLE);
  });

  it('explain: the inner command is pinned like the command itself', () => {
    const body = out(
      explain(command({ explain: { find: 'c', filter: { a: 1 } }, verbosity: 'queryPlanner' }), pinned()),
    );
    expect(body.explain).toEqual({
      find: 'c',
      filter: { $and: [{ [FIELD]: { $eq: 'acme' } }, { a: 1 }] },
      collation: SIMPLE,
    });
    expect(body.collation).toBeUndefined();
  });
});
