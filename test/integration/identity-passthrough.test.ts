/**
 * Method `scram-passthrough` through the official driver: users live in the upstream, the proxy
 * relays their SCRAM exchange over a connection reserved for the client, asks the upstream who
 * authenticated (`connectionStatus`) and maps that user to a tenant.
 *
 * The upstream must enforce authentication. With FerretDB (the default test upstream, which runs
 * without auth) this file starts its own FerretDB with authentication enabled
 * (`--test-enable-new-auth`) and creates the users there; against a real MongoDB it uses the
 * shared upstream and creates uniquely named users, dropped afterwards.
 *
 * FerretDB v1.24.2 (new auth) supports SCRAM-SHA-256 / SCRAM-SHA-1, `createUser` with
 * `roles: []`, and `connectionStatus` with `authInfo.authenticatedUsers`, but it does not
 * implement roles: `createUser` with any role fails (NotImplemented) and
 * `authenticatedUserRoles` is always empty. So role rules are tested end to end only against
 * MongoDB (and with a scripted upstream in test/unit/identity/passthrough.test.ts).
 */
import { randomBytes } from 'node:crypto';
import { MongoClient, type MongoClientOptions, MongoServerError } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PassthroughRule } from '../../src/config/types.js';
import { metricValue } from '../helpers/metrics.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import {
  directClient,
  type FerretDBInstance,
  needsMongoDB,
  startFerretDB,
  uniqueDbName,
  upstreamKind,
  upstreamUri,
} from '../helpers/upstream.js';
import { until } from '../helpers/wait.js';

const suffix = randomBytes(4).toString('hex');
const dbName = uniqueDbName('passthrough');
const appDb = uniqueDbName('passthrough_app');
const users = {
  alice: { name: `alice_${suffix}`, password: 'alice pw', db: 'admin' },
  green: { name: `svc-green_${suffix}`, password: 'green-pw', db: 'admin' },
  bob: { name: `bob_${suffix}`, password: 'bob-pw', db: appDb },
  carol: { name: `carol_${suffix}`, password: 'carol-pw', db: 'admin' },
  dave: { name: `dave_${suffix}`, password: 'dave-pw', db: 'admin' },
};
const roleName = `tenant-red_${suffix}`;

const rules: PassthroughRule[] = [
  { user: users.alice.name, db: 'admin', tenant: 'tenant-a' },
  { userPattern: `svc-(?<tenant>[a-z]+)_${suffix}`, db: 'admin' },
  { user: users.bob.name, db: appDb, tenant: 'tenant-b' },
  { role: `${roleName}@admin`, tenant: 'red' },
];

let ferret: FerretDBInstance | undefined;
/** Administers the upstream directly, bypassing the proxy (creates users, reads what arrived). */
let admin: MongoClient;
let proxy: TestProxy;
const clients = new Set<MongoClient>();
const isMongoDB = () => upstreamKind() === 'mongodb';

beforeAll(async () => {
  let upstream: string;
  if (isMongoDB()) {
    upstream = upstreamUri();
    admin = directClient();
  } else {
    ferret = await startFerretDB({ auth: { username: 'proxy', password: 'proxy-pw', database: 'admin' } });
    upstream = ferret.uri; // carries the proxy's own credentials
    admin = new MongoClient(ferret.uri, { serverSelectionTimeoutMS: 10_000 });
  }
  // FerretDB accepts only `roles: []`; on MongoDB the users may write the test database.
  const roles = (extra: object[] = []) => (isMongoDB() ? [{ role: 'readWrite', db: dbName }, ...extra] : []);
  if (isMongoDB()) {
    await admin.db('admin').command({ createRole: roleName, privileges: [], roles: [] });
  }
  for (const [key, user] of Object.entries(users)) {
    if (key === 'dave' && !isMongoDB()) continue;
    const extra = key === 'dave' ? [{ role: roleName, db: 'admin' }] : [];
    await admin.db(user.db).command({ createUser: user.name, pwd: user.password, roles: roles(extra) });
  }
  proxy = await startTestProxy({
    upstream: { uri: upstream },
    listeners: [
      {
        name: 'passthrough',
        listen: { host: '127.0.0.1', port: 0 },
        tls: null,
        methods: ['scram-passthrough'],
        staticTenant: null,
      },
    ],
    identity: { passthrough: { rules }, failureDelay: { baseMS: 0, maxMS: 0 } },
  });
});

