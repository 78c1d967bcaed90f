/**
 * The per-command fast paths of the raw BSON helpers (issue 16) give exactly what the general
 * path gives, and refuse exactly what it refuses: int32 values built without the serializer,
 * strings read in place, short ASCII names built without TextDecoder, looked-up names encoded once.
 */
import { describe, expect, it } from 'vitest';
import { BsonValidationError } from '../../../src/errors.js';
import { BsonType, elements, findElement, findElements, firstElement } from '../../../src/wire/bson-scan.js';
import { serialize } from '../../../src/wire/bson.js';
import { encodeElements, stringOf, valueOf } from '../../../src/wire/raw-bson.js';

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
