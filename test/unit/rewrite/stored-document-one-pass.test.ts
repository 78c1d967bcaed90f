/**
 * The one pass over documents to store (src/policy/stored-document.ts, used by insert, bulkWrite
 * inserts and replacements in src/rewrite/writes.ts) against the passes it replaced, kept here as
 * the reference oracle: RawDocument.parse, assertUniqueNames, the top-level `$`/dotted loop,
 * assertNoForbidden({literalStrings: true}) and the tenant check / splice (catalogue 1, 2, 8, 11,
 * 42, 51, G3, G8). A hostile corpus and random documents go through the request parser (the wire
 * rules every client document meets) and then through both; outcomes (refusal rule, code and
 * message, or the output bytes) must be identical.
 */
import {
  BSONSymbol,
  Binary,
  Code,
  DBRef,
  Double,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  serialize,
  Timestamp,
} from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, PolicyRefusal, ProxyError } from '../../../src/errors.js';
import type { NamespaceResolver, ResolvedNamespace, RewriteResult, TenantContext } from '../../../src/policy/types.js';
import { assertNoForbidden } from '../../../src/policy/validate.js';
import { StoredDocumentScan, scanStoredDocument } from '../../../src/policy/stored-document.js';
import { MAX_USER_DOCUMENT_SIZE, bulkWrite, findAndModify, insert, update } from '../../../src/rewrite/writes.js';
import { decodeCommand } from '../../../src/server/command-view.js';
import { BsonType, DocumentFact, validateDocumentFacts } from '../../../src/wire/bson-scan.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';
import {
  RawDocument,
  arrayItems,
  encodeElements,
  sameValue,
  type RawElement,
  type RawValue,
} from '../../../src/wire/raw-bson.js';

const FIELD = 'tenantId';
const MAX_DEPTH = 12;

// ---------------------------------------------------------------- the reference oracle (the old passes)

function refuse(rule: string, message: string, code: number = ErrorCodes.Unauthorized): never {
  throw new PolicyRefusal(rule, message, code);
}

function referenceAssertUniqueNames(doc: RawDocument, where: string): void {
  const names = new Set<string>();
  for (const { name } of doc.elements) {
    if (names.has(name)) refuse('document.duplicate-key', `${where} repeats the field "${name}"`, ErrorCodes.BadValue);
    names.add(name);
  }
}

/** The stamp of src/rewrite/writes.ts before the one pass, verbatim in its checks. */
function referenceStamp(
  value: RawValue,
  context: TenantContext,
  tenantFiltered: boolean,
  where: string,
  rulePrefix: 'insert' | 'replacement',
): { value: RawValue; stamped: boolean } {
  if (value.type !== BsonType.document)
    refuse('write.not-document', `${where} must be a document`, ErrorCodes.TypeMismatch);
  const doc = RawDocument.parse(value.value);
  referenceAssertUniqueNames(doc, where);
  for (const { name } of doc.elements) {
    if (name.startsWith('$'))
      refuse('document.dollar-field', `${where}: top-level field names may not start with "$"`, ErrorCodes.BadValue);
    if (name.includes('.'))
      refuse('document.dotted-field', `${where}: top-level field names may not contain "."`, ErrorCodes.BadValue);
  }
  assertNoForbidden(value, where, { literalStrings: true });
  if (!tenantFiltered) return { value, stamped: false };
  const existing = doc.get(context.field);
  if (existing !== undefined) {
    if (existing.type === BsonType.array || existing.type === BsonType.null || existing.type === BsonType.undefined) {
      refuse(`${rulePrefix}.tenant-not-scalar`, `${where}: the tenant field must be a single value`);
    }
    if (!sameValue(existing, context.tenantValue)) {
      refuse(`${rulePrefix}.foreign-tenant`, `${where}: the document names another tenant`);
    }
    return { value, stamped: false };
  }
  const stamp: RawElement = { name: context.field, type: context.tenantValue.type, value: context.tenantValue.value };
  const idIndex = doc.elements.findIndex((element) => element.name === '_id');
  const elements = [...doc.elements];
  elements.splice(idIndex + 1, 0, stamp);
  const bytes = new RawDocument(elements).toBytes();
  if (bytes.length > MAX_USER_DOCUMENT_SIZE) {
    refuse(
      'document.too-large',
      `${where}: with the tenant field the document exceeds ${MAX_USER_DOCUMENT_SIZE} bytes`,
      ErrorCodes.BSONObjectTooLarge,
    );
  }
  return { value: { type: BsonType.document, value: bytes }, stamped: true };
}

