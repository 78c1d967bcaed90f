/**
 * Catalogue 22: the view check before a read (src/tenancy/views.ts) over a fake upstream: the
 * upstream's listCollections is asked once per namespace per TTL, plain collections included;
 * DDL through the proxy and the TTL make it ask again; the cache is bounded; a failure to ask
 * refuses the read.
 */
import { describe, expect, it } from 'vitest';
import { serialize, type Document } from 'bson';
import { RawDocument } from '../../../src/wire/raw-bson.js';
import { PolicyRefusal, ProxyError } from '../../../src/errors.js';
import { encodeTenant } from '../../../src/rewrite/filter.js';
import { createNamespaceResolver } from '../../../src/policy/namespaces.js';
import type { TenantContext } from '../../../src/policy/types.js';
import type { IsolationModel } from '../../../src/config/types.js';
import { ViewGuard } from '../../../src/tenancy/views.js';
import { CommandFailed, type CommandRunner } from '../../../src/tenancy/runner.js';
import { isolationConfig } from '../../helpers/config.js';

type Catalog = Record<string, Record<string, Document | 'collection'>>;

function fakeRunner(catalog: Catalog): CommandRunner & { asked: Array<{ db: string; names: string[] }> } {
  const asked: Array<{ db: string; names: string[] }> = [];
  return {
    asked,
    async run(db, command) {
      const names = (command['filter'] as { name: { $in: string[] } }).name.$in;
      asked.push({ db, names });
      const entries = Object.entries(catalog[db] ?? {})
        .filter(([name]) => names.includes(name))
        .map(([name, entry]) =>
          entry === 'collection' ? { name, type: 'collection', options: {} } : { name, type: 'view', options: entry },
        );
      return { cursor: { id: 0, ns: `${db}.$cmd.listCollections`, firstBatch: entries }, ok: 1 };
    },
  };
}

function contextFor(tenant: string, model: IsolationModel = 'shared-collection'): TenantContext {
  return {
    tenant,
    tenantValue: encodeTenant(tenant, 'string'),
    field: 'tenantId',
    namespaces: createNamespaceResolver(isolationConfig({ defaultModel: model }), tenant),
    maxTimeMS: 1000,
    pinSimpleCollation: false,
  };
}

const find = (coll: string): RawDocument => RawDocument.parse(serialize({ find: coll, filter: {}, $db: 'app' }));

async function refusalOf(promise: Promise<unknown> | undefined): Promise<PolicyRefusal> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(PolicyRefusal);
    return error as PolicyRefusal;
  }
  throw new Error('expected a refusal');
}

const CATALOG: Catalog = {
  app: {
    items: 'collection',
    orders: 'collection',
    everyone: { viewOn: 'items', pipeline: [{ $group: { _id: '$k', all: { $push: '$$ROOT' } } }] },
    acmeOnly: { viewOn: 'items', pipeline: [{ $match: { tenantId: 'acme' } }] },
    // Scoped itself, but on a view that groups every tenant.
    onEveryone: { viewOn: 'everyone', pipeline: [{ $match: { tenantId: 'acme' } }] },
  },
};

