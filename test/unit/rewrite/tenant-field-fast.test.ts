/**
 * hideTenantField's walk for replies without joined paths (find, getMore, findAndModify) against
 * the general walk it skips (hideTenantFieldGeneral, the oracle): the same bytes out, or the same
 * refusal (undefined), for well-formed replies of every shape the fast walk handles and for
 * corrupted ones (lengths, terminators, names, UTF-8 of the batch's index names).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { hideTenantField, hideTenantFieldGeneral } from '../../../src/rewrite/tenant-field.js';
import type { TenantDocuments } from '../../../src/policy/types.js';
import { encodeOpMsg, ownFrameBody } from '../../../src/wire/op-msg.js';
import { Binary, Double, Int32, Long, ObjectId, serialize, type Document } from '../../../src/wire/bson.js';

const F = 'tenantId';

/**
 * The fast walk's answer, on a copy and in place (the body of an owned reply frame), against the
 * general walk's; returns the fast answer on the copy.
 */
function same(body: Uint8Array, where: TenantDocuments['in'], field = F): Uint8Array | undefined {
  const documents: TenantDocuments = { in: where };
  const general = hideTenantFieldGeneral(body, field, documents);
  const fast = hideTenantField(body, field, documents);
  // An owned frame: header, flags and kind byte in front of the body, rewritten in place.
  const frame = Buffer.alloc(21 + body.length + 3, 0xee);
  frame.set(body, 21);
  const owned = frame.subarray(21, 21 + body.length);
  ownFrameBody(frame, owned);
  const inPlace = hideTenantField(owned, field, documents);
  if (general === undefined) {
    expect(fast).toBeUndefined();
    expect(inPlace).toBeUndefined();
    expect(owned.equals(body)).toBe(true); // untouched
  } else {
    expect(Buffer.from(fast!).equals(Buffer.from(general))).toBe(true);
    expect(Buffer.from(inPlace!).equals(Buffer.from(general))).toBe(true);
    expect(inPlace!.buffer).toBe(frame.buffer);
    expect(inPlace!.byteOffset).toBe(frame.byteOffset + 21);
    // Framed over the old header, nothing copied; the bytes after the frame's body stay.
    const out = encodeOpMsg({ requestId: 1, responseTo: 2, body: inPlace! });
    expect(out.buffer).toBe(frame.buffer);
    expect(out.equals(encodeOpMsg({ requestId: 1, responseTo: 2, body: Buffer.from(general) }))).toBe(true);
    expect(frame.subarray(21 + body.length).equals(Buffer.from([0xee, 0xee, 0xee]))).toBe(true);
  }
  return fast;
}

const corpus: Array<[string, Document, TenantDocuments['in']]> = [
  [
    'firstBatch',
    { cursor: { firstBatch: [{ _id: 1, [F]: 'a', x: 1 }, { [F]: 'a' }, {}], id: new Long(0), ns: 'd.c' }, ok: 1 },
    'cursor',
  ],
  ['nextBatch', { cursor: { nextBatch: [{ _id: 1, [F]: 'a' }], id: new Long(5), ns: 'd.c' }, ok: 1 }, 'cursor'],
  [
    'nextBatch before firstBatch',
    { cursor: { nextBatch: [{ [F]: 1 }], firstBatch: [{ a: 1, [F]: 2 }] }, ok: 1 },
    'cursor',
  ],
  ['two firstBatch (duplicate)', { cursor: { firstBatch: [{ [F]: 1 }] }, ok: 1 }, 'cursor'],
  ['batch is one document', { cursor: { firstBatch: { _id: 1, [F]: 'a' } }, ok: 1 }, 'cursor'],
  ['batch items not documents', { cursor: { firstBatch: [1, 'x', [{ [F]: 1 }], { [F]: 1 }] }, ok: 1 }, 'cursor'],
  ['nested field stays', { cursor: { firstBatch: [{ n: { [F]: 1 }, a: [{ [F]: 2 }] }] }, ok: 1 }, 'cursor'],
  ['prefix names stay', { cursor: { firstBatch: [{ tenantI: 1, tenantIdx: 2, [F]: 3 }] }, ok: 1 }, 'cursor'],
  ['nothing to remove', { cursor: { firstBatch: [{ _id: 1 }], id: new Long(0) }, ok: 1 }, 'cursor'],
  ['empty batch', { cursor: { firstBatch: [], id: new Long(0) }, ok: 1 }, 'cursor'],
  ['cursor not a document', { cursor: 5, ok: 1 }, 'cursor'],
  ['no cursor', { ok: 0, errmsg: 'x', code: 2 }, 'cursor'],
  ['batch name in nested doc only', { cursor: { inner: { firstBatch: [{ [F]: 1 }] } }, ok: 1 }, 'cursor'],
  [
    'every value type',
    {
      cursor: {
        firstBatch: [
          {
            _id: new ObjectId(),
            [F]: 'a',
            d: new Double(1.5),
            i: new Int32(3),
            l: new Long(7),
            b: new Binary(Buffer.from([1, 2, 3]), 0),
            o: new Binary(Buffer.from([4, 5]), 2),
            re: /a.b/i,
            dt: new Date(0),
            t: true,
            nul: null,
            s: 'é',
          },
        ],
      },
      ok: 1,
    },
    'cursor',
  ],
  ['findAndModify value', { lastErrorObject: { n: 1 }, value: { _id: 1, [F]: 'a', b: 2 }, ok: 1 }, 'value'],
  ['findAndModify null value', { value: null, ok: 1 }, 'value'],
  ['findAndModify array value', { value: [{ [F]: 1 }, 2], ok: 1 }, 'value'],
];

