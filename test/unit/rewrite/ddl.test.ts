import { describe, expect, it } from 'vitest';
import type { IsolationConfig } from '../../../src/config/types.js';
import { createNamespaceResolver } from '../../../src/policy/namespaces.js';
import { DDL_HANDLERS } from '../../../src/rewrite/ddl.js';
import { encodeTenant } from '../../../src/rewrite/filter.js';
import { PolicyRefusal } from '../../../src/errors.js';
import type { CommandInput, RewriteResult, TenantContext } from '../../../src/policy/types.js';
import { Code, deserialize, serialize, UUID, type Document } from '../../../src/wire/bson.js';
import { RawDocument } from '../../../src/wire/raw-bson.js';
import { isolationConfig } from '../../helpers/config.js';

function contextFor(config: IsolationConfig, tenant = 'acme'): TenantContext {
  return {
    tenant,
    tenantValue: encodeTenant(tenant, config.tenantValueType),
    field: config.tenantField,
    namespaces: createNamespaceResolver(config, tenant),
    maxTimeMS: config.maxTimeMS,
    pinSimpleCollation: false,
  };
}

const SHARED = contextFor(isolationConfig());
const PER_DB = contextFor(isolationConfig({ defaultModel: 'database-per-tenant' }));
const PREFIX = contextFor(isolationConfig({ defaultModel: 'collection-prefix' }));
const READONLY = contextFor(isolationConfig({ namespaces: [{ match: 'ref.*', access: 'shared-readonly' }] }));

function input(db: string, body: Document): CommandInput {
  const raw = RawDocument.parse(serialize({ ...body, $db: db }));
  return { name: raw.first!.name, db, body: raw, sequences: new Map(), moreToCome: false };
}

/** A command with a repeated field (JS objects cannot hold one). */
function inputWithDuplicate(db: string, body: Document, duplicate: string): CommandInput {
  const raw = RawDocument.parse(serialize({ ...body, $db: db }));
  const element = raw.get(duplicate)!;
  const doubled = new RawDocument([...raw.elements, element]);
  return { name: raw.first!.name, db, body: doubled, sequences: new Map(), moreToCome: false };
}

function run(context: TenantContext, db: string, body: Document): { result: RewriteResult; sent: Document } {
  const name = Object.keys(body)[0] as keyof typeof DDL_HANDLERS;
  const result = DDL_HANDLERS[name](input(db, body), context);
  return { result, sent: deserialize(result.body.toBytes()) };
}

function refusal(context: TenantContext, db: string, body: Document | CommandInput): string {
  const command =
    body instanceof Object && 'body' in body && body.body instanceof RawDocument
      ? (body as CommandInput)
      : input(db, body as Document);
  try {
    DDL_HANDLERS[command.name as keyof typeof DDL_HANDLERS](command, context);
  } catch (error) {
    expect(error).toBeInstanceOf(PolicyRefusal);
    expect((error as PolicyRefusal).message).toMatch(/rule /);
    return (error as PolicyRefusal).rule;
  }
  throw new Error('expected a PolicyRefusal');
}

describe('catalogue 22: views are refused in every model', () => {
  it.each([
    ['shared', SHARED],
    ['database-per-tenant', PER_DB],
    ['collection-prefix', PREFIX],
  ] as const)('%s', (_label, context) => {
    expect(
      refusal(context, 'app', { create: 'v', viewOn: 'orders', pipeline: [{ $group: { _id: null, n: { $sum: 1 } } }] }),
    ).toBe('ddl.view');
    expect(refusal(context, 'app', { create: 'v', pipeline: [] })).toBe('ddl.view');
    expect(refusal(context, 'app', { collMod: 'v', viewOn: 'orders', pipeline: [] })).toBe('ddl.view');
  });
});