/** The old array encoder (encodeElements with String(index) names). */
const referenceArrayOf = (values: readonly RawValue[]): Uint8Array =>
  encodeElements(values.map((v, index) => ({ name: String(index), type: v.type, value: v.value })));

// ---------------------------------------------------------------- contexts, frames, outcomes

function rawValue(value: unknown): RawValue {
  const bytes = serialize({ v: value });
  return { type: bytes[4]!, value: bytes.subarray(7, bytes.length - 1) };
}

function resolver(tenantFiltered: boolean): NamespaceResolver {
  return {
    resolve: (db, coll): ResolvedNamespace =>
      tenantFiltered
        ? { db, coll, model: 'shared-collection', access: 'scoped', tenantFiltered: true }
        : { db: `acme__${db}`, coll, model: 'database-per-tenant', access: 'scoped', tenantFiltered: false },
    resolveDatabase: (db) => ({ db, model: 'shared-collection' }),
    toClient: (db, coll) => ({ db, coll }),
  };
}

interface Setting {
  label: string;
  context: TenantContext;
  tenantFiltered: boolean;
}

const setting = (label: string, tenantValue: unknown, tenantFiltered: boolean): Setting => ({
  label,
  tenantFiltered,
  context: {
    tenant: 'acme',
    tenantValue: rawValue(tenantValue),
    field: FIELD,
    namespaces: resolver(tenantFiltered),
    maxTimeMS: 5_000,
    pinSimpleCollation: false,
  },
});

const SETTINGS: readonly Setting[] = [
  setting('string tenant, shared', 'acme', true),
  setting('int64 tenant, shared', Long.fromNumber(42), true),
  setting('database per tenant', 'acme', false),
];

type Outcome =
  | { kind: 'wire'; code: number }
  | { kind: 'refusal'; rule: string; code: number; message: string }
  | { kind: 'error'; name: string; code: number | undefined; message: string }
  | { kind: 'ok'; bytes: string[]; stamped: boolean };

