/**
 * The per-command fast paths of the raw BSON helpers (issue 16) give exactly what the general
 * path gives, and refuse exactly what it refuses: int32 values built without the serializer,
 * strings read in place, short ASCII names built without TextDecoder, looked-up names encoded once,
 * ASCII names written without a Buffer per name.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BsonValidationError } from '../../../src/errors.js';
import { BsonType, elements, findElement, findElements, firstElement } from '../../../src/wire/bson-scan.js';
import { serialize } from '../../../src/wire/bson.js';
import { arrayItems, arrayOf, encodeElements, stringOf, valueOf, type RawValue } from '../../../src/wire/raw-bson.js';

/** What the serializer makes of `value` (the general path of valueOf). */
function serialized(value: unknown): { type: number; value: number[] } {
  const bytes = serialize({ v: value });
  return { type: bytes[4]!, value: [...bytes.subarray(7, bytes.length - 1)] };
}

function stringValue(payload: Uint8Array, declared = payload.length + 1): Uint8Array {
  const out = new Uint8Array(4 + payload.length + 1);
  new DataView(out.buffer).setInt32(0, declared, true);
  out.set(payload, 4);
  return out;
}

function thrown(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

describe('valueOf', () => {
  it('encodes numbers exactly as the serializer does', () => {
    const values = [0, -0, 1, -1, 5000, 0x7fffffff, -0x80000000, 0x80000000, -0x80000001, 1.5, NaN, Infinity, 2 ** 53];
    for (const value of values) {
      const fast = valueOf(value);
      expect({ type: fast.type, value: [...fast.value] }).toEqual(serialized(value));
    }
    expect(valueOf(5000).type).toBe(BsonType.int32);
  });
});

describe('stringOf', () => {
  it('reads well-framed strings in place', () => {
    for (const text of ['', 'users', 'héllo wörld', '日本語', 'x'.repeat(300)]) {
      expect(stringOf({ type: BsonType.string, value: stringValue(new TextEncoder().encode(text)) })).toBe(text);
    }
  });

  it('refuses what the general path refuses: embedded NUL, invalid UTF-8, a length that does not fit', () => {
    const nul = stringValue(new Uint8Array([0x61, 0x00, 0x62]));
    const badUtf8 = stringValue(new Uint8Array([0x61, 0xc3, 0x28]));
    const overlong = stringValue(new Uint8Array([0xc0, 0xaf]));
    const surrogate = stringValue(new Uint8Array([0xed, 0xa0, 0x80]));
    for (const value of [nul, badUtf8, overlong, surrogate]) {
      expect(thrown(() => stringOf({ type: BsonType.string, value }))).toBeInstanceOf(BsonValidationError);
    }
    // Lengths that do not match the bytes take the general path, which refuses them as before.
    for (const declared of [0, -1, 100, 2]) {
      const value = stringValue(new Uint8Array([0x61, 0x62, 0x63]), declared);
      expect(thrown(() => stringOf({ type: BsonType.string, value }))).toBeInstanceOf(Error);
    }
  });
});

describe('element names', () => {
  it('decodes ASCII and non-ASCII names, short and long, as TextDecoder does', () => {
    const names = ['a', 'find', '$db', 'x'.repeat(32), 'y'.repeat(33), 'é', 'naïve', '日本', 'z'.repeat(31) + 'é'];
    const doc = encodeElements(names.map((name) => ({ name, type: BsonType.null, value: new Uint8Array(0) })));
    expect(elements(doc).map((element) => element.name)).toEqual(names);
    expect(firstElement(doc)?.name).toBe('a');
    for (const name of names) expect(findElement(doc, name)?.name).toBe(name);
    expect(findElements(doc, 'naïve')).toHaveLength(1);
    expect(findElement(doc, 'naive')).toBeNull();
  });

  it('writes every name as Buffer.from(name, "utf8") would: ASCII in place, any other text encoded', () => {
    const reference = (names: string[]): Buffer => {
      const parts = names.map((name) => Buffer.from(name, 'utf8'));
      const length = 5 + parts.reduce((sum, part) => sum + 1 + part.length + 1 + 1, 0);
      const out = Buffer.alloc(length);
      out.writeInt32LE(length, 0);
      let at = 4;
      for (const part of parts) {
        out[at++] = BsonType.boolean;
        at += part.copy(out, at);
        out[at++] = 0;
        out[at++] = 1;
      }
      return out;
    };
    const check = (names: string[]): void => {
      const encoded = encodeElements(
        names.map((name) => ({ name, type: BsonType.boolean, value: new Uint8Array([1]) })),
      );
      expect(Buffer.from(encoded).equals(reference(names))).toBe(true);
    };
    // The edges of ASCII, a lone surrogate (written as U+FFFD by both), multi-byte text, empty.
    check(['', 'a', '\u007f', '\u0080', 'é', '\ud800', 'x\udfffy', '日本', '😀', '$db', 'z'.repeat(100)]);
    fc.assert(
      fc.property(fc.array(fc.string({ unit: 'binary', maxLength: 40 }), { maxLength: 8 }), (names) => check(names)),
      { numRuns: 500 },
    );
  });

  it('refuses names that are not valid UTF-8, short or long', () => {
    for (const raw of [
      [0x61, 0xff],
      [0xc3, 0x28],
      [...Array(40).fill(0x61), 0xc3],
    ]) {
      const name = new Uint8Array(raw);
      const doc = new Uint8Array(4 + 1 + name.length + 1 + 1);
      new DataView(doc.buffer).setInt32(0, doc.length, true);
      doc[4] = BsonType.null;
      doc.set(name, 5);
      expect(thrown(() => elements(doc))).toBeInstanceOf(BsonValidationError);
    }
  });
});

describe('arrayOf with the source array', () => {
  /** A BSON array value from (key, document) pairs, keys as given. */
  function arrayBytes(entries: Array<[string, Uint8Array]>, trailing = 0): RawValue {
    const parts: Buffer[] = [];
    for (const [key, doc] of entries)
      parts.push(Buffer.from([BsonType.document]), Buffer.from(`${key}\0`), Buffer.from(doc));
    const body = Buffer.concat([...parts, Buffer.alloc(trailing)]);
    const out = Buffer.alloc(4 + body.length + 1);
    out.writeInt32LE(out.length, 0);
    body.copy(out, 4);
    return { type: BsonType.array, value: out };
  }
  const docs = Array.from({ length: 23 }, (_, i) => serialize({ _id: i, tenantId: 't', s: 'x'.repeat(i) }));
  const canonical = (): RawValue => arrayBytes(docs.map((doc, i) => [String(i), doc]));

  function same(values: RawValue[], source: RawValue): { reused: boolean; equal: boolean } {
    const fast = arrayOf(values, source);
    const general = arrayOf(values);
    return { reused: fast === source, equal: Buffer.from(fast.value).equals(Buffer.from(general.value)) };
  }

  it('returns the source itself when its items went through unchanged, and its bytes are what arrayOf writes', () => {
    const source = canonical();
    expect(same(arrayItems(source), source)).toEqual({ reused: true, equal: true });
    const empty = arrayBytes([]);
    expect(same(arrayItems(empty), empty)).toEqual({ reused: true, equal: true });
  });

  it('writes a new array for anything else, with the same bytes as without a source', () => {
    const source = canonical();
    const items = arrayItems(source);
    const variants: RawValue[][] = [
      items.slice(1), // one fewer
      items.slice(0, -1),
      [...items, items[0]!], // one more
      [items[1]!, items[0]!, ...items.slice(2)], // reordered
      items.map((item, i) => (i === 5 ? { type: item.type, value: Buffer.from(item.value) } : item)), // a copy
      items.map((item, i) =>
        i === 7 ? { type: item.type, value: serialize({ _id: 7, tenantId: 't', stamped: 1 }) } : item,
      ),
      items.map((item, i) => (i === 3 ? { type: BsonType.binary, value: item.value } : item)), // another type
      items.map((item, i) =>
        i === 9 ? { type: item.type, value: item.value.subarray(0, item.value.length - 1) } : item,
      ),
    ];
    for (const values of variants) expect(same(values, source)).toEqual({ reused: false, equal: true });
    // Keys that are not "0", "1", …, and bytes after the last item, are not what arrayOf writes.
    const keyed = arrayBytes(docs.map((doc, i) => [i === 11 ? 'x' : String(i), doc]));
    expect(same(arrayItems(keyed), keyed)).toEqual({ reused: false, equal: true });
    const padded = arrayBytes(
      docs.map((doc, i) => [String(i), doc]),
      3,
    );
    expect(same(items, padded)).toEqual({ reused: false, equal: true });
    const wrongLength = canonical();
    (wrongLength.value as Buffer).writeInt32LE(wrongLength.value.length + 1, 0);
    expect(same(arrayItems(canonical()), wrongLength).reused).toBe(false);
    const notArray = { type: BsonType.document, value: source.value };
    expect(same(items, notArray)).toEqual({ reused: false, equal: true });
  });
});
