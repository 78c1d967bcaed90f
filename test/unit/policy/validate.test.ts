import { PolicyRefusal } from '../../../src/errors.js';
import { BSONRegExp, BSONSymbol, Code, DBRef, ObjectId, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import {
  assertNoForbidden,
  isUpdatePipeline,
  pathTouchesField,
  validateAccumulatorField,
  validateCollation,
  validateExpression,
  validateFilter,
  validateHint,
  validateProjection,
  validateSort,
  validateUpdateDocument,
} from '../../../src/policy/validate.js';
import { BsonType } from '../../../src/wire/bson-scan.js';
import { encodeElements, valueOf, type RawValue } from '../../../src/wire/raw-bson.js';

/** A document value from a JS object (bson serializer). */
function doc(object: Record<string, unknown>): RawValue {
  return { type: BsonType.document, value: serialize(object) };
}

/** Any value (arrays, strings, code…). */
function val(value: unknown): RawValue {
  return valueOf(value);
}

function refusalRule(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    if (!(error instanceof PolicyRefusal)) throw error;
    return error.rule;
  }
  throw new Error('expected a PolicyRefusal');
}

/** A document with a repeated key (the serializer cannot make one). */
function duplicateKeyDocument(name: string, a: unknown, b: unknown): RawValue {
  const first = valueOf(a);
  const second = valueOf(b);
  return {
    type: BsonType.document,
    value: encodeElements([
      { name, type: first.type, value: first.value },
      { name, type: second.type, value: second.value },
    ]),
  };
}

/**
 * `{$and: [{$and: [ … inner … ]}]}`, `levels` deep, written by hand in one pass (a recursive
 * serializer would overflow the stack building it). Each level adds 19 bytes.
 */
function nestedAnd(levels: number, inner: Uint8Array, operator = '$and'): RawValue {
  const opBytes = Buffer.from(operator, 'utf8');
  const perLevel = 4 + 1 + opBytes.length + 1 + 4 + 1 + 2 + 1 + 1; // doc len, type, key, NUL, array len, type, "0\0", array NUL, doc NUL
  const total = inner.length + levels * perLevel;
  const out = Buffer.alloc(total);
  let at = 0;
  let remaining = total;
  for (let i = 0; i < levels; i++) {
    out.writeInt32LE(remaining, at); // document
    at += 4;
    out[at++] = BsonType.array;
    at += opBytes.copy(out, at);
    out[at++] = 0;
    const arrayLength = remaining - (4 + 1 + opBytes.length + 1) - 1;
    out.writeInt32LE(arrayLength, at);
    at += 4;
    out[at++] = BsonType.document;
    out[at++] = 0x30; // "0"
    out[at++] = 0;
    remaining = arrayLength - (4 + 1 + 2) - 1;
  }
  expect(remaining).toBe(inner.length);
  out.set(inner, at);
  at += inner.length;
  for (let i = 0; i < levels; i++) {
    out[at++] = 0; // array terminator
    out[at++] = 0; // document terminator
  }
  expect(at).toBe(total);
  return { type: BsonType.document, value: out };
}

/** `{$add: [{$add: [ … inner … ]}]}` as an expression, `levels` deep. */
function nestedExpression(levels: number, inner: Uint8Array): RawValue {
  return nestedAnd(levels, inner, '$add');
}

