import { describe, expect, it } from 'vitest';
import { createSessionHandlers, deriveSessionId, mapSession, sessionKeyFrom } from '../../../src/rewrite/sessions.js';
import { PolicyRefusal } from '../../../src/errors.js';
import type { CommandInput, NamespaceResolver, TenantContext } from '../../../src/policy/types.js';
import { Binary, Long, Timestamp, UUID, deserialize, serialize, type Document } from '../../../src/wire/bson.js';
import { RawDocument, valueOf } from '../../../src/wire/raw-bson.js';

const KEY = sessionKeyFrom('a-configured-session-key-0123456789');
const CLIENT_ID = new UUID('0f1e2d3c-4b5a-4987-8a6b-5c4d3e2f1a0b');

function raw(body: Document): RawDocument {
  return RawDocument.parse(serialize(body));
}

function decode(doc: RawDocument): Document {
  return deserialize(doc.toBytes(), { useBigInt64: true });
}

function upstreamId(doc: RawDocument): string {
  const lsid = decode(doc)['lsid'] as { id: Binary };
  expect(lsid.id.sub_type).toBe(4);
  expect(Object.keys(lsid)).toEqual(['id']);
  return Buffer.from(lsid.id.buffer).toString('hex');
}

function refusal(run: () => unknown): PolicyRefusal {
  try {
    run();
  } catch (error) {
    if (error instanceof PolicyRefusal) return error;
    throw error;
  }
  throw new Error('expected a refusal');
}

const resolver: NamespaceResolver = {
  resolve: () => {
    throw new Error('not used');
  },
  resolveDatabase: () => {
    throw new Error('not used');
  },
  toClient: () => undefined,
};

function context(tenant: string): TenantContext {
  return {
    tenant,
    tenantValue: valueOf(tenant),
    field: 'tenantId',
    namespaces: resolver,
    maxTimeMS: 5000,
    pinSimpleCollation: false,
  };
}

function input(body: Document, db = 'admin'): CommandInput {
  const doc = raw({ ...body, $db: db });
  return { name: doc.first!.name, db, body: doc, sequences: new Map(), moreToCome: false };
}

