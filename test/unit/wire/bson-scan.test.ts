import {
  BSONRegExp,
  BSONSymbol,
  Binary,
  Code,
  Decimal128,
  Double,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  deserialize,
  onDemand,
} from 'bson';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BsonValidationError, ErrorCodes, ProxyError } from '../../../src/errors.js';
import {
  BsonType,
  bsonTypeName,
  elements,
  findElement,
  findElements,
  firstElement,
  isValidUtf8,
  readBoolean,
  readDouble,
  readInt32,
  readInt64,
  readNumber,
  readString,
  subDocument,
  validateDocument,
} from '../../../src/wire/bson-scan.js';
import { bson, bsonString, element, hex, int32, nested, rawDoc } from './fixtures.js';

const opts = { maxDepth: 200 };

function validationError(run: () => unknown): BsonValidationError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(BsonValidationError);
    return error as BsonValidationError;
  }
  throw new Error('expected a BsonValidationError');
}

const everyType = {
  double: new Double(1.5),
  string: 'héllo ✓ 😀',
  doc: { x: 1, y: { z: [1, 2, { w: null }] } },
  array: ['a', 2, true],
  binary: new Binary(Buffer.from([1, 2, 3]), 0),
  binaryOld: new Binary(Buffer.from('abc'), 2),
  oid: new ObjectId('0123456789abcdef01234567'),
  yes: true,
  no: false,
  date: new Date(0),
  nil: null,
  regex: new BSONRegExp('^a.*b$', 'i'),
  code: new Code('function () { return 1; }'),
  symbol: new BSONSymbol('sym'),
  codeWithScope: new Code('x + y', { x: 1, y: { z: 2 } }),
  int32: new Int32(-5),
  timestamp: new Timestamp({ t: 1, i: 2 }),
  int64: Long.fromString('-9007199254740993'),
  decimal: Decimal128.fromString('1.10'),
  min: new MinKey(),
  max: new MaxKey(),
};

