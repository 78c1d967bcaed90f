/**
 * Method `mtls`: the tenant comes from the verified client certificate, through the official
 * driver (`tls=true&tlsCAFile=…&tlsCertificateKeyFile=…`, with and without
 * `authMechanism=MONGODB-X509`) and mongosh. Certificates are generated per run (test/helpers/
 * certs.ts). Results and refusals are checked by reading the upstream directly: a refused
 * client must forward nothing.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as tls from 'node:tls';
import { promisify } from 'node:util';
import { MongoClient, MongoServerError, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ListenerConfig, ListenerTlsConfig } from '../../src/config/types.js';
import { makeTestPki, type IssuedCertificate, type TestPki } from '../helpers/certs.js';
import { metricValue } from '../helpers/metrics.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { opMsg, replyDocument, type BuiltFrame, type ReceivedFrame } from '../helpers/raw-client.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';
import { MONGOSH } from '../helpers/mongosh.js';

const run = promisify(execFile);
const RELOAD_MS = 200;
const REQUIRED = 'mtls-required';
const OPTIONAL = 'mtls-optional';

let pki: TestPki;
let proxy: TestProxy;
let direct: MongoClient;
const dbName = uniqueDbName('mtls');
const clients = new Set<MongoClient>();
const sockets = new Set<tls.TLSSocket>();

function listener(name: string, tlsConfig: ListenerTlsConfig): ListenerConfig {
  return { name, listen: { host: '127.0.0.1', port: 0 }, tls: tlsConfig, methods: ['mtls'], staticTenant: null };
}

function address(name: string): { host: string; port: number } {
  const bound = proxy.proxy.addresses[name];
  if (bound === undefined) throw new Error(`no listener ${name}`);
  return bound;
}

interface ConnectOptions {
  listener?: string;
  cert?: IssuedCertificate;
  /** `authMechanism=MONGODB-X509`; `user` puts a user name in the URI. */
  x509?: boolean;
  user?: string;
}

/** `mongodb://[user@]127.0.0.1:port/?directConnection=true&tls=true&tlsCAFile=…[&tlsCertificateKeyFile=…]` */
function uriFor(options: ConnectOptions): string {
  const { host, port } = address(options.listener ?? REQUIRED);
  const params = new URLSearchParams({ directConnection: 'true', tls: 'true', tlsCAFile: pki.caFile });
  if (options.cert !== undefined) params.set('tlsCertificateKeyFile', options.cert.pemFile);
  if (options.x509 === true) params.set('authMechanism', 'MONGODB-X509');
  const user = options.user === undefined ? '' : `${encodeURIComponent(options.user)}@`;
  return `mongodb://${user}${host}:${port}/?${params.toString()}`;
}

function connect(options: ConnectOptions, serverSelectionTimeoutMS = 10_000): MongoClient {
  const client = new MongoClient(uriFor(options), { serverSelectionTimeoutMS, maxPoolSize: 1 });
  clients.add(client);
  return client;
}

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (error: unknown) => error,
  );
}

async function expectCode(promise: Promise<unknown>, code: number): Promise<void> {
  const error = await failure(promise);
  expect(error, 'expected a server error').toBeInstanceOf(MongoServerError);
  expect((error as MongoServerError).code).toBe(code);
}

async function upstreamCount(collection: string): Promise<number> {
  return direct.db(dbName).collection(collection).countDocuments();
}

/** A raw TLS connection to a listener, for handshake-level checks and for a connection that outlives a rotation. */
class TlsWire {
  private buffered = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  closed = false;