describe('catalogue 23: DDL in shared collections', () => {
  describe('createIndexes', () => {
    it('allows indexes whose key starts with the tenant field (unique ones too), names kept, maxTimeMS capped', () => {
      const { result, sent } = run(SHARED, 'app', {
        createIndexes: 'orders',
        indexes: [
          { key: { tenantId: 1, email: 1 }, name: 'tenant_email', unique: true },
          { key: { tenantId: 1, body: 'text' }, name: 'tenant_text' },
        ],
        maxTimeMS: 999_999,
      });
      expect(sent).toMatchObject({ createIndexes: 'orders', $db: 'app', maxTimeMS: 60_000 });
      expect(sent['indexes']).toHaveLength(2);
      expect(result.reply).toEqual({ scrubErrors: true, mapNames: false });
      expect(result.notes).toContainEqual({ kind: 'rewrite', rule: 'maxTimeMS.cap' });
    });

    it('refuses an index not starting with the tenant field, unique or not (catalogue 61)', () => {
      expect(
        refusal(SHARED, 'app', { createIndexes: 'orders', indexes: [{ key: { email: 1 }, name: 'e', unique: true }] }),
      ).toBe('ddl.index-tenant-prefix');
      expect(
        refusal(SHARED, 'app', { createIndexes: 'orders', indexes: [{ key: { email: 1, tenantId: 1 }, name: 'e' }] }),
      ).toBe('ddl.index-tenant-prefix');
      // One bad index refuses the whole command.
      expect(
        refusal(SHARED, 'app', {
          createIndexes: 'orders',
          indexes: [
            { key: { tenantId: 1 }, name: 'ok' },
            { key: { '$**': 1 }, name: 'wild' },
          ],
        }),
      ).toBe('ddl.index-tenant-prefix');
    });

    it("refuses TTL indexes, even tenant-prefixed (they delete every tenant's documents)", () => {
      expect(
        refusal(SHARED, 'app', {
          createIndexes: 'orders',
          indexes: [{ key: { tenantId: 1 }, name: 't', expireAfterSeconds: 0 }],
        }),
      ).toBe('ddl.index-ttl');
    });

    it('refuses partialFilterExpression (its literals are shown to every tenant)', () => {
      expect(
        refusal(SHARED, 'app', {
          createIndexes: 'orders',
          indexes: [
            { key: { tenantId: 1, email: 1 }, name: 'p', partialFilterExpression: { email: { $exists: true } } },
          ],
        }),
      ).toBe('ddl.index-partial-filter');
    });

    it('refuses unknown index options, storageEngine, bad shapes and duplicate fields (G3)', () => {
      expect(
        refusal(SHARED, 'app', { createIndexes: 'orders', indexes: [{ key: { tenantId: 1 }, name: 'x', bogus: 1 }] }),
      ).toBe('ddl.index-unknown-field');
      expect(
        refusal(SHARED, 'app', {
          createIndexes: 'orders',
          indexes: [{ key: { tenantId: 1 }, name: 'x', storageEngine: {} }],
        }),
      ).toBe('ddl.storage-engine');
      expect(refusal(SHARED, 'app', { createIndexes: 'orders', indexes: [{ key: {}, name: 'x' }] })).toBe(
        'ddl.index-invalid',
      );
      expect(refusal(SHARED, 'app', { createIndexes: 'orders', indexes: [] })).toBe('ddl.index-invalid');
      expect(refusal(SHARED, 'app', { createIndexes: 'orders', indexes: 'x' })).toBe('ddl.index-invalid');
      expect(refusal(SHARED, 'app', { createIndexes: 'orders', indexes: [5] })).toBe('ddl.index-invalid');
      expect(
        refusal(
          SHARED,
          'app',
          inputWithDuplicate(
            'app',
            { createIndexes: 'orders', indexes: [{ key: { tenantId: 1 }, name: 'x' }] },
            'indexes',
          ),
        ),
      ).toBe('field.duplicate');
    });
  });

  it.each([
    ['drop', { drop: 'orders' }],
    ['dropIndexes', { dropIndexes: 'orders', index: '*' }],
    ['collMod (validator off)', { collMod: 'orders', validator: {}, validationLevel: 'off' }],
    ['collMod (validation warn)', { collMod: 'orders', validationAction: 'warn' }],
    ['collMod (TTL change)', { collMod: 'orders', index: { keyPattern: { tenantId: 1 }, expireAfterSeconds: 1 } }],
  ])('%s → ddl.shared', (_label, body) => {
    expect(refusal(SHARED, 'app', body)).toBe('ddl.shared');
  });

  it.each([
    ['validator', { validator: { $jsonSchema: { required: ['tenantId'] } } }],
    ['validationLevel', { validationLevel: 'off' }],
    ['validationAction', { validationAction: 'warn' }],
    ['collation (default collation, catalogue 9)', { collation: { locale: 'en', strength: 2 } }],
    ['capped', { capped: true, size: 4096 }],
    ['timeseries', { timeseries: { timeField: 't' } }],
    ['expireAfterSeconds', { expireAfterSeconds: 10 }],
    ['clusteredIndex', { clusteredIndex: { key: { _id: 1 }, unique: true } }],
  ])('create with %s → ddl.shared-create-options', (_label, options) => {
    expect(refusal(SHARED, 'app', { create: 'orders', ...options })).toBe('ddl.shared-create-options');
  });

  it('a plain create is allowed (the first insert would create the collection anyway)', () => {
    const { sent } = run(SHARED, 'app', { create: 'orders' });
    expect(sent).toEqual({ create: 'orders', $db: 'app', maxTimeMS: 60_000 });
  });

  it("create's idIndex (mongorestore): only the default _id index, checked and never forwarded, in every model", () => {
    for (const context of [SHARED, PER_DB, PREFIX]) {
      const idIndex = { key: { _id: 1 }, name: '_id_', ns: 'app.orders', v: 2 };
      const { sent, result } = run(context, 'app', { create: 'orders', idIndex });
      expect(sent.idIndex).toBeUndefined();
      expect(result.notes).toContainEqual({ kind: 'rewrite', rule: 'ddl.id-index-default', namespace: 'app.orders' });
      expect(run(context, 'app', { create: 'orders', idIndex: { key: { _id: 1 }, name: '_id_' } }).sent.idIndex).toBe(
        undefined,
      );
      // Another tenant's (or database's) namespace, another key, or options of the shared _id index: refused.
      for (const bad of [
        { ...idIndex, ns: 'other.orders' },
        { ...idIndex, key: { _id: -1 } },
        { ...idIndex, key: { tenantId: 1 } },
        { ...idIndex, name: 'x' },
        { name: '_id_' },
      ])
        expect(refusal(context, 'app', { create: 'orders', idIndex: bad }), JSON.stringify(bad)).toBe('ddl.id-index');
    }
  });

  it("create's idIndex with the collection's collation: forwarded without ns in a tenant's own collection only", () => {
    const idIndex = { key: { _id: 1 }, name: '_id_', ns: 'app.orders', v: 2, collation: { locale: 'fr', strength: 3 } };
    for (const context of [PER_DB, PREFIX]) {
      const { sent } = run(context, 'app', { create: 'orders', collation: { locale: 'fr', strength: 3 }, idIndex });
      expect(sent.idIndex).toEqual({ key: { _id: 1 }, name: '_id_', v: 2, collation: { locale: 'fr', strength: 3 } });
    }
    expect(refusal(SHARED, 'app', { create: 'orders', idIndex })).toBe('ddl.id-index');
  });

  it("an index spec's ns (mongorestore) must be the client's namespace and is not forwarded", () => {
    const { sent } = run(SHARED, 'app', {
      createIndexes: 'orders',
      indexes: [{ key: { tenantId: 1, x: 1 }, name: 'x', ns: 'app.orders' }],
      ignoreUnknownIndexOptions: true,
    });
    expect(sent.indexes).toEqual([{ key: { tenantId: 1, x: 1 }, name: 'x' }]);
    expect(sent.ignoreUnknownIndexOptions).toBe(true);
    expect(
      refusal(SHARED, 'app', {
        createIndexes: 'orders',
        indexes: [{ key: { tenantId: 1, x: 1 }, name: 'x', ns: 'other.orders' }],
      }),
    ).toBe('ddl.index-invalid');
    // Still refused with ignoreUnknownIndexOptions: the proxy checks every option itself.
    expect(
      refusal(SHARED, 'app', {
        createIndexes: 'orders',
        indexes: [{ key: { tenantId: 1, x: 1 }, name: 'x', storageEngine: {} }],
        ignoreUnknownIndexOptions: true,
      }),
    ).toBe('ddl.storage-engine');
  });

  it.each([
    ['storageEngine', { storageEngine: { wiredTiger: {} } }, 'ddl.storage-engine'],
    ['indexOptionDefaults', { indexOptionDefaults: { storageEngine: {} } }, 'ddl.storage-engine'],
    ['encryptedFields', { encryptedFields: { fields: [] } }, 'ddl.encrypted-fields'],
  ])('create with %s is refused in every model', (_label, options, rule) => {
    for (const context of [SHARED, PER_DB, PREFIX])
      expect(refusal(context, 'app', { create: 'orders', ...options })).toBe(rule);
  });

  it('dropDatabase and renameCollection → refused', () => {
    expect(refusal(SHARED, 'app', { dropDatabase: 1 })).toBe('ddl.drop-database');
    expect(refusal(SHARED, 'admin', { renameCollection: 'app.a', to: 'app.b' })).toBe('ddl.shared');
  });

  it('shared read-only reference data: every DDL → namespace.readonly', () => {
    for (const body of [
      { create: 'countries' },
      { createIndexes: 'countries', indexes: [{ key: { tenantId: 1 }, name: 'x' }] },
      { drop: 'countries' },
      { dropIndexes: 'countries', index: '*' },
      { collMod: 'countries', validationLevel: 'off' },
      { dropDatabase: 1 },
    ]) {
      expect(refusal(READONLY, 'ref', body)).toBe('namespace.readonly');
    }
  });
});

