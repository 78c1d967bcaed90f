/**
 * Write handlers (src/rewrite/writes.ts): catalogue items 18, 19, 37-43, 50, 51, 61 and G3/G4/G8.
 * Inputs are built with the `bson` package, outputs checked as bytes: structure through
 * `deserialize`, untouched client values (an int64, a `{"2": 1, "1": 2}` document) byte for byte.
 */
import { Binary, Code, Long, UUID, deserialize, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, PolicyRefusal } from '../../../src/errors.js';
import type { IsolationModel } from '../../../src/config/types.js';
import type {
  Access,
  CommandHandler,
  CommandInput,
  NamespaceResolver,
  ResolvedNamespace,
  RewriteResult,
  TenantContext,
} from '../../../src/policy/types.js';
import {
  MAX_USER_DOCUMENT_SIZE,
  WRITE_HANDLERS,
  bulkWrite,
  delete as deleteHandler,
  findAndModify,
  insert,
  update,
} from '../../../src/rewrite/writes.js';
import { scrubErrorValues } from '../../../src/rewrite/replies.js';
import { RawDocument } from '../../../src/wire/raw-bson.js';

const FIELD = 'tenantId';
const CAP = 5_000;

// ---------------------------------------------------------------- fake namespace resolvers

const SYSTEM_DBS = new Set(['admin', 'local', 'config']);

function refuseNamespace(db: string, coll: string, access: Access): void {
  if (SYSTEM_DBS.has(db) || coll.startsWith('system.')) throw new PolicyRefusal('namespace.system', 'system namespace');
  if (db === 'forbidden') throw new PolicyRefusal('namespace.denied', 'denied namespace');
  if (db === 'ref' && access === 'write') throw new PolicyRefusal('namespace.readonly', 'shared-readonly namespace');
}

/** Shared collections, scoped, identity mapping (the default model). */
function sharedResolver(): NamespaceResolver {
  return {
    resolve(db, coll, access): ResolvedNamespace {
      refuseNamespace(db, coll, access);
      return { db, coll, model: 'shared-collection', access: 'scoped', tenantFiltered: true };
    },
    resolveDatabase: (db) => ({ db, model: 'shared-collection' }),
    toClient: (db, coll) => ({ db, coll }),
  };
}

/** Database per tenant: `app` becomes `acme__app`; nothing filtered. */
function perTenantResolver(model: IsolationModel = 'database-per-tenant'): NamespaceResolver {
  return {
    resolve(db, coll, access): ResolvedNamespace {
      refuseNamespace(db, coll, access);
      return model === 'database-per-tenant'
        ? { db: `acme__${db}`, coll, model, access: 'scoped', tenantFiltered: false }
        : { db, coll: `acme__${coll}`, model, access: 'scoped', tenantFiltered: false };
    },
    resolveDatabase: (db) => ({ db: `acme__${db}`, model }),
    toClient: (db, coll) => (db.startsWith('acme__') ? { db: db.slice(6), coll } : undefined),
  };
}

function rawValue(value: unknown): { type: number; value: Uint8Array } {
  const bytes = serialize({ v: value });
  return { type: bytes[4]!, value: bytes.subarray(7, bytes.length - 1) };
}

