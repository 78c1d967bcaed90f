/**
 * scram-passthrough: a client's commands run over the upstream connection the upstream
 * authenticated as that client. When that connection is lost, the proxy must close the client's
 * connection, never fall back to a pooled connection carrying the proxy's own credentials.
 * FerretDB (with auth) sits behind a TCP fault injector that resets every upstream connection.
 */
import { randomBytes } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { startFerretDB, type FerretDBInstance, uniqueDbName, upstreamKind } from '../helpers/upstream.js';

const suffix = randomBytes(4).toString('hex');
const user = { name: `lossy_${suffix}`, password: 'lossy-pw' };
const dbName = uniqueDbName('passthrough_loss');

let ferret: FerretDBInstance | undefined;
let fault: FaultProxy;
let admin: MongoClient;
let proxy: TestProxy;
let client: MongoClient | undefined;

beforeAll(async () => {
  if (upstreamKind() === 'mongodb') return;
  ferret = await startFerretDB({ auth: { username: 'proxy', password: 'proxy-pw', database: 'admin' } });
  admin = new MongoClient(ferret.uri, { serverSelectionTimeoutMS: 10_000 });
  await admin.db('admin').command({ createUser: user.name, pwd: user.password, roles: [] });
  fault = await startFaultProxy({ target: { host: ferret.host, port: ferret.port } });
  proxy = await startTestProxy({
    upstream: { uri: fault.uriFor(ferret.uri) },
    listeners: [
      {
        name: 'passthrough',
        listen: { host: '127.0.0.1', port: 0 },
        tls: null,
        methods: ['scram-passthrough'],
        staticTenant: null,
      },
    ],
    identity: {
      passthrough: { rules: [{ user: user.name, db: 'admin', tenant: 'lossy' }] },
      failureDelay: { baseMS: 0, maxMS: 0 },
    },
  });
});

afterAll(async () => {
  await client?.close().catch(() => undefined);
  await proxy?.stop();
  await fault?.close();
  await admin?.close();
  await ferret?.stop();
});

describe('scram-passthrough connection loss', () => {
  // Needs its own FerretDB with authentication (not built when MONGODB_URI is set).
  it.skipIf(upstreamKind() === 'mongodb')(
    'closes the client connection instead of falling back to the proxy credentials',
    async () => {
      const { host, port } = proxy.proxy.address;
      // One connection in the driver's pool, so the second command uses the same proxy connection.
      client = new MongoClient(
        `mongodb://${user.name}:${encodeURIComponent(user.password)}@${host}:${port}/?directConnection=true&authSource=admin&maxPoolSize=1&retryWrites=false&retryReads=false`,
        { serverSelectionTimeoutMS: 5_000 },
      );
      const coll = client.db(dbName).collection('c');
      await coll.insertOne({ step: 'before' });
      expect((await client.db('admin').command({ connectionStatus: 1 })).tenant).toBe('lossy');

      // Every upstream connection dies, the client's own authenticated one included.
      fault.resetAll();
      await new Promise((resolve) => setTimeout(resolve, 100));

      // The next command on that client connection must not be run with the proxy's credentials.
      const error = await coll.insertOne({ step: 'after-loss' }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(Error);
      const stored = await admin
        .db(dbName)
        .collection('c')
        .find({}, { projection: { _id: 0, step: 1 } })
        .toArray();
      expect(stored.map((d) => d.step)).toEqual(['before']);

      // A new connection authenticates again (the driver reconnects) and works.
      await client.close();
      client = new MongoClient(
        `mongodb://${user.name}:${encodeURIComponent(user.password)}@${host}:${port}/?directConnection=true&authSource=admin`,
        { serverSelectionTimeoutMS: 5_000 },
      );
      await client.db(dbName).collection('c').insertOne({ step: 'reconnected' });
      expect(await admin.db(dbName).collection('c').countDocuments({ step: 'reconnected' })).toBe(1);
    },
  );
});