describe("catalogue 23 / 64: DDL inside the tenant's own space", () => {
  it('database-per-tenant: create, createIndexes (any key, TTL, partial), drop, dropIndexes, collMod with $db mapped', () => {
    const create = run(PER_DB, 'app', {
      create: 'orders',
      validator: { $jsonSchema: { required: ['x'] } },
      collation: { locale: 'en', strength: 2 },
    });
    expect(create.sent).toMatchObject({ create: 'orders', $db: 'acme_app' });
    expect(create.result.reply.mapNames).toBe(true);
    expect(create.result.notes).toContainEqual({ kind: 'rewrite', rule: 'namespace.map', namespace: 'app.orders' });

    const index = run(PER_DB, 'app', {
      createIndexes: 'orders',
      indexes: [
        { key: { email: 1 }, name: 'e', unique: true, partialFilterExpression: { email: { $exists: true } } },
        { key: { at: 1 }, name: 'ttl', expireAfterSeconds: 3600 },
      ],
    });
    expect(index.sent).toMatchObject({ createIndexes: 'orders', $db: 'acme_app' });
    expect(run(PER_DB, 'app', { drop: 'orders' }).sent).toMatchObject({ drop: 'orders', $db: 'acme_app' });
    expect(run(PER_DB, 'app', { dropIndexes: 'orders', index: 'e' }).sent).toMatchObject({
      dropIndexes: 'orders',
      $db: 'acme_app',
    });
    expect(run(PER_DB, 'app', { collMod: 'orders', validationAction: 'warn' }).sent).toMatchObject({
      collMod: 'orders',
      $db: 'acme_app',
    });
  });

  it('collection-prefix: the collection is mapped, the database kept', () => {
    expect(run(PREFIX, 'app', { create: 'orders', capped: true, size: 4096 }).sent).toMatchObject({
      create: 'acme.orders',
      $db: 'app',
    });
    expect(run(PREFIX, 'app', { drop: 'orders' }).sent).toMatchObject({ drop: 'acme.orders', $db: 'app' });
    expect(refusal(PREFIX, 'app', { dropDatabase: 1 })).toBe('ddl.drop-database');
  });

  it('filters inside DDL are validated like query filters (catalogue 1, 2)', () => {
    expect(() => run(PER_DB, 'app', { create: 'orders', validator: { $where: 'true' } })).toThrow(PolicyRefusal);
    expect(() =>
      run(PER_DB, 'app', {
        createIndexes: 'o',
        indexes: [{ key: { a: 1 }, name: 'a', partialFilterExpression: { $where: 'sleep(1)' } }],
      }),
    ).toThrow(PolicyRefusal);
    expect(() =>
      run(PER_DB, 'app', {
        collMod: 'orders',
        validator: { $expr: { $function: { body: new Code('x'), args: [], lang: 'js' } } },
      }),
    ).toThrow(PolicyRefusal);
  });

  it("dropDatabase maps to the tenant's database", () => {
    const { sent, result } = run(PER_DB, 'app', { dropDatabase: 1 });
    expect(sent).toMatchObject({ dropDatabase: 1, $db: 'acme_app' });
    expect(result.reply.mapNames).toBe(true);
  });

  describe('renameCollection', () => {
    it("maps both namespaces within the tenant's database", () => {
      const { sent } = run(PER_DB, 'admin', { renameCollection: 'app.a', to: 'app.b', dropTarget: true });
      expect(sent).toMatchObject({ renameCollection: 'acme_app.a', to: 'acme_app.b', $db: 'admin', dropTarget: true });
      expect(run(PREFIX, 'admin', { renameCollection: 'app.a', to: 'app.b' }).sent).toMatchObject({
        renameCollection: 'app.acme.a',
        to: 'app.acme.b',
      });
    });

    it('refuses a move to another database (catalogue 64)', () => {
      expect(refusal(PER_DB, 'admin', { renameCollection: 'app.a', to: 'other.a' })).toBe('ddl.rename-cross-db');
      expect(refusal(PER_DB, 'admin', { renameCollection: 'app.a', to: 'bob_app.a' })).toBe('ddl.rename-cross-db');
    });

    it('refuses system targets, non-string and malformed namespaces', () => {
      expect(refusal(PER_DB, 'admin', { renameCollection: 'app.a', to: 'app.system.views' })).toBe('namespace.system');
      expect(refusal(PER_DB, 'admin', { renameCollection: 'app.a', to: 5 })).toBe('namespace.not-string');
      expect(refusal(PER_DB, 'admin', { renameCollection: 'app.a' })).toBe('namespace.not-string');
      expect(refusal(PER_DB, 'admin', { renameCollection: 'app', to: 'app.b' })).toBe('namespace.invalid');
    });

    it('refuses a move between models', () => {
      const mixed = contextFor(
        isolationConfig({
          defaultModel: 'database-per-tenant',
          namespaces: [{ match: 'app.shared*', model: 'shared-collection' }],
        }),
      );
      expect(refusal(mixed, 'admin', { renameCollection: 'app.a', to: 'app.shared1' })).toBe('ddl.shared');
      const prefixed = contextFor(
        isolationConfig({
          defaultModel: 'database-per-tenant',
          namespaces: [{ match: 'app.p*', model: 'collection-prefix' }],
        }),
      );
      expect(refusal(prefixed, 'admin', { renameCollection: 'app.a', to: 'app.p1' })).toBe('ddl.rename-model');
    });
  });
});