describe('validateDocument', () => {
  it('siblings reuse closed documents without inheriting their keys or array index', () => {
    const dupes = { maxDepth: 10, rejectDuplicateKeys: true };
    // Each document's keys are its own: the same names in a sibling are not duplicates…
    const siblings = bson({ d: [{ a: 1, b: { a: 1 } }, { a: 2, b: { a: 2 } }, [1, 2, [3, 4]], { a: 3 }] });
    expect(validateDocument(siblings, 0, dupes)).toBe(siblings.length);
    // …and still are within one document, after a sibling closed (top-level "a" repeated at the end).
    const repeated = bson({ x: { a: 1 }, y: [1, 2], a: 1, z: 1 });
    repeated[repeated.lastIndexOf(Buffer.from('z\0'))] = 0x61;
    expect(() => validateDocument(repeated, 0, dupes)).toThrow(/duplicate key "a"/);
    // Many keys (past the linear limit) in one sibling, then few in the next.
    const wide = Object.fromEntries(Array.from({ length: 40 }, (_, n) => [`k${n}`, n]));
    const mixed = bson({ d: [wide, { k1: 1 }, wide] });
    expect(validateDocument(mixed, 0, dupes)).toBe(mixed.length);
    const array = bson({
      d: [
        [1, 2, 3],
        [4, 5],
      ],
    });
    expect(validateDocument(array, 0, dupes)).toBe(array.length);
  });

  it('accepts every BSON type produced by the bson package and returns the length', () => {
    const doc = bson(everyType);
    expect(validateDocument(doc, 0, opts)).toBe(doc.length);
  });

  it('accepts the legacy types the bson package no longer writes: undefined and DBPointer', () => {
    const doc = rawDoc(
      element(0x06, 'u', Buffer.alloc(0)),
      element(0x0c, 'p', Buffer.concat([bsonString('db.coll'), Buffer.alloc(12, 1)])),
    );
    expect(validateDocument(doc, 0, opts)).toBe(doc.length);
    expect(elements(doc).map((e) => e.type)).toEqual([0x06, 0x0c]);
  });

  it('validates at an offset and ignores bytes after the document', () => {
    const doc = bson({ a: 1 });
    const buf = Buffer.concat([hex('ffff'), doc, hex('ffffff')]);
    expect(validateDocument(buf, 2, opts)).toBe(doc.length);
  });

  it('accepts the empty document', () => {
    expect(validateDocument(hex('0500000000'), 0, opts)).toBe(5);
  });

  describe('rejects', () => {
    const cases: Array<[string, Buffer, RegExp]> = [
      ['a length below 5', hex('0400000000'), /invalid document length 4/],
      ['a negative length', hex('ffffffff00'), /invalid document length -1/],
      ['a length beyond the buffer', hex('0600000000'), /runs past the end/],
      ['fewer than 4 bytes', hex('0500'), /runs past the end/],
      ['a missing terminator', hex('0500000001'), /not terminated/],
      ['a 0x00 type before the end (length too long)', hex('0a000000 00 0000000000'), /unexpected 0x00/],
      ['an unknown type byte', rawDoc(element(0x14, 'a', Buffer.alloc(0))), /unknown BSON type 0x14/],
      ['type 0x80', rawDoc(element(0x80, 'a', Buffer.alloc(0))), /unknown BSON type/],
      ['a key without NUL', hex('08000000 10 6161 00'), /element name runs past/],
      ['an int32 cut short', hex('0a000000 10 6100 010000 00'), /int32 value runs past/],
      ['a string length of 0', rawDoc(element(0x02, 'a', int32(0))), /invalid string length 0/],
      ['a negative string length', rawDoc(element(0x02, 'a', int32(-5))), /invalid string length -5/],
      [
        'a string running past its document',
        rawDoc(element(0x02, 'a', Buffer.concat([int32(50), Buffer.from('x\0')]))),
        /runs past the end/,
      ],
      [
        'a string without its NUL',
        rawDoc(element(0x02, 'a', Buffer.concat([int32(2), Buffer.from('xy')]))),
        /not NUL-terminated/,
      ],
      ['a nested document overrunning its parent', rawDoc(element(0x03, 'a', hex('0900000000'))), /runs past/],
      ['a nested document without terminator', rawDoc(element(0x03, 'a', hex('0500000001'))), /not terminated/],
      ['a boolean of 2', rawDoc(element(0x08, 'a', hex('02'))), /boolean value is not 0 or 1/],
      [
        'a negative binary length',
        rawDoc(element(0x05, 'a', Buffer.concat([int32(-1), hex('00')]))),
        /invalid binary length/,
      ],
      ['a binary header cut short', rawDoc(element(0x05, 'a', int32(0))), /binary header runs past/],
      [
        'a subtype-2 binary with a wrong inner length',
        rawDoc(element(0x05, 'a', Buffer.concat([int32(5), hex('02'), int32(9), hex('aa')]))),
        /subtype 2/,
      ],
      [
        'a regex without options terminator',
        hex('0a000000 0b 6100 78 00 79'),
        /regex options|not terminated|missing NUL/,
      ],
      ['a DBPointer without its id', rawDoc(element(0x0c, 'a', bsonString('ns'))), /dbPointer id runs past/],
      [
        'a code-with-scope total that disagrees with its parts',
        rawDoc(
          element(0x0f, 'a', Buffer.concat([int32(4 + 6 + 5 + 1), bsonString('x'), hex('0500000000'), hex('00')])),
        ),
        /javascriptWithScope/,
      ],
      [
        'a code-with-scope too short',
        rawDoc(element(0x0f, 'a', Buffer.concat([int32(8), int32(0)]))),
        /invalid javascriptWithScope length/,
      ],
    ];
    for (const [name, bytes, message] of cases) {
      it(name, () => {
        const error = validationError(() => validateDocument(bytes, 0, opts));
        expect(error.message).toMatch(message);
        expect(error.code).toBe(ErrorCodes.InvalidBSON);
        expect(error.offset).toBeGreaterThanOrEqual(0);
      });
    }

    it('an offset outside the buffer', () => {
      validationError(() => validateDocument(hex('0500000000'), 6, opts));
      validationError(() => validateDocument(hex('0500000000'), -1, opts));
    });
  });

  describe('UTF-8', () => {
    const bad: Array<[string, string]> = [
      ['overlong NUL', 'c080'],
      ['overlong slash', 'e080af'],
      ['UTF-16 surrogate', 'eda080'],
      ['above U+10FFFF', 'f4908080'],
      ['0xF5 lead byte', 'f5808080'],
      ['lone continuation byte', '80'],
      ['truncated 3-byte sequence', 'e282'],
      ['0xFF', 'ff'],
    ];
    for (const [name, bytes] of bad) {
      it(`rejects ${name} in keys and string values`, () => {
        const key = rawDoc(element(0x10, Buffer.concat([Buffer.from('a'), hex(bytes)]), int32(1)));
        expect(validationError(() => validateDocument(key, 0, opts)).message).toMatch(/name is not valid UTF-8/);
        const value = rawDoc(element(0x02, 'a', bsonString(hex(bytes))));
        expect(validationError(() => validateDocument(value, 0, opts)).message).toMatch(/not valid UTF-8/);
        const nestedKey = rawDoc(element(0x03, 'd', key));
        validationError(() => validateDocument(nestedKey, 0, opts));
        const regex = rawDoc(element(0x0b, 'r', Buffer.concat([hex(bytes), hex('00 00')])));
        expect(validationError(() => validateDocument(regex, 0, opts)).message).toMatch(
          /regex pattern: not valid UTF-8/,
        );
      });
    }

    it('allows NUL inside string values (legal BSON) but readString refuses it by default', () => {
      const doc = rawDoc(element(0x02, '$db', bsonString(Buffer.from('t1\0x'))));
      expect(validateDocument(doc, 0, opts)).toBe(doc.length);
      const el = findElement(doc, '$db');
      expect(el).not.toBeNull();
      const error = validationError(() => readString(doc, el!));
      expect(error.code).toBe(ErrorCodes.BadValue);
      expect(readString(doc, el!, { allowNul: true })).toBe('t1\0x');
    });

    it('agrees with a fatal TextDecoder on random bytes', () => {
      const decoder = new TextDecoder('utf-8', { fatal: true });
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 12 }), (bytes) => {
          let expected = true;
          try {
            decoder.decode(bytes);
          } catch {
            expected = false;
          }
          expect(isValidUtf8(bytes, 0, bytes.length)).toBe(expected);
        }),
        { numRuns: 20_000 },
      );
    });

    it('agrees with a fatal TextDecoder on long inputs (the native path)', () => {
      const decoder = new TextDecoder('utf-8', { fatal: true });
      fc.assert(
        fc.property(
          fc.string({ unit: 'binary', minLength: 40 }),
          fc.nat(),
          fc.integer({ min: 0, max: 255 }),
          (s, at, byte) => {
            const bytes = Buffer.from(s, 'utf8');
            bytes[at % bytes.length] = byte;
            let expected = true;
            try {
              decoder.decode(bytes);
            } catch {
              expected = false;
            }
            expect(isValidUtf8(bytes, 0, bytes.length)).toBe(expected);
            const value = rawDoc(element(0x02, 's', bsonString(bytes)));
            let valid = true;
            try {
              validateDocument(value, 0, opts);
            } catch {
              valid = false;
            }
            expect(valid).toBe(expected);
          },
        ),
        { numRuns: 3_000 },
      );
    });

    it('agrees with a fatal TextDecoder on random strings re-encoded with damage', () => {
      const decoder = new TextDecoder('utf-8', { fatal: true });
      fc.assert(
        fc.property(fc.string({ unit: 'binary' }), fc.nat(), fc.integer({ min: 0, max: 255 }), (s, at, byte) => {
          const bytes = Buffer.from(s, 'utf8');
          if (bytes.length > 0) bytes[at % bytes.length] = byte;
          let expected = true;
          try {
            decoder.decode(bytes);
          } catch {
            expected = false;
          }
          expect(isValidUtf8(bytes, 0, bytes.length)).toBe(expected);
        }),
        { numRuns: 5_000 },
      );
    });
  });

  describe('depth', () => {
    it('matches the server: nesting of exactly maxDepth passes, one more fails with Overflow', () => {
      const ok = nested(10);
      expect(deserialize(ok)).toEqual({ a: { a: { a: { a: { a: { a: { a: { a: { a: { a: {} } } } } } } } } } });
      expect(validateDocument(ok, 0, { maxDepth: 10 })).toBe(ok.length);
      const error = validationError(() => validateDocument(nested(11), 0, { maxDepth: 10 }));
      expect(error.code).toBe(ErrorCodes.Overflow);
    });

    it('counts arrays and code-with-scope scopes as levels', () => {
      const doc = bson({ a: [[[1]]] });
      expect(validateDocument(doc, 0, { maxDepth: 3 })).toBe(doc.length);
      expect(validationError(() => validateDocument(doc, 0, { maxDepth: 2 })).code).toBe(ErrorCodes.Overflow);
      const cws = bson({ c: new Code('x', { s: { t: 1 } }) });
      expect(validateDocument(cws, 0, { maxDepth: 2 })).toBe(cws.length);
      expect(validationError(() => validateDocument(cws, 0, { maxDepth: 1 })).code).toBe(ErrorCodes.Overflow);
      expect(validationError(() => validateDocument(cws, 0, { maxDepth: 0 })).code).toBe(ErrorCodes.Overflow);
    });

    it('rejects a 100,000-level document without overflowing the stack', () => {
      const deep = nested(100_000);
      const error = validationError(() => validateDocument(deep, 0, { maxDepth: 200 }));
      expect(error.code).toBe(ErrorCodes.Overflow);
    });

    it('walks a 100,000-level document iteratively when the cap allows it', () => {
      const deep = nested(100_000);
      expect(validateDocument(deep, 0, { maxDepth: 1_000_000, rejectDuplicateKeys: true })).toBe(deep.length);
    });
  });

  describe('duplicate keys', () => {
    const dupTop = rawDoc(element(0x10, 'a', int32(1)), element(0x10, 'a', int32(2)));
    const dupDeep = rawDoc(
      element(
        0x03,
        'filter',
        rawDoc(element(0x03, 'x', rawDoc(element(0x10, 'tenant', int32(1)), element(0x10, 'tenant', int32(2))))),
      ),
    );
    const dupArray = rawDoc(element(0x04, 'arr', rawDoc(element(0x10, '0', int32(1)), element(0x10, '0', int32(2)))));
    const sameKeyDifferentLevels = bson({ a: { a: { a: 1 } }, b: [{ a: 1 }, { a: 2 }] });

    it('are allowed unless asked for', () => {
      for (const doc of [dupTop, dupDeep, dupArray]) expect(validateDocument(doc, 0, opts)).toBe(doc.length);
    });

    it('are rejected at any depth when asked for', () => {
      for (const doc of [dupTop, dupDeep, dupArray]) {
        const error = validationError(() => validateDocument(doc, 0, { ...opts, rejectDuplicateKeys: true }));
        expect(error.message).toMatch(/duplicate key|array key "0" is not the index 1/);
      }
    });

    it('find a duplicate among many keys (past the linear scan)', () => {
      const many: Buffer[] = [];
      for (let i = 0; i < 40; i++) many.push(element(0x10, `k${i}`, int32(i)));
      const unique = rawDoc(...many);
      expect(validateDocument(unique, 0, { ...opts, rejectDuplicateKeys: true })).toBe(unique.length);
      for (const dupAt of [3, 17, 39]) {
        const doc = rawDoc(...many, element(0x10, `k${dupAt}`, int32(0)));
        const error = validationError(() => validateDocument(doc, 0, { ...opts, rejectDuplicateKeys: true }));
        expect(error.message).toBe(`duplicate key "k${dupAt}"`);
      }
      const early = rawDoc(element(0x10, 'k5', int32(0)), ...many);
      expect(validationError(() => validateDocument(early, 0, { ...opts, rejectDuplicateKeys: true })).message).toMatch(
        /k5/,
      );
    });

    it('require array keys "0", "1", ... in order (the server ignores them; readers by key would not)', () => {
      const strict = { ...opts, rejectDuplicateKeys: true };
      const big = bson({ a: Array.from({ length: 1234 }, (_, i) => i) });
      expect(validateDocument(big, 0, strict)).toBe(big.length);
      const skipped = rawDoc(element(0x04, 'a', rawDoc(element(0x10, '0', int32(1)), element(0x10, '2', int32(2)))));
      const padded = rawDoc(element(0x04, 'a', rawDoc(element(0x10, '00', int32(1)))));
      const named = rawDoc(element(0x04, 'a', rawDoc(element(0x10, 'x', int32(1)))));
      const longer = rawDoc(element(0x04, 'a', rawDoc(element(0x10, '0', int32(1)), element(0x10, '11', int32(1)))));
      for (const doc of [skipped, padded, named, longer]) {
        expect(validationError(() => validateDocument(doc, 0, strict)).message).toMatch(
          /array key ".*" is not the index/,
        );
        expect(validateDocument(doc, 0, opts)).toBe(doc.length);
      }
    });

    it('are compared byte-exactly (é precomposed vs decomposed differ)', () => {
      const doc = rawDoc(element(0x10, 'caf\u00e9', int32(1)), element(0x10, 'cafe\u0301', int32(2)));
      expect(validateDocument(doc, 0, { ...opts, rejectDuplicateKeys: true })).toBe(doc.length);
    });

    it('the same key in different documents is fine', () => {
      expect(validateDocument(sameKeyDifferentLevels, 0, { ...opts, rejectDuplicateKeys: true })).toBeGreaterThan(0);
    });
  });
});

