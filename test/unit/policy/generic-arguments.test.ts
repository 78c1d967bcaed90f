/**
 * Generic arguments are typed as MongoDB parses them (issue 15): a value the server refuses gets
 * the server's code and is never forwarded; every value the server accepts (and drivers send)
 * passes, `comment` of any BSON type included.
 */
import {
  BSONSymbol,
  Code,
  Decimal128,
  Double,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  serialize,
} from 'bson';
import { describe, expect, it } from 'vitest';
import { ErrorCodes, PolicyRefusal } from '../../../src/errors.js';
import { assertAllowedFields } from '../../../src/policy/commands.js';
import { assertGenericArgument, serverTypeName } from '../../../src/policy/generic-arguments.js';
import { BsonType } from '../../../src/wire/bson-scan.js';
import { RawDocument, type RawValue } from '../../../src/wire/raw-bson.js';

/** The value of `x` in `{x: value}`, with its exact BSON type. */
function value(v: unknown): RawValue {
  return RawDocument.parse(serialize({ x: v })).elements[0]!;
}

/** A value of a type no serializer writes any more (undefined, DBPointer), built by hand. */
function rawValue(type: number, bytes: Buffer = Buffer.alloc(0)): RawValue {
  return { type, value: bytes };
}

const UNDEFINED = rawValue(BsonType.undefined);
const DB_POINTER = (() => {
  const ns = Buffer.from('a.b\0');
  const length = Buffer.alloc(4);
  length.writeInt32LE(ns.length);
  return rawValue(BsonType.dbPointer, Buffer.concat([length, ns, Buffer.alloc(12, 1)]));
})();

function refusal(fn: () => unknown): PolicyRefusal {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PolicyRefusal);
    return error as PolicyRefusal;
  }
  throw new Error('expected a PolicyRefusal');
}

/** Every BSON type a value can have, named as in MongoDB's messages. */
const EVERY_TYPE: Array<[string, RawValue]> = [
  ['double', value(new Double(1.5))],
  ['string', value('s')],
  ['object', value({ a: 1 })],
  ['array', value([1])],
  ['binData', value(Buffer.from('x'))],
  ['undefined', UNDEFINED],
  ['objectId', value(new ObjectId())],
  ['bool', value(true)],
  ['date', value(new Date(0))],
  ['null', value(null)],
  ['regex', value(/x/)],
  ['dbPointer', DB_POINTER],
  ['javascript', value(new Code('1'))],
  ['symbol', value(new BSONSymbol('s'))],
  ['javascriptWithScope', value(new Code('1', { a: 1 }))],
  ['int', value(new Int32(1))],
  ['timestamp', value(new Timestamp({ t: 1, i: 1 }))],
  ['long', value(Long.fromNumber(1))],
  ['decimal', value(Decimal128.fromString('1'))],
  ['minKey', value(new MinKey())],
  ['maxKey', value(new MaxKey())],
];