describe('names in DDL', () => {
  it.each([
    ['catalogue 5: create system.js', { create: 'system.js' }],
    [
      'catalogue 5: createIndexes on system.views',
      { createIndexes: 'system.views', indexes: [{ key: { tenantId: 1 }, name: 'x' }] },
    ],
    ['catalogue 43: drop system.buckets.metrics', { drop: 'system.buckets.metrics' }],
    ['catalogue 5: collMod system.profile', { collMod: 'system.profile' }],
  ])('%s → namespace.system', (_label, body) => {
    for (const context of [SHARED, PER_DB, PREFIX]) expect(refusal(context, 'app', body)).toBe('namespace.system');
  });

  it('catalogue 64: DDL on admin, local or config → namespace.system', () => {
    expect(refusal(PER_DB, 'admin', { create: 'x' })).toBe('namespace.system');
    expect(refusal(PER_DB, 'local', { drop: 'oplog.rs' })).toBe('namespace.system');
    expect(refusal(PER_DB, 'config', { dropDatabase: 1 })).toBe('namespace.system');
  });

  it('catalogue 17: a collection that is not a string (UUID) → namespace.not-string', () => {
    expect(refusal(PER_DB, 'app', { drop: new UUID() })).toBe('namespace.not-string');
    expect(refusal(SHARED, 'app', { createIndexes: 7, indexes: [{ key: { tenantId: 1 }, name: 'x' }] })).toBe(
      'namespace.not-string',
    );
  });

  it('document sequences are refused', () => {
    const command = { ...input('app', { drop: 'orders' }), sequences: new Map([['documents', [new Uint8Array(5)]]]) };
    expect(refusal(PER_DB, 'app', command)).toBe('opmsg.sequence-unexpected');
  });
});