  private constructor(readonly socket: tls.TLSSocket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.waiter?.();
    });
    socket.on('close', () => {
      this.closed = true;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  /** Connects and completes the handshake, or resolves `null` if the proxy refuses it. */
  static async open(options: { listener?: string; cert?: IssuedCertificate; ca?: string }): Promise<TlsWire | null> {
    const { host, port } = address(options.listener ?? REQUIRED);
    const socket = tls.connect({
      host,
      port,
      ca: readFileSync(options.ca ?? pki.caFile),
      ...(options.cert === undefined ? {} : { cert: options.cert.certPem, key: options.cert.keyPem }),
    });
    sockets.add(socket);
    const wire = new TlsWire(socket);
    const connected = await new Promise<boolean>((resolve) => {
      socket.once('secureConnect', () => resolve(true));
      socket.once('error', () => resolve(false));
      socket.once('close', () => resolve(false));
    });
    if (!connected) return null;
    // TLS 1.3 completes the client side before the server has judged the client certificate:
    // a first round trip tells whether the proxy kept the connection.
    try {
      const reply = await wire.command(opMsg({ ping: 1, $db: 'admin' }));
      return reply.ok === 1 ? wire : null;
    } catch {
      return null;
    }
  }

  get serialNumber(): string {
    return this.socket.getPeerCertificate().serialNumber;
  }

  async command(frame: BuiltFrame, timeoutMS = 5_000): Promise<Document> {
    this.socket.write(frame.bytes);
    const deadline = Date.now() + timeoutMS;
    for (;;) {
      if (this.buffered.length >= 4) {
        const length = this.buffered.readInt32LE(0);
        if (this.buffered.length >= length) {
          const bytes = this.buffered.subarray(0, length);
          this.buffered = this.buffered.subarray(length);
          const frameOut: ReceivedFrame = {
            length,
            requestId: bytes.readInt32LE(4),
            responseTo: bytes.readInt32LE(8),
            opCode: bytes.readInt32LE(12),
            bytes,
          };
          return replyDocument(frameOut);
        }
      }
      if (this.closed) throw new Error('connection closed');
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error('timed out');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, remaining);
        this.waiter = () => {
          clearTimeout(timer);
          this.waiter = undefined;
          resolve();
        };
      });
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

/** The peer certificate serial a brand-new TLS connection to the listener sees. */
async function serverSerial(): Promise<string> {
  const wire = await TlsWire.open({ cert: pki.clients.spiffe });
  if (wire === null) throw new Error('handshake refused');
  const serial = wire.serialNumber;
  wire.close();
  return serial;
}

beforeAll(async () => {
  pki = await makeTestPki();
  proxy = await startTestProxy({
    listeners: [listener(REQUIRED, pki.listenerTls('required')), listener(OPTIONAL, pki.listenerTls('optional'))],
    identity: {
      certificateRules: pki.rules,
      failureDelay: { baseMS: 0, maxMS: 0 },
      reloadIntervalMS: RELOAD_MS,
    },
  });
  direct = directClient();
});

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.allSettled([...clients].map((client) => client.close()));
  await direct
    ?.db(dbName)
    .dropDatabase()
    .catch(() => undefined);
  await direct?.close();
  await proxy?.stop();
  await pki?.remove();
});

describe('the right tenant works', () => {
  it.each([
    ['SAN URI (SPIFFE)', 'spiffe', 'acme', 'CN=app,O=Acme'],
    ['subject CN', 'cn', 'globex', 'CN=tenant-globex'],
    ['subject OU', 'ouO', 'initech', 'CN=svc-1,OU=team-initech,O=Initech,C=US'],
  ] as const)('%s', async (_title, which, tenant, subject) => {
    const client = connect({ cert: pki.clients[which] });
    const collection = `right_${which}`;
    await client.db(dbName).collection(collection).insertOne({ by: which });
    const found = await client
      .db(dbName)
      .collection(collection)
      .find({}, { projection: { _id: 0 } })
      .toArray();
    expect(found.map((doc) => doc.by)).toEqual([which]);
    const stored = await direct.db(dbName).collection(collection).find({}).toArray();
    expect(stored.map((doc) => doc.by)).toEqual([which]);

    const status = await client.db('admin').command({ connectionStatus: 1 });
    expect(status.ok).toBe(1);
    expect(status.authInfo.authenticatedUsers).toEqual([{ user: subject, db: '$external' }]);
    expect(status.tenant).toBe(tenant);
  });

  it('MONGODB-X509 without a user name authenticates as the certificate subject', async () => {
    const client = connect({ cert: pki.clients.ouO, x509: true });
    await client.db(dbName).collection('x509_nouser').insertOne({ ok: true });
    expect(await upstreamCount('x509_nouser')).toBe(1);
    const status = await client.db('admin').command({ connectionStatus: 1 });
    expect(status.authInfo.authenticatedUsers).toEqual([
      { user: 'CN=svc-1,OU=team-initech,O=Initech,C=US', db: '$external' },
    ]);
    expect(status.tenant).toBe('initech');
  });

  it('MONGODB-X509 with the subject as the user name', async () => {
    const client = connect({ cert: pki.clients.spiffe, x509: true, user: 'CN=app,O=Acme' });
    await client.db(dbName).collection('x509_user').insertOne({ ok: true });
    expect(await upstreamCount('x509_user')).toBe(1);
    expect((await client.db('admin').command({ connectionStatus: 1 })).tenant).toBe('acme');
  });
});