function outcomeOf(error: unknown): Outcome {
  if (error instanceof PolicyRefusal)
    return { kind: 'refusal', rule: error.rule, code: error.code, message: error.message };
  if (error instanceof ProxyError) return { kind: 'error', name: error.name, code: error.code, message: error.message };
  throw error;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** An insert of `docs` as a kind-1 sequence or in the body, as a client frame. */
function insertFrame(docs: readonly Uint8Array[], form: 'sequence' | 'body'): Buffer {
  if (form === 'sequence') {
    const body = serialize({ insert: 'orders', ordered: true, $db: 'app' });
    return encodeOpMsg({
      requestId: 1,
      responseTo: 0,
      body,
      sequences: [{ identifier: 'documents', documents: docs.map((doc) => Buffer.from(doc)) }],
    });
  }
  // The array is assembled from the raw bytes so that malformed documents reach the parser as they are.
  const array = Buffer.concat([
    Buffer.alloc(4),
    ...docs.map((doc, index) => Buffer.concat([Buffer.from([0x03]), Buffer.from(`${index}\0`), doc])),
    Buffer.from([0]),
  ]);
  array.writeInt32LE(array.length, 0);
  const head = serialize({ insert: 'orders' });
  const tail = serialize({ ordered: true, $db: 'app' });
  const body = Buffer.concat([
    head.subarray(0, head.length - 1),
    Buffer.from([0x04]),
    Buffer.from('documents\0'),
    array,
    tail.subarray(4),
  ]);
  body.writeInt32LE(body.length, 0);
  return encodeOpMsg({ requestId: 1, responseTo: 0, body });
}

function documentsOut(result: RewriteResult, form: 'sequence' | 'body'): Uint8Array[] {
  if (form === 'sequence') return [...(result.sequences.get('documents') ?? [])];
  const array = result.body.get('documents')!;
  return arrayItems(array).map((item) => item.value);
}

/** The new path: the request parser, then the insert handler with its one pass. */
function viaHandler(docs: readonly Uint8Array[], form: 'sequence' | 'body', s: Setting): Outcome {
  let view;
  try {
    view = decodeCommand(insertFrame(docs, form), { maxBsonDepth: MAX_DEPTH });
  } catch (error) {
    return { kind: 'wire', code: (error as ProxyError).code };
  }
  const input = view.engineInput();
  expect(input.validated).toBe(true);
  try {
    const result = insert(input, s.context);
    const out = documentsOut(result, form);
    if (form === 'body') {
      // The body's array, byte for byte as the old encoder wrote it.
      expect(hex(result.body.get('documents')!.value)).toBe(
        hex(referenceArrayOf(out.map((value) => ({ type: BsonType.document, value })))),
      );
    }
    return {
      kind: 'ok',
      bytes: out.map(hex),
      stamped: result.notes.some((note) => note.rule === 'insert.stamp'),
    };
  } catch (error) {
    return outcomeOf(error);
  }
}

/** The old path: the same parser, then the old passes per document, in order. */
function viaReference(docs: readonly Uint8Array[], form: 'sequence' | 'body', s: Setting): Outcome {
  let view;
  try {
    view = decodeCommand(insertFrame(docs, form), { maxBsonDepth: MAX_DEPTH });
  } catch (error) {
    return { kind: 'wire', code: (error as ProxyError).code };
  }
  const input = view.engineInput();
  const items =
    form === 'sequence'
      ? input.sequences.get('documents')!.map((value) => ({ type: BsonType.document, value }))
      : RawDocument.parse(input.body.get('documents')!.value).elements.map(({ type, value }) => ({ type, value }));
  try {
    let stamped = false;
    const out = items.map((item, index) => {
      const done = referenceStamp(item, s.context, s.tenantFiltered, `documents.${index}`, 'insert');
      stamped ||= done.stamped;
      return hex(done.value.value);
    });
    return { kind: 'ok', bytes: out, stamped };
  } catch (error) {
    return outcomeOf(error);
  }
}

function expectSame(docs: readonly Uint8Array[]): Outcome[] {
  const outcomes: Outcome[] = [];
  for (const s of SETTINGS) {
    for (const form of ['sequence', 'body'] as const) {
      const expected = viaReference(docs, form, s);
      const actual = viaHandler(docs, form, s);
      expect(actual, `${s.label}, ${form}`).toEqual(expected);
      outcomes.push(actual);
    }
  }
  return outcomes;
}

// ---------------------------------------------------------------- hand-made bytes

/** A document from raw elements: [type, name bytes, value bytes]. */
function rawDocument(elements: ReadonlyArray<readonly [number, Uint8Array | string, Uint8Array]>): Buffer {
  const parts = elements.map(([type, name, value]) =>
    Buffer.concat([Buffer.from([type]), typeof name === 'string' ? Buffer.from(name) : name, Buffer.from([0]), value]),
  );
  const out = Buffer.concat([Buffer.alloc(4), ...parts, Buffer.from([0])]);
  out.writeInt32LE(out.length, 0);
  return out;
}

const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};
const bsonString = (bytes: Uint8Array): Buffer => Buffer.concat([int32(bytes.length + 1), bytes, Buffer.from([0])]);

function nested(depth: number, leaf: Record<string, unknown>): Record<string, unknown> {
  let doc = leaf;
  for (let i = 0; i < depth; i++) doc = { a: doc };
  return doc;
}