describe('assertNoForbidden', () => {
  it('accepts ordinary documents', () => {
    assertNoForbidden(
      doc({ a: 1, b: { c: [1, 'x', { d: new ObjectId() }] }, e: '$$ROOT', f: new BSONRegExp('a') }),
      'doc',
    );
    assertNoForbidden(val('plain'), 'string');
    assertNoForbidden(val(5), 'number');
  });

  it.each<[string, RawValue, string]>([
    ['$where at the top', doc({ $where: 'sleep(5000) || true' }), 'operator.where'],
    ['$where under $or', doc({ $or: [{ a: 1 }, { $where: 'true' }] }), 'operator.where'],
    [
      '$where in a $lookup pipeline',
      doc({ pipeline: [{ $lookup: { from: 'x', pipeline: [{ $match: { $where: 'true' } }], as: 'y' } }] }),
      'operator.where',
    ],
    ['$where in a $facet', doc({ $facet: { a: [{ $match: { $where: 'true' } }] } }), 'operator.where'],
    ['$where as code', doc({ $where: new Code('true') }), 'operator.where'],
    [
      '$function in $expr',
      doc({ $expr: { $function: { body: 'function(){while(1){}}', args: [], lang: 'js' } } }),
      'operator.function',
    ],
    ['$accumulator in $group', doc({ $group: { _id: null, x: { $accumulator: {} } } }), 'operator.accumulator'],
    ['a code value', doc({ a: new Code('function(){}') }), 'bson.code'],
    ['a code-with-scope value', doc({ a: [1, new Code('function(){}', { x: 1 })] }), 'bson.code'],
    ['a bare code value', val(new Code('x')), 'bson.code'],
    ['$$USER_ROLES', doc({ $expr: { $in: ['admin', '$$USER_ROLES.role'] } }), 'variable.user-roles'],
    ['$$USER_ROLES deep in an array', doc({ a: [[['x', '$$USER_ROLES']]] }), 'variable.user-roles'],
    ['$$USER_ROLES as a symbol', doc({ a: new BSONSymbol('$$USER_ROLES') }), 'variable.user-roles'],
    ['$$USER_ROLES as a key', doc({ a: { $$USER_ROLES: 1 } }), 'variable.user-roles'],
    ['a repeated key', duplicateKeyDocument('tenantId', 'A', 'B'), 'bson.duplicate-key'],
  ])('refuses %s', (_label, value, rule) => {
    expect(refusalRule(() => assertNoForbidden(value, 'x'))).toBe(rule);
  });

  it('names the location, never the value', () => {
    try {
      assertNoForbidden(doc({ a: { $where: 'secret-value' } }), 'filter');
      throw new Error('expected a refusal');
    } catch (error) {
      expect((error as PolicyRefusal).message).toContain('filter');
      expect((error as PolicyRefusal).message).not.toContain('secret-value');
    }
  });

  it('walks 10,000 levels without overflowing the stack', () => {
    const deep = nestedAnd(10_000, serialize({ a: 1 }));
    assertNoForbidden(deep, 'deep');
    const deepBad = nestedAnd(10_000, serialize({ $where: 'true' }));
    expect(refusalRule(() => assertNoForbidden(deepBad, 'deep'))).toBe('operator.where');
  });
});