describe('mapSession', () => {
  const body = { find: 'users', filter: {}, lsid: { id: CLIENT_ID }, txnNumber: Long.fromNumber(3), $db: 'app' };

  it('maps the lsid deterministically per tenant (retries and restarts with the same key)', () => {
    const first = upstreamId(mapSession(raw(body), 'acme', KEY));
    const again = upstreamId(mapSession(raw(body), 'acme', sessionKeyFrom('a-configured-session-key-0123456789')));
    expect(again).toBe(first);
    expect(first).not.toBe(Buffer.from(CLIENT_ID.buffer).toString('hex'));
  });

  it('separates tenants using the same client lsid', () => {
    const acme = upstreamId(mapSession(raw(body), 'acme', KEY));
    const bob = upstreamId(mapSession(raw(body), 'bob', KEY));
    expect(acme).not.toBe(bob);
    // Tenant and id boundaries cannot be shifted to produce a collision.
    expect(
      deriveSessionId(KEY, 'ab', Buffer.alloc(16, 1)).equals(
        deriveSessionId(KEY, 'a', Buffer.concat([Buffer.from('b'), Buffer.alloc(15, 1)])),
      ),
    ).toBe(false);
  });

  it('depends on the key', () => {
    expect(upstreamId(mapSession(raw(body), 'acme', KEY))).not.toBe(
      upstreamId(mapSession(raw(body), 'acme', sessionKeyFrom('another-session-key-abcdefghijkl'))),
    );
  });

  it('answers repeated lsids from its cache exactly as the HMAC does, per tenant and per key', () => {
    const otherKey = sessionKeyFrom('another-session-key-abcdefghijkl');
    for (let round = 0; round < 3; round++) {
      for (const tenant of ['acme', 'bob', 'acm', 'acmee']) {
        for (const key of [KEY, otherKey]) {
          const expected = deriveSessionId(key, tenant, Buffer.from(CLIENT_ID.buffer)).toString('hex');
          expect(upstreamId(mapSession(raw(body), tenant, key))).toBe(expected);
        }
      }
    }
    // Tenant and id cannot run into each other in the cache key either: 'ab' + id ≠ 'a' + ('b' + id…).
    const id = Buffer.alloc(16, 1);
    const shifted = Buffer.concat([Buffer.from('b'), Buffer.alloc(15, 1)]);
    const lsid = (bytes: Buffer): Document => ({ ...body, lsid: { id: new Binary(bytes, 4) } });
    expect(upstreamId(mapSession(raw(lsid(id)), 'ab', KEY))).toBe(deriveSessionId(KEY, 'ab', id).toString('hex'));
    expect(upstreamId(mapSession(raw(lsid(shifted)), 'a', KEY))).toBe(
      deriveSessionId(KEY, 'a', shifted).toString('hex'),
    );
    // Malformed lsids are still refused after a well-formed one was cached.
    expect(refusal(() => mapSession(raw({ ...body, lsid: { id: CLIENT_ID, uid: 1 } }), 'acme', KEY)).rule).toBe(
      'lsid.fields',
    );
  });

  it('keeps its cache bounded while many sessions come and go', () => {
    let first: string | undefined;
    for (let i = 0; i < 10_050; i++) {
      const id = Buffer.alloc(16);
      id.writeUInt32BE(i, 0);
      const mapped = upstreamId(mapSession(raw({ ...body, lsid: { id: new Binary(id, 4) } }), 'churn', KEY));
      if (i === 0) first = mapped;
    }
    // The first session was evicted long ago and is derived again, to the same id.
    const id = Buffer.alloc(16);
    expect(upstreamId(mapSession(raw({ ...body, lsid: { id: new Binary(id, 4) } }), 'churn', KEY))).toBe(first);
  });

  it('produces a well-formed UUID (version 8, RFC variant)', () => {
    const id = deriveSessionId(KEY, 'acme', Buffer.from(CLIENT_ID.buffer));
    expect(id).toHaveLength(16);
    expect(id[6]! >> 4).toBe(8);
    expect(id[8]! >> 6).toBe(2);
  });

  it('keeps every other field in place, txnNumber included, and strips $clusterTime', () => {
    const mapped = mapSession(
      raw({
        ...body,
        $clusterTime: {
          clusterTime: new Timestamp({ t: 4_000_000_000, i: 1 }),
          signature: { hash: new Binary(Buffer.alloc(20)), keyId: Long.fromNumber(1) },
        },
      }),
      'acme',
      KEY,
    );
    expect(mapped.names).toEqual(['find', 'filter', 'lsid', 'txnNumber', '$db']);
    expect(decode(mapped)['txnNumber']).toBe(3n);
  });

  it('strips $clusterTime from a body without lsid and returns unchanged bodies as they were', () => {
    expect(
      mapSession(
        raw({ ping: 1, $clusterTime: { clusterTime: new Timestamp({ t: 1, i: 1 }) }, $db: 'admin' }),
        'acme',
        KEY,
      ).names,
    ).toEqual(['ping', '$db']);
    const plain = raw({ ping: 1, $db: 'admin' });
    expect(mapSession(plain, 'acme', KEY)).toBe(plain);
  });

  it('refuses lsid fields other than id, and malformed lsids', () => {
    for (const extra of [
      { uid: new Binary(Buffer.alloc(32)) },
      { txnNumber: Long.fromNumber(1) },
      { txnUUID: new UUID() },
    ]) {
      expect(refusal(() => mapSession(raw({ ...body, lsid: { id: CLIENT_ID, ...extra } }), 'acme', KEY)).rule).toBe(
        'lsid.fields',
      );
    }
    expect(refusal(() => mapSession(raw({ ...body, lsid: {} }), 'acme', KEY)).rule).toBe('lsid.fields');
    expect(refusal(() => mapSession(raw({ ...body, lsid: 'abc' }), 'acme', KEY)).rule).toBe('lsid.invalid');
    expect(refusal(() => mapSession(raw({ ...body, lsid: { id: 'abc' } }), 'acme', KEY)).rule).toBe('lsid.invalid');
    expect(
      refusal(() => mapSession(raw({ ...body, lsid: { id: new Binary(Buffer.alloc(16), 3) } }), 'acme', KEY)).rule,
    ).toBe('lsid.invalid');
  });
});

describe('sessionKeyFrom', () => {
  it('uses the configured key, refuses a short one and makes a random one when unset', () => {
    expect(sessionKeyFrom('0123456789abcdef').toString()).toBe('0123456789abcdef');
    expect(() => sessionKeyFrom('short')).toThrow(/at least 16 bytes/);
    const a = sessionKeyFrom(null);
    const b = sessionKeyFrom(null);
    expect(a).toHaveLength(32);
    expect(a.equals(b)).toBe(false);
  });
});