// ---------------------------------------------------------------- the hostile corpus

const s = (doc: unknown): Buffer => Buffer.from(serialize(doc as Record<string, unknown>));

const CORPUS: ReadonlyArray<readonly [string, Uint8Array]> = [
  ['plain, no tenant', s({ _id: 1, a: 'x' })],
  ['plain, tenant first', s({ [FIELD]: 'acme', _id: 1 })],
  ['own tenant', s({ _id: 1, [FIELD]: 'acme', a: 1 })],
  ['own tenant as int64', s({ _id: 1, [FIELD]: Long.fromNumber(42) })],
  ['another tenant', s({ _id: 1, [FIELD]: 'beta' })],
  ['another tenant, same bytes as a prefix', s({ _id: 1, [FIELD]: 'acmex' })],
  ['tenant as int32 42', s({ _id: 1, [FIELD]: 42 })],
  ['tenant as double 42', s({ _id: 1, [FIELD]: new Double(42) })],
  ['tenant as int64 43', s({ _id: 1, [FIELD]: Long.fromNumber(43) })],
  ['tenant as null', s({ _id: 1, [FIELD]: null })],
  ['tenant as undefined', rawDocument([[BsonType.undefined, FIELD, Buffer.alloc(0)]])],
  ['tenant as array', s({ _id: 1, [FIELD]: ['acme'] })],
  ['tenant as document', s({ _id: 1, [FIELD]: { $eq: 'acme' } })],
  ['tenant as symbol', s({ _id: 1, [FIELD]: new BSONSymbol('acme') })],
  ['tenant with embedded NUL', s({ _id: 1, [FIELD]: 'acme\u0000beta' })],
  ['tenant with embedded NUL after', s({ _id: 1, [FIELD]: 'acme\u0000' })],
  ['string with embedded NUL', s({ _id: 1, a: 'x\u0000y' })],
  ['tenant nested only', s({ _id: 1, a: { [FIELD]: 'beta' } })],
  ['tenant as dotted name', s({ _id: 1, [`${FIELD}.x`]: 'beta' })],
  ['no _id', s({ a: 1, b: { c: 2 } })],
  ['_id last', s({ a: 1, _id: 2 })],
  ['_id nested only', s({ a: { _id: 1 } })],
  ['empty', s({})],
  ['$where top', s({ $where: 'sleep(100)' })],
  ['$set top', s({ $set: { a: 1 } })],
  ['$ alone top', s({ $: 1 })],
  ['dotted top', s({ 'a.b': 1 })],
  ['dot alone top', s({ '.': 1 })],
  ['dollar inside a top name', s({ a$b: 1 })],
  ['dotted nested (allowed)', s({ a: { 'b.c': 1 } })],
  ['dollar nested (allowed)', s({ a: { $b: 1 } })],
  ['DBRef nested', s({ a: new DBRef('c', new ObjectId('0123456789abcdef01234567')) })],
  ['$where nested', s({ a: { $where: 'x' } })],
  ['$function nested deep', s(nested(8, { $function: { body: 'x', args: [], lang: 'js' } }))],
  ['$accumulator in array', s({ a: [1, { b: [{ $accumulator: {} }] }] })],
  ['$where as an array item value', s({ a: ['$where'] })],
  ['$where as a string value', s({ a: '$where' })],
  ['$wherex nested (allowed)', s({ a: { $wherex: 1 } })],
  ['$$USER_ROLES in a nested key', s({ a: { x$$USER_ROLESy: 1 } })],
  ['$$USER_ROLES as a top key', s({ $$USER_ROLES: 1 })],
  ['$$USER_ROLES inside a top key', s({ a$$USER_ROLES: 1 })],
  ['$$USER_ROLES in a string (literal)', s({ a: '$$USER_ROLES' })],
  ['$$USER_ROLES in a symbol (literal)', s({ a: new BSONSymbol('$$USER_ROLES') })],
  ['$USER_ROLES partial key', s({ a: { $USER_ROLES: 1 } })],
  ['code top', s({ a: new Code('sleep(1)') })],
  ['code in array', s({ a: [1, 2, new Code('x')] })],
  ['code with scope nested', s({ a: { b: new Code('x', { y: 1 }) } })],
  ['code with scope holding $where', s({ a: new Code('x', { $where: 1 }) })],
  [
    'every scalar type',
    s({
      _id: new ObjectId('0123456789abcdef01234567'),
      d: 1.5,
      s: 'é',
      b: new Binary(Buffer.from([1, 2, 3]), 4),
      old: new Binary(Buffer.from([1, 2, 3]), 2),
      t: true,
      date: new Date(0),
      n: null,
      r: /a.b/i,
      i: new Int32(7),
      ts: new Timestamp({ t: 1, i: 2 }),
      l: Long.fromNumber(9),
      min: new MinKey(),
      max: new MaxKey(),
      sym: new BSONSymbol('x'),
    }),
  ],
  [
    'dbPointer',
    rawDocument([[BsonType.dbPointer, 'p', Buffer.concat([bsonString(Buffer.from('a.b')), Buffer.alloc(12, 1)])]]),
  ],
  ['regex with $ and . ', rawDocument([[BsonType.regex, 'r', Buffer.from('$where.\0i\0')]])],
  [
    'duplicate top keys',
    rawDocument([
      [BsonType.int32, 'a', int32(1)],
      [BsonType.int32, 'a', int32(2)],
    ]),
  ],
  [
    'duplicate tenant keys',
    rawDocument([
      [BsonType.string, FIELD, bsonString(Buffer.from('acme'))],
      [BsonType.string, FIELD, bsonString(Buffer.from('beta'))],
    ]),
  ],
  [
    'duplicate nested keys',
    rawDocument([
      [
        BsonType.document,
        'a',
        rawDocument([
          [BsonType.int32, 'b', int32(1)],
          [BsonType.int32, 'b', int32(1)],
        ]),
      ],
    ]),
  ],
  ['array with a bad index key', rawDocument([[BsonType.array, 'a', rawDocument([[BsonType.int32, '1', int32(1)]])]])],
  [
    'array with a $where key',
    rawDocument([[BsonType.array, 'a', rawDocument([[BsonType.int32, '$where', int32(1)]])]]),
  ],
  ['invalid UTF-8 in a key', rawDocument([[BsonType.int32, Buffer.from([0x61, 0xff]), int32(1)]])],
  ['overlong UTF-8 in a key', rawDocument([[BsonType.int32, Buffer.from([0xc0, 0xae]), int32(1)]])],
  ['invalid UTF-8 in a string', rawDocument([[BsonType.string, 'a', bsonString(Buffer.from([0xed, 0xa0, 0x80]))]])],
  ['invalid UTF-8 in the tenant', rawDocument([[BsonType.string, FIELD, bsonString(Buffer.from([0x61, 0xfe]))]])],
  ['string length too long', rawDocument([[BsonType.string, 'a', Buffer.concat([int32(50), Buffer.from('x\0')])]])],
  ['string length too short', rawDocument([[BsonType.string, 'a', Buffer.concat([int32(0), Buffer.from('x\0')])]])],
  ['string length negative', rawDocument([[BsonType.string, 'a', Buffer.concat([int32(-5), Buffer.from('x\0')])]])],
  ['nested length too long', rawDocument([[BsonType.document, 'a', Buffer.concat([int32(400), Buffer.from([0])])]])],
  ['nested length too short', rawDocument([[BsonType.document, 'a', Buffer.concat([int32(3), Buffer.from([0])])]])],
  ['unknown type', rawDocument([[0x42, 'a', int32(1)]])],
  ['boolean 2', rawDocument([[BsonType.boolean, 'a', Buffer.from([2])]])],
  ['key without its NUL', Buffer.from([9, 0, 0, 0, BsonType.int32, 0x61, 0x62, 0x63, 0])],
  ['depth at the limit', s(nested(MAX_DEPTH, { x: 1 }))],
  ['depth over the limit', s(nested(MAX_DEPTH + 1, { x: 1 }))],
  ['depth over the limit with $where', s(nested(MAX_DEPTH + 1, { $where: 1 }))],
  ['depth over the limit in arrays', s({ a: JSON.parse('['.repeat(MAX_DEPTH + 1) + ']'.repeat(MAX_DEPTH + 1)) })],
];