describe('validateFilter', () => {
  it('accepts the query operators', () => {
    validateFilter(
      doc({
        a: 1,
        b: { $eq: 1, $ne: 2, $gt: 0, $gte: 0, $lt: 9, $lte: 9 },
        c: { $in: [1, 2], $nin: [3] },
        d: { $exists: true, $type: 'string' },
        e: { $regex: '^a', $options: 'i' },
        f: { $mod: [2, 0] },
        g: { $all: [1, 2], $size: 2 },
        h: { $elemMatch: { x: 1, y: { $gt: 2 } } },
        i: { $elemMatch: { $gte: 80, $lt: 85 } },
        j: { $bitsAllClear: 1, $bitsAllSet: 2, $bitsAnyClear: 3, $bitsAnySet: [1] },
        k: { $not: { $gt: 5 } },
        l: { $not: new BSONRegExp('^x') },
        m: { $geoWithin: { $centerSphere: [[0, 0], 1] } },
        n: { $geoIntersects: { $geometry: { type: 'Point', coordinates: [0, 0] } } },
        o: { $all: [{ $elemMatch: { size: 'M', num: { $gt: 50 } } }] },
        p: { x: 1, $gt: 2 }, // a literal document: keys are not operators
        q: new DBRef('coll', new ObjectId()),
        $and: [{ r: 1 }, { $or: [{ s: 1 }, { $nor: [{ t: 1 }] }] }],
        $expr: { $gt: ['$a', { $add: ['$b', 1] }] },
        $jsonSchema: { required: ['a'], properties: { a: { bsonType: 'int' } } },
        $comment: 'why',
      }),
      'filter',
    );
    validateFilter(doc({}), 'filter');
  });

  it('refuses a filter that is not a document (G4)', () => {
    expect(refusalRule(() => validateFilter(val([{ a: 1 }]), 'filter'))).toBe('filter.not-document');
    expect(refusalRule(() => validateFilter(val('x'), 'filter'))).toBe('filter.not-document');
    expect(refusalRule(() => validateFilter(doc({ $or: [1] }), 'filter'))).toBe('filter.not-document');
  });

  it.each<[string, Record<string, unknown>, string]>([
    ['an unknown top-level operator', { $foo: 1 }, 'operator.unknown'],
    ['an internal operator', { $alwaysTrue: 1 }, 'operator.unknown'],
    ['an unknown field operator', { a: { $foo: 1 } }, 'operator.unknown'],
    ['an unknown operator after a known one', { a: { $gt: 1, $foo: 1 } }, 'operator.unknown'],
    ['an unknown operator in $elemMatch', { a: { $elemMatch: { b: { $foo: 1 } } } }, 'operator.unknown'],
    ['an unknown operator under $not', { a: { $not: { $foo: 1 } } }, 'operator.unknown'],
    ['an unknown operator under $nor', { $nor: [{ a: { $foo: 1 } }] }, 'operator.unknown'],
    ['an unknown expression operator under $expr', { $expr: { $foo: [1] } }, 'operator.unknown'],
    ['a query operator used as an expression', { $expr: { $regex: 'a' } }, 'operator.unknown'],
    ['$function under $expr', { $expr: { $function: { body: 'x', args: [], lang: 'js' } } }, 'operator.function'],
    ['$where', { $where: 'true' }, 'operator.where'],
    ['$$USER_ROLES under $expr', { $expr: { $eq: ['$$USER_ROLES', []] } }, 'variable.user-roles'],
    ['$and that is not an array', { $and: { a: 1 } }, 'filter.invalid'],
    ['$text under $or', { $or: [{ $text: { $search: 'x' } }] }, 'filter.text-placement'],
    ['$text under $nor', { $nor: [{ $text: { $search: 'x' } }] }, 'filter.text-placement'],
    ['$text in $elemMatch', { a: { $elemMatch: { $text: { $search: 'x' } } } }, 'filter.text-placement'],
    ['two $text', { $text: { $search: 'x' }, $and: [{ $text: { $search: 'y' } }] }, 'filter.text-placement'],
    ['$text with an unknown field', { $text: { $search: 'x', $foo: 1 } }, 'operator.unknown'],
    ['$near under $or', { $or: [{ loc: { $near: [0, 0] } }] }, 'filter.geo-placement'],
    ['$nearSphere under $nor', { $nor: [{ loc: { $nearSphere: [0, 0] } }] }, 'filter.geo-placement'],
    ['$near under $not', { loc: { $not: { $near: [0, 0] } } }, 'filter.geo-placement'],
    ['$near in $elemMatch', { a: { $elemMatch: { loc: { $near: [0, 0] } } } }, 'filter.geo-placement'],
    [
      'an unknown geo operator',
      { loc: { $near: { $geometry: { type: 'Point', coordinates: [0, 0] }, $foo: 1 } } },
      'operator.unknown',
    ],
    ['$all with a non-$elemMatch operator', { a: { $all: [{ $gt: 1 }] } }, 'operator.unknown'],
    ['$sampleRate that is not a number', { $sampleRate: 'x' }, 'filter.invalid'],
    ['$jsonSchema that is not a document', { $jsonSchema: 1 }, 'filter.invalid'],
  ])('refuses %s', (_label, filter, rule) => {
    expect(refusalRule(() => validateFilter(doc(filter), 'filter'))).toBe(rule);
  });

  it('accepts $text and $near at the top level and under top-level $and (catalogue 13-14)', () => {
    validateFilter(
      doc({ $text: { $search: 'x', $language: 'en', $caseSensitive: false, $diacriticSensitive: false } }),
      'f',
    );
    validateFilter(doc({ $and: [{ a: 1 }, { $and: [{ $text: { $search: 'x' } }] }] }), 'f');
    validateFilter(
      doc({ loc: { $near: { $geometry: { type: 'Point', coordinates: [0, 0] }, $maxDistance: 5, $minDistance: 1 } } }),
      'f',
    );
    validateFilter(doc({ $and: [{ loc: { $nearSphere: [0, 0], $maxDistance: 1 } }] }), 'f');
  });

  it('validates 10,000 levels of $and without overflowing the stack', () => {
    validateFilter(nestedAnd(10_000, serialize({ a: { $gt: 1 } })), 'deep');
    validateFilter(nestedAnd(10_000, serialize({ $text: { $search: 'x' } })), 'deep');
    expect(refusalRule(() => validateFilter(nestedAnd(10_000, serialize({ a: { $foo: 1 } })), 'deep'))).toBe(
      'operator.unknown',
    );
    expect(
      refusalRule(() => validateFilter(nestedAnd(10_000, serialize({ $text: { $search: 'x' } }), '$or'), 'deep')),
    ).toBe('filter.text-placement');
    expect(refusalRule(() => validateFilter(nestedAnd(10_000, serialize({ $where: 'x' }), '$nor'), 'deep'))).toBe(
      'operator.where',
    );
  });
});

