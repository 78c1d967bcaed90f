import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { NamespaceRule } from '../../../src/config/types.js';
import {
  createNamespaceResolver,
  databaseListing,
  escapeTenant,
  fillTemplate,
  parseNameTemplate,
  splitPhysicalName,
  unescapeTenant,
} from '../../../src/policy/namespaces.js';
import { PolicyRefusal } from '../../../src/errors.js';
import type { Access } from '../../../src/policy/types.js';
import { isolationConfig } from '../../helpers/config.js';

/** The rule id of the PolicyRefusal `fn` throws (fails when it throws nothing or something else). */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(PolicyRefusal);
    const message = (error as PolicyRefusal).message;
    expect(message).toContain('rule');
    return (error as PolicyRefusal).rule;
  }
  throw new Error('expected a PolicyRefusal');
}

const MODELS = ['shared-collection', 'database-per-tenant', 'collection-prefix'] as const;

describe('always refused, whatever the model and the rules', () => {
  // A rule that would allow everything cannot unlock system namespaces.
  const permissive: NamespaceRule[] = [{ match: '*.*', access: 'scoped' }];

  describe.each(MODELS)('%s', (model) => {
    const resolver = createNamespaceResolver(isolationConfig({ defaultModel: model, namespaces: permissive }), 'acme');

    it.each(['system.js', 'system.views', 'system.profile', 'system.users', 'system.buckets.metrics', 'system.'])(
      'catalogue 5 / 43: collection %s → namespace.system',
      (coll) => {
        for (const access of ['read', 'write'] as Access[])
          expect(refusal(() => resolver.resolve('app', coll, access))).toBe('namespace.system');
      },
    );

    it.each(['admin', 'local', 'config', 'Admin', 'LOCAL', 'Config'])(
      'catalogue 64: database %s → namespace.system',
      (db) => {
        expect(refusal(() => resolver.resolve(db, 'c', 'read'))).toBe('namespace.system');
        expect(refusal(() => resolver.resolveDatabase(db, 'read'))).toBe('namespace.system');
      },
    );

    it.each<readonly [string, string, string]>([
      ['empty database', '', 'c'],
      ['empty collection', 'app', ''],
      ['NUL in the database (catalogue 52)', 'app\0x', 'c'],
      ['NUL in the collection (catalogue 52)', 'app', 'c\0x'],
      ['$ in the collection', 'app', 'c$x'],
      ['$cmd', 'app', '$cmd'],
      ['a lone surrogate (invalid UTF-8, catalogue 52)', 'app', 'c\ud800'],
      ...[...'/\\. "$*<>:|?'].map((char) => [`${JSON.stringify(char)} in the database`, `a${char}b`, 'c'] as const),
    ])('%s → namespace.invalid', (_label, db, coll) => {
      expect(refusal(() => resolver.resolve(db, coll, 'read'))).toBe('namespace.invalid');
    });

    it('a collection that is not a string → namespace.not-string (catalogue 17)', () => {
      expect(refusal(() => resolver.resolve('app', 42 as unknown as string, 'read'))).toBe('namespace.not-string');
    });

    it('database names over 63 bytes and namespaces over 255 bytes → namespace.too-long', () => {
      expect(refusal(() => resolver.resolve('d'.repeat(64), 'c', 'read'))).toBe('namespace.too-long');
      expect(refusal(() => resolver.resolve('d'.repeat(10), 'c'.repeat(250), 'read'))).toBe('namespace.too-long');
    });
  });
});