describe('one pass over documents to store: the hostile corpus', () => {
  it.each(CORPUS.map(([label, doc]) => [label, doc] as const))('%s: same outcome as the old passes', (_label, doc) => {
    expectSame([doc]);
  });

  it('refuses what it must (the corpus is not vacuous)', () => {
    const rules = new Map<string, string>();
    for (const [label, doc] of CORPUS) {
      const outcome = viaHandler([doc], 'sequence', SETTINGS[0]!);
      rules.set(label, outcome.kind === 'refusal' ? outcome.rule : outcome.kind);
    }
    expect(rules.get('another tenant')).toBe('insert.foreign-tenant');
    expect(rules.get('tenant as null')).toBe('insert.tenant-not-scalar');
    expect(rules.get('tenant as array')).toBe('insert.tenant-not-scalar');
    expect(rules.get('tenant as int32 42')).toBe('insert.foreign-tenant');
    expect(rules.get('tenant with embedded NUL')).toBe('insert.foreign-tenant');
    expect(rules.get('$where top')).toBe('document.dollar-field');
    expect(rules.get('dotted top')).toBe('document.dotted-field');
    expect(rules.get('$where nested')).toBe('operator.where');
    expect(rules.get('$function nested deep')).toBe('operator.function');
    expect(rules.get('$accumulator in array')).toBe('operator.accumulator');
    expect(rules.get('$$USER_ROLES in a nested key')).toBe('variable.user-roles');
    expect(rules.get('code in array')).toBe('bson.code');
    expect(rules.get('code with scope nested')).toBe('bson.code');
    expect(rules.get('duplicate top keys')).toBe('wire');
    expect(rules.get('invalid UTF-8 in a key')).toBe('wire');
    expect(rules.get('depth over the limit')).toBe('wire');
    expect(rules.get('plain, no tenant')).toBe('ok');
    expect(rules.get('DBRef nested')).toBe('ok');
    expect(rules.get('$$USER_ROLES in a string (literal)')).toBe('ok');
  });

  it('a batch refuses at its first bad document, as before, and stamps the rest into one buffer', () => {
    const good = CORPUS.filter(([label]) => label.startsWith('plain') || label === 'no tenant').map(([, d]) => d);
    for (const [, bad] of CORPUS) expectSame([...good, bad, ...good]);
    const outcomes = expectSame([s({ _id: 1 }), s({ _id: 2, [FIELD]: 'acme' }), s({ a: 3 })]);
    expect(outcomes[0]).toMatchObject({ kind: 'ok', stamped: true });
  });

  it('a stamp that would pass 16 MiB is refused as before', () => {
    const filler = 'x'.repeat(MAX_USER_DOCUMENT_SIZE - 30);
    const doc = s({ _id: 1, f: filler });
    expect(doc.length).toBeLessThanOrEqual(MAX_USER_DOCUMENT_SIZE);
    const outcome = viaHandler([doc], 'sequence', SETTINGS[0]!);
    expect(outcome).toMatchObject({ kind: 'refusal', rule: 'document.too-large' });
    expect(outcome).toEqual(viaReference([doc], 'sequence', SETTINGS[0]!));
  });

  it('bulkWrite inserts take the same pass', () => {
    for (const [label, doc] of CORPUS) {
      const body = serialize({ bulkWrite: 1, $db: 'admin' });
      const ops = rawDocument([
        [BsonType.int32, 'insert', int32(0)],
        [BsonType.document, 'document', doc],
      ]);
      const frame = encodeOpMsg({
        requestId: 1,
        responseTo: 0,
        body,
        sequences: [
          { identifier: 'ops', documents: [ops] },
          { identifier: 'nsInfo', documents: [Buffer.from(serialize({ ns: 'app.orders' }))] },
        ],
      });
      let view;
      try {
        view = decodeCommand(frame, { maxBsonDepth: MAX_DEPTH + 1 });
      } catch {
        continue; // refused by the parser, before any pass
      }
      const run = (validated: boolean): Outcome => {
        try {
          const result = bulkWrite({ ...view.engineInput(), validated }, SETTINGS[0]!.context);
          return { kind: 'ok', bytes: result.sequences.get('ops')!.map(hex), stamped: false };
        } catch (error) {
          return outcomeOf(error);
        }
      };
      expect(run(true), label).toEqual(run(false));
    }
  });
});