describe('ViewGuard', () => {
  it('catalogue 22: a plain collection costs one listCollections per TTL, not one per read', async () => {
    let now = 0;
    const runner = fakeRunner(CATALOG);
    const guard = new ViewGuard({ runner, ttlMS: 5000, now: () => now });
    for (let i = 0; i < 100; i += 1) await guard.check('app', find('items'), contextFor('acme'));
    expect(runner.asked).toEqual([{ db: 'app', names: ['items'] }]);
    now = 5001;
    await guard.check('app', find('items'), contextFor('acme'));
    expect(runner.asked).toHaveLength(2);
  });

  it('catalogue 22: the cached answer refuses a view on every read, as the first one did (the fast path is for plain collections only)', async () => {
    let now = 0;
    const runner = fakeRunner(CATALOG);
    const guard = new ViewGuard({ runner, ttlMS: 5000, now: () => now });
    const aggregate = (coll: string, from: string): RawDocument =>
      RawDocument.parse(
        serialize({
          aggregate: coll,
          pipeline: [{ $lookup: { from, as: 'j', pipeline: [] } }],
          cursor: {},
          $db: 'app',
        }),
      );
    await guard.check('app', find('items'), contextFor('acme'));
    for (let i = 0; i < 5; i += 1) {
      expect(guard.check('app', find('items'), contextFor('acme'))).toBeUndefined();
      expect((await refusalOf(guard.check('app', find('everyone'), contextFor('acme')))).rule).toBe(
        'view.not-tenant-scoped',
      );
      expect((await refusalOf(guard.check('app', find('onEveryone'), contextFor('acme')))).rule).toBe(
        'view.not-tenant-scoped',
      );
      // A plain target joining a view: the join is checked too.
      expect((await refusalOf(guard.check('app', aggregate('items', 'everyone'), contextFor('acme')))).rule).toBe(
        'view.not-tenant-scoped',
      );
      expect((await refusalOf(guard.check('app', find('acmeOnly'), contextFor('globex')))).rule).toBe(
        'view.not-tenant-scoped',
      );
    }
    const asked = runner.asked.length;
    // Expired: asked again, whatever was cached.
    now = 5001;
    expect(guard.check('app', find('items'), contextFor('acme'))).toBeInstanceOf(Promise);
    await refusalOf(guard.check('app', find('everyone'), contextFor('acme')));
    expect(runner.asked.length).toBeGreaterThan(asked);
  });

  it('catalogue 22: one listCollections answers every namespace of a read (target and joins)', async () => {
    const runner = fakeRunner(CATALOG);
    const guard = new ViewGuard({ runner });
    const aggregate = RawDocument.parse(
      serialize({
        aggregate: 'orders',
        pipeline: [{ $lookup: { from: 'items', pipeline: [], as: 'i' } }, { $unionWith: 'items' }],
        cursor: {},
        $db: 'app',
      }),
    );
    await guard.check('app', aggregate, contextFor('acme'));
    expect(runner.asked).toEqual([{ db: 'app', names: ['orders', 'items'] }]);
  });

  it('catalogue 22: refuses a view that groups every tenant (code 13, the rule named), as target and as a join', async () => {
    const guard = new ViewGuard({ runner: fakeRunner(CATALOG) });
    const refusal = await refusalOf(guard.check('app', find('everyone'), contextFor('acme')));
    expect(refusal.rule).toBe('view.not-tenant-scoped');
    expect(refusal.code).toBe(13);
    expect(refusal.message).toContain('app.everyone');
    expect(refusal.message).toContain('catalogue 22');
    const joined = RawDocument.parse(
      serialize({ aggregate: 'orders', pipeline: [{ $unionWith: { coll: 'everyone' } }], cursor: {}, $db: 'app' }),
    );
    expect((await refusalOf(guard.check('app', joined, contextFor('acme')))).rule).toBe('view.not-tenant-scoped');
  });

  it('catalogue 22: a view pinned to acme reads for acme and is refused for globex; a pinned view on an unscoped view is refused', async () => {
    const guard = new ViewGuard({ runner: fakeRunner(CATALOG) });
    await guard.check('app', find('acmeOnly'), contextFor('acme'));
    await refusalOf(guard.check('app', find('acmeOnly'), contextFor('globex')));
    await refusalOf(guard.check('app', find('onEveryone'), contextFor('acme')));
  });

  it('catalogue 22: DDL through the proxy forgets the database: the next read asks again', async () => {
    const catalog: Catalog = { app: { later: 'collection' } };
    const runner = fakeRunner(catalog);
    const guard = new ViewGuard({ runner, ttlMS: 60_000 });
    await guard.check('app', find('later'), contextFor('acme'));
    // An operator replaces the collection by a view: within the TTL the cached answer is used (the documented bound).
    catalog['app']!['later'] = { viewOn: 'items', pipeline: [] };
    await guard.check('app', find('later'), contextFor('acme'));
    guard.invalidate('app');
    await refusalOf(guard.check('app', find('later'), contextFor('acme')));
    expect(runner.asked).toHaveLength(2);
  });

  it('catalogue 22: the cache is bounded: the oldest namespace is forgotten first', async () => {
    const runner = fakeRunner({ app: {} });
    const guard = new ViewGuard({ runner, maxEntries: 3 });
    for (const coll of ['a', 'b', 'c', 'd']) await guard.check('app', find(coll), contextFor('acme'));
    expect(guard.cachedEntries).toBe(3);
    await guard.check('app', find('d'), contextFor('acme'));
    expect(runner.asked).toHaveLength(4);
    await guard.check('app', find('a'), contextFor('acme'));
    expect(runner.asked).toHaveLength(5);
  });

  it('catalogue 22: fails closed: when the upstream cannot say, the read is refused with its error', async () => {
    const guard = new ViewGuard({
      runner: {
        async run() {
          throw new CommandFailed(13, 'not authorized on app to execute command { listCollections: 1 }');
        },
      },
    });
    const error = await Promise.resolve(guard.check('app', find('items'), contextFor('acme'))).catch((e: unknown) => e);
    expect(ProxyError.is(error)).toBe(true);
    expect((error as ProxyError).code).toBe(13);
    expect((error as ProxyError).message).toContain('could not check whether the namespace is a view');
  });

  it('catalogue 22: writes and listings are not checked (no upstream question)', async () => {
    const runner = fakeRunner(CATALOG);
    const guard = new ViewGuard({ runner });
    await guard.check(
      'app',
      RawDocument.parse(serialize({ insert: 'everyone', documents: [], $db: 'app' })),
      contextFor('acme'),
    );
    await guard.check('app', RawDocument.parse(serialize({ listCollections: 1, $db: 'app' })), contextFor('acme'));
    expect(runner.asked).toEqual([]);
  });

  describe('collection-prefix', () => {
    const catalog: Catalog = {
      app: {
        'acme.orders': 'collection',
        'acme.items': 'collection',
        'globex.items': 'collection',
        'acme.ownJoin': {
          viewOn: 'acme.orders',
          pipeline: [{ $lookup: { from: 'acme.items', pipeline: [], as: 'i' } }],
        },
        'acme.crossJoin': {
          viewOn: 'acme.orders',
          pipeline: [{ $lookup: { from: 'globex.items', pipeline: [], as: 'i' } }],
        },
        'acme.onForeign': { viewOn: 'globex.items', pipeline: [] },
      },
    };

    it("catalogue 22: a view joining the tenant's own collections reads; one joining or on another tenant's is refused", async () => {
      const guard = new ViewGuard({ runner: fakeRunner(catalog) });
      const acme = contextFor('acme', 'collection-prefix');
      await guard.check('app', find('acme.ownJoin'), acme);
      const cross = await refusalOf(guard.check('app', find('acme.crossJoin'), acme));
      expect(cross.message).toContain('app.crossJoin');
      expect(cross.message).not.toContain('globex');
      await refusalOf(guard.check('app', find('acme.onForeign'), acme));
    });
  });
});