describe('refused certificates forward nothing', () => {
  it('MONGODB-X509 with another user name gets AuthenticationFailed (18)', async () => {
    const client = connect({ cert: pki.clients.spiffe, x509: true, user: 'CN=someone-else,O=Acme' });
    await expectCode(client.db(dbName).collection('x509_wrong_user').insertOne({ leaked: true }), 18);
    expect(await upstreamCount('x509_wrong_user')).toBe(0);
  });

  it.each([
    ['an expired certificate', { cert: 'expired' }],
    ['a certificate from an unknown CA', { cert: 'unknownCa' }],
    ['no certificate', { cert: undefined }],
  ] as const)('%s: the TLS handshake is refused', async (title, { cert }) => {
    const collection = `refused_${title.replace(/[^a-z0-9]+/gi, '_')}`;
    const issued = cert === undefined ? undefined : pki.clients[cert];
    const refusedBefore = await metricValue(proxy.proxy, 'tls_handshakes_total', { outcome: 'failure' });
    // The driver retries a refused handshake until server selection gives up: how soon proves
    // nothing (the raw handshake and the metric below show the refusal), so not long.
    const client = connect({ ...(issued === undefined ? {} : { cert: issued }) }, 1_000);
    const error = await failure(client.db(dbName).collection(collection).insertOne({ leaked: true }));
    // The driver never got a server reply: a network / server-selection error, not a command error.
    expect(error).not.toBeInstanceOf(MongoServerError);
    expect(['MongoServerSelectionError', 'MongoNetworkError']).toContain((error as Error).name);
    expect(await TlsWire.open({ ...(issued === undefined ? {} : { cert: issued }) })).toBeNull();
    // The proxy refused in the TLS handshake itself.
    expect(await metricValue(proxy.proxy, 'tls_handshakes_total', { outcome: 'failure' })).toBeGreaterThan(
      refusedBefore,
    );
    expect(await upstreamCount(collection)).toBe(0);
  });

  it('a certificate matching no rule: the handshake succeeds, only pre-auth commands are answered', async () => {
    const client = connect({ cert: pki.clients.unmatched });
    // The driver's own hello succeeded if ping does.
    expect((await client.db('admin').command({ ping: 1 })).ok).toBe(1);
    expect((await client.db('admin').command({ buildInfo: 1 })).ok).toBe(1);
    const collection = client.db(dbName).collection('unmatched');
    await expectCode(collection.insertOne({ leaked: true }), 13);
    await expectCode(collection.find({}).toArray(), 13);
    await expectCode(collection.aggregate([{ $match: {} }]).toArray(), 13);
    await expectCode(client.db('admin').command({ listDatabases: 1 }), 13);
    await expectCode(collection.deleteMany({}), 13);
    expect(await upstreamCount('unmatched')).toBe(0);
    // And MONGODB-X509 with it fails authentication.
    const x509 = connect({ cert: pki.clients.unmatched, x509: true });
    await expectCode(x509.db(dbName).collection('unmatched').insertOne({ leaked: true }), 18);
    expect(await upstreamCount('unmatched')).toBe(0);
  });

  it('clientCertificates: optional — a missing or unverifiable certificate gets a connection but no tenant', async () => {
    for (const cert of [undefined, pki.clients.unknownCa, pki.clients.expired]) {
      const client = connect({ listener: OPTIONAL, ...(cert === undefined ? {} : { cert }) });
      expect((await client.db('admin').command({ ping: 1 })).ok).toBe(1);
      await expectCode(client.db(dbName).collection('optional_refused').insertOne({ leaked: true }), 13);
      const x509 = connect({ listener: OPTIONAL, x509: true, ...(cert === undefined ? {} : { cert }) });
      await expectCode(x509.db(dbName).collection('optional_refused').insertOne({ leaked: true }), 18);
    }
    expect(await upstreamCount('optional_refused')).toBe(0);
    // A good certificate on the optional listener works.
    const good = connect({ listener: OPTIONAL, cert: pki.clients.cn });
    await good.db(dbName).collection('optional_ok').insertOne({ ok: true });
    expect(await upstreamCount('optional_ok')).toBe(1);
  });
});

