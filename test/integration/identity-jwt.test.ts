/**
 * Method `plain-jwt` through the official driver: a signed JWT as the password of
 * authMechanism=PLAIN (authSource=$external). Valid tokens work and their writes reach the
 * database; forged, foreign-audience and expired tokens get AuthenticationFailed (18) and nothing
 * reaches the upstream. Keys are generated here; the key file is replaced during the run.
 */
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { exportSPKI, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import { MongoClient, type MongoClientOptions, MongoServerError } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

const AUDIENCE = 'mongo-tenant-proxy.test';
const ISSUER = 'https://kubernetes.default.svc.cluster.local';

let dir: string;
let keyFile: string;
let signing: { publicKey: CryptoKey; privateKey: CryptoKey };
let attacker: { publicKey: CryptoKey; privateKey: CryptoKey };
let proxy: TestProxy;
let direct: MongoClient;
const clients = new Set<MongoClient>();
const dbName = uniqueDbName('jwt');

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'mtp-jwt-it-'));
  [signing, attacker] = await Promise.all([
    generateKeyPair('RS256', { extractable: true }),
    generateKeyPair('RS256', { extractable: true }),
  ]);
  keyFile = path.join(dir, 'sa.pub');
  writeFileSync(keyFile, await exportSPKI(signing.publicKey));
  proxy = await startTestProxy({
    listeners: [
      { name: 'jwt', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['plain-jwt'], staticTenant: null },
    ],
    identity: {
      jwt: {
        keyFile,
        jwksFile: null,
        audience: AUDIENCE,
        issuer: ISSUER,
        tenantClaim: 'kubernetes.io.namespace',
        algorithms: ['RS256'],
        clockToleranceSeconds: 5,
      },
      failureDelay: { baseMS: 0, maxMS: 0 },
      reloadIntervalMS: 100,
    },
  });
  direct = directClient();
});

afterAll(async () => {
  await Promise.allSettled([...clients].map((client) => client.close()));
  await direct
    ?.db(dbName)
    .dropDatabase()
    .catch(() => undefined);
  await direct?.close();
  await proxy?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A Kubernetes-style projected service-account token. */
function serviceAccountToken(
  privateKey: CryptoKey,
  {
    namespace = 'team-blue',
    audience = AUDIENCE,
    expiresAt = Math.floor(Date.now() / 1000) + 600,
    extra = {},
  }: {
    namespace?: string;
    audience?: string;
    expiresAt?: number;
    extra?: JWTPayload;
  } = {},
): Promise<string> {
  return new SignJWT({
    'kubernetes.io': { namespace, serviceaccount: { name: 'orders', uid: '7c1a' } },
    ...extra,
  })
    .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
    .setIssuer(ISSUER)
    .setSubject(`system:serviceaccount:${namespace}:orders`)
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime(expiresAt)
    .sign(privateKey);
}

/** The connection string a service uses: any user name, the token as the password. */
function clientFor(token: string, options: MongoClientOptions = {}): MongoClient {
  const { host, port } = proxy.proxy.address;
  const uri = `mongodb://anything:${encodeURIComponent(token)}@${host}:${port}/?directConnection=true&authMechanism=PLAIN&authSource=$external`;
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, ...options });
  clients.add(client);
  return client;
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
  // Nothing reached the database.
  expect(await direct.db(dbName).collection(collection).countDocuments()).toBe(0);
}

describe('plain-jwt through the official driver', () => {
  it('a valid token authenticates; its writes reach the upstream', async () => {
    const client = clientFor(await serviceAccountToken(signing.privateKey));
    const inserted = await client.db(dbName).collection('valid').insertOne({ order: 1 });
    expect(inserted.acknowledged).toBe(true);
    const stored = await direct.db(dbName).collection('valid').findOne({ _id: inserted.insertedId });
    expect(stored).toMatchObject({ order: 1 });
  });

  it('a forged token (signed by another key) is refused and nothing is forwarded', async () => {
    await refused(clientFor(await serviceAccountToken(attacker.privateKey)), 'forged');
  });

  it('a token for another audience is refused and nothing is forwarded', async () => {
    await refused(clientFor(await serviceAccountToken(signing.privateKey, { audience: 'some-other-api' })), 'audience');
  });

  it('an expired token is refused and nothing is forwarded', async () => {
    await refused(
      clientFor(await serviceAccountToken(signing.privateKey, { expiresAt: Math.floor(Date.now() / 1000) - 120 })),
      'expired',
    );
  });

  it('a token without the tenant claim is refused', async () => {
    const token = await new SignJWT({ sub: 'x' })
      .setProtectedHeader({ alg: 'RS256' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime('5m')
      .sign(signing.privateKey);
    await refused(clientFor(token), 'no-tenant');
  });

  it('a replaced key file takes effect for new connections without dropping existing ones', async () => {
    // One pooled connection, authenticated once with the old key.
    const before = clientFor(await serviceAccountToken(signing.privateKey), { maxPoolSize: 1 });
    await before.db(dbName).collection('rotation').insertOne({ step: 'before' });

    const rotated = await generateKeyPair('RS256', { extractable: true });
    const staged = path.join(dir, 'sa.pub.new');
    writeFileSync(staged, await exportSPKI(rotated.publicKey));
    renameSync(staged, keyFile);

    const deadline = Date.now() + 10_000;
    for (;;) {
      const probe = clientFor(await serviceAccountToken(rotated.privateKey));
      const ok = await probe
        .db('admin')
        .command({ ping: 1 })
        .then(
          () => true,
          () => false,
        );
      await probe.close();
      if (ok) break;
      if (Date.now() > deadline) throw new Error('the new key was not picked up');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await refused(clientFor(await serviceAccountToken(signing.privateKey)), 'rotation-old-key');
    // The connection authenticated before the rotation keeps working.
    await before.db(dbName).collection('rotation').insertOne({ step: 'after' });
    expect(await direct.db(dbName).collection('rotation').countDocuments()).toBe(2);
  });
});