describe('replacements take the same pass', () => {
  /** An update (or findAndModify) whose update document is `doc`, through the parser; outcomes with and without the pass. */
  function compare(label: string, doc: Uint8Array, kind: 'update' | 'findAndModify', upsert: boolean): void {
    const q = rawDocument([[BsonType.int32, '_id', int32(7)]]);
    const statement = rawDocument([
      [BsonType.document, 'q', q],
      [BsonType.document, 'u', doc],
      [BsonType.boolean, 'upsert', Buffer.from([upsert ? 1 : 0])],
    ]);
    const frame =
      kind === 'update'
        ? encodeOpMsg({
            requestId: 1,
            responseTo: 0,
            body: serialize({ update: 'orders', $db: 'app' }),
            sequences: [{ identifier: 'updates', documents: [statement] }],
          })
        : encodeOpMsg({
            requestId: 1,
            responseTo: 0,
            body: rawDocument([
              [BsonType.string, 'findAndModify', bsonString(Buffer.from('orders'))],
              [BsonType.document, 'query', q],
              [BsonType.document, 'update', doc],
              [BsonType.boolean, 'upsert', Buffer.from([upsert ? 1 : 0])],
              [BsonType.string, '$db', bsonString(Buffer.from('app'))],
            ]),
          });
    let view;
    try {
      view = decodeCommand(frame, { maxBsonDepth: MAX_DEPTH + 1 });
    } catch {
      return; // refused by the parser, before any pass
    }
    for (const s of SETTINGS) {
      const context = { ...s.context, upsertFieldsFromAnd: !upsert };
      const run = (validated: boolean): Outcome => {
        try {
          const input = { ...view.engineInput(), validated };
          const result = kind === 'update' ? update(input, context) : findAndModify(input, context);
          const out = [hex(result.body.toBytes()), ...[...result.sequences.values()].flat().map(hex)];
          return { kind: 'ok', bytes: out, stamped: result.notes.some((n) => n.rule === 'replacement.stamp') };
        } catch (error) {
          return outcomeOf(error);
        }
      };
      expect(run(true), `${label}, ${kind}, upsert ${upsert}, ${s.label}`).toEqual(run(false));
    }
  }

  it.each(CORPUS.map(([label, doc]) => [label, doc] as const))('%s', (label, doc) => {
    for (const kind of ['update', 'findAndModify'] as const)
      for (const upsert of [false, true]) compare(label, doc, kind, upsert);
  });
});