describe('catalogue 24 / 59: listDatabases', () => {
  it("database-per-tenant: forced filter on the tenant's own databases, nameOnly, names mapped back", () => {
    const { sent, result } = run(PER_DB, 'admin', { listDatabases: 1, authorizedDatabases: true });
    expect(sent).toEqual({
      listDatabases: 1,
      $db: 'admin',
      filter: { $or: [{ name: { $regex: '^acme_.+$', $options: 's' } }, { name: { $in: [] } }] },
      nameOnly: true,
      maxTimeMS: 60_000,
    });
    expect(result.reply.mapNames).toBe(true);
  });

  it('shared model: only databases the rules name literally, never the whole server', () => {
    const context = contextFor(
      isolationConfig({
        namespaces: [
          { match: 'ref.*', access: 'shared-readonly' },
          { match: 'gone.*', access: 'denied' },
          { match: '*.x', access: 'scoped' },
        ],
      }),
    );
    expect(run(context, 'admin', { listDatabases: 1 }).sent['filter']).toEqual({ $or: [{ name: { $in: ['ref'] } }] });
    expect(run(SHARED, 'admin', { listDatabases: 1, nameOnly: false }).sent).toMatchObject({
      filter: { $or: [{ name: { $in: [] } }] },
      nameOnly: true,
    });
  });

  it('a client filter is refused', () => {
    expect(refusal(PER_DB, 'admin', { listDatabases: 1, filter: { name: 'bob_app' } })).toBe('listDatabases.filter');
  });

  it('a resolver not made by createNamespaceResolver cannot list', () => {
    const context = {
      ...PER_DB,
      namespaces: { resolve: () => ({}) as never, resolveDatabase: () => ({}) as never, toClient: () => undefined },
    };
    expect(refusal(context, 'admin', { listDatabases: 1 })).toBe('listDatabases.unsupported');
  });
});
