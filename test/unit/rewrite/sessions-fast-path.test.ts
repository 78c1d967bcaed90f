/**
 * The lsid fast path (issue 16): an lsid in exactly the plain encoding of `{id: <UUID>}` is read in
 * place instead of parsed. It must map exactly what the parsed path maps and refuse exactly what
 * it refuses: every byte of a plain lsid changed to every value, truncations, extensions, other
 * types and shapes, each compared with mapLsidValueParsed (the checks without the fast path).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PolicyRefusal } from '../../../src/errors.js';
import { mapLsidValue, mapLsidValueParsed, sessionKeyFrom } from '../../../src/rewrite/sessions.js';
import { BsonType } from '../../../src/wire/bson-scan.js';
import { Binary, Long, serialize } from '../../../src/wire/bson.js';
import type { RawValue } from '../../../src/wire/raw-bson.js';

const KEY = sessionKeyFrom('a-configured-session-key-0123456789');

/** What a mapping returned (its bytes) or threw (its class, rule and code). */
function outcome(run: () => RawValue): unknown {
  try {
    const value = run();
    return { type: value.type, value: [...value.value] };
  } catch (error) {
    if (error instanceof PolicyRefusal) return { refused: error.rule, code: error.code, message: error.message };
    return { threw: (error as Error).constructor.name, message: (error as Error).message };
  }
}

let compared = 0;
function same(value: RawValue, tenant = 'acme'): void {
  compared++;
  expect(outcome(() => mapLsidValue(value, tenant, KEY))).toEqual(
    outcome(() => mapLsidValueParsed(value, tenant, KEY)),
  );
}

const plain = (id: Uint8Array): Uint8Array => serialize({ id: new Binary(id, Binary.SUBTYPE_UUID) });

describe('mapLsidValue: the plain-encoding fast path', () => {
  it('maps a driver lsid exactly as the parsed path does, per tenant', () => {
    const bytes = plain(Buffer.alloc(16, 7));
    expect(bytes.length).toBe(30);
    same({ type: BsonType.document, value: bytes });
    same({ type: BsonType.document, value: bytes }, 'other');
    // A view inside a larger buffer (as in a command body).
    const inside = Buffer.concat([Buffer.alloc(11, 0xee), bytes, Buffer.alloc(5, 0xee)]).subarray(11, 41);
    same({ type: BsonType.document, value: inside });
  });

  it('refuses what the parsed path refuses: other types, subtypes, lengths, names and fields', () => {
    const shapes: unknown[] = [
      { id: new Binary(Buffer.alloc(16), 3) },
      { id: new Binary(Buffer.alloc(15), 4) },
      { id: new Binary(Buffer.alloc(17), 4) },
      { id: 'not-a-uuid-at-all' },
      { id: Long.fromNumber(1) },
      { iD: new Binary(Buffer.alloc(16), 4) },
      { id: new Binary(Buffer.alloc(16), 4), uid: new Binary(Buffer.alloc(32), 0) },
      { uid: new Binary(Buffer.alloc(32), 0), id: new Binary(Buffer.alloc(16), 4) },
      {},
    ];
    for (const shape of shapes) same({ type: BsonType.document, value: serialize(shape as object) });
    for (const type of [BsonType.array, BsonType.binary, BsonType.string, 0x7f])
      same({ type, value: plain(Buffer.alloc(16, 1)) });
  });

  it('agrees on every byte of a plain lsid set to every value', () => {
    const base = plain(Buffer.from('0f1e2d3c4b5a49878a6b5c4d3e2f1a0b', 'hex'));
    for (let at = 0; at < base.length; at++) {
      for (let byte = 0; byte < 256; byte++) {
        const changed = Buffer.from(base);
        changed[at] = byte;
        same({ type: BsonType.document, value: changed });
      }
    }
    expect(compared).toBeGreaterThan(30 * 256);
  });

  it('agrees on truncations, extensions and random bytes', () => {
    const base = plain(Buffer.alloc(16, 9));
    for (let length = 0; length < base.length; length++)
      same({ type: BsonType.document, value: base.subarray(0, length) });
    same({ type: BsonType.document, value: Buffer.concat([base, Buffer.from([0])]) });
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 40 }), fc.boolean(), (bytes, withPrefix) => {
        const value = withPrefix ? Buffer.concat([base.subarray(0, 13), bytes]) : Buffer.from(bytes);
        same({ type: BsonType.document, value });
      }),
      { numRuns: 5000 },
    );
  });
});