afterAll(async () => {
  await Promise.allSettled([...clients].map((client) => client.close()));
  await proxy?.stop();
  if (admin !== undefined) {
    if (isMongoDB()) {
      for (const user of Object.values(users)) {
        await admin
          .db(user.db)
          .command({ dropUser: user.name })
          .catch(() => undefined);
      }
      await admin
        .db('admin')
        .command({ dropRole: roleName })
        .catch(() => undefined);
    }
    await admin
      .db(dbName)
      .dropDatabase()
      .catch(() => undefined);
    await admin.close();
  }
  await ferret?.stop();
});

/** What a service's connection string looks like: its own MongoDB user, pointed at the proxy. */
function clientAs(
  user: { name: string; password: string; db: string },
  password = user.password,
  mechanism?: string,
  options: MongoClientOptions = {},
): MongoClient {
  const { host, port } = proxy.proxy.address;
  const params = new URLSearchParams({ directConnection: 'true', authSource: user.db });
  if (mechanism !== undefined) params.set('authMechanism', mechanism);
  const uri = `mongodb://${encodeURIComponent(user.name)}:${encodeURIComponent(password)}@${host}:${port}/?${params}`;
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, ...options });
  clients.add(client);
  return client;
}

async function writesThrough(client: MongoClient, collection: string): Promise<void> {
  const inserted = await client.db(dbName).collection(collection).insertOne({ via: 'proxy' });
  const stored = await admin.db(dbName).collection(collection).findOne({ _id: inserted.insertedId });
  expect(stored).toMatchObject({ via: 'proxy' });
}

async function refused(client: MongoClient, collection: string): Promise<void> {
  const error = await client
    .db(dbName)
    .collection(collection)
    .insertOne({ shouldNot: 'arrive' })
    .then(
      () => undefined,
      (e: unknown) => e,
    );
  expect(error).toBeInstanceOf(MongoServerError);
  expect((error as MongoServerError).code).toBe(18);
  expect((error as MongoServerError).message).toBe('Authentication failed.');
  await client.close();
  expect(await admin.db(dbName).collection(collection).countDocuments()).toBe(0);
}

async function tenantOf(client: MongoClient): Promise<unknown> {
  const status = await client.db('admin').command({ connectionStatus: 1 });
  return status.tenant;
}

describe('scram-passthrough through the official driver', () => {
  it.each([undefined, 'SCRAM-SHA-256', 'SCRAM-SHA-1'])(
    'an upstream user authenticates (mechanism %s) and writes reach the upstream',
    async (mechanism) => {
      const client = clientAs(users.alice, undefined, mechanism);
      await writesThrough(client, `alice_${mechanism ?? 'default'}`);
      expect(await tenantOf(client)).toBe('tenant-a');
    },
  );

  it('maps a user by pattern, taking the tenant from the named group', async () => {
    const client = clientAs(users.green);
    await writesThrough(client, 'green');
    expect(await tenantOf(client)).toBe('green');
  });

  it('honours the authentication database (authSource)', async () => {
    const client = clientAs(users.bob);
    await writesThrough(client, 'bob');
    expect(await tenantOf(client)).toBe('tenant-b');
  });

  it('the upstream connection reserved for a client is closed when the client leaves', async () => {
    const inUse = () => metricValue(proxy.proxy, 'upstream_connections', { state: 'in_use' });
    const before = await inUse();
    const leaving = Array.from({ length: 5 }, () => clientAs(users.alice));
    for (const client of leaving) await writesThrough(client, 'leaving');
    // Each authenticated client holds its own upstream connection while it is connected...
    expect(await inUse()).toBeGreaterThanOrEqual(before + leaving.length);
    await Promise.all(leaving.map((client) => client.close()));
    // ...and nothing else would ever close it once the client has gone.
    await until(async () => (await inUse()) <= before, { message: 'reserved upstream connections still open' });
  });

  it('a wrong password is refused and nothing is forwarded', async () => {
    await refused(clientAs(users.alice, 'not the password'), 'wrong_password');
  });

  it('an unknown user is refused with the same error', async () => {
    await refused(clientAs({ name: `nobody_${suffix}`, password: 'x', db: 'admin' }), 'unknown_user');
  });

  it('a user the upstream accepts but no rule maps is refused (fail closed)', async () => {
    await refused(clientAs(users.carol), 'unmapped');
  });

  it('the right user in the wrong authentication database does not match a db-scoped rule', async () => {
    await refused(clientAs({ ...users.alice, db: appDb }), 'wrong_db');
  });

  it.skipIf(
    needsMongoDB(
      'FerretDB v1.24.2 cannot grant roles (createUser with roles is NotImplemented; authenticatedUserRoles is always empty)',
    ),
  )('maps a user by role', async () => {
    const client = clientAs(users.dave);
    await writesThrough(client, 'dave');
    expect(await tenantOf(client)).toBe('red');
  });
});
