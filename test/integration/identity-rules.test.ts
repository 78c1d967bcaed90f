/**
 * Rules that hold whatever the identity method: before a tenant exists only the handshake and
 * authentication commands are answered and nothing reaches the upstream; a static tenant is
 * there from the first byte; the tenant shows in connectionStatus, logs and metrics.
 */
import { describe, expect } from 'vitest';
import { MongoServerError } from 'mongodb';
import { it } from '../helpers/fixtures.js';
import { scrape } from '../helpers/metrics.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';
import { opMsg } from '../helpers/raw-client.js';

const noMethods = [
  { name: 'closed', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: [], staticTenant: null },
];

describe('before a tenant is established', () => {
  it('answers only the handshake family and refuses everything else with Unauthorized, forwarding nothing', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream(() => [{ ok: 1 }]);
    const proxy = await startProxy({ upstream: { uri: fake.uri }, listeners: noMethods });
    const c = await proxy.raw();
    expect((await c.command(opMsg({ hello: 1, $db: 'admin' }))).ok).toBe(1);
    expect((await c.command(opMsg({ isMaster: 1, $db: 'admin' }))).ok).toBe(1);
    expect((await c.command(opMsg({ ping: 1, $db: 'admin' }))).ok).toBe(1);
    expect((await c.command(opMsg({ endSessions: [], $db: 'admin' }))).ok).toBe(1);
    expect((await c.command(opMsg({ logout: 1, $db: 'admin' }))).ok).toBe(1);
    const status = await c.command(opMsg({ connectionStatus: 1, $db: 'admin' }));
    expect(status.authInfo.authenticatedUsers).toEqual([]);

    for (const command of [
      { find: 'c', $db: 'db' },
      { insert: 'c', documents: [{ a: 1 }], $db: 'db' },
      { aggregate: 1, pipeline: [], cursor: {}, $db: 'admin' },
      { listDatabases: 1, $db: 'admin' },
      { getMore: 1, collection: 'c', $db: 'db' },
      { killCursors: 'c', cursors: [], $db: 'db' },
      { serverStatus: 1, $db: 'admin' },
    ]) {
      const reply = await c.command(opMsg(command));
      expect(reply.ok, JSON.stringify(command)).toBe(0);
      expect(reply.code).toBe(13);
      expect(reply.codeName).toBe('Unauthorized');
    }
    // buildInfo is the one pre-auth command that travels (it names no data).
    expect(fake.received.map((m) => Object.keys(m.body)[0])).toEqual([]);
    expect((await c.command(opMsg({ buildInfo: 1, $db: 'admin' }))).ok).toBe(1);
    expect(fake.received.map((m) => Object.keys(m.body)[0])).toEqual(['buildInfo']);
    c.close();
  });

  it('refuses the driver too, and the database stays untouched', async ({ startProxy }) => {
    const proxy = await startProxy({ listeners: noMethods });
    const dbName = uniqueDbName('preauth');
    const error = await proxy
      .client()
      .db(dbName)
      .collection('c')
      .insertOne({ sneaky: true })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MongoServerError);
    expect((error as MongoServerError).code).toBe(13);
    const direct = directClient();
    try {
      expect(await direct.db(dbName).collection('c').countDocuments()).toBe(0);
    } finally {
      await direct.close();
    }
  });
});

describe('static tenant', () => {
  it('is established at connect and reported by connectionStatus and the metrics', async ({ startProxy }) => {
    const proxy = await startProxy({
      listeners: [
        {
          name: 'sidecar',
          listen: { host: '127.0.0.1', port: 0 },
          tls: null,
          methods: ['static'],
          staticTenant: 'acme',
        },
      ],
    });
    const client = proxy.client();
    const status = await client.db('admin').command({ connectionStatus: 1 });
    expect(status.tenant).toBe('acme');
    expect(status.identityMethod).toBe('static');
    await client.db(uniqueDbName('static')).command({ ping: 1 });
    const text = await scrape(proxy.proxy);
    expect(text).toMatch(/mongo_tenant_proxy_tenant_connections\{tenant="acme"\} [1-9]/);
    expect(text).toMatch(/mongo_tenant_proxy_tenant_operations_total\{tenant="acme",outcome="ok"\} [1-9]/);
  });
});

describe('catalogue 27: authentication and handshake commands', () => {
  it('catalogue 27: auth commands and hello auth fields authenticate nothing and reach nothing upstream', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream(() => [{ ok: 1 }]);
    const proxy = await startProxy({
      upstream: { uri: fake.uri },
      listeners: [
        {
          name: 'sidecar',
          listen: { host: '127.0.0.1', port: 0 },
          tls: null,
          methods: ['static'],
          staticTenant: 'acme',
        },
      ],
    });
    const c = await proxy.raw();
    // hello carrying speculativeAuthenticate and saslSupportedMechs: nothing authenticated, no mechanism list leaked.
    const hello = await c.command(
      opMsg({
        hello: 1,
        saslSupportedMechs: 'admin.root',
        speculativeAuthenticate: {
          saslStart: 1,
          mechanism: 'SCRAM-SHA-256',
          payload: Buffer.from('n,,n=root,r=abc'),
          db: 'admin',
        },
        $db: 'admin',
      }),
    );
    expect(hello.ok).toBe(1);
    expect(hello.speculativeAuthenticate).toBeUndefined();
    expect(hello.saslSupportedMechs).toBeUndefined();
    for (const command of [
      { saslStart: 1, mechanism: 'SCRAM-SHA-256', payload: Buffer.from('n,,n=root,r=abc'), $db: 'admin' },
      { saslContinue: 1, conversationId: 1, payload: Buffer.alloc(0), $db: 'admin' },
      { authenticate: 1, mechanism: 'MONGODB-X509', $db: '$external' },
      { getnonce: 1, $db: 'admin' },
    ]) {
      const reply = await c.command(opMsg(command));
      expect(reply.ok, JSON.stringify(Object.keys(command)[0])).toBe(0);
    }
    // The connection is still acme's and nothing of the above reached the upstream.
    expect((await c.command(opMsg({ connectionStatus: 1, $db: 'admin' }))).tenant).toBe('acme');
    expect(fake.received.map((m) => Object.keys(m.body)[0])).toEqual([]);
    c.close();
  });
});
