import { describe, expect, it } from 'vitest';
import { ErrorCodes, PolicyRefusal } from '../../../src/errors.js';
import {
  CursorRegistry,
  createCursorHandlers,
  cursorIdOf,
  killCursorsReply,
  mergeCursorsNotFound,
  observeCursorReply,
} from '../../../src/policy/cursors.js';
import type { CommandInput, NamespaceResolver, TenantContext } from '../../../src/policy/types.js';
import { Long, deserialize, serialize, type Document } from '../../../src/wire/bson.js';
import { RawDocument, valueOf } from '../../../src/wire/raw-bson.js';

/** Database per tenant: client db `app` is `t_<tenant>_app` on the server. */
function resolver(tenant: string): NamespaceResolver {
  const prefix = `t_${tenant}_`;
  return {
    resolve: (db, coll) => {
      if (db === 'admin' || coll.startsWith('system.')) throw new PolicyRefusal('namespace.system', 'system namespace');
      return { db: prefix + db, coll, model: 'database-per-tenant', access: 'scoped', tenantFiltered: false };
    },
    resolveDatabase: (db) => {
      if (db === 'admin') throw new PolicyRefusal('namespace.system', 'system namespace');
      return { db: prefix + db, model: 'database-per-tenant' };
    },
    toClient: (db, coll) =>
      db.startsWith(prefix) ? { db: db.slice(prefix.length), ...(coll === undefined ? {} : { coll }) } : undefined,
  };
}

function context(tenant: string): TenantContext {
  return {
    tenant,
    tenantValue: valueOf(tenant),
    field: 'tenantId',
    namespaces: resolver(tenant),
    maxTimeMS: 5000,
    pinSimpleCollation: false,
  };
}

function input(body: Document, db = 'app'): CommandInput {
  const bytes = serialize({ ...body, $db: db });
  const doc = RawDocument.parse(bytes);
  return { name: doc.first!.name, db, body: doc, sequences: new Map(), moreToCome: false };
}