describe('generic arguments', () => {
  it('names BSON types as the server does', () => {
    for (const [name, v] of EVERY_TYPE) expect(serverTypeName(v.type)).toBe(name);
  });

  it.each([
    ['apiVersion', 'string', 'APIParametersFromClient'],
    ['apiStrict', 'bool', 'APIParametersFromClient'],
    ['apiDeprecationErrors', 'bool', 'APIParametersFromClient'],
    ['autocommit', 'bool', 'OperationSessionInfo'],
    ['startTransaction', 'bool', 'OperationSessionInfo'],
    ['txnNumber', 'long', 'OperationSessionInfo'],
  ])('%s: only the %s the server parses, every other type TypeMismatch', (name, expected, context) => {
    for (const [typeName, v] of EVERY_TYPE) {
      if (typeName === expected) {
        expect(() => assertGenericArgument(name, v)).not.toThrow();
        continue;
      }
      const error = refusal(() => assertGenericArgument(name, v));
      expect(error.code).toBe(ErrorCodes.TypeMismatch);
      expect(error.rule).toBe('field.generic-type');
      expect(error.message).toContain(
        `BSON field '${context}.${name}' is the wrong type '${typeName}', expected type '${expected}'`,
      );
    }
  });

  it('comment: any BSON type, as MongoDB (IDLAnyType) accepts', () => {
    for (const [, v] of EVERY_TYPE) expect(() => assertGenericArgument('comment', v)).not.toThrow();
  });

  it('readConcern: a document with the options ReadConcernArgs reads, each of its type', () => {
    for (const ok of [
      {},
      { level: 'local' },
      { level: 'majority', afterClusterTime: new Timestamp({ t: 1, i: 1 }) },
      { level: 'snapshot', atClusterTime: new Timestamp({ t: 1, i: 1 }) },
      { level: 'available', provenance: 'clientSupplied' },
      { afterOpTime: { ts: new Timestamp({ t: 1, i: 1 }), t: Long.fromNumber(1) } },
    ])
      expect(() => assertGenericArgument('readConcern', value(ok))).not.toThrow();
    for (const [, v] of EVERY_TYPE.filter(([name]) => name !== 'object')) {
      const error = refusal(() => assertGenericArgument('readConcern', v));
      expect([error.code, error.message]).toEqual([
        ErrorCodes.FailedToParse,
        expect.stringContaining('readConcern field should be an object'),
      ]);
    }
    const cases: Array<[Record<string, unknown>, number]> = [
      [{ level: Decimal128.fromString('1') }, ErrorCodes.TypeMismatch],
      [{ level: new MinKey() }, ErrorCodes.TypeMismatch],
      [{ level: 'nope' }, ErrorCodes.FailedToParse],
      [{ afterClusterTime: 1 }, ErrorCodes.TypeMismatch],
      [{ atClusterTime: new Date(0) }, ErrorCodes.TypeMismatch],
      [{ afterOpTime: 'x' }, ErrorCodes.TypeMismatch],
      [{ level: 'local', extra: Decimal128.fromString('1') }, ErrorCodes.InvalidOptions],
    ];
    for (const [bad, code] of cases)
      expect(refusal(() => assertGenericArgument('readConcern', value(bad))).code).toBe(code);
    const level = refusal(() => assertGenericArgument('readConcern', value({ level: new MaxKey() })));
    expect(level.message).toContain('"level" had the wrong type. Expected string, found maxKey');
  });

  it('writeConcern: a document whose w, j, fsync and wtimeout have the types WriteConcernOptions reads', () => {
    for (const ok of [
      {},
      { w: 1 },
      { w: 'majority', j: true, wtimeout: 1000 },
      { w: { dc: 1 } },
      { w: Long.fromNumber(2), j: 1, fsync: false, wtimeoutMS: new Double(5) },
      { w: Decimal128.fromString('1') }, // BSONElement::isNumber() includes Decimal128
      { provenance: 'clientSupplied', somethingElse: new MinKey() },
    ])
      expect(() => assertGenericArgument('writeConcern', value(ok))).not.toThrow();
    for (const [, v] of EVERY_TYPE.filter(([name]) => name !== 'object')) {
      const error = refusal(() => assertGenericArgument('writeConcern', v));
      expect([error.code, error.message]).toEqual([
        ErrorCodes.FailedToParse,
        expect.stringContaining('writeConcern must be an object'),
      ]);
    }
    for (const bad of [
      { w: true },
      { w: null },
      { w: new MinKey() },
      { j: 'yes' },
      { fsync: new BSONSymbol('s') },
      { wtimeout: '1' },
      { provenance: 1 },
    ])
      expect(refusal(() => assertGenericArgument('writeConcern', value(bad))).code).toBe(ErrorCodes.FailedToParse);
    const undefinedW = Buffer.from([8, 0, 0, 0, BsonType.undefined, 0x77, 0, 0]); // {w: undefined}
    expect(RawDocument.parse(undefinedW).elements[0]!.type).toBe(BsonType.undefined);
    expect(refusal(() => assertGenericArgument('writeConcern', rawValue(BsonType.document, undefinedW))).code).toBe(
      ErrorCodes.FailedToParse,
    );
  });

  it('names it does not type (comment, lsid, $readPreference, maxTimeMS, $db, $clusterTime) pass any value', () => {
    for (const name of ['comment', 'lsid', '$readPreference', 'maxTimeMS', '$db', '$clusterTime'])
      for (const [, v] of EVERY_TYPE) expect(() => assertGenericArgument(name, v)).not.toThrow();
  });
});

describe('assertAllowedFields types the generic arguments', () => {
  function body(object: Record<string, unknown>): RawDocument {
    return RawDocument.parse(serialize(object));
  }

  it('refuses a mistyped generic argument on forwarded commands, with the server code', () => {
    const apiVersion = refusal(() =>
      assertAllowedFields('find', body({ find: 'c', apiVersion: Decimal128.fromString('1'), $db: 'd' })),
    );
    expect([apiVersion.code, apiVersion.rule]).toEqual([ErrorCodes.TypeMismatch, 'field.generic-type']);
    expect(
      refusal(() => assertAllowedFields('insert', body({ insert: 'c', documents: [], writeConcern: 1, $db: 'd' })))
        .code,
    ).toBe(ErrorCodes.FailedToParse);
    expect(
      refusal(() =>
        assertAllowedFields('getMore', body({ getMore: Long.fromNumber(1), collection: 'c', txnNumber: 1 })),
      ).code,
    ).toBe(ErrorCodes.TypeMismatch);
  });

  it('accepts what drivers send, and any comment', () => {
    assertAllowedFields(
      'find',
      body({
        find: 'c',
        comment: new MinKey(),
        readConcern: { level: 'majority' },
        txnNumber: Long.fromNumber(3),
        autocommit: false,
        startTransaction: true,
        apiVersion: '1',
        apiStrict: false,
        $db: 'd',
      }),
    );
    assertAllowedFields('insert', body({ insert: 'c', documents: [], writeConcern: { w: 'majority' }, $db: 'd' }));
  });

  it('leaves the commands the proxy answers itself alone (nothing is forwarded)', () => {
    expect(() =>
      assertAllowedFields('serverStatus', body({ serverStatus: 1, apiVersion: 1, $db: 'admin' })),
    ).not.toThrow();
  });
});