describe('validateExpression', () => {
  it('accepts expressions, object literals, arrays and $literal contents', () => {
    validateExpression(
      doc({
        $cond: {
          if: { $and: [{ $gt: ['$a', 1] }, { $regexMatch: { input: '$s', regex: new BSONRegExp('^a') } }] },
          then: { x: { $concat: ['$a', '-', { $toString: '$b' }] }, y: [1, { $add: [1, 2] }] },
          else: { $let: { vars: { v: '$$ROOT' }, in: { $getField: { field: 'a', input: '$$v' } } } },
        },
      }),
      'expr',
    );
    validateExpression(doc({ $literal: { $foo: 1, $bar: [1] } }), 'expr');
    validateExpression(doc({ $sortArray: { input: '$a', sortBy: { x: 1 } } }), 'expr');
    validateExpression(val('$a.b'), 'expr');
    validateExpression(val([1, '$a', { $abs: -1 }]), 'expr');
  });

  it('refuses unknown and JavaScript operators anywhere in the expression', () => {
    expect(refusalRule(() => validateExpression(doc({ a: { b: [{ $foo: 1 }] } }), 'expr'))).toBe('operator.unknown');
    expect(refusalRule(() => validateExpression(doc({ $map: { input: '$a', in: { $function: {} } } }), 'expr'))).toBe(
      'operator.function',
    );
    expect(refusalRule(() => validateExpression(doc({ $literal: { $where: 'x' } }), 'expr'))).toBe('operator.where');
    expect(refusalRule(() => validateExpression(doc({ $concat: ['$$USER_ROLES'] }), 'expr'))).toBe(
      'variable.user-roles',
    );
    expect(refusalRule(() => validateExpression(doc({ $sum: [new Code('1')] }), 'expr'))).toBe('bson.code');
  });

  it('walks 10,000 nested expressions without overflowing the stack', () => {
    validateExpression(nestedExpression(10_000, serialize({ $abs: -1 })), 'deep');
    expect(refusalRule(() => validateExpression(nestedExpression(10_000, serialize({ $nope: 1 })), 'deep'))).toBe(
      'operator.unknown',
    );
  });
});

describe('validateAccumulatorField', () => {
  it('accepts one allowed accumulator or window operator', () => {
    validateAccumulatorField(doc({ $sum: 1 }), 'g', 'group');
    validateAccumulatorField(doc({ $top: { sortBy: { a: 1 }, output: ['$a'] } }), 'g', 'group');
    validateAccumulatorField(doc({ $push: { x: '$a', y: { $add: ['$b', 1] } } }), 'g', 'group');
    validateAccumulatorField(doc({ $rank: {} }), 'w', 'window');
    validateAccumulatorField(doc({ $sum: '$a', window: { documents: ['unbounded', 'current'] } }), 'w', 'window');
    validateAccumulatorField(doc({ $shift: { output: '$a', by: 1, default: null } }), 'w', 'window');
  });

  it('refuses $accumulator, unknown operators and malformed fields', () => {
    expect(refusalRule(() => validateAccumulatorField(doc({ $accumulator: {} }), 'g', 'group'))).toBe(
      'operator.accumulator',
    );
    expect(refusalRule(() => validateAccumulatorField(doc({ $foo: 1 }), 'g', 'group'))).toBe('operator.unknown');
    expect(refusalRule(() => validateAccumulatorField(doc({ $rank: {} }), 'g', 'group'))).toBe('operator.unknown');
    expect(refusalRule(() => validateAccumulatorField(doc({ $sum: 1, $avg: 1 }), 'g', 'group'))).toBe(
      'accumulator.invalid',
    );
    expect(refusalRule(() => validateAccumulatorField(doc({}), 'g', 'group'))).toBe('accumulator.invalid');
    expect(refusalRule(() => validateAccumulatorField(val(1), 'g', 'group'))).toBe('accumulator.invalid');
    expect(refusalRule(() => validateAccumulatorField(doc({ $sum: { $function: {} } }), 'g', 'group'))).toBe(
      'operator.function',
    );
    expect(refusalRule(() => validateAccumulatorField(doc({ $sum: { $nope: 1 } }), 'g', 'group'))).toBe(
      'operator.unknown',
    );
    expect(refusalRule(() => validateAccumulatorField(doc({ $sum: 1, window: 1 }), 'w', 'window'))).toBe(
      'accumulator.invalid',
    );
  });
});