function decode(doc: RawDocument): Document {
  return deserialize(doc.toBytes(), { useBigInt64: true });
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

describe('CursorRegistry', () => {
  it('knows which tenant owns a cursor, per physical namespace', () => {
    const registry = new CursorRegistry();
    registry.register('acme', 42n, 'db', 'users');
    expect(registry.owns('acme', 42n, 'db', 'users')).toBe(true);
    expect(registry.owns('bob', 42n, 'db', 'users')).toBe(false);
    expect(registry.owns('acme', 43n, 'db', 'users')).toBe(false);
    expect(registry.owns('acme', 42n, 'db', 'orders')).toBe(false);
    expect(registry.owns('acme', 42n, 'other', 'users')).toBe(false);
  });

  it('keeps colliding ids of different namespaces apart (ids are unique per shard only)', () => {
    const registry = new CursorRegistry();
    registry.register('acme', 7n, 'db', 'users');
    registry.register('bob', 7n, 'db', 'orders');
    expect(registry.owns('acme', 7n, 'db', 'users')).toBe(true);
    expect(registry.owns('bob', 7n, 'db', 'orders')).toBe(true);
    expect(registry.owns('bob', 7n, 'db', 'users')).toBe(false);
    expect(registry.owns('acme', 7n, 'db', 'orders')).toBe(false);
    registry.forget(7n, 'db', 'users');
    expect(registry.owns('acme', 7n, 'db', 'users')).toBe(false);
    expect(registry.owns('bob', 7n, 'db', 'orders')).toBe(true);
    // A key made of parts that concatenate alike is still distinct.
    registry.register('acme', 1n, 'a', 'b.c');
    expect(registry.owns('acme', 1n, 'a.b', 'c')).toBe(false);
  });

  it('never registers id 0 (no cursor)', () => {
    const registry = new CursorRegistry();
    registry.register('acme', 0n, 'db', 'users');
    expect(registry.size).toBe(0);
  });

  it('drops cursors idle longer than the timeout, and use refreshes them', () => {
    let now = 0;
    const registry = new CursorRegistry({ idleTimeoutMS: 600_000, now: () => now });
    registry.register('acme', 1n, 'db', 'c');
    registry.register('acme', 2n, 'db', 'c');
    now = 500_000;
    expect(registry.owns('acme', 2n, 'db', 'c')).toBe(true); // refreshed at 500 000
    now = 600_001;
    expect(registry.owns('acme', 1n, 'db', 'c')).toBe(false);
    expect(registry.owns('acme', 2n, 'db', 'c')).toBe(true);
    now = 2_000_000;
    expect(registry.sweep()).toBe(1);
    expect(registry.size).toBe(0);
  });

  it('evicts the least recently used entry beyond the global bound', () => {
    const registry = new CursorRegistry({ maxEntries: 2 });
    registry.register('acme', 1n, 'db', 'c');
    registry.register('bob', 2n, 'db', 'c');
    expect(registry.owns('acme', 1n, 'db', 'c')).toBe(true); // 2 is now the oldest
    registry.register('carl', 3n, 'db', 'c');
    expect(registry.size).toBe(2);
    expect(registry.owns('bob', 2n, 'db', 'c')).toBe(false);
    expect(registry.owns('acme', 1n, 'db', 'c')).toBe(true);
    expect(registry.owns('carl', 3n, 'db', 'c')).toBe(true);
  });

  it('bounds each tenant so one cannot evict everyone else', () => {
    const registry = new CursorRegistry({ maxEntries: 10, maxPerTenant: 2 });
    registry.register('bob', 100n, 'db', 'c');
    for (let id = 1n; id <= 20n; id++) registry.register('acme', id, 'db', 'c');
    expect(registry.owns('bob', 100n, 'db', 'c')).toBe(true);
    expect(registry.owns('acme', 20n, 'db', 'c')).toBe(true);
    expect(registry.owns('acme', 19n, 'db', 'c')).toBe(true);
    expect(registry.owns('acme', 18n, 'db', 'c')).toBe(false);
    expect(registry.size).toBe(3);
  });

  it('keeps the session key of a cursor', () => {
    const registry = new CursorRegistry();
    registry.register('acme', 5n, 'db', 'c', 'abcd');
    expect(registry.lsidOf(5n, 'db', 'c')).toBe('abcd');
  });
});

describe('cursorIdOf', () => {
  it('reads cursor.id and cursor.ns from a reply', () => {
    const reply = serialize({
      cursor: { firstBatch: [{ a: 1 }], id: Long.fromBigInt(123456789012345n), ns: 't_acme_app.users' },
      ok: 1,
    });
    expect(cursorIdOf(reply)).toEqual({ id: 123456789012345n, ns: 't_acme_app.users' });
  });

  it('is undefined without a cursor or with an id that is not int64', () => {
    expect(cursorIdOf(serialize({ ok: 1 }))).toBeUndefined();
    expect(cursorIdOf(serialize({ cursor: 1, ok: 1 }))).toBeUndefined();
    expect(cursorIdOf(serialize({ cursor: { id: 5, ns: 'a.b' }, ok: 1 }))).toBeUndefined();
  });
});

describe('getMore', () => {
  const registry = new CursorRegistry();
  const { getMore } = createCursorHandlers(registry);
  registry.register('acme', 77n, 't_acme_app', 'users');

  it('forwards a getMore of the tenant own cursor with physical names and a capped maxTimeMS', () => {
    const result = getMore(
      input({ getMore: Long.fromBigInt(77n), collection: 'users', batchSize: 10, maxTimeMS: 60_000, comment: 'x' }),
      context('acme'),
    );
    const body = decode(result.body);
    expect(body).toMatchObject({
      getMore: 77n,
      collection: 'users',
      batchSize: 10,
      maxTimeMS: 5000,
      $db: 't_acme_app',
    });
    expect(result.reply).toMatchObject({
      registerCursor: { db: 't_acme_app', coll: 'users' },
      cursorsInRequest: { command: 'getMore', db: 't_acme_app', coll: 'users', ids: [77n] },
      scrubErrors: true,
    });
    expect(result.notes).toEqual([{ kind: 'rewrite', rule: 'maxTimeMS.cap', namespace: 'app.users' }]);
  });

  it('does not add a maxTimeMS the server would refuse on a plain getMore', () => {
    const result = getMore(input({ getMore: Long.fromBigInt(77n), collection: 'users' }), context('acme'));
    expect(decode(result.body)).not.toHaveProperty('maxTimeMS');
  });

  it('refuses another tenant cursor and an unknown one alike, with CursorNotFound', () => {
    const foreign = refusal(() =>
      getMore(input({ getMore: Long.fromBigInt(77n), collection: 'users' }), context('bob')),
    );
    const unknown = refusal(() =>
      getMore(input({ getMore: Long.fromBigInt(78n), collection: 'users' }), context('bob')),
    );
    expect(foreign.code).toBe(ErrorCodes.CursorNotFound);
    expect(foreign.rule).toBe('cursor.foreign');
    expect(unknown.rule).toBe('cursor.foreign');
    expect(foreign.message.replace('77', 'N')).toBe(unknown.message.replace('78', 'N'));
  });

  it('refuses the right id on another collection', () => {
    expect(
      refusal(() => getMore(input({ getMore: Long.fromBigInt(77n), collection: 'orders' }), context('acme'))).code,
    ).toBe(ErrorCodes.CursorNotFound);
  });

  it('refuses unknown fields and a cursor id that is not int64', () => {
    expect(
      refusal(() => getMore(input({ getMore: Long.fromBigInt(77n), collection: 'users', term: 1 }), context('acme')))
        .rule,
    ).toBe('getMore.field');
    expect(refusal(() => getMore(input({ getMore: 77, collection: 'users' }), context('acme'))).rule).toBe(
      'getMore.invalid',
    );
    expect(refusal(() => getMore(input({ getMore: Long.fromBigInt(77n), collection: 5 }), context('acme'))).rule).toBe(
      'getMore.invalid',
    );
  });

  it('continues database-level cursors ($cmd.listCollections) on the tenant database', () => {
    registry.register('acme', 90n, 't_acme_app', '$cmd.listCollections');
    const result = getMore(
      input({ getMore: Long.fromBigInt(90n), collection: '$cmd.listCollections' }),
      context('acme'),
    );
    expect(decode(result.body)).toMatchObject({ $db: 't_acme_app', collection: '$cmd.listCollections' });
    expect(() =>
      getMore(input({ getMore: Long.fromBigInt(90n), collection: '$cmd.listCollections' }), context('bob')),
    ).toThrow(PolicyRefusal);
  });
});

describe('killCursors', () => {
  it('forwards only the tenant own ids and reports the others as not found', () => {
    const registry = new CursorRegistry();
    const { killCursors } = createCursorHandlers(registry);
    registry.register('acme', 1n, 't_acme_app', 'users');
    registry.register('bob', 2n, 't_acme_app', 'users');
    const result = killCursors(
      input({ killCursors: 'users', cursors: [Long.fromBigInt(1n), Long.fromBigInt(2n), Long.fromBigInt(3n)] }),
      context('acme'),
    );
    expect(decode(result.body)).toMatchObject({ killCursors: 'users', cursors: [1n], $db: 't_acme_app' });
    expect(result.reply.cursorsNotFound).toEqual([2n, 3n]);
    expect(result.reply.localReply).toBeUndefined();
    expect(result.reply.cursorsInRequest).toEqual({
      command: 'killCursors',
      db: 't_acme_app',
      coll: 'users',
      ids: [1n],
    });
    expect(result.notes).toEqual([{ kind: 'refusal', rule: 'cursor.foreign', namespace: 'app.users' }]);
    expect(registry.owns('bob', 2n, 't_acme_app', 'users')).toBe(true); // B's cursor stays alive
  });

  it('answers locally when no id is the tenant own', () => {
    const registry = new CursorRegistry();
    const { killCursors } = createCursorHandlers(registry);
    registry.register('bob', 2n, 't_bob_app', 'users');
    const result = killCursors(input({ killCursors: 'users', cursors: [Long.fromBigInt(2n)] }), context('acme'));
    expect(result.reply.localReply).toEqual(killCursorsReply([], [2n]));
    const local = deserialize(serialize(result.reply.localReply!), { useBigInt64: true });
    expect(local).toEqual({ cursorsKilled: [], cursorsNotFound: [2n], cursorsAlive: [], cursorsUnknown: [], ok: 1 });
  });

  it('forwards an all-own list unchanged apart from names', () => {
    const registry = new CursorRegistry();
    const { killCursors } = createCursorHandlers(registry);
    registry.register('acme', 1n, 't_acme_app', 'users');
    const result = killCursors(input({ killCursors: 'users', cursors: [Long.fromBigInt(1n)] }), context('acme'));
    expect(result.reply.cursorsNotFound).toBeUndefined();
    expect(result.notes).toEqual([]);
  });

  it('refuses a malformed list', () => {
    const { killCursors } = createCursorHandlers(new CursorRegistry());
    expect(refusal(() => killCursors(input({ killCursors: 'users', cursors: 5 }), context('acme'))).rule).toBe(
      'killCursors.invalid',
    );
    expect(refusal(() => killCursors(input({ killCursors: 'users', cursors: [5] }), context('acme'))).rule).toBe(
      'killCursors.invalid',
    );
  });
});

describe('mergeCursorsNotFound', () => {
  it('appends withheld ids to the server reply', () => {
    const reply = serialize({
      cursorsKilled: [Long.fromBigInt(1n)],
      cursorsNotFound: [Long.fromBigInt(9n)],
      cursorsAlive: [],
      cursorsUnknown: [],
      ok: 1,
    });
    const merged = deserialize(mergeCursorsNotFound(reply, [2n, 3n]), { useBigInt64: true });
    expect(merged).toEqual({
      cursorsKilled: [1n],
      cursorsNotFound: [9n, 2n, 3n],
      cursorsAlive: [],
      cursorsUnknown: [],
      ok: 1,
    });
  });

  it('leaves errors and empty lists alone', () => {
    const error = serialize({ ok: 0, errmsg: 'x', code: 13 });
    expect(mergeCursorsNotFound(error, [1n])).toBe(error);
    const reply = serialize({ ok: 1 });
    expect(mergeCursorsNotFound(reply, [])).toBe(reply);
  });
});

describe('observeCursorReply', () => {
  const cursorReply = (id: bigint, ns: string, batch = 'firstBatch'): Uint8Array =>
    serialize({ cursor: { [batch]: [], id: Long.fromBigInt(id), ns }, ok: 1 });

  it('registers a new cursor under the reply namespace', () => {
    const registry = new CursorRegistry();
    observeCursorReply(
      registry,
      'acme',
      { registerCursor: { db: 't_acme_app', coll: 'users' }, scrubErrors: true },
      cursorReply(5n, 't_acme_app.users'),
    );
    expect(registry.owns('acme', 5n, 't_acme_app', 'users')).toBe(true);
    observeCursorReply(
      registry,
      'acme',
      { registerCursor: { db: 't_acme_app', coll: 'x' }, scrubErrors: true },
      cursorReply(6n, 't_acme_app.$cmd.listCollections'),
    );
    expect(registry.owns('acme', 6n, 't_acme_app', '$cmd.listCollections')).toBe(true);
  });

  it('forgets a getMore cursor when it is exhausted or gone', () => {
    const registry = new CursorRegistry();
    registry.register('acme', 5n, 'd', 'c');
    registry.register('acme', 6n, 'd', 'c');
    const plan = (id: bigint) => ({
      registerCursor: { db: 'd', coll: 'c' },
      cursorsInRequest: { command: 'getMore' as const, db: 'd', coll: 'c', ids: [id] },
      scrubErrors: true,
    });
    observeCursorReply(registry, 'acme', plan(5n), cursorReply(5n, 'd.c', 'nextBatch'));
    expect(registry.owns('acme', 5n, 'd', 'c')).toBe(true);
    observeCursorReply(registry, 'acme', plan(5n), cursorReply(0n, 'd.c', 'nextBatch'));
    expect(registry.owns('acme', 5n, 'd', 'c')).toBe(false);
    observeCursorReply(
      registry,
      'acme',
      plan(6n),
      serialize({ ok: 0, errmsg: 'cursor id 6 not found', code: 43, codeName: 'CursorNotFound' }),
    );
    expect(registry.owns('acme', 6n, 'd', 'c')).toBe(false);
  });

  it('forgets killed cursors', () => {
    const registry = new CursorRegistry();
    registry.register('acme', 5n, 'd', 'c');
    registry.register('acme', 6n, 'd', 'c');
    const reply = serialize({
      cursorsKilled: [Long.fromBigInt(5n)],
      cursorsNotFound: [],
      cursorsAlive: [Long.fromBigInt(6n)],
      cursorsUnknown: [],
      ok: 1,
    });
    observeCursorReply(
      registry,
      'acme',
      { cursorsInRequest: { command: 'killCursors', db: 'd', coll: 'c', ids: [5n, 6n] }, scrubErrors: true },
      reply,
    );
    expect(registry.owns('acme', 5n, 'd', 'c')).toBe(false);
    expect(registry.owns('acme', 6n, 'd', 'c')).toBe(true);
  });
});