describe('rules', () => {
  const config = isolationConfig({
    namespaces: [
      { match: 'app.secret*', access: 'denied' },
      { match: 'ref.*', access: 'shared-readonly' },
      { match: 'app.*', model: 'shared-collection' },
      { match: '*.audit_*', access: 'denied' },
      { match: 'private.*', model: 'database-per-tenant' },
    ],
  });
  const resolver = createNamespaceResolver(config, 'acme');

  it('default: defaultModel, scoped, tenant-filtered, names kept', () => {
    expect(resolver.resolve('other', 'c', 'write')).toEqual({
      db: 'other',
      coll: 'c',
      model: 'shared-collection',
      access: 'scoped',
      tenantFiltered: true,
    });
  });

  it('the first matching rule wins', () => {
    expect(refusal(() => resolver.resolve('app', 'secrets', 'read'))).toBe('namespace.denied');
    expect(resolver.resolve('app', 'orders', 'read').tenantFiltered).toBe(true);
  });

  it('"*" in the database part does not cross a dot; in the collection part it does', () => {
    expect(refusal(() => resolver.resolve('x', 'audit_log', 'read'))).toBe('namespace.denied');
    expect(refusal(() => resolver.resolve('ref', 'a.b.c', 'write'))).toBe('namespace.readonly');
  });

  it('shared-readonly: reads unfiltered under the client names, writes refused', () => {
    expect(resolver.resolve('ref', 'countries', 'read')).toEqual({
      db: 'ref',
      coll: 'countries',
      model: 'shared-collection',
      access: 'shared-readonly',
      tenantFiltered: false,
    });
    expect(refusal(() => resolver.resolve('ref', 'countries', 'write'))).toBe('namespace.readonly');
    expect(refusal(() => resolver.resolveDatabase('ref', 'write'))).toBe('namespace.readonly');
    expect(resolver.resolveDatabase('ref', 'read')).toEqual({ db: 'ref', model: 'shared-collection' });
  });

  it('denied databases at database level', () => {
    const denyRest = createNamespaceResolver(
      isolationConfig({
        namespaces: [
          { match: 'app.orders', access: 'scoped' },
          { match: 'app.*', access: 'denied' },
          { match: 'x.*', access: 'denied' },
        ],
      }),
      'acme',
    );
    expect(refusal(() => denyRest.resolveDatabase('x', 'read'))).toBe('namespace.denied');
    // An earlier collection rule keeps the database readable (listCollections is filtered by resolve).
    expect(denyRest.resolveDatabase('app', 'read')).toEqual({ db: 'app', model: 'shared-collection' });
    expect(refusal(() => denyRest.resolveDatabase('app', 'write'))).toBe('namespace.denied');
    expect(refusal(() => denyRest.resolve('app', 'other', 'read'))).toBe('namespace.denied');
  });
});