describe('validateUpdateDocument', () => {
  const T = 'tenantId';

  it('tells operators, replacement and pipeline apart', () => {
    expect(validateUpdateDocument(doc({ $set: { a: 1 }, $inc: { n: 1 } }), T, 'u')).toBe('operators');
    expect(validateUpdateDocument(doc({ a: 1, b: { c: 2 } }), T, 'u')).toBe('replacement');
    expect(validateUpdateDocument(doc({}), T, 'u')).toBe('replacement');
    expect(validateUpdateDocument(val([{ $set: { a: 1 } }]), T, 'u')).toBe('pipeline');
    expect(isUpdatePipeline(val([{ $set: { a: 1 } }]))).toBe(true);
    expect(isUpdatePipeline(doc({ $set: { a: 1 } }))).toBe(false);
  });

  it('accepts every update operator on other paths', () => {
    validateUpdateDocument(
      doc({
        $currentDate: { d: true },
        $inc: { n: 1 },
        $min: { lo: 1 },
        $max: { hi: 9 },
        $mul: { m: 2 },
        $rename: { old: 'new' },
        $set: { 'a.tenantId': 1, 'arr.$[e].x': 1 },
        $setOnInsert: { created: 1 },
        $unset: { gone: '' },
        $addToSet: { tags: { $each: ['a', 'b'] } },
        $pop: { stack: 1 },
        $pull: { scores: { $gt: 5 }, items: { name: 'x', qty: { $lt: 2 } } },
        $push: { list: { $each: [1], $position: 0, $slice: 5, $sort: { a: 1 } } },
        $pullAll: { xs: [1, 2] },
        $bit: { flags: { and: 5 } },
      }),
      T,
      'u',
    );
    validateUpdateDocument(doc({ $push: { list: { a: 1 } } }), T, 'u');
  });

  const operatorsWithValues: Array<[string, unknown]> = [
    ['$set', 'B'],
    ['$unset', ''],
    ['$setOnInsert', 'B'],
    ['$inc', 1],
    ['$mul', 2],
    ['$min', 'A'],
    ['$max', 'Z'],
    ['$currentDate', true],
    ['$push', 'B'],
    ['$addToSet', 'B'],
    ['$pop', 1],
    ['$pull', 'B'],
    ['$pullAll', ['B']],
    ['$bit', { or: 1 }],
    ['$rename', 'elsewhere'],
  ];
  const tenantPaths = ['tenantId', 'tenantId.x', 'tenantId.$', 'tenantId.$[]', 'tenantId.$[id]', 'tenantId.0'];
  for (const [operator, value] of operatorsWithValues) {
    for (const path of tenantPaths) {
      it(`refuses ${operator} on ${path} (catalogue 37)`, () => {
        expect(refusalRule(() => validateUpdateDocument(doc({ [operator]: { [path]: value } }), T, 'u'))).toBe(
          'update.tenant-field',
        );
      });
    }
  }

  it('refuses $rename onto the tenant field (catalogue 37)', () => {
    expect(refusalRule(() => validateUpdateDocument(doc({ $rename: { x: 'tenantId' } }), T, 'u'))).toBe(
      'update.tenant-field',
    );
    expect(refusalRule(() => validateUpdateDocument(doc({ $rename: { x: 'tenantId.y' } }), T, 'u'))).toBe(
      'update.tenant-field',
    );
    validateUpdateDocument(doc({ $rename: { x: 'tenantIdentity' } }), T, 'u');
  });

  it('refuses $setOnInsert of a tenant with upsert (catalogue 38)', () => {
    expect(refusalRule(() => validateUpdateDocument(doc({ $setOnInsert: { tenantId: 'B' } }), T, 'u'))).toBe(
      'update.tenant-field',
    );
  });

  it('protects a dotted tenant field and its parents', () => {
    const F = 'meta.tenant';
    expect(refusalRule(() => validateUpdateDocument(doc({ $set: { meta: {} } }), F, 'u'))).toBe('update.tenant-field');
    expect(refusalRule(() => validateUpdateDocument(doc({ $unset: { 'meta.tenant': '' } }), F, 'u'))).toBe(
      'update.tenant-field',
    );
    expect(refusalRule(() => validateUpdateDocument(doc({ $set: { 'meta.$[].tenant': 1 } }), F, 'u'))).toBe(
      'update.tenant-field',
    );
    expect(refusalRule(() => validateUpdateDocument(doc({ $rename: { a: 'meta' } }), F, 'u'))).toBe(
      'update.tenant-field',
    );
    validateUpdateDocument(doc({ $set: { 'meta.other': 1, metadata: 1 } }), F, 'u');
    expect(pathTouchesField('tenantIdX', 'tenantId')).toBe(false);
    expect(pathTouchesField('x.tenantId', 'tenantId')).toBe(false);
    expect(pathTouchesField('$', 'tenantId')).toBe(false);
  });

  it.each<[string, RawValue, string]>([
    ['an unknown operator', doc({ $foo: { a: 1 } }), 'operator.unknown'],
    ['operators mixed with fields', doc({ $set: { a: 1 }, b: 2 }), 'update.mixed'],
    ['fields mixed with operators', doc({ b: 2, $set: { a: 1 } }), 'update.mixed'],
    [
      'a repeated operator (catalogue 41)',
      duplicateKeyDocument('$set', { a: 1 }, { tenantId: 'B' }),
      'update.duplicate-operator',
    ],
    ['an operator value that is not a document', doc({ $set: 1 }), 'update.invalid'],
    ['a $-prefixed path', doc({ $set: { $x: 1 } }), 'update.invalid'],
    ['an empty path', doc({ $set: { '': 1 } }), 'update.invalid'],
    ['$rename to a non-string', doc({ $rename: { a: 1 } }), 'update.invalid'],
    ['$rename to a $-path', doc({ $rename: { a: '$b' } }), 'update.invalid'],
    ['an unknown $push modifier', doc({ $push: { a: { $each: [1], $foo: 1 } } }), 'operator.unknown'],
    ['an unknown operator in a $pull condition', doc({ $pull: { a: { $foo: 1 } } }), 'operator.unknown'],
    ['$where in a $pull condition', doc({ $pull: { a: { $where: 'true' } } }), 'operator.where'],
    ['$function in a pipeline', val([{ $set: { a: { $function: {} } } }]), 'operator.function'],
    ['$accumulator in a replacement', doc({ a: { $accumulator: {} } }), 'operator.accumulator'],
    ['a scalar', val(1), 'update.invalid'],
  ])('refuses %s', (_label, u, rule) => {
    expect(refusalRule(() => validateUpdateDocument(u, T, 'u'))).toBe(rule);
  });
});

