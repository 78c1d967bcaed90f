/**
 * mapReplyNames and scrubErrorValues given the reply's one scan (src/wire/reply-scan.ts) skip
 * their parse when the scan says nothing would change. Checked against themselves without the
 * scan (the oracle): the same bytes, the same undefined, or the same throw, for a corpus of reply
 * shapes under three resolvers, every byte of each corrupted in turn, every truncation, and after
 * the tenant field was cut out in place (the engine passes the scan on then).
 */
import { describe, expect, it } from 'vitest';
import { mapReplyNames, scrubErrorValues } from '../../../src/rewrite/replies.js';
import { hideTenantField } from '../../../src/rewrite/tenant-field.js';
import type { NamespaceResolver } from '../../../src/policy/types.js';
import { BsonType } from '../../../src/wire/bson-scan.js';
import { Long, serialize, type Document } from '../../../src/wire/bson.js';
import { ReplyScan } from '../../../src/wire/reply-scan.js';
import { bodyWithFrameRoom } from '../../../src/wire/op-msg.js';
import { bsonString as str, rawDocOf as rawBody } from '../wire/fixtures.js';

const notUsed = (): never => {
  throw new Error('not used');
};

const resolvers: Array<[string, NamespaceResolver]> = [
  ['shared (names kept)', { resolve: notUsed, resolveDatabase: notUsed, toClient: (db, coll) => ({ db, coll }) }],
  [
    'collection prefix',
    {
      resolve: notUsed,
      resolveDatabase: notUsed,
      toClient: (db, coll) => {
        if (db !== 'app') return undefined;
        if (coll === undefined) return { db };
        return coll.startsWith('acme__') ? { db, coll: coll.slice('acme__'.length) } : undefined;
      },
    },
  ],
  [
    'database per tenant',
    {
      resolve: notUsed,
      resolveDatabase: notUsed,
      toClient: (db, coll) => (db.startsWith('acme_') ? { db: db.slice('acme_'.length), coll } : undefined),
    },
  ],
];

type Outcome = { bytes: string | undefined } | { threw: string };

function outcome(run: () => Uint8Array | undefined): Outcome {
  try {
    const out = run();
    return { bytes: out === undefined ? undefined : Buffer.from(out).toString('hex') };
  } catch (error) {
    return { threw: `${(error as Error).constructor.name}: ${(error as Error).message}` };
  }
}

let skipped = 0;
let checked = 0;

/** Both functions with the scan of `scanned` (the body as received) on `body` equal themselves without. */
function same(body: Uint8Array, scanned: Uint8Array = body): void {
  const scan = new ReplyScan(scanned);
  for (const [, resolver] of resolvers) {
    checked++;
    const fast = outcome(() => mapReplyNames(body, resolver, {}, scan));
    const slow = outcome(() => mapReplyNames(body, resolver));
    if (JSON.stringify(fast) !== JSON.stringify(slow)) expect(fast).toEqual(slow);
  }
  for (const bulkWriteCursor of [false, true]) {
    const fast = outcome(() => scrubErrorValues(body, { bulkWriteCursor }, scan));
    const slow = outcome(() => scrubErrorValues(body, { bulkWriteCursor }));
    if (JSON.stringify(fast) !== JSON.stringify(slow)) expect(fast).toEqual(slow);
  }
  if (scan.wellFormed) skipped++;
}

const doc = (value: Document): Buffer => Buffer.from(serialize(value));

const batch = [
  { _id: 'a', tenantId: 'acme', n: 1 },
  { _id: 'b', tenantId: 'acme', errmsg: 'inside a document: never mapped', ok: 0 },
];

