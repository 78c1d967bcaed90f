import { describe, expect, it } from 'vitest';
import { BSON, Binary, Long, ObjectId, Timestamp, deserialize, serialize } from '../../../src/wire/bson.js';
import type { Document } from '../../../src/wire/bson.js';

describe('bson seam', () => {
  it('re-exports the bson package values others need', () => {
    const doc: Document = {
      id: new ObjectId('0123456789abcdef01234567'),
      n: Long.fromNumber(5),
      ts: new Timestamp({ t: 2, i: 1 }),
      bin: new Binary(Buffer.from([1, 2]), 4),
    };
    const bytes = serialize(doc);
    expect(deserialize(bytes, { useBigInt64: true })).toMatchObject({ n: 5n });
    expect(BSON.deserialize(bytes).id.toHexString()).toBe('0123456789abcdef01234567');
  });
});