describe('validateProjection', () => {
  it('accepts inclusion, exclusion, projection operators and expressions', () => {
    validateProjection(
      doc({
        a: 1,
        b: 0,
        c: true,
        'd.e': 1,
        'arr.$': 1,
        f: { g: 1, h: { i: 0 } },
        j: { $elemMatch: { k: { $gt: 1 } } },
        l: { $slice: [1, 2] },
        m: { $slice: -1 },
        n: { $meta: 'textScore' },
        o: { $concat: ['$a', '$b'] },
        p: '$q',
        r: [1, '$s'],
      }),
      'projection',
    );
  });

  it.each<[string, RawValue, string]>([
    ['$function (catalogue 2)', doc({ x: { $function: { body: 'f', args: [], lang: 'js' } } }), 'operator.function'],
    ['an unknown operator', doc({ x: { $foo: 1 } }), 'operator.unknown'],
    ['an unknown operator in $elemMatch', doc({ x: { $elemMatch: { y: { $foo: 1 } } } }), 'operator.unknown'],
    ['an unknown operator deep in an expression', doc({ x: { y: { $add: [{ $foo: 1 }] } } }), 'operator.unknown'],
    ['a $-prefixed field', doc({ $x: 1 }), 'projection.invalid'],
    ['$where', doc({ $where: 1 }), 'operator.where'],
    ['a non-document', val([1]), 'projection.invalid'],
  ])('refuses %s', (_label, projection, rule) => {
    expect(refusalRule(() => validateProjection(projection, 'projection'))).toBe(rule);
  });
});

describe('validateSort', () => {
  it('accepts 1, -1, $meta and $natural', () => {
    validateSort(doc({ a: 1, b: -1, c: 1.0, s: { $meta: 'textScore' } }), 'sort');
    validateSort(doc({ $natural: -1 }), 'sort');
    validateSort(doc({}), 'sort');
  });

  it.each<[string, RawValue]>([
    ['2', doc({ a: 2 })],
    ['a string', doc({ a: 'asc' })],
    ['a $-field', doc({ $foo: 1 })],
    ['a non-$meta document', doc({ a: { $foo: 'x' } })],
    ['$meta with a number', doc({ a: { $meta: 1 } })],
    ['a non-document', val([1])],
  ])('refuses %s', (_label, sort) => {
    expect(refusalRule(() => validateSort(sort, 'sort'))).toBe('sort.invalid');
  });
});