describe('mongosh', () => {
  const mongosh = async (args: string[]): Promise<string> => {
    const { host, port } = address(REQUIRED);
    const result = await run(
      MONGOSH,
      [
        '--quiet',
        '--norc',
        `mongodb://${host}:${port}/?directConnection=true`,
        '--tls',
        '--tlsCAFile',
        pki.caFile,
        '--tlsCertificateKeyFile',
        pki.clients.spiffe.pemFile,
        ...args,
      ],
      { timeout: 60_000 },
    );
    return result.stdout.trim().split('\n').pop()!;
  };

  it('connects with a client certificate and runs a find', async () => {
    // Seeded directly, so stamped with the SPIFFE certificate's tenant by hand; another tenant's
    // document next to them must stay invisible.
    await direct
      .db(dbName)
      .collection('shell')
      .insertMany([
        { tenantId: pki.tenants.spiffe, k: 1 },
        { tenantId: pki.tenants.spiffe, k: 2 },
        { tenantId: 'someone-else', k: 3 },
      ]);
    const script = `print(JSON.stringify(db.getSiblingDB('${dbName}').shell.find({}, {_id: 0, tenantId: 0}).sort({k: 1}).toArray()))`;
    expect(JSON.parse(await mongosh(['--eval', script]))).toEqual([{ k: 1 }, { k: 2 }]);
  }, 90_000);

  it('authenticates with MONGODB-X509', async () => {
    const script =
      "print(JSON.stringify(db.getSiblingDB('admin').runCommand({connectionStatus: 1}).authInfo.authenticatedUsers))";
    const users = await mongosh([
      '--authenticationMechanism',
      'MONGODB-X509',
      '--authenticationDatabase',
      '$external',
      '--eval',
      script,
    ]);
    expect(JSON.parse(users)).toEqual([{ user: 'CN=app,O=Acme', db: '$external' }]);
  }, 90_000);
});

describe('hot replacement of the server certificate', () => {
  it('is seen by new connections; existing connections keep working', async () => {
    const before = pki.server.serialNumber;
    expect(await serverSerial()).toBe(before);
    const existingWire = await TlsWire.open({ cert: pki.clients.spiffe });
    expect(existingWire).not.toBeNull();
    const existingDriver = connect({ cert: pki.clients.cn });
    await existingDriver.db(dbName).collection('rotation').insertOne({ seq: 1, step: 'before' });

    const rotated = await pki.rotateServerCert();
    expect(rotated.serialNumber).not.toBe(before);
    await new Promise((resolve) => setTimeout(resolve, RELOAD_MS * 2));
    const deadline = Date.now() + 10_000;
    let seen = await serverSerial();
    while (seen !== rotated.serialNumber && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, RELOAD_MS));
      seen = await serverSerial();
    }
    expect(seen).toBe(rotated.serialNumber);

    // The connection opened before the rotation still has the old certificate and still works.
    expect(existingWire!.serialNumber).toBe(before);
    const reply = await existingWire!.command(
      opMsg({ insert: 'rotation', documents: [{ seq: 2, step: 'existing-wire' }], $db: dbName }),
    );
    expect(reply).toMatchObject({ ok: 1, n: 1 });
    await existingDriver.db(dbName).collection('rotation').insertOne({ seq: 3, step: 'existing-driver' });

    // A new driver connection verifies the new certificate against the same CA.
    const fresh = connect({ cert: pki.clients.ouO });
    await fresh.db(dbName).collection('rotation').insertOne({ seq: 4, step: 'new' });
    const steps = await direct.db(dbName).collection('rotation').find().sort({ seq: 1 }).toArray();
    expect(steps.map((doc) => doc.step)).toEqual(['before', 'existing-wire', 'existing-driver', 'new']);
  });
});
