/**
 * A reloaded isolation policy (IsolationEngine.reconfigure, hot reload): tenant engines made
 * before the reload follow it from their next command; the session mapping does not change.
 */
import { UUID, deserialize, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { configFromObject } from '../../../src/config/index.js';
import type { IsolationConfig } from '../../../src/config/types.js';
import { ProxyError } from '../../../src/errors.js';
import { CursorRegistry } from '../../../src/policy/cursors.js';
import { IsolationEngine, commandInput, type Decision } from '../../../src/rewrite/engine.js';

function isolation(values: Record<string, unknown> = {}): IsolationConfig {
  return configFromObject({ isolation: values }).isolation;
}

function find(collection: string): ReturnType<typeof commandInput> {
  const lsid = { id: new UUID('0123456789abcdef0123456789abcdef') };
  return commandInput('find', 'app', serialize({ find: collection, filter: {}, lsid, $db: 'app' }), [], false);
}

function forwardedBody(decision: Decision): Record<string, unknown> {
  if (decision.action !== 'forward') throw new Error(`expected forward, got ${decision.action}`);
  return deserialize(decision.result.body.toBytes());
}

describe('IsolationEngine.reconfigure', () => {
  it('applies a tightened policy to tenant engines created before it, from their next command', () => {
    const engine = new IsolationEngine({
      config: isolation(),
      cursors: new CursorRegistry(),
      sessionKey: Buffer.alloc(32, 1),
      collationSupported: () => true,
    });
    const acme = engine.forTenant('acme');
    const before = forwardedBody(acme.decide(find('secrets')));
    expect(before['filter']).toEqual({ $and: [{ tenantId: { $eq: 'acme' } }, {}] });

    engine.reconfigure(isolation({ namespaces: [{ match: 'app.secrets', access: 'denied' }], tenantField: 'owner' }));
    const refused = acme.decide(find('secrets'));
    expect(refused).toMatchObject({ action: 'refuse', refusal: { rule: expect.stringMatching(/denied/) } });
    const after = forwardedBody(acme.decide(find('orders')));
    expect(after['filter']).toEqual({ $and: [{ owner: { $eq: 'acme' } }, {}] });
    expect(engine.forTenant('globex').decide(find('secrets')).action).toBe('refuse');
    // Upstream session ids stay the same across the reload (the key is not reloaded).
    expect(after['lsid']).toEqual(before['lsid']);
  });

  it("keeps per-tenant physical names reserved after a reload stops using their model: no tenant reaches another's database or collection by name", () => {
    const engine = new IsolationEngine({
      config: isolation({
        namespaces: [{ match: 'private.*', model: 'database-per-tenant' }],
        defaultModel: 'collection-prefix',
      }),
      cursors: new CursorRegistry(),
      sessionKey: Buffer.alloc(32, 1),
      collationSupported: () => false,
    });
    const globex = engine.forTenant('globex');
    const named = (db: string, collection: string): ReturnType<typeof commandInput> =>
      commandInput('find', db, serialize({ find: collection, filter: {}, $db: db }), [], false);
    // acme's data lives in the database acme_private and the collection app."acme.orders".
    expect(globex.decide(named('acme_private', 'x'))).toMatchObject({
      action: 'refuse',
      refusal: { rule: 'namespace.reserved' },
    });

    // Everything shared-collection now (and other templates): the old physical names still exist upstream.
    engine.reconfigure(isolation({ databaseTemplate: 'db_{db}_{tenant}' }));
    expect(globex.decide(named('acme_private', 'x'))).toMatchObject({
      action: 'refuse',
      refusal: { rule: 'namespace.reserved' },
    });
    expect(globex.decide(named('app', 'acme.orders'))).toMatchObject({
      action: 'refuse',
      refusal: { rule: 'namespace.reserved' },
    });
    // Names of no per-tenant shape stay usable.
    expect(globex.decide(named('app', 'orders')).action).toBe('forward');
  });

  it('switches to audit-only and back', () => {
    const engine = new IsolationEngine({
      config: isolation({ namespaces: [{ match: 'app.secrets', access: 'denied' }] }),
      cursors: new CursorRegistry(),
      sessionKey: Buffer.alloc(32, 1),
      collationSupported: () => false,
    });
    const acme = engine.forTenant('acme');
    expect(acme.decide(find('secrets')).action).toBe('refuse');
    engine.reconfigure(isolation({ mode: 'audit-only', namespaces: [{ match: 'app.secrets', access: 'denied' }] }));
    expect(engine.auditOnly).toBe(true);
    expect(acme.decide(find('secrets'))).toMatchObject({ action: 'forward-original', wouldRefuse: expect.anything() });
    engine.reconfigure(isolation({ namespaces: [{ match: 'app.secrets', access: 'denied' }] }));
    expect(acme.decide(find('secrets')).action).toBe('refuse');
  });

  it('answers every command with the error while the new settings cannot represent the tenant, until they can', () => {
    const engine = new IsolationEngine({
      config: isolation(),
      cursors: new CursorRegistry(),
      sessionKey: Buffer.alloc(32, 1),
      collationSupported: () => false,
    });
    const acme = engine.forTenant('acme');
    engine.reconfigure(isolation({ tenantValueType: 'objectId' }));
    expect(() => acme.decide(find('orders'))).toThrow(ProxyError);
    expect(() => acme.decide(find('orders'))).toThrow(ProxyError);
    engine.reconfigure(isolation());
    expect(forwardedBody(acme.decide(find('orders')))['filter']).toEqual({ $and: [{ tenantId: { $eq: 'acme' } }, {}] });
  });

  it('tenantFieldInReplies follows a reload from the next command, getMore of a cursor opened before included', () => {
    const engine = new IsolationEngine({
      config: isolation({ tenantFieldInReplies: 'show' }),
      cursors: new CursorRegistry(),
      sessionKey: Buffer.alloc(32, 1),
      collationSupported: () => true,
    });
    const acme = engine.forTenant('acme');
    const opened = acme.decide(find('orders'));
    if (opened.action !== 'forward') throw new Error('expected forward');
    expect(opened.result.reply.hideTenantField).toBeUndefined();
    const batch = (name: string, id: bigint) =>
      serialize({ cursor: { [name]: [{ _id: 1, tenantId: 'acme', a: 1 }], id, ns: 'app.orders' }, ok: 1 });
    // Shown: the upstream bytes go out untouched; the cursor is registered.
    expect(acme.reply(opened.result.reply, batch('firstBatch', 7n))).toBeUndefined();

    engine.reconfigure(isolation({ tenantFieldInReplies: 'hide' }));
    const more = acme.decide(
      commandInput('getMore', 'app', serialize({ getMore: 7n, collection: 'orders', $db: 'app' }), [], false),
    );
    if (more.action !== 'forward') throw new Error(`expected forward, got ${more.action}`);
    expect(more.result.reply.hideTenantField).toBe('tenantId');
    const hidden = acme.reply(more.result.reply, batch('nextBatch', 0n));
    expect(deserialize(hidden!)).toEqual({ cursor: { nextBatch: [{ _id: 1, a: 1 }], id: 0, ns: 'app.orders' }, ok: 1 });

    engine.reconfigure(isolation({ tenantFieldInReplies: 'show' }));
    const again = acme.decide(find('orders'));
    if (again.action !== 'forward') throw new Error('expected forward');
    expect(again.result.reply.hideTenantField).toBeUndefined();
  });
});