const corpus: Array<[string, Buffer]> = [
  ['getMore, shared', doc({ cursor: { nextBatch: batch, id: new Long(7), ns: 'app.users' }, ok: 1 })],
  ['getMore, prefixed', doc({ cursor: { nextBatch: batch, id: new Long(7), ns: 'app.acme__users' }, ok: 1 })],
  [
    'getMore, other tenant prefix',
    doc({ cursor: { nextBatch: batch, id: new Long(7), ns: 'app.globex__users' }, ok: 1 }),
  ],
  ['find, per database', doc({ cursor: { firstBatch: batch, id: new Long(0), ns: 'acme_app.users' }, ok: 1 })],
  ['cursor without ns', doc({ cursor: { firstBatch: batch, id: new Long(0) }, ok: 1 })],
  ['cursor ns a number', doc({ cursor: { firstBatch: [], ns: 5 }, ok: 1 })],
  ['cursor not a document', doc({ cursor: 'x', ok: 1 })],
  ['cursor ns without a dot', doc({ cursor: { firstBatch: [], ns: 'app' }, ok: 1 })],
  [
    'cursor ns with NUL',
    rawBody([
      [BsonType.document, 'cursor', rawBody([[BsonType.string, 'ns', str(Buffer.from('app.acme__u\0x'))]])],
      [BsonType.double, 'ok', Buffer.from([0, 0, 0, 0, 0, 0, 0xf0, 0x3f])],
    ]),
  ],
  [
    'two cursors',
    rawBody([
      [BsonType.document, 'cursor', doc({ firstBatch: [], ns: 'app.users' })],
      [BsonType.document, 'cursor', doc({ firstBatch: [], ns: 'app.acme__users' })],
    ]),
  ],
  [
    'listCollections',
    doc({
      cursor: { firstBatch: [{ name: 'acme__users' }, { name: 'x' }], id: new Long(0), ns: 'app.$cmd.listCollections' },
      ok: 1,
    }),
  ],
  [
    'listIndexes',
    doc({
      cursor: {
        firstBatch: [{ name: '_id_', ns: 'app.acme__users' }],
        id: new Long(0),
        ns: 'app.$cmd.listIndexes.acme__users',
      },
      ok: 1,
    }),
  ],
  [
    'error',
    doc({
      ok: 0,
      errmsg: 'E11000 duplicate key error collection: app.acme__users index: a dup key: { a: "secret" }',
      code: 11000,
      keyValue: { a: 'secret' },
    }),
  ],
  [
    'error, ok int32',
    doc({ ok: 0, code: 2, errmsg: "Failed to parse number 'secret' in $convert with no onError value" }),
  ],
  [
    'writeErrors',
    doc({ ok: 1, n: 0, writeErrors: [{ index: 0, code: 11000, errmsg: 'dup key: { a: 1 }', keyValue: { a: 1 } }] }),
  ],
  ['writeConcernError', doc({ ok: 1, writeConcernError: { code: 64, errmsg: 'collection: app.acme__users' } })],
  ['mongos raw', doc({ ok: 1, raw: { shard0: { ok: 0, errmsg: 'dup key: { a: "s" }' } } })],
  ['listDatabases', doc({ databases: [{ name: 'acme_app' }, { name: 'globex_app' }], ok: 1 })],
  [
    'bulkWrite cursor',
    doc({
      cursor: {
        firstBatch: [{ ok: 0, idx: 0, code: 11000, errmsg: 'dup key: { a: "s" }', keyValue: { a: 's' } }],
        id: new Long(0),
        ns: 'admin.$cmd.bulkWrite',
      },
      ok: 1,
    }),
  ],
  [
    'non-ASCII name',
    rawBody([
      [BsonType.double, 'ök', Buffer.alloc(8)],
      [BsonType.double, 'ok', Buffer.from([0, 0, 0, 0, 0, 0, 0xf0, 0x3f])],
    ]),
  ],
  ['ok missing', doc({ n: 1 })],
];

describe('reply rewrites given the reply scan: the same answer as without', () => {
  it('a corpus of reply shapes under three resolvers', () => {
    for (const [, body] of corpus) same(body);
    expect(skipped).toBeGreaterThan(10);
  });

  it('every byte of every corpus body corrupted in turn', () => {
    for (const [, body] of corpus) {
      for (let at = 0; at < body.length; at++) {
        for (const value of [0x00, 0x04, 0xff, (body[at]! + 1) & 0xff]) {
          if (value === body[at]) continue;
          const corrupt = Buffer.from(body);
          corrupt[at] = value;
          same(corrupt);
        }
      }
    }
    expect(checked).toBeGreaterThan(10_000);
  });

  it('every truncation (the length prefix kept, and fixed)', () => {
    for (const [, body] of corpus) {
      for (let length = 0; length < body.length; length++) {
        const cut = Buffer.from(body.subarray(0, length));
        same(cut);
        if (length >= 5) {
          const fixed = Buffer.from(cut);
          fixed.writeInt32LE(length, 0);
          fixed[length - 1] = 0;
          same(fixed);
        }
      }
    }
  });

  it('after the tenant field was cut out, in place or copied, with the scan of the body as received', () => {
    for (const [, body] of corpus) {
      const received = Buffer.from(body);
      const scan = new ReplyScan(received);
      for (const where of ['cursor', 'value'] as const) {
        const copied = hideTenantField(received, 'tenantId', { in: where });
        if (copied !== undefined) same(copied, body);
        // In place: the body of a frame the proxy owns.
        const owned = bodyWithFrameRoom(body.length);
        owned.set(body);
        const scanOwned = new ReplyScan(Buffer.from(body));
        const spliced = hideTenantField(owned, 'tenantId', { in: where });
        if (spliced !== undefined) {
          expect(Buffer.from(spliced).includes(Buffer.from('tenantId'))).toBe(false);
          for (const [, resolver] of resolvers) {
            expect(outcome(() => mapReplyNames(spliced, resolver, {}, scanOwned))).toEqual(
              outcome(() => mapReplyNames(spliced, resolver)),
            );
          }
          expect(outcome(() => scrubErrorValues(spliced, {}, scanOwned))).toEqual(
            outcome(() => scrubErrorValues(spliced, {})),
          );
        }
      }
      expect(scan.wellFormed).toBe(new ReplyScan(body).wellFormed);
    }
  });
});