describe('session commands', () => {
  const handlers = createSessionHandlers(KEY);
  const other = new UUID('11111111-2222-4333-8444-555555555555');

  it('endSessions and refreshSessions map every lsid of their list', () => {
    for (const name of ['endSessions', 'refreshSessions'] as const) {
      const result = handlers[name](input({ [name]: [{ id: CLIENT_ID }, { id: other }] }), context('acme'));
      const list = decode(result.body)[name] as Array<{ id: Binary }>;
      const expected = [CLIENT_ID, other].map((id) =>
        deriveSessionId(KEY, 'acme', Buffer.from(id.buffer)).toString('hex'),
      );
      expect(list.map((lsid) => Buffer.from(lsid.id.buffer).toString('hex'))).toEqual(expected);
      expect(result.notes).toEqual([{ kind: 'rewrite', rule: 'lsid.map' }]);
    }
  });

  it('endSessions takes the writeConcern {w: 0} drivers send when they close, and the other generic fields drivers add; so do the other list commands', () => {
    const result = handlers.endSessions(
      input({ endSessions: [{ id: CLIENT_ID }], writeConcern: { w: 0 } }),
      context('acme'),
    );
    expect(decode(result.body)['writeConcern']).toEqual({ w: 0 });
    const generic = {
      $readPreference: { mode: 'primaryPreferred' },
      writeConcern: { w: 0 },
      maxTimeMS: 10,
      comment: { any: 'bson' },
      apiVersion: '1',
    };
    for (const name of ['endSessions', 'refreshSessions', 'killSessions'] as const) {
      const mapped = handlers[name](input({ [name]: [{ id: CLIENT_ID }], ...generic }), context('acme'));
      expect(decode(mapped.body)['maxTimeMS'], name).toBe(10);
    }
    expect(
      refusal(() => handlers.killSessions(input({ killSessions: [{ id: CLIENT_ID }], filter: {} }), context('acme')))
        .rule,
    ).toBe('killSessions.field');
  });

  it('killSessions maps its list and refuses the empty list (every session of the shared user)', () => {
    const result = handlers.killSessions(input({ killSessions: [{ id: CLIENT_ID }] }), context('bob'));
    const list = decode(result.body)['killSessions'] as Array<{ id: Binary }>;
    expect(Buffer.from(list[0]!.id.buffer).equals(deriveSessionId(KEY, 'bob', Buffer.from(CLIENT_ID.buffer)))).toBe(
      true,
    );
    expect(refusal(() => handlers.killSessions(input({ killSessions: [] }), context('bob'))).rule).toBe(
      'killSessions.all',
    );
  });

  it('refuses list entries with internal fields and bodies with unknown fields', () => {
    expect(
      refusal(() =>
        handlers.endSessions(
          input({ endSessions: [{ id: CLIENT_ID, uid: new Binary(Buffer.alloc(32)) }] }),
          context('acme'),
        ),
      ).rule,
    ).toBe('lsid.fields');
    expect(refusal(() => handlers.endSessions(input({ endSessions: { id: CLIENT_ID } }), context('acme'))).rule).toBe(
      'endSessions.invalid',
    );
    expect(refusal(() => handlers.endSessions(input({ endSessions: [], $audit: 1 }), context('acme'))).rule).toBe(
      'endSessions.field',
    );
  });

  it('commitTransaction / abortTransaction: admin only, with lsid and txnNumber, allowed fields, maxTimeMS capped', () => {
    const body = {
      commitTransaction: 1,
      lsid: { id: CLIENT_ID },
      txnNumber: Long.fromNumber(2),
      autocommit: false,
      writeConcern: { w: 'majority' },
    };
    const result = handlers.commitTransaction(input(body), context('acme'));
    expect(decode(result.body)).toMatchObject({ commitTransaction: 1, maxTimeMS: 5000, txnNumber: 2n });
    expect(result.notes).toEqual([{ kind: 'rewrite', rule: 'maxTimeMS.cap' }]);
    expect(
      handlers
        .abortTransaction(
          input({ abortTransaction: 1, lsid: { id: CLIENT_ID }, txnNumber: Long.fromNumber(2), autocommit: false }),
          context('acme'),
        )
        .body.has('abortTransaction'),
    ).toBe(true);
    expect(refusal(() => handlers.commitTransaction(input(body, 'app'), context('acme'))).rule).toBe(
      'transaction.admin',
    );
    expect(
      refusal(() =>
        handlers.commitTransaction(input({ commitTransaction: 1, txnNumber: Long.fromNumber(2) }), context('acme')),
      ).rule,
    ).toBe('transaction.session');
    expect(refusal(() => handlers.commitTransaction(input({ ...body, $tenant: 'x' }), context('acme'))).rule).toBe(
      'commitTransaction.field',
    );
  });
});