describe('one pass over documents to store: random documents', () => {
  const keys = fc.constantFrom(
    'a',
    'b',
    '_id',
    FIELD,
    `${FIELD}.x`,
    '$where',
    '$function',
    '$accumulator',
    '$x',
    'a.b',
    '$',
    'x$$USER_ROLES',
    '$$USER_ROLES',
    'é',
    '0',
  );
  const scalars = fc.oneof(
    fc.integer(),
    fc.string(),
    fc.constantFrom(
      'acme',
      'beta',
      '$$USER_ROLES',
      null,
      true,
      Long.fromNumber(42),
      new Code('x'),
      new Code('x', { y: 1 }),
      new Binary(Buffer.from([1]), 0),
      new MinKey(),
      new Double(1.5),
      /x/,
    ),
  );
  const { value } = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, scalars, tie('doc'), tie('array')),
    doc: fc.array(fc.tuple(keys, tie('value')), { maxLength: 5 }),
    array: fc.array(tie('value'), { maxLength: 4 }),
  }));

  /** Entries (duplicates kept) to BSON bytes through the bson serializer, element by element. */
  function encode(entries: unknown): Buffer {
    const toJs = (v: unknown): unknown => {
      if (Array.isArray(v) && v.every((e) => Array.isArray(e) && e.length === 2 && typeof e[0] === 'string'))
        return new Map((v as [string, unknown][]).map(([k, x]) => [k, toJs(x)]));
      if (Array.isArray(v)) return v.map(toJs);
      return v;
    };
    const elements = (entries as [string, unknown][]).map(([k, v]) => {
      const one = serialize(new Map([[k, toJs(v)]]), { checkKeys: false });
      return one.subarray(4, one.length - 1);
    });
    const out = Buffer.concat([Buffer.alloc(4), ...elements, Buffer.from([0])]);
    out.writeInt32LE(out.length, 0);
    return out;
  }

  it('same outcome as the old passes (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.tuple(keys, value), { maxLength: 6 }), { minLength: 1, maxLength: 3 }),
        (docs) => {
          expectSame(docs.map(encode));
        },
      ),
      { numRuns: 300, seed: 20261207 },
    );
  });

  it('same outcome on corrupted bytes (fast-check)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(keys, value), { maxLength: 6 }),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        (entries, at, byte) => {
          const doc = encode(entries);
          doc[at % doc.length] = byte;
          expectSame([doc]);
        },
      ),
      { numRuns: 300, seed: 20261208 },
    );
  });

  it('the scan never reads past a document, whatever the bytes', () => {
    const out = new StoredDocumentScan();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 64 }), (bytes) => {
        const doc = Buffer.from(bytes);
        if (doc.length >= 4) doc.writeInt32LE(doc.length, 0);
        scanStoredDocument(doc, Buffer.from(FIELD), out);
        if (out.tenantStart !== -1) expect(out.tenantValueEnd).toBeLessThanOrEqual(doc.length);
      }),
      { numRuns: 2000, seed: 7 },
    );
  });
});