describe('validateHint', () => {
  it('accepts index names and key patterns', () => {
    validateHint(val('a_1'), 'hint', 'tenantId', true);
    validateHint(doc({ tenantId: 1, a: -1 }), 'hint', 'tenantId', true);
    validateHint(doc({ tenantId: 1, loc: '2dsphere' }), 'hint', 'tenantId', true);
    validateHint(doc({ a: 1 }), 'hint', 'tenantId', false);
    validateHint(doc({ $natural: 1 }), 'hint', 'tenantId', false);
  });

  it('requires the tenant prefix in shared collections (catalogue 60)', () => {
    expect(refusalRule(() => validateHint(doc({ a: 1, tenantId: 1 }), 'hint', 'tenantId', true))).toBe(
      'hint.not-tenant-prefixed',
    );
    expect(refusalRule(() => validateHint(doc({ $natural: 1 }), 'hint', 'tenantId', true))).toBe(
      'hint.not-tenant-prefixed',
    );
  });

  it.each<[string, RawValue]>([
    ['a number', val(1)],
    ['an empty name', val('')],
    ['an empty pattern', doc({})],
    ['a $-key', doc({ $foo: 1 })],
    ['a document value', doc({ a: { b: 1 } })],
    ['an array', val(['a'])],
  ])('refuses %s', (_label, hint) => {
    expect(refusalRule(() => validateHint(hint, 'hint', 'tenantId', false))).toBe('hint.invalid');
  });
});

describe('validateCollation', () => {
  it('accepts collations (catalogue 9 with a non-string tenant)', () => {
    validateCollation(
      doc({
        locale: 'en',
        caseLevel: false,
        caseFirst: 'off',
        strength: 2,
        numericOrdering: true,
        alternate: 'shifted',
        maxVariable: 'punct',
        backwards: false,
        normalization: false,
      }),
      'collation',
    );
    validateCollation(doc({ locale: 'simple' }), 'collation', { tenantIsString: true });
    validateCollation(doc({ locale: 'en', strength: 3 }), 'collation', { tenantIsString: true });
  });

  it('refuses strengths 1 and 2 when the tenant is a string (catalogue 9)', () => {
    expect(
      refusalRule(() => validateCollation(doc({ locale: 'en', strength: 1 }), 'c', { tenantIsString: true })),
    ).toBe('collation.tenant-string');
    expect(
      refusalRule(() => validateCollation(doc({ locale: 'en', strength: 2 }), 'c', { tenantIsString: true })),
    ).toBe('collation.tenant-string');
  });

  it.each<[string, RawValue]>([
    ['an unknown field', doc({ locale: 'en', foo: 1 })],
    ['no locale', doc({ strength: 2 })],
    ['a numeric locale', doc({ locale: 1 })],
    ['a string strength', doc({ locale: 'en', strength: '2' })],
    ['strength 7', doc({ locale: 'en', strength: 7 })],
    ['strength 1.5', doc({ locale: 'en', strength: 1.5 })],
    ['a non-boolean caseLevel', doc({ locale: 'en', caseLevel: 1 })],
    ['a non-document', val('en')],
  ])('refuses %s', (_label, collation) => {
    expect(refusalRule(() => validateCollation(collation, 'collation'))).toBe('collation.invalid');
  });
});

describe('operator allowlists', () => {
  it('never allow the JavaScript operators (catalogue 1-2)', async () => {
    const operators = await import('../../../src/policy/operators.js');
    const lists = [
      operators.QUERY_OPERATORS,
      operators.EXPRESSION_OPERATORS,
      operators.ACCUMULATORS,
      operators.WINDOW_OPERATORS,
      operators.UPDATE_OPERATORS,
      operators.PROJECTION_OPERATORS,
    ];
    for (const list of lists) {
      for (const name of operators.FORBIDDEN_KEYS) expect(list.has(name), name).toBe(false);
      for (const name of list) expect(name.startsWith('$'), name).toBe(true);
    }
    expect([...operators.FORBIDDEN_KEYS].sort()).toEqual(['$accumulator', '$function', '$where']);
  });
});

describe('validateCollation with a string tenant (catalogue 9)', () => {
  it('refuses options that compare different ids as equal even at strength 3', () => {
    const collation = (doc: Record<string, unknown>): RawValue => valueOf(doc);
    for (const doc of [
      { locale: 'en', alternate: 'shifted' },
      { locale: 'en', numericOrdering: true },
      { locale: 'en', strength: 2 },
    ]) {
      let rule: string | undefined;
      try {
        validateCollation(collation(doc), 'collation', { tenantIsString: true });
      } catch (error) {
        rule = (error as PolicyRefusal).rule;
      }
      expect(rule, JSON.stringify(doc)).toBe('collation.tenant-string');
    }
    expect(() =>
      validateCollation(collation({ locale: 'en', alternate: 'non-ignorable', numericOrdering: false }), 'collation', {
        tenantIsString: true,
      }),
    ).not.toThrow();
    expect(() => validateCollation(collation({ locale: 'en', numericOrdering: true }), 'collation', {})).not.toThrow();
  });
});