describe('element lookup', () => {
  const doc = bson(everyType);

  it('elements() matches bson onDemand.parseToElements offsets exactly', () => {
    const reference = Array.from(onDemand.parseToElements(doc));
    const ours = elements(doc);
    expect(ours.map((e) => [e.type, e.offset, e.length])).toEqual(reference.map((r) => [r[0], r[3], r[4]]));
    expect(ours.map((e) => e.name)).toEqual(Object.keys(everyType));
    for (const e of ours) expect(doc[e.start]).toBe(e.type);
  });

  it('offsets are absolute within the buffer passed in', () => {
    const buf = Buffer.concat([hex('abcdef'), doc]);
    const shifted = elements(buf, 3);
    expect(shifted.map((e) => e.offset)).toEqual(elements(doc).map((e) => e.offset + 3));
    expect(findElement(buf, 'int32', 3)?.offset).toBe((findElement(doc, 'int32')?.offset ?? 0) + 3);
    expect(firstElement(buf, 3)?.name).toBe('double');
  });

  it('firstElement returns the first key or null for an empty document', () => {
    expect(firstElement(bson({ find: 'c', $db: 'x' }))?.name).toBe('find');
    expect(firstElement(hex('0500000000'))).toBeNull();
  });

  it('findElement compares names byte-exactly and returns the first occurrence', () => {
    const dup = rawDoc(element(0x10, 'a', int32(1)), element(0x10, 'A', int32(3)), element(0x10, 'a', int32(2)));
    const first = findElement(dup, 'a');
    expect(readInt32(dup, first!)).toBe(1);
    expect(findElements(dup, 'a').map((e) => readInt32(dup, e))).toEqual([1, 2]);
    expect(findElement(dup, 'b')).toBeNull();
    expect(findElement(dup, 'aa')).toBeNull();
    expect(findElement(bson({ é: 1 }), 'é')).not.toBeNull();
  });

  it('typed readers decode values and check types', () => {
    const d = bson({
      s: 'str',
      i: 7,
      l: Long.fromBigInt(-(2n ** 40n)),
      f: 2.5,
      t: true,
      n: { x: 1 },
      a: [1],
      big: Long.fromBigInt(2n ** 60n),
    });
    const get = (name: string) => findElement(d, name)!;
    expect(readString(d, get('s'))).toBe('str');
    expect(readInt32(d, get('i'))).toBe(7);
    expect(readInt64(d, get('l'))).toBe(-(2n ** 40n));
    expect(readDouble(d, get('f'))).toBe(2.5);
    expect(readBoolean(d, get('t'))).toBe(true);
    expect(readNumber(d, get('i'))).toBe(7);
    expect(readNumber(d, get('l'))).toBe(-(2 ** 40));
    expect(readNumber(d, get('f'))).toBe(2.5);
    expect(deserialize(subDocument(d, get('n')))).toEqual({ x: 1 });
    expect(deserialize(subDocument(d, get('a')))).toEqual({ 0: 1 });
    expect(validationError(() => readNumber(d, get('big'))).code).toBe(ErrorCodes.Overflow);
    const mismatch = validationError(() => readString(d, get('i')));
    expect(mismatch.code).toBe(ErrorCodes.TypeMismatch);
    expect(mismatch.message).toMatch(/field "i" is int32, expected string/);
    expect(validationError(() => readNumber(d, get('s'))).message).toMatch(/expected int32 or int64 or double/);
    expect(validationError(() => subDocument(d, get('s'))).code).toBe(ErrorCodes.TypeMismatch);
    expect(validationError(() => readBoolean(d, get('s'))).code).toBe(ErrorCodes.TypeMismatch);
    expect(validationError(() => readInt64(d, get('s'))).code).toBe(ErrorCodes.TypeMismatch);
    expect(validationError(() => readDouble(d, get('s'))).code).toBe(ErrorCodes.TypeMismatch);
    expect(validationError(() => readInt32(d, get('s'))).code).toBe(ErrorCodes.TypeMismatch);
  });

  it('works on plain Uint8Array views', () => {
    const d = new Uint8Array(bson({ n: 1.25, l: Long.fromNumber(5) }));
    expect(readDouble(d, findElement(d, 'n')!)).toBe(1.25);
    expect(readInt64(d, findElement(d, 'l')!)).toBe(5n);
  });

  it('never reads out of bounds on malformed input', () => {
    const bad: Buffer[] = [
      hex('0500'),
      hex('0600000000'),
      hex('0a000000 10 6100 0100'),
      hex('0a000000 02 6100 ffffff7f 00'),
      hex('0b000000 0b 6100 78 00 79 0000'.replace(/ /g, '')),
      hex('0800000014610000'),
      hex('0800000010616161'),
      hex('0900000010610001000000'),
      hex('0c000000 0c 6100 02000000 7800'),
      hex('0e000000 02 6100 fdffffff 0000 00'.replace(/ /g, '')),
      hex('0e000000 05 6100 fdffffff 0000 00'.replace(/ /g, '')),
      hex('0e000000 03 6100 03000000 0000 00'.replace(/ /g, '')),
    ];
    for (const b of bad) {
      expect(() => elements(b)).toThrow(BsonValidationError);
    }
    expect(() => elements(hex('0500000000'), 2)).toThrow(BsonValidationError);
  });

  it('refuses to decode an invalid UTF-8 name even in an unvalidated document', () => {
    const doc = rawDoc(element(0x10, hex('c0af'), int32(1)));
    expect(() => elements(doc)).toThrow(/invalid UTF-8/);
    expect(() => firstElement(doc)).toThrow(BsonValidationError);
  });

  it('names types', () => {
    expect(bsonTypeName(BsonType.int64)).toBe('int64');
    expect(bsonTypeName(0x42)).toBe('0x42');
  });

  it('lookup helpers throw only ProxyErrors on random bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat(8), (bytes, offset) => {
        for (const run of [
          () => elements(bytes, offset),
          () => findElement(bytes, 'a', offset),
          () => firstElement(bytes, offset),
        ]) {
          try {
            run();
          } catch (error) {
            expect(ProxyError.is(error)).toBe(true);
          }
        }
      }),
      { numRuns: 5_000 },
    );
  });
});