describe('validateDocumentFacts: what validation tells the one pass', () => {
  const facts = (doc: Record<string, unknown>): number =>
    validateDocumentFacts(serialize(doc), 0, { maxDepth: 50, rejectDuplicateKeys: true });

  it('notes JavaScript at any depth, `$` names below and at the top level, `.` names at any depth', () => {
    expect(facts({ _id: 1, a: { b: [1, 'x'] } })).toBe(0);
    expect(facts({ _id: 1, a: { b: [1, 'x'] }, $top: 1 })).toBe(DocumentFact.topDollarKey);
    expect(facts({ 'a.b': 1 })).toBe(DocumentFact.dottedKey);
    expect(facts({ a: { 'é.b': 1 } })).toBe(DocumentFact.dottedKey);
    expect(facts({ a: [{ 'x.$y': 1 }] })).toBe(DocumentFact.dottedKey | DocumentFact.nestedDollarKey);
    expect(facts({ é$: 1 })).toBe(DocumentFact.topDollarKey);
    expect(facts({ a: new Code('x') })).toBe(DocumentFact.code);
    expect(facts({ a: [{ b: new Code('x', { y: 1 }) }] })).toBe(DocumentFact.code);
    expect(facts({ a: { $where: 1 } })).toBe(DocumentFact.nestedDollarKey);
    expect(facts({ a: [{ b: { é$: 1 } }] })).toBe(DocumentFact.nestedDollarKey);
    expect(facts({ a: { é$é: new Code('x') } })).toBe(DocumentFact.code | DocumentFact.nestedDollarKey);
  });
});