describe('database-per-tenant (catalogue 64)', () => {
  const config = isolationConfig({ defaultModel: 'database-per-tenant' });
  const acme = createNamespaceResolver(config, 'acme');

  it('maps the database with the template and keeps the collection', () => {
    expect(acme.resolve('app', 'orders', 'write')).toEqual({
      db: 'acme_app',
      coll: 'orders',
      model: 'database-per-tenant',
      access: 'scoped',
      tenantFiltered: false,
    });
    expect(acme.resolveDatabase('app', 'write')).toEqual({ db: 'acme_app', model: 'database-per-tenant' });
  });

  it('tenant "a" + db "b_c" and tenant "a_b" + db "c" get different databases', () => {
    const a = createNamespaceResolver(config, 'a').resolve('b_c', 'x', 'read').db;
    const ab = createNamespaceResolver(config, 'a_b').resolve('c', 'x', 'read').db;
    expect(a).toBe('a_b_c');
    expect(ab).toBe('a-5fb_c');
    expect(a).not.toBe(ab);
  });

  it('tenants differing only in case get databases that do not differ only in case', () => {
    const upper = createNamespaceResolver(config, 'Acme').resolve('app', 'x', 'read').db;
    const lower = acme.resolve('app', 'x', 'read').db;
    expect(upper.toLowerCase()).not.toBe(lower.toLowerCase());
  });

  it('a physical name over 63 bytes is refused with a clear error', () => {
    const long = createNamespaceResolver(config, 't'.repeat(40));
    let error: unknown;
    try {
      long.resolve('d'.repeat(30), 'c', 'read');
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(PolicyRefusal);
    expect((error as PolicyRefusal).rule).toBe('namespace.too-long');
    expect((error as PolicyRefusal).message).toContain('63 bytes');
    expect((error as PolicyRefusal).message).not.toContain('tttt');
  });

  it('toClient inverts the mapping and rejects other tenants, system collections and unknown names', () => {
    expect(acme.toClient('acme_app', 'orders')).toEqual({ db: 'app', coll: 'orders' });
    expect(acme.toClient('acme_app')).toEqual({ db: 'app' });
    expect(acme.toClient('bob_app', 'orders')).toBeUndefined();
    expect(acme.toClient('acme-5fx_app', 'orders')).toBeUndefined();
    expect(acme.toClient('acme_app', 'system.views')).toBeUndefined();
    expect(acme.toClient('app', 'orders')).toBeUndefined();
    expect(acme.toClient('admin')).toBeUndefined();
  });

  it('shared-readonly namespaces keep their names', () => {
    const resolver = createNamespaceResolver(
      isolationConfig({
        defaultModel: 'database-per-tenant',
        namespaces: [{ match: 'ref.*', access: 'shared-readonly' }],
      }),
      'acme',
    );
    expect(resolver.resolve('ref', 'countries', 'read')).toMatchObject({
      db: 'ref',
      coll: 'countries',
      tenantFiltered: false,
    });
    expect(resolver.toClient('ref', 'countries')).toEqual({ db: 'ref', coll: 'countries' });
  });

  it('property: no two (tenant, db) pairs share a physical database, even ignoring case', () => {
    const templates = ['{tenant}_{db}', 't_{tenant}_{db}', '{db}_{tenant}', '{db}__{tenant}_x', 'p-{tenant}~{db}'];
    const tenant = fc.oneof(
      fc.string({ minLength: 1, maxLength: 8 }),
      fc.constantFrom('a', 'a_b', 'A', 'a-5f', 'system', 'b_c'),
    );
    const db = fc.oneof(
      fc.stringMatching(/^[A-Za-z0-9_-]{1,10}$/),
      fc.constantFrom('b_c', 'c', 'b', 'B_C', 'a_b', '-5f'),
    );
    fc.assert(
      fc.property(fc.constantFrom(...templates), tenant, db, tenant, db, (template, t1, d1, t2, d2) => {
        const config = isolationConfig({ defaultModel: 'database-per-tenant', databaseTemplate: template });
        const tryResolve = (t: string, d: string): string | undefined => {
          if (t.includes('\0')) return undefined;
          try {
            return createNamespaceResolver(config, t).resolve(d, 'c', 'read').db;
          } catch (error) {
            if (error instanceof PolicyRefusal) return undefined;
            throw error;
          }
        };
        const p1 = tryResolve(t1, d1);
        const p2 = tryResolve(t2, d2);
        if (p1 === undefined || p2 === undefined) return;
        if (p1.toLowerCase() === p2.toLowerCase()) expect(t1).toBe(t2);
        if (p1 === p2) expect(d1).toBe(d2);
        // And each tenant maps its own name back, never the other's.
        expect(createNamespaceResolver(config, t1).toClient(p1, 'c')).toEqual({ db: d1, coll: 'c' });
        if (t1 !== t2) expect(createNamespaceResolver(config, t1).toClient(p2, 'c')).toBeUndefined();
      }),
      { numRuns: 2000 },
    );
  });

  it('the listDatabases pattern matches only the tenant’s own databases (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('{tenant}_{db}', '{db}_{tenant}', 'x.{tenant}_{db}'.replace('.', '-')),
        fc.string({ minLength: 1, maxLength: 6 }),
        fc.string({ minLength: 1, maxLength: 6 }),
        fc.stringMatching(/^[a-z0-9_]{1,8}$/),
        (template, t1, t2, db) => {
          fc.pre(!t1.includes('\0') && !t2.includes('\0'));
          const config = isolationConfig({ defaultModel: 'database-per-tenant', databaseTemplate: template });
          const pattern = new RegExp(databaseListing(createNamespaceResolver(config, t1))!.pattern!, 's');
          let physical: string;
          try {
            physical = createNamespaceResolver(config, t2).resolve(db, 'c', 'read').db;
          } catch {
            return;
          }
          expect(pattern.test(physical)).toBe(t1 === t2);
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe('collection-prefix', () => {
  const config = isolationConfig({ defaultModel: 'collection-prefix' });
  const acme = createNamespaceResolver(config, 'acme');

  it('maps the collection with the template and keeps the database', () => {
    expect(acme.resolve('app', 'orders', 'write')).toEqual({
      db: 'app',
      coll: 'acme.orders',
      model: 'collection-prefix',
      access: 'scoped',
      tenantFiltered: false,
    });
    expect(acme.toClient('app', 'acme.orders')).toEqual({ db: 'app', coll: 'orders' });
    expect(acme.toClient('app', 'bob.orders')).toBeUndefined();
    expect(acme.toClient('app', 'orders')).toBeUndefined();
  });

  it('is injective: tenant "a" + "b.c" and tenant "a.b" + "c" differ', () => {
    const a = createNamespaceResolver(config, 'a').resolve('app', 'b.c', 'read').coll;
    const ab = createNamespaceResolver(config, 'a.b').resolve('app', 'c', 'read').coll;
    expect(a).not.toBe(ab);
  });

  it('the tenant "system" never makes a system collection', () => {
    const resolved = createNamespaceResolver(config, 'system').resolve('app', 'js', 'write');
    expect(resolved.coll.startsWith('system.')).toBe(false);
    expect(createNamespaceResolver(config, 'system').toClient('app', resolved.coll)).toEqual({ db: 'app', coll: 'js' });
  });

  it('a template putting the client name first cannot make system.* either', () => {
    const resolver = createNamespaceResolver(
      isolationConfig({ defaultModel: 'collection-prefix', collectionTemplate: '{collection}.{tenant}' }),
      'acme',
    );
    expect(refusal(() => resolver.resolve('app', 'system', 'read'))).toBe('namespace.system');
    expect(resolver.resolve('app', 'orders', 'read').coll).toBe('orders.acme');
  });

  it('property: no two (tenant, collection) pairs share a physical collection', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('{tenant}.{collection}', '{collection}.{tenant}', 't_{tenant}/{collection}'),
        fc.string({ minLength: 1, maxLength: 8 }),
        fc.string({ minLength: 1, maxLength: 10 }),
        fc.string({ minLength: 1, maxLength: 8 }),
        fc.string({ minLength: 1, maxLength: 10 }),
        (template, t1, c1, t2, c2) => {
          fc.pre(!t1.includes('\0') && !t2.includes('\0'));
          const cfg = isolationConfig({ defaultModel: 'collection-prefix', collectionTemplate: template });
          const tryResolve = (t: string, c: string): string | undefined => {
            try {
              return createNamespaceResolver(cfg, t).resolve('app', c, 'read').coll;
            } catch (error) {
              if (error instanceof PolicyRefusal) return undefined;
              throw error;
            }
          };
          const p1 = tryResolve(t1, c1);
          const p2 = tryResolve(t2, c2);
          if (p1 === undefined || p2 === undefined) return;
          expect(p1.startsWith('system.')).toBe(false);
          if (p1 === p2) {
            expect(t1).toBe(t2);
            expect(c1).toBe(c2);
          }
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('mixed models: kept names never alias a per-tenant name', () => {
  const config = isolationConfig({
    namespaces: [
      { match: 'private.*', model: 'database-per-tenant' },
      { match: 'pref.*', model: 'collection-prefix' },
    ],
  });
  const bob = createNamespaceResolver(config, 'bob');

  it("a shared database shaped like acme's private database is refused (also in another case)", () => {
    expect(createNamespaceResolver(config, 'acme').resolve('private', 'c', 'read').db).toBe('acme_private');
    expect(refusal(() => bob.resolve('acme_private', 'c', 'read'))).toBe('namespace.reserved');
    expect(refusal(() => bob.resolve('ACME_private', 'c', 'read'))).toBe('namespace.reserved');
    expect(refusal(() => bob.resolveDatabase('acme_private', 'read'))).toBe('namespace.reserved');
    expect(refusal(() => bob.resolve('acme_private', 'c', 'write'))).toBe('namespace.reserved');
  });

  it('a shared collection shaped like a prefixed one is refused', () => {
    expect(refusal(() => bob.resolve('pref2', 'acme.orders', 'read'))).toBe('namespace.reserved');
    expect(bob.resolve('pref2', 'orders', 'read').coll).toBe('orders');
  });

  it('without database-per-tenant or collection-prefix in use, such names are ordinary', () => {
    const shared = createNamespaceResolver(isolationConfig(), 'bob');
    expect(shared.resolve('acme_private', 'acme.orders', 'write')).toMatchObject({
      db: 'acme_private',
      coll: 'acme.orders',
    });
  });
});

describe('toClient (replies)', () => {
  const resolver = createNamespaceResolver(
    isolationConfig({ namespaces: [{ match: 'app.hidden', access: 'denied' }] }),
    'acme',
  );

  it('shared names come back as they are; denied and system ones do not', () => {
    expect(resolver.toClient('app', 'orders')).toEqual({ db: 'app', coll: 'orders' });
    expect(resolver.toClient('app')).toEqual({ db: 'app' });
    expect(resolver.toClient('app', 'hidden')).toBeUndefined();
    expect(resolver.toClient('app', 'system.profile')).toBeUndefined();
    expect(resolver.toClient('local', 'oplog.rs')).toBeUndefined();
  });
});

describe('the listDatabases listing', () => {
  it('lists the literal databases of non-denied rules and the tenant pattern when database-per-tenant is used', () => {
    const resolver = createNamespaceResolver(
      isolationConfig({
        namespaces: [
          { match: 'ref.*', access: 'shared-readonly' },
          { match: 'gone.*', access: 'denied' },
          { match: '*.x', access: 'scoped' },
          { match: 'analytics.*', model: 'database-per-tenant' },
        ],
      }),
      'acme',
    );
    const listing = databaseListing(resolver)!;
    expect(listing.databases).toEqual(['ref']);
    expect(listing.pattern).toBe('^acme_.+$');
    expect(databaseListing(createNamespaceResolver(isolationConfig(), 'acme'))).toEqual({ databases: [] });
    expect(
      databaseListing({
        resolve: () => ({}) as never,
        resolveDatabase: () => ({}) as never,
        toClient: () => undefined,
      }),
    ).toBeUndefined();
  });
});

describe('tenant escaping and templates', () => {
  it('escapes to [a-z0-9-] and back (property)', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' }), (tenant) => {
        const escaped = escapeTenant(tenant);
        expect(escaped).toMatch(/^[a-z0-9-]+$/);
        expect(unescapeTenant(escaped)).toBe(tenant);
      }),
    );
    expect(escapeTenant('Acme_1')).toBe('-41cme-5f1');
    expect(escapeTenant('system')).toBe('-73ystem');
    expect(unescapeTenant('-61cme')).toBeUndefined(); // not the canonical escape of "acme"
  });

  it('splits physical names back', () => {
    const template = parseNameTemplate('t_{tenant}_{db}', 'db');
    const physical = fillTemplate(template, 'a-5fb', 'c_d');
    expect(physical).toBe('t_a-5fb_c_d');
    expect(splitPhysicalName(template, physical)).toEqual({ escapedTenant: 'a-5fb', name: 'c_d' });
    expect(splitPhysicalName(template, 'x_a_b')).toBeUndefined();
  });

  it.each([
    ['{tenant}{db}', 'db'],
    ['{tenant}a{db}', 'db'],
    ['{tenant}-{db}', 'db'],
    ['{db}_x{tenant}', 'db'],
    ['{db}', 'db'],
    ['{tenant}_{db}_{db}', 'db'],
    ['{tenant}_{db}{x}', 'db'],
    ['{tenant}{collection}', 'collection'],
  ] as const)('refuses the template %s', (template, placeholder) => {
    expect(() => parseNameTemplate(template, placeholder)).toThrow(/template/);
  });

  it('refuses an empty tenant', () => {
    expect(() => createNamespaceResolver(isolationConfig(), '')).toThrow(/tenant/);
  });
});

describe('the ownership catalogue database (issue 13)', () => {
  it('is never reachable: as a client database in any case, for data or as a database', () => {
    const resolver = createNamespaceResolver(isolationConfig(), 'acme');
    for (const db of ['mongo_tenant_proxy', 'MONGO_TENANT_PROXY']) {
      expect(refusal(() => resolver.resolve(db, 'indexes', 'read'))).toBe('namespace.catalogue');
      expect(refusal(() => resolver.resolveDatabase(db, 'read'))).toBe('namespace.catalogue');
    }
  });

  it('is never produced by a per-tenant template: tenant "mongo" + database "tenant_proxy"', () => {
    const resolver = createNamespaceResolver(isolationConfig({ defaultModel: 'database-per-tenant' }), 'mongo');
    expect(refusal(() => resolver.resolve('tenant_proxy', 'x', 'write'))).toBe('namespace.catalogue');
    expect(refusal(() => resolver.resolveDatabase('tenant_proxy', 'write'))).toBe('namespace.catalogue');
  });
});