describe('hideTenantField without joined paths = the general walk', () => {
  it.each(corpus)('%s', (_name, reply, where) => {
    same(serialize(reply), where);
  });

  it('a non-ASCII tenant field and a field named like a batch', () => {
    same(serialize({ cursor: { firstBatch: [{ é: 1, a: 2 }] }, ok: 1 }), 'cursor', 'é');
    same(serialize({ cursor: { firstBatch: [{ firstBatch: 1, a: 2 }] }, ok: 1 }), 'cursor', 'firstBatch');
  });

  it('index names of the batch that are not UTF-8 are refused by both', () => {
    const body = Buffer.from(serialize({ cursor: { firstBatch: [{ [F]: 1 }] }, ok: 1 }));
    const at = body.indexOf(Buffer.from([BSON_DOCUMENT, 0x30, 0])) + 1; // item "0"
    body[at] = 0xff;
    expect(hideTenantFieldGeneral(body, F, { in: 'cursor' })).toBeUndefined();
    expect(same(body, 'cursor')).toBeUndefined();
  });

  it('every byte of a reply corrupted in turn', () => {
    for (const [, reply, where] of corpus) {
      const good = serialize(reply);
      for (let at = 0; at < good.length; at++) {
        for (const byte of [0x00, 0xff, good[at]! ^ 0x10]) {
          const bad = Buffer.from(good);
          bad[at] = byte;
          same(bad, where);
        }
      }
    }
  });

  it('random replies, truncated and corrupted', () => {
    const value = fc.oneof(
      fc.integer().map((n) => new Int32(n)),
      fc.string(),
      fc.boolean(),
      fc.constant(null),
      fc.double().map((d) => new Double(d)),
    );
    // "tenantIe" becomes a second tenant field (withDuplicates): an object cannot hold duplicates.
    const name = fc.constantFrom(F, 'tenantIe', '_id', 'a', 'tenantI', 'tenantIdx', 'firstBatch', 'é');
    const doc = fc.array(fc.tuple(name, value), { maxLength: 6 });
    fc.assert(
      fc.property(
        fc.array(doc, { maxLength: 5 }),
        fc.constantFrom('firstBatch', 'nextBatch', 'other'),
        fc.nat(),
        fc.integer({ min: 0, max: 255 }),
        fc.boolean(),
        (docs, batchName, at, byte, corrupt) => {
          const body = Buffer.from(
            serialize({
              cursor: { [batchName]: docs.map((pairs) => Object.fromEntries(pairs)), id: new Long(1) },
              ok: 1,
            }),
          );
          withDuplicates(body);
          if (corrupt) body[at % body.length] = byte;
          same(body, 'cursor');
          same(body.subarray(0, at % body.length), 'cursor');
        },
      ),
      { numRuns: 400 },
    );
  });
});

const BSON_DOCUMENT = 0x03;

/** Every element named "tenantIe" renamed in place to the tenant field: documents with duplicate tenant fields. */
function withDuplicates(body: Buffer): void {
  for (let at = body.indexOf('tenantIe\0'); at >= 0; at = body.indexOf('tenantIe\0', at + 1)) body.write(F, at);
}