describe('catalogue 11: $$USER_ROLES in data is text; only where it is evaluated is it refused', () => {
  it('a filter literal, a stored document and classic update values may mention it', () => {
    expect(() => validateFilter(doc({ note: 'see $$USER_ROLES', a: ['$$USER_ROLES'] }), 'filter')).not.toThrow();
    expect(() => validateUpdateDocument(doc({ note: '$$USER_ROLES' }), 'tenantId', 'u')).not.toThrow();
    expect(() =>
      validateUpdateDocument(doc({ $set: { note: '$$USER_ROLES' }, $push: { l: '$$USER_ROLES' } }), 'tenantId', 'u'),
    ).not.toThrow();
    expect(() => assertNoForbidden(doc({ a: '$$USER_ROLES' }), 'doc', { literalStrings: true })).not.toThrow();
  });

  it('an expression inside data still may not: $expr in a filter, in $elemMatch, in a $pull condition; a pipeline update', () => {
    expect(refusalRule(() => validateFilter(doc({ $expr: { $in: ['x', ['$$USER_ROLES']] } }), 'filter'))).toBe(
      'variable.user-roles',
    );
    expect(
      refusalRule(() =>
        validateFilter(doc({ a: { $elemMatch: { $expr: { $eq: ['$$USER_ROLES.role', 'x'] } } } }), 'filter'),
      ),
    ).toBe('variable.user-roles');
    expect(
      refusalRule(() =>
        validateUpdateDocument(doc({ $pull: { a: { $expr: { $eq: ['$$USER_ROLES', 1] } } } }), 'tenantId', 'u'),
      ),
    ).toBe('variable.user-roles');
    expect(refusalRule(() => validateUpdateDocument(val([{ $set: { r: '$$USER_ROLES' } }]), 'tenantId', 'u'))).toBe(
      'variable.user-roles',
    );
    // JavaScript stays refused in data too.
    expect(refusalRule(() => validateFilter(doc({ a: new Code('x') }), 'filter'))).toBe('bson.code');
  });
});

describe('G1: error fidelity: malformed input gets the server code, forbidden input 13', () => {
  const codeOf = (run: () => unknown): number => {
    try {
      run();
    } catch (error) {
      if (error instanceof PolicyRefusal) return error.code;
      throw error;
    }
    throw new Error('expected a PolicyRefusal');
  };

  it.each<[string, () => unknown, number]>([
    ['unknown top-level query operator (BadValue)', () => validateFilter(doc({ $foo: 1 }), 'f'), 2],
    ['unknown field query operator (BadValue)', () => validateFilter(doc({ a: { $foo: 1 } }), 'f'), 2],
    ['unknown geo operator (BadValue)', () => validateFilter(doc({ l: { $geoWithin: { $foo: 1 } } }), 'f'), 2],
    ['unknown $text field (BadValue)', () => validateFilter(doc({ $text: { $search: 'x', $foo: 1 } }), 'f'), 2],
    ['unknown expression (InvalidPipelineOperator)', () => validateExpression(doc({ $foo: [] }), 'e'), 168],
    ['unknown update operator (FailedToParse)', () => validateUpdateDocument(doc({ $foo: { a: 1 } }), 't', 'u'), 9],
    [
      'unknown $push modifier (BadValue)',
      () => validateUpdateDocument(doc({ $push: { a: { $each: [1], $foo: 1 } } }), 't', 'u'),
      2,
    ],
    ['unknown accumulator (15952)', () => validateAccumulatorField(doc({ $foo: 1 }), 'g', 'group'), 15952],
    ['unknown window function (FailedToParse)', () => validateAccumulatorField(doc({ $foo: 1 }), 'w', 'window'), 9],
    ['$where: forbidden (Unauthorized)', () => validateFilter(doc({ $where: 'x' }), 'f'), 13],
    ['$function: forbidden (Unauthorized)', () => validateExpression(doc({ $function: {} }), 'e'), 13],
    ['the tenant path: forbidden (Unauthorized)', () => validateUpdateDocument(doc({ $set: { t: 1 } }), 't', 'u'), 13],
  ])('%s', (_name, run, code) => {
    expect(codeOf(run)).toBe(code);
  });
});
