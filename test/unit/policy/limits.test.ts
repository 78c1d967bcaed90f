import { describe, expect, it } from 'vitest';
import { PolicyRefusal } from '../../../src/errors.js';
import { capMaxTimeMS } from '../../../src/policy/limits.js';
import { Double, Long, deserialize, serialize, type Document } from '../../../src/wire/bson.js';
import { RawDocument } from '../../../src/wire/raw-bson.js';

const raw = (body: Document): RawDocument => RawDocument.parse(serialize(body));
const decode = (doc: RawDocument): Document => deserialize(doc.toBytes(), { useBigInt64: true });

describe('capMaxTimeMS', () => {
  it('keeps a value within the cap byte for byte', () => {
    for (const value of [1000, Long.fromNumber(1000), new Double(1000)]) {
      const body = raw({ find: 'c', maxTimeMS: value });
      expect(capMaxTimeMS(body, 5000)).toBe(body);
    }
  });

  it('caps larger values and 0 (no limit), whatever their numeric type', () => {
    for (const value of [60_000, 0, Long.fromString('9223372036854775807'), new Double(1e12)]) {
      expect(decode(capMaxTimeMS(raw({ find: 'c', maxTimeMS: value, $db: 'a' }), 5000))).toEqual({
        find: 'c',
        maxTimeMS: 5000,
        $db: 'a',
      });
    }
  });

  it('adds the cap when missing, unless told to leave it', () => {
    expect(decode(capMaxTimeMS(raw({ find: 'c' }), 5000))).toEqual({ find: 'c', maxTimeMS: 5000 });
    const body = raw({ getMore: 1 });
    expect(capMaxTimeMS(body, 5000, { whenMissing: 'leave' })).toBe(body);
  });

  it('refuses non-numeric, negative and repeated values', () => {
    expect(() => capMaxTimeMS(raw({ find: 'c', maxTimeMS: '1' }), 5000)).toThrow(PolicyRefusal);
    expect(() => capMaxTimeMS(raw({ find: 'c', maxTimeMS: -1 }), 5000)).toThrow(PolicyRefusal);
    expect(() => capMaxTimeMS(raw({ find: 'c', maxTimeMS: Long.fromNumber(-5) }), 5000)).toThrow(PolicyRefusal);
    const twice = new RawDocument([...raw({ maxTimeMS: 1 }).elements, ...raw({ maxTimeMS: 99_999 }).elements]);
    expect(() => capMaxTimeMS(twice, 5000)).toThrow(PolicyRefusal);
  });

  it('rejects a cap that is not a positive int32', () => {
    expect(() => capMaxTimeMS(raw({}), 0)).toThrow(RangeError);
    expect(() => capMaxTimeMS(raw({}), 1.5)).toThrow(RangeError);
  });
});