function context(
  namespaces: NamespaceResolver = sharedResolver(),
  tenantValue: unknown = 'acme',
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

// ---------------------------------------------------------------- inputs and outputs

type Doc = Document | Map<string, unknown>;

function command(body: Doc, db = 'app', sequences: Record<string, Doc[]> = {}, moreToCome = false): CommandInput {
  const bytes = serialize(body instanceof Map ? new Map([...body, ['$db', db]]) : { ...body, $db: db });
  const first = body instanceof Map ? [...body.keys()][0]! : Object.keys(body)[0]!;
  return {
    name: first,
    db,
    body: RawDocument.parse(bytes),
    sequences: new Map(
      Object.entries(sequences).map(([identifier, docs]) => [identifier, docs.map((doc) => serialize(doc))]),
    ),
    moreToCome,
  };
}

const decode = (bytes: Uint8Array): Document => deserialize(bytes, { useBigInt64: true, promoteValues: true });
const bodyOf = (result: RewriteResult): Document => decode(result.body.toBytes());
const sequenceOf = (result: RewriteResult, identifier: string): Document[] =>
  (result.sequences.get(identifier) ?? []).map(decode);
const tenantAnd = (filter: Document): Document => ({ $and: [{ [FIELD]: { $eq: 'acme' } }, filter] });
const contains = (haystack: Uint8Array, needle: Uint8Array): boolean =>
  Buffer.from(haystack).includes(Buffer.from(needle));
const outputBytes = (result: RewriteResult): Uint8Array =>
  Buffer.concat([result.body.toBytes(), ...[...result.sequences.values()].flat()]);

function refusal(run: () => unknown): PolicyRefusal {
  try {
    run();
  } catch (error) {
    if (error instanceof PolicyRefusal) return error;
    throw error;
  }
  throw new Error('expected a PolicyRefusal');
}

/** One document holding the elements of both, in order (duplicate keys included). */
function joinDocuments(a: Document, b: Document): Uint8Array {
  const first = serialize(a);
  const second = serialize(b);
  const out = Buffer.concat([first.subarray(0, first.length - 1), second.subarray(4)]);
  out.writeInt32LE(out.length, 0);
  return out;
}

/** `{<a>: <document bytes>, <b>: <document bytes>}` around raw documents. */
function documentWith(a: string, aBytes: Uint8Array, b: string, bBytes: Uint8Array): Uint8Array {
  const out = Buffer.concat([
    Buffer.alloc(4),
    Buffer.from([0x03]),
    Buffer.from(`${a}\0`),
    aBytes,
    Buffer.from([0x03]),
    Buffer.from(`${b}\0`),
    bBytes,
    Buffer.from([0]),
  ]);
  out.writeInt32LE(out.length, 0);
  return out;
}

/** `{"2": 1, "1": 2}` with that key order (a JS object would sort the keys). */
const numericKeys = (): Map<string, number> =>
  new Map([
    ['2', 1],
    ['1', 2],
  ]);
const numericKeysBytes = (): Uint8Array => serialize(numericKeys());
const bigLong = Long.fromString('9007199254740993');

// ---------------------------------------------------------------- insert

describe('insert (catalogue 18, 42, 8, 51)', () => {
  it('18: stamps the tenant right after _id, or first; the rest byte for byte', () => {
    const input = command({
      insert: 'orders',
      documents: [
        new Map<string, unknown>([
          ['_id', 1],
          ['big', bigLong],
          ['keys', numericKeys()],
        ]),
        new Map<string, unknown>([['a', 1]]),
      ],
    });
    const result = insert(input, shared());
    const body = bodyOf(result);
    expect(body.insert).toBe('orders');
    expect(body.$db).toBe('app');
    expect(Object.keys(body.documents[0])).toEqual(['_id', FIELD, 'big', 'keys']);
    expect(body.documents[0][FIELD]).toBe('acme');
    expect(body.documents[0].big).toBe(9007199254740993n);
    expect(Object.keys(body.documents[1])).toEqual([FIELD, 'a']);
    const out = outputBytes(result);
    expect(contains(out, numericKeysBytes())).toBe(true);
    expect(contains(out, Buffer.from([0x12, ...Buffer.from('big\0'), ...Buffer.from(bigLong.toBytesLE())]))).toBe(true);
    expect(result.reply).toEqual({ scrubErrors: true, mapNames: false });
    expect(result.notes).toContainEqual({ kind: 'rewrite', rule: 'insert.stamp', namespace: 'app.orders' });
    expect(result.sequences.size).toBe(0);
  });

  it('18: a document already carrying T (byte-equal) is kept as sent', () => {
    const doc = new Map<string, unknown>([
      ['x', 1],
      [FIELD, 'acme'],
      ['keys', numericKeys()],
    ]);
    const result = insert(command({ insert: 'orders', documents: [doc] }), shared());
    expect(contains(outputBytes(result), serialize(doc))).toBe(true);
  });

  it('18: the tenant must be byte-equal: int64 tenant vs a client int32 of the same number is refused', () => {
    const ctx = context(sharedResolver(), Long.fromNumber(42));
    expect(refusal(() => insert(command({ insert: 'c', documents: [{ [FIELD]: 42 }] }), ctx)).rule).toBe(
      'insert.foreign-tenant',
    );
    const same = insert(command({ insert: 'c', documents: [{ [FIELD]: Long.fromNumber(42) }] }), ctx);
    expect(bodyOf(same).documents[0][FIELD]).toBe(42n);
  });

  it('18: a foreign tenant is refused', () => {
    const error = refusal(() =>
      insert(command({ insert: 'orders', documents: [{ a: 1, [FIELD]: 'beta' }] }), shared()),
    );
    expect(error.rule).toBe('insert.foreign-tenant');
    expect(error.code).toBe(ErrorCodes.Unauthorized);
    expect(error.message).not.toContain('beta');
  });

  it('8/G8: an array, null or undefined tenant is refused', () => {
    for (const value of [['acme', 'beta'], ['acme'], null]) {
      expect(refusal(() => insert(command({ insert: 'c', documents: [{ [FIELD]: value }] }), shared())).rule).toBe(
        'insert.tenant-not-scalar',
      );
    }
  });

  it('42: documents in a kind-1 sequence are stamped and stay a sequence; a foreign one refuses the batch', () => {
    const result = insert(
      command({ insert: 'orders' }, 'app', { documents: [{ _id: 1 }, { _id: 2, [FIELD]: 'acme' }] }),
      shared(),
    );
    expect(bodyOf(result).documents).toBeUndefined();
    expect(sequenceOf(result, 'documents')).toEqual([
      { _id: 1, [FIELD]: 'acme' },
      { _id: 2, [FIELD]: 'acme' },
    ]);
    const mixed = command({ insert: 'orders' }, 'app', { documents: [{ _id: 1, [FIELD]: 'beta' }, { _id: 2 }] });
    expect(refusal(() => insert(mixed, shared())).rule).toBe('insert.foreign-tenant');
  });

  it('42: top-level $-prefixed or dotted field names are refused', () => {
    expect(refusal(() => insert(command({ insert: 'c', documents: [{ $set: 1 }] }), shared())).rule).toBe(
      'document.dollar-field',
    );
    expect(refusal(() => insert(command({ insert: 'c', documents: [{ 'tenantId.x': 'beta' }] }), shared())).rule).toBe(
      'document.dotted-field',
    );
    expect(refusal(() => insert(command({ insert: 'c', documents: [{ 'a.b': 1 }] }), perTenant())).rule).toBe(
      'document.dotted-field',
    );
  });

  it('42/G3: a document repeating the tenant field is refused', () => {
    const doc = joinDocuments({ [FIELD]: 'acme' }, { [FIELD]: 'beta' });
    const input: CommandInput = { ...command({ insert: 'c' }), sequences: new Map([['documents', [doc]]]) };
    expect(refusal(() => insert(input, shared())).rule).toBe('document.duplicate-key');
  });

  it('G1: forbidden content in a document is refused (BSON code)', () => {
    expect(() => insert(command({ insert: 'c', documents: [{ f: new Code('sleep(1)') }] }), shared())).toThrow(
      PolicyRefusal,
    );
  });

  it('51: a document that stamping pushes over 16 MiB is refused, never truncated', () => {
    // {_id: 1, s: "x…"}: 4 + (1+4+4) + (1+2+4+n+1) + 1 bytes; fill to exactly the limit.
    const n = MAX_USER_DOCUMENT_SIZE - 22;
    const doc = { _id: 1, s: 'x'.repeat(n) };
    expect(serialize(doc).length).toBe(MAX_USER_DOCUMENT_SIZE);
    const error = refusal(() => insert(command({ insert: 'big' }, 'app', { documents: [doc] }), shared()));
    expect(error.rule).toBe('document.too-large');
    expect(error.code).toBe(ErrorCodes.BSONObjectTooLarge);
  });

  it('17: a collection named by a UUID is refused', () => {
    const input = command({ insert: new UUID(), documents: [{}] });
    const error = refusal(() => insert(input, shared()));
    expect(error.rule).toBe('namespace.not-string');
    expect(error.code).toBe(ErrorCodes.InvalidNamespace);
  });

  it('64: database-per-tenant: $db mapped, nothing stamped, names mapped back', () => {
    const result = insert(command({ insert: 'orders', documents: [{ _id: 1 }] }), perTenant());
    const body = bodyOf(result);
    expect(body.$db).toBe('acme__app');
    expect(body.insert).toBe('orders');
    expect(body.documents).toEqual([{ _id: 1 }]);
    expect(result.reply).toEqual({ scrubErrors: true, mapNames: true });
    expect(result.notes).toContainEqual({ kind: 'rewrite', rule: 'namespace.map', namespace: 'app.orders' });
  });

  it('collection-prefix: the collection name is mapped', () => {
    const result = insert(
      command({ insert: 'orders', documents: [{ _id: 1 }] }),
      context(perTenantResolver('collection-prefix')),
    );
    expect(bodyOf(result)).toMatchObject({ insert: 'acme__orders', $db: 'app' });
  });

  it('namespaces the resolver refuses are refused (system, denied, read-only)', () => {
    expect(refusal(() => insert(command({ insert: 'system.views', documents: [{}] }), shared())).rule).toBe(
      'namespace.system',
    );
    expect(refusal(() => insert(command({ insert: 'c', documents: [{}] }, 'admin'), shared())).rule).toBe(
      'namespace.system',
    );
    expect(refusal(() => insert(command({ insert: 'countries', documents: [{}] }, 'ref'), shared())).rule).toBe(
      'namespace.readonly',
    );
  });

  it('a documents sequence on another command, or twice over, is refused (47)', () => {
    expect(
      refusal(() => update(command({ update: 'c', updates: [] }, 'app', { documents: [{}] }), shared())).rule,
    ).toBe('opmsg.sequence');
    expect(
      refusal(() => insert(command({ insert: 'c', documents: [{}] }, 'app', { documents: [{}] }), shared())).rule,
    ).toBe('opmsg.sequence-duplicate');
  });

  it('unknown top-level fields are refused (G1)', () => {
    expect(refusal(() => insert(command({ insert: 'c', documents: [{}], $tenant: 'x' }), shared())).rule).toBe(
      'field.internal',
    );
    expect(refusal(() => insert(command({ insert: 'c', documents: [{}], bogus: 1 }), shared())).rule).toBe(
      'field.unknown',
    );
    expect(refusal(() => insert(command({ insert: 'c', documents: 'x' }), shared())).rule).toBe('write.not-array');
    expect(refusal(() => insert(command({ insert: 'c', documents: [1] }), shared())).rule).toBe('write.not-document');
    expect(refusal(() => insert(command({ insert: 'c' }), shared())).rule).toBe('write.missing-field');
  });
});

// ---------------------------------------------------------------- update

describe('update (catalogue 18, 37-41)', () => {
  it('18: q is wrapped in the tenant $and, u kept byte for byte plus the upsert stamp (G8)', () => {
    const set = new Map<string, unknown>([
      ['n', bigLong],
      ['keys', numericKeys()],
    ]);
    const u = new Map<string, unknown>([['$set', set]]);
    const input = command({
      update: 'orders',
      updates: [{ q: { status: 'open' }, u, multi: true, upsert: false }],
      ordered: true,
    });
    const result = update(input, shared());
    const body = bodyOf(result);
    expect(body.updates[0].q).toEqual(tenantAnd({ status: 'open' }));
    expect(body.updates[0].u.$set.n).toBe(9007199254740993n);
    // An operator update always carries $setOnInsert of the tenant, so an upsert is stamped.
    expect(body.updates[0].u.$setOnInsert).toEqual({ [FIELD]: 'acme' });
    expect(Object.keys(body.updates[0])).toEqual(['q', 'u', 'multi', 'upsert']);
    expect(contains(outputBytes(result), serialize(set))).toBe(true);
    expect(result.notes).toContainEqual({ kind: 'rewrite', rule: 'filter.tenant', namespace: 'app.orders' });
  });

  it('38/G8: a client $setOnInsert is kept and the tenant added to it', () => {
    const result = update(
      command({ update: 'c', updates: [{ q: {}, u: { $set: { a: 1 }, $setOnInsert: { created: 1 } }, upsert: true }] }),
      shared(),
    );
    expect(bodyOf(result).updates[0].u).toEqual({ $set: { a: 1 }, $setOnInsert: { created: 1, [FIELD]: 'acme' } });
  });

  it('42: updates in a kind-1 sequence are rewritten and stay a sequence', () => {
    const result = update(
      command({ update: 'c' }, 'app', {
        updates: [
          { q: {}, u: { $inc: { n: 1 } } },
          { q: { a: 1 }, u: { b: 2 } },
        ],
      }),
      shared(),
    );
    expect(sequenceOf(result, 'updates')).toEqual([
      { q: tenantAnd({}), u: { $inc: { n: 1 }, $setOnInsert: { [FIELD]: 'acme' } } },
      { q: tenantAnd({ a: 1 }), u: { [FIELD]: 'acme', b: 2 } },
    ]);
  });

  it('37: update operators may not touch the tenant path (each operator, $rename both ways)', () => {
    const cases: Document[] = [
      { $set: { [FIELD]: 'beta' } },
      { $set: { [`${FIELD}.x`]: 1 } },
      { $unset: { [FIELD]: '' } },
      { $inc: { [FIELD]: 1 } },
      { $mul: { [FIELD]: 1 } },
      { $min: { [FIELD]: 'a' } },
      { $max: { [FIELD]: 'z' } },
      { $currentDate: { [FIELD]: true } },
      { $push: { [FIELD]: 'beta' } },
      { $addToSet: { [FIELD]: 'beta' } },
      { $pop: { [FIELD]: 1 } },
      { $pull: { [FIELD]: 'acme' } },
      { $pullAll: { [FIELD]: ['acme'] } },
      { $bit: { [FIELD]: { and: 1 } } },
      { $set: { [`${FIELD}.$`]: 1 } },
      { $set: { [`${FIELD}.$[]`]: 1 } },
      { $set: { [`${FIELD}.$[i]`]: 1 } },
      { $rename: { x: FIELD } },
      { $rename: { [FIELD]: 'x' } },
    ];
    for (const u of cases) {
      expect(() => update(command({ update: 'c', updates: [{ q: {}, u }] }), shared()), JSON.stringify(u)).toThrow(
        PolicyRefusal,
      );
    }
  });

  it('38: $setOnInsert of the tenant is refused; a replacement upsert is stamped; q naming B still carries T', () => {
    expect(() =>
      update(
        command({ update: 'c', updates: [{ q: {}, u: { $setOnInsert: { [FIELD]: 'beta' } }, upsert: true }] }),
        shared(),
      ),
    ).toThrow(PolicyRefusal);
    const replacement = bodyOf(
      update(command({ update: 'c', updates: [{ q: { _id: 7 }, u: { name: 'x' }, upsert: true }] }), shared()),
    );
    expect(replacement.updates[0].u).toEqual({ [FIELD]: 'acme', name: 'x' });
    // Two equalities on the tenant path: the server refuses the upsert (code 54), never stores B.
    const foreign = bodyOf(
      update(
        command({ update: 'c', updates: [{ q: { [FIELD]: 'beta' }, u: { $set: { a: 1 } }, upsert: true }] }),
        shared(),
      ),
    );
    expect(foreign.updates[0].q).toEqual(tenantAnd({ [FIELD]: 'beta' }));
  });

  it('39: replacement documents are stamped with T; a different tenant is refused; T kept as sent', () => {
    const replaced = bodyOf(update(command({ update: 'c', updates: [{ q: {}, u: { _id: 1, a: 1 } }] }), shared()));
    expect(Object.keys(replaced.updates[0].u)).toEqual(['_id', FIELD, 'a']);
    expect(
      refusal(() => update(command({ update: 'c', updates: [{ q: {}, u: { a: 1, [FIELD]: 'beta' } }] }), shared()))
        .rule,
    ).toBe('replacement.foreign-tenant');
    const same = new Map<string, unknown>([
      ['a', 1],
      [FIELD, 'acme'],
      ['keys', numericKeys()],
    ]);
    const kept = update(command({ update: 'c', updates: [{ q: {}, u: same }] }), shared());
    expect(contains(outputBytes(kept), serialize(same))).toBe(true);
    expect(
      refusal(() => update(command({ update: 'c', updates: [{ q: {}, u: { $set: { a: 1 }, b: 1 } }] }), shared())).rule,
    ).toBe('update.mixed');
  });

  it('40: pipeline updates end with {$set: {tenant: {$literal: T}}}', () => {
    const pipelines: Document[][] = [
      [{ $replaceWith: { $mergeObjects: ['$$ROOT', { [FIELD]: 'beta' }] } }],
      [{ $project: { a: 1 } }],
      [{ $set: { a: { $setField: { field: FIELD, input: '$$ROOT', value: 'beta' } } } }, { $unset: ['b'] }],
      [
        { $replaceRoot: { newRoot: { $mergeObjects: ['$$ROOT', { [FIELD]: 'beta' }] } } },
        { $addFields: { b: 1 } },
        { $unset: 'c' },
      ],
    ];
    for (const u of pipelines) {
      const body = bodyOf(update(command({ update: 'c', updates: [{ q: {}, u }] }), shared()));
      expect(body.updates[0].u).toEqual([...u, { $set: { [FIELD]: { $literal: 'acme' } } }]);
    }
    const result = update(command({ update: 'c', updates: [{ q: {}, u: [{ $set: { a: 1 } }] }] }), shared());
    expect(result.notes).toContainEqual({ kind: 'rewrite', rule: 'update.pipeline-tenant', namespace: 'app.c' });
  });

  it('40: only $addFields/$set/$project/$unset/$replaceRoot/$replaceWith stages; JavaScript refused', () => {
    const badStages: Document[] = [
      { $lookup: { from: 'x', as: 'y', pipeline: [] } },
      { $merge: 'x' },
      { $match: {} },
      { $set: {}, $unset: 'a' },
      { $unset: 1 },
      { $unset: ['a', 2] },
      { $replaceRoot: { newRoot: '$a', extra: 1 } },
      { $replaceRoot: {} },
      { $replaceWith: { $where: 'x' } },
      { $set: { a: { $unknownOp: 1 } } },
    ];
    for (const stage of badStages) {
      expect(
        () => update(command({ update: 'c', updates: [{ q: {}, u: [stage] }] }), shared()),
        JSON.stringify(stage),
      ).toThrow(PolicyRefusal);
    }
    const fn = { $function: { body: 'function(){while(1){}}', args: [], lang: 'js' } };
    expect(() => update(command({ update: 'c', updates: [{ q: {}, u: [{ $set: { a: fn } }] }] }), shared())).toThrow(
      PolicyRefusal,
    );
    expect(() =>
      update(
        command({ update: 'c', updates: [{ q: {}, u: [{ $set: { a: 1 } }], c: { x: new Code('1') } }] }),
        shared(),
      ),
    ).toThrow(PolicyRefusal);
  });

  it('41: a repeated update operator ({$set, $set}) is refused', () => {
    const u = joinDocuments({ $set: { a: 1 } }, { $set: { [FIELD]: 'beta' } });
    const input: CommandInput = {
      ...command({ update: 'c' }),
      sequences: new Map([['updates', [documentWith('q', serialize({}), 'u', u)]]]),
    };
    const error = refusal(() => update(input, shared()));
    expect(error.rule).toMatch(/duplicate/);
    expect(error.code).toBe(ErrorCodes.BadValue);
  });

  it('18: arrayFilters, hint, sort, collation validated; $where in q or arrayFilters refused', () => {
    const statement = {
      q: {},
      u: { $set: { 'a.$[e].x': 1 } },
      arrayFilters: [{ 'e.y': 1 }],
      hint: { [FIELD]: 1, a: 1 },
      collation: { locale: 'en' },
    };
    const ok = update(command({ update: 'c', updates: [statement] }), shared());
    expect(bodyOf(ok).updates[0]).toMatchObject({
      arrayFilters: [{ 'e.y': 1 }],
      hint: { [FIELD]: 1, a: 1 },
      collation: { locale: 'en' },
    });
    // 60: in shared collections a hinted key pattern must start with the tenant field; 9: no loose string collation.
    expect(
      refusal(() => update(command({ update: 'c', updates: [{ ...statement, hint: { a: 1 } }] }), shared())).rule,
    ).toBe('hint.not-tenant-prefixed');
    expect(
      bodyOf(update(command({ update: 'c', updates: [{ ...statement, hint: { a: 1 } }] }), perTenant())).updates[0]
        .hint,
    ).toEqual({ a: 1 });
    expect(
      refusal(() =>
        update(
          command({ update: 'c', updates: [{ ...statement, collation: { locale: 'en', strength: 2 } }] }),
          shared(),
        ),
      ).rule,
    ).toBe('collation.tenant-string');
    expect(
      refusal(() => update(command({ update: 'c', updates: [{ ...statement, sort: { $where: 1 } }] }), shared())).rule,
    ).toBe('sort.invalid');
    expect(() =>
      update(command({ update: 'c', updates: [{ q: { $where: 'true' }, u: { $set: { a: 1 } } }] }), shared()),
    ).toThrow(PolicyRefusal);
    expect(() =>
      update(
        command({ update: 'c', updates: [{ q: {}, u: { $set: { a: 1 } }, arrayFilters: [{ $where: 'x' }] }] }),
        shared(),
      ),
    ).toThrow(PolicyRefusal);
    expect(
      refusal(() =>
        update(command({ update: 'c', updates: [{ q: {}, u: { $set: { a: 1 } }, upsertSupplied: true }] }), shared()),
      ).rule,
    ).toBe('update.unknown-field');
    expect(
      refusal(() => update(command({ update: 'c', updates: [{ q: 1, u: { $set: { a: 1 } } }] }), shared())).rule,
    ).toBe('filter.not-document');
  });

  it('43: bypassDocumentValidation and rawData are refused (validators back the tenant rules up)', () => {
    expect(
      refusal(() =>
        update(
          command({ update: 'c', updates: [{ q: {}, u: { $set: { a: 1 } } }], bypassDocumentValidation: true }),
          shared(),
        ),
      ).rule,
    ).toBe('field.bypass-validation');
    expect(refusal(() => update(command({ update: 'c', updates: [], rawData: true }), shared())).rule).toBe(
      'field.internal',
    );
    expect(refusal(() => insert(command({ insert: 'c', documents: [], rawData: true }), shared())).rule).toBe(
      'field.internal',
    );
  });

  it('60: a collection-scan hint on a write is dropped in shared collections, as on reads (issue 14)', () => {
    for (const hint of [{ $natural: 1 }, { $natural: -1 }, { _id: 1 }, { _id: -1 }, '_id_']) {
      const u = update(
        command({ update: 'c', updates: [{ q: { a: 1 }, u: { $set: { b: 1 } }, hint, multi: false }] }),
        shared(),
      );
      // The tenant predicate still bounds the statement: one of the tenant's own documents.
      expect(bodyOf(u).updates[0]).toEqual({
        q: tenantAnd({ a: 1 }),
        u: { $set: { b: 1 }, $setOnInsert: { [FIELD]: 'acme' } },
        multi: false,
      });
      expect(u.notes).toContainEqual({ kind: 'rewrite', rule: 'hint.scan-dropped', namespace: 'app.c' });
      const d = deleteHandler(command({ delete: 'c', deletes: [{ q: { a: 1 }, limit: 1, hint }] }), shared());
      expect(bodyOf(d).deletes[0]).toEqual({ q: tenantAnd({ a: 1 }), limit: 1 });
      const f = findAndModify(command({ findAndModify: 'c', query: { a: 1 }, remove: true, hint }), shared());
      expect(bodyOf(f).hint).toBeUndefined();
      expect(bodyOf(f).query).toEqual(tenantAnd({ a: 1 }));
      const b = bulkWrite(
        command({ bulkWrite: 1 }, 'admin', {
          ops: [{ delete: 0, filter: {}, multi: false, hint }],
          nsInfo: [{ ns: 'app.c' }],
        }),
        shared(),
      );
      expect(sequenceOf(b, 'ops')).toEqual([{ delete: 0, filter: tenantAnd({}), multi: false }]);
      // Per-tenant namespaces forward it as sent.
      expect(
        bodyOf(deleteHandler(command({ delete: 'c', deletes: [{ q: {}, limit: 1, hint }] }), perTenant())).deletes[0]
          .hint,
      ).toEqual(hint);
    }
    // Other hints keep their rules.
    expect(
      refusal(() =>
        deleteHandler(command({ delete: 'c', deletes: [{ q: {}, limit: 1, hint: { _id: 1, a: 1 } }] }), shared()),
      ).rule,
    ).toBe('hint.not-tenant-prefixed');
    expect(
      refusal(() => findAndModify(command({ findAndModify: 'c', remove: true, hint: { $natural: 2 } }), shared())).rule,
    ).toBe('hint.not-tenant-prefixed');
  });

  it('database-per-tenant: no wrapping or stamping, forbidden operators still refused', () => {
    const body = bodyOf(update(command({ update: 'c', updates: [{ q: { a: 1 }, u: { b: 1 } }] }), perTenant()));
    expect(body.updates[0]).toEqual({ q: { a: 1 }, u: { b: 1 } });
    expect(body.$db).toBe('acme__app');
    expect(() =>
      update(command({ update: 'c', updates: [{ q: { $where: 'sleep(100)' }, u: { b: 1 } }] }), perTenant()),
    ).toThrow(PolicyRefusal);
    expect(
      bodyOf(update(command({ update: 'c', updates: [{ q: {}, u: [{ $set: { a: 1 } }] }] }), perTenant())).updates[0].u,
    ).toEqual([{ $set: { a: 1 } }]);
  });
});

// ---------------------------------------------------------------- delete

describe('delete (catalogue 18)', () => {
  it("18: delete {} removes only T's documents; limit kept", () => {
    const result = deleteHandler(
      command({
        delete: 'orders',
        deletes: [
          { q: {}, limit: 0 },
          { q: { big: bigLong }, limit: 1 },
        ],
      }),
      shared(),
    );
    const body = bodyOf(result);
    expect(body.deletes).toEqual([
      { q: tenantAnd({}), limit: 0 },
      { q: tenantAnd({ big: 9007199254740993n }), limit: 1 },
    ]);
    expect(result.reply.scrubErrors).toBe(true);
  });

  it('42: deletes in a kind-1 sequence are rewritten and stay a sequence', () => {
    const result = deleteHandler(
      command({ delete: 'orders' }, 'app', { deletes: [{ q: { keys: numericKeys() }, limit: 1 }] }),
      shared(),
    );
    expect(sequenceOf(result, 'deletes')[0]!.q.$and[0]).toEqual({ [FIELD]: { $eq: 'acme' } });
    expect(contains(outputBytes(result), numericKeysBytes())).toBe(true);
  });

  it('refuses unknown statement fields and $where; database-per-tenant is not wrapped', () => {
    expect(
      refusal(() => deleteHandler(command({ delete: 'c', deletes: [{ q: {}, limit: 0, x: 1 }] }), shared())).rule,
    ).toBe('delete.unknown-field');
    expect(() =>
      deleteHandler(command({ delete: 'c', deletes: [{ q: { $where: '1' }, limit: 0 }] }), perTenant()),
    ).toThrow(PolicyRefusal);
    expect(
      bodyOf(deleteHandler(command({ delete: 'c', deletes: [{ q: {}, limit: 0 }] }), perTenant())).deletes[0].q,
    ).toEqual({});
  });
});

// ---------------------------------------------------------------- findAndModify

describe('findAndModify (catalogue 18, 39, 40)', () => {
  it('18: both spellings; query wrapped; update operators kept; fields, sort validated', () => {
    for (const name of ['findAndModify', 'findandmodify']) {
      const input = command({
        [name]: 'orders',
        query: { a: 1 },
        update: { $inc: { n: bigLong } },
        new: true,
        fields: { a: 1 },
        sort: { a: 1 },
      });
      const result = findAndModify(input, shared());
      const body = bodyOf(result);
      expect(Object.keys(body)[0]).toBe(name);
      expect(body.query).toEqual(tenantAnd({ a: 1 }));
      expect(body.update).toEqual({ $inc: { n: 9007199254740993n }, $setOnInsert: { [FIELD]: 'acme' } });
      expect(WRITE_HANDLERS[name]).toBe(findAndModify);
    }
  });

  it('18: no query becomes the tenant predicate alone; remove keeps its flag', () => {
    const body = bodyOf(findAndModify(command({ findAndModify: 'c', remove: true }), shared()));
    expect(body.query).toEqual({ $and: [{ [FIELD]: { $eq: 'acme' } }] });
    expect(body.remove).toBe(true);
  });

  it('39/40: replacement stamped, pipeline re-sets T, foreign tenant refused', () => {
    expect(
      bodyOf(findAndModify(command({ findAndModify: 'c', query: {}, update: { a: 1 }, upsert: true }), shared()))
        .update,
    ).toEqual({
      [FIELD]: 'acme',
      a: 1,
    });
    expect(
      bodyOf(findAndModify(command({ findAndModify: 'c', query: {}, update: [{ $set: { a: 1 } }] }), shared())).update,
    ).toEqual([{ $set: { a: 1 } }, { $set: { [FIELD]: { $literal: 'acme' } } }]);
    expect(
      refusal(() => findAndModify(command({ findAndModify: 'c', update: { [FIELD]: 'beta' } }), shared())).rule,
    ).toBe('replacement.foreign-tenant');
    expect(() =>
      findAndModify(command({ findAndModify: 'c', update: { $set: { [FIELD]: 'beta' } } }), shared()),
    ).toThrow(PolicyRefusal);
    expect(() =>
      findAndModify(
        command({ findAndModify: 'c', fields: { a: { $function: { body: 'x', args: [], lang: 'js' } } } }),
        shared(),
      ),
    ).toThrow(PolicyRefusal);
    expect(() =>
      findAndModify(
        command({ findAndModify: 'c', query: {}, update: { $set: { a: 1 } }, let: { x: new Code('1') } }),
        shared(),
      ),
    ).toThrow(PolicyRefusal);
  });

  it('43: bypassDocumentValidation refused; UUID collection refused', () => {
    expect(
      refusal(() =>
        findAndModify(command({ findAndModify: 'c', remove: true, bypassDocumentValidation: true }), shared()),
      ).rule,
    ).toBe('field.bypass-validation');
    expect(refusal(() => findAndModify(command({ findAndModify: new UUID(), remove: true }), shared())).rule).toBe(
      'namespace.not-string',
    );
  });
});

// ---------------------------------------------------------------- maxTimeMS (catalogue 15, 62)

describe('maxTimeMS cap', () => {
  const run = (maxTimeMS?: unknown): RewriteResult =>
    insert(command({ insert: 'c', documents: [{}], ...(maxTimeMS === undefined ? {} : { maxTimeMS }) }), shared());

  it('adds the cap when absent or 0, lowers a larger value, keeps a smaller one byte for byte', () => {
    expect(bodyOf(run()).maxTimeMS).toBe(CAP);
    expect(run().notes).toContainEqual({ kind: 'rewrite', rule: 'maxTimeMS.cap' });
    expect(bodyOf(run(0)).maxTimeMS).toBe(CAP);
    expect(bodyOf(run(60_000)).maxTimeMS).toBe(CAP);
    const small = run(Long.fromNumber(100));
    expect(bodyOf(small).maxTimeMS).toBe(100n);
    expect(small.notes.some((note) => note.rule === 'maxTimeMS.cap')).toBe(false);
    expect(refusal(() => run(-1)).rule).toBe('maxTimeMS.invalid');
    expect(refusal(() => run('10')).rule).toBe('maxTimeMS.invalid');
  });

  it('applies to every write command', () => {
    const handlers: Array<[CommandHandler, CommandInput]> = [
      [update, command({ update: 'c', updates: [] })],
      [deleteHandler, command({ delete: 'c', deletes: [] })],
      [findAndModify, command({ findAndModify: 'c', remove: true })],
      [bulkWrite, command({ bulkWrite: 1, ops: [], nsInfo: [{ ns: 'app.c' }] }, 'admin')],
    ];
    for (const [handler, input] of handlers) expect(bodyOf(handler(input, shared())).maxTimeMS).toBe(CAP);
  });
});

// ---------------------------------------------------------------- bulkWrite

describe('bulkWrite (catalogue 19)', () => {
  const ops = [
    { insert: 0, document: { _id: 1, big: bigLong } },
    { update: 1, filter: { a: 1 }, updateMods: { $set: { b: 1 } }, multi: true },
    { update: 0, filter: {}, updateMods: { b: 2 }, upsert: true },
    { update: 0, filter: {}, updateMods: [{ $set: { b: 3 } }] },
    { delete: 1, filter: {}, multi: true },
  ];
  const nsInfo = [{ ns: 'app.orders' }, { ns: 'app.items' }];

  it('19: every op rewritten like its single-collection form; sequences stay sequences; cursor registered', () => {
    const result = bulkWrite(command({ bulkWrite: 1, ordered: true }, 'admin', { ops, nsInfo }), shared());
    expect(bodyOf(result)).toMatchObject({ bulkWrite: 1, ordered: true, $db: 'admin' });
    expect(sequenceOf(result, 'nsInfo')).toEqual(nsInfo);
    expect(sequenceOf(result, 'ops')).toEqual([
      { insert: 0, document: { _id: 1, [FIELD]: 'acme', big: 9007199254740993n } },
      {
        update: 1,
        filter: tenantAnd({ a: 1 }),
        updateMods: { $set: { b: 1 }, $setOnInsert: { [FIELD]: 'acme' } },
        multi: true,
      },
      { update: 0, filter: tenantAnd({}), updateMods: { [FIELD]: 'acme', b: 2 }, upsert: true },
      {
        update: 0,
        filter: tenantAnd({}),
        updateMods: [{ $set: { b: 3 } }, { $set: { [FIELD]: { $literal: 'acme' } } }],
      },
      { delete: 1, filter: tenantAnd({}), multi: true },
    ]);
    expect(result.reply).toEqual({
      scrubErrors: true,
      mapNames: false,
      registerCursor: { db: 'admin', coll: '$cmd.bulkWrite' },
    });
    expect(result.notes).toContainEqual({ kind: 'rewrite', rule: 'filter.tenant', namespace: 'app.items' });
  });

  it('19: ops and nsInfo in the body are rewritten in the body; names mapped for database-per-tenant', () => {
    const result = bulkWrite(command({ bulkWrite: 1, ops, nsInfo }, 'admin'), perTenant());
    const body = bodyOf(result);
    expect(body.nsInfo).toEqual([{ ns: 'acme__app.orders' }, { ns: 'acme__app.items' }]);
    expect(body.ops[1]).toEqual(ops[1]);
    expect(body.$db).toBe('admin');
    expect(result.sequences.size).toBe(0);
    expect(result.reply.mapNames).toBe(true);
  });

  it('19: one foreign, denied or system namespace refuses the whole command', () => {
    for (const bad of ['forbidden.c', 'admin.system.users', 'local.oplog.rs', 'ref.countries']) {
      expect(
        () =>
          bulkWrite(command({ bulkWrite: 1 }, 'admin', { ops: [], nsInfo: [{ ns: 'app.c' }, { ns: bad }] }), shared()),
        bad,
      ).toThrow(PolicyRefusal);
    }
    expect(
      refusal(() => bulkWrite(command({ bulkWrite: 1 }, 'admin', { ops: [], nsInfo: [{ ns: 'nodot' }] }), shared()))
        .rule,
    ).toBe('namespace.invalid');
  });

  it('19: unknown nsInfo and op fields, rawData, bad indexes, other databases are refused', () => {
    const run = (body: Document, sequences: Record<string, Doc[]>, db = 'admin'): PolicyRefusal =>
      refusal(() => bulkWrite(command(body, db, sequences), shared()));
    expect(run({ bulkWrite: 1 }, { ops: [], nsInfo: [{ ns: 'app.c', collectionUUID: new UUID() }] }).rule).toBe(
      'bulkWrite.unknown-field',
    );
    expect(run({ bulkWrite: 1, rawData: true }, { ops: [], nsInfo }).rule).toBe('field.internal');
    expect(run({ bulkWrite: 1 }, { ops: [{ insert: 2, document: {} }], nsInfo }).rule).toBe('bulkWrite.bad-index');
    expect(run({ bulkWrite: 1 }, { ops: [{ insert: 0, document: {}, extra: 1 }], nsInfo }).rule).toBe(
      'bulkWrite.unknown-field',
    );
    expect(run({ bulkWrite: 1 }, { ops: [{ document: {}, insert: 0 }], nsInfo }).rule).toBe('bulkWrite.bad-op');
    expect(run({ bulkWrite: 1 }, { ops: [{ insert: 0, document: { [FIELD]: 'beta' } }], nsInfo }).rule).toBe(
      'insert.foreign-tenant',
    );
    expect(run({ bulkWrite: 1 }, { ops: [], nsInfo: [] }).rule).toBe('bulkWrite.no-namespace');
    expect(run({ bulkWrite: 1 }, { ops: [{}], nsInfo }).rule).toBe('bulkWrite.bad-op');
    expect(run({ bulkWrite: 1, cursor: { batchSize: 1, tailable: true } }, { ops: [], nsInfo }).rule).toBe(
      'bulkWrite.unknown-field',
    );
    expect(run({ bulkWrite: 1 }, { ops: [], nsInfo }, 'app').rule).toBe('bulkWrite.not-admin');
    expect(() =>
      bulkWrite(
        command({ bulkWrite: 1 }, 'admin', {
          ops: [{ update: 0, filter: {}, updateMods: { $rename: { a: FIELD } } }],
          nsInfo,
        }),
        shared(),
      ),
    ).toThrow(PolicyRefusal);
    expect(() =>
      bulkWrite(
        command({ bulkWrite: 1 }, 'admin', { ops: [{ delete: 0, filter: { $where: '1' } }], nsInfo }),
        shared(),
      ),
    ).toThrow(PolicyRefusal);
  });
});

// ---------------------------------------------------------------- moreToCome, error scrubbing

describe('w:0 and replies (catalogue 50, 61)', () => {
  it('50: a moreToCome insert is rewritten exactly like an acknowledged one', () => {
    const docs = [{ _id: 1 }, { _id: 2, [FIELD]: 'acme' }];
    const acknowledged = insert(command({ insert: 'c', writeConcern: { w: 0 } }, 'app', { documents: docs }), shared());
    const unacknowledged = insert(
      command({ insert: 'c', writeConcern: { w: 0 } }, 'app', { documents: docs }, true),
      shared(),
    );
    expect(Buffer.from(outputBytes(unacknowledged)).equals(Buffer.from(outputBytes(acknowledged)))).toBe(true);
    expect(sequenceOf(unacknowledged, 'documents').every((doc) => doc[FIELD] === 'acme')).toBe(true);
    expect(
      refusal(() => insert(command({ insert: 'c' }, 'app', { documents: [{ [FIELD]: 'beta' }] }, true), shared())).rule,
    ).toBe('insert.foreign-tenant');
  });

  it('61: every write reply has its error values scrubbed (duplicate-key oracle)', () => {
    const results = [
      insert(command({ insert: 'c', documents: [{ _id: new Binary(Buffer.alloc(16), 4) }] }), shared()),
      update(command({ update: 'c', updates: [] }), shared()),
      deleteHandler(command({ delete: 'c', deletes: [] }), shared()),
      findAndModify(command({ findAndModify: 'c', remove: true }), shared()),
      bulkWrite(command({ bulkWrite: 1, ops: [], nsInfo: [{ ns: 'app.c' }] }, 'admin'), shared()),
    ];
    for (const result of results) expect(result.reply.scrubErrors).toBe(true);
  });

  it("61: with that plan, a duplicate-key error on B's _id reaches T without B's values", () => {
    const result = insert(command({ insert: 'c', documents: [{ _id: 'beta-invoice-7' }] }), shared());
    expect(result.reply.scrubErrors).toBe(true);
    const reply = serialize({
      ok: 1,
      n: 0,
      writeErrors: [
        {
          index: 0,
          code: 11000,
          errmsg: 'E11000 duplicate key error collection: app.c index: _id_ dup key: { _id: "beta-invoice-7" }',
          keyPattern: { _id: 1 },
          keyValue: { _id: 'beta-invoice-7' },
        },
      ],
    });
    const scrubbed = scrubErrorValues(reply) ?? reply;
    expect(Buffer.from(scrubbed).includes('beta-invoice-7')).toBe(false);
    expect(decode(scrubbed).writeErrors[0].code).toBe(11000);
  });
});

describe('catalogue 9: the simple collation pinned for a string tenant (pinSimpleCollation)', () => {
  const SIMPLE = { locale: 'simple' };
  const pinned = (namespaces: NamespaceResolver = sharedResolver()): TenantContext => context(namespaces, 'acme', true);
  const unpinned = (namespaces: NamespaceResolver = sharedResolver()): TenantContext =>
    context(namespaces, 'acme', false);
  const noteOf = (result: RewriteResult): string[] => result.notes.map((note) => note.rule);

  it('update and delete statements without a collation get {locale: "simple"}; one with a collation keeps it as sent', () => {
    const clientCollation = new Map<string, unknown>([
      ['strength', 3],
      ['locale', 'en'],
    ]);
    const updates = [
      { q: { a: 1 }, u: { $set: { b: 1 } } },
      new Map<string, unknown>([
        ['q', {}],
        ['u', { $set: { b: 2 } }],
        ['collation', clientCollation],
      ]),
    ];
    const updated = update(command({ update: 'c', updates }), pinned());
    const statements = bodyOf(updated).updates;
    expect(statements[0]).toEqual({
      q: tenantAnd({ a: 1 }),
      u: { $set: { b: 1 }, $setOnInsert: { [FIELD]: 'acme' } },
      collation: SIMPLE,
    });
    expect(statements[1].collation).toEqual({ strength: 3, locale: 'en' });
    expect(contains(outputBytes(updated), serialize(clientCollation))).toBe(true);
    expect(updated.notes).toContainEqual({ kind: 'rewrite', rule: 'collation.simple', namespace: 'app.c' });

    const deleted = deleteHandler(command({ delete: 'c', deletes: [{ q: {}, limit: 0 }] }), pinned());
    expect(bodyOf(deleted).deletes).toEqual([{ q: tenantAnd({}), limit: 0, collation: SIMPLE }]);
    expect(noteOf(deleted)).toContain('collation.simple');
    // Kind-1 sequences stay sequences, each statement pinned.
    const sequenced = deleteHandler(
      command({ delete: 'c' }, 'app', {
        deletes: [
          { q: {}, limit: 1 },
          { q: { a: 1 }, limit: 0 },
        ],
      }),
      pinned(),
    );
    expect(sequenceOf(sequenced, 'deletes').map((statement) => statement.collation)).toEqual([SIMPLE, SIMPLE]);
  });

  it('findAndModify without a collation gets it at the top level; strength 1-2 is still refused', () => {
    const result = findAndModify(
      command({ findAndModify: 'c', query: { a: 1 }, update: { $set: { b: 1 } } }),
      pinned(),
    );
    const body = bodyOf(result);
    expect(body.collation).toEqual(SIMPLE);
    expect(body.query).toEqual(tenantAnd({ a: 1 }));
    expect(noteOf(result)).toContain('collation.simple');
    expect(
      bodyOf(findAndModify(command({ findandmodify: 'c', remove: true, collation: { locale: 'fr' } }), pinned()))
        .collation,
    ).toEqual({ locale: 'fr' });
    expect(
      refusal(() =>
        findAndModify(
          command({ findAndModify: 'c', remove: true, collation: { locale: 'en', strength: 1 } }),
          pinned(),
        ),
      ).rule,
    ).toBe('collation.tenant-string');
  });

  it('bulkWrite update and delete ops are pinned; inserts are not (nothing compares there)', () => {
    const ops = [
      { insert: 0, document: { _id: 1 } },
      { update: 0, filter: { a: 1 }, updateMods: { $set: { b: 1 } } },
      { delete: 0, filter: {}, multi: true },
      { delete: 1, filter: {}, multi: true },
    ];
    const namespaces: NamespaceResolver = {
      ...sharedResolver(),
      resolve: (db, coll, access) =>
        coll === 'own' ? perTenantResolver().resolve(db, coll, access) : sharedResolver().resolve(db, coll, access),
    };
    const result = bulkWrite(
      command({ bulkWrite: 1 }, 'admin', { ops, nsInfo: [{ ns: 'app.orders' }, { ns: 'app.own' }] }),
      pinned(namespaces),
    );
    const rewritten = sequenceOf(result, 'ops');
    expect(rewritten.map((op) => op.collation)).toEqual([undefined, SIMPLE, SIMPLE, undefined]);
    expect(rewritten[3]).toEqual(ops[3]);
  });

  it('pinSimpleCollation false leaves every write as before, byte for byte', () => {
    const inputs: Array<[CommandHandler, CommandInput]> = [
      [update, command({ update: 'c', updates: [{ q: {}, u: { $set: { b: 1 } } }] })],
      [deleteHandler, command({ delete: 'c', deletes: [{ q: {}, limit: 0 }] })],
      [findAndModify, command({ findAndModify: 'c', remove: true })],
      [bulkWrite, command({ bulkWrite: 1 }, 'admin', { ops: [{ delete: 0, filter: {} }], nsInfo: [{ ns: 'app.c' }] })],
    ];
    for (const [handler, input] of inputs) {
      const result = handler(input, unpinned());
      expect(contains(outputBytes(result), Buffer.from('collation'))).toBe(false);
      expect(noteOf(result)).not.toContain('collation.simple');
      // With the pin the same command differs only by the added collation.
      const withPin = handler(input, pinned());
      expect(outputBytes(withPin).length - outputBytes(result).length).toBe(
        serialize({ collation: SIMPLE }).length - 5,
      );
    }
  });

  it('namespaces that are not tenant-filtered are never pinned', () => {
    const result = update(
      command({ update: 'c', updates: [{ q: {}, u: { $set: { b: 1 } } }] }),
      pinned(perTenantResolver()),
    );
    expect(bodyOf(result).updates[0].collation).toBeUndefined();
    expect(
      bodyOf(
        findAndModify(command({ findAndModify: 'c', remove: true }), pinned(perTenantResolver('collection-prefix'))),
      ).collation,
    ).toBeUndefined();
  });
});
