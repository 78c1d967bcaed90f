/**
 * Method `scram`: SCRAM-SHA-256 / SCRAM-SHA-1 verified by the proxy against a credentials file
 * written with hashPassword, driven through the official driver (explicit mechanisms, and
 * negotiation through saslSupportedMechs + speculativeAuthenticate) and mongosh. Results are
 * checked by reading the upstream directly; failures must forward nothing.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { MongoClient, MongoServerError } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCredentialsFile, hashPassword, type CredentialEntry } from '../../src/identity/credentials.js';
import { metricValue } from '../helpers/metrics.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';
import { RawClient, opMsg } from '../helpers/raw-client.js';
import { ScramClient } from '../../src/upstream/scram.js';
import { MONGOSH } from '../helpers/mongosh.js';

const run = promisify(execFile);
const RELOAD_MS = 200;

// Cheap iteration counts keep the suite quick; the defaults are tested in the unit tests.
const users = {
  alice: { user: 'alice', password: 'alice pässword ☃', tenant: 'acme', mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'] },
  legacy: { user: 'legacy', password: 'legacy-pw', tenant: 'initech', mechanisms: ['SCRAM-SHA-1'] },
  shop: { user: 'shop-app', db: 'shop', password: 'shop-pw', tenant: 'globex', mechanisms: ['SCRAM-SHA-256'] },
  odd: { user: 'we,ird=us@r:x', password: 'p@ss:w/rd?', tenant: 'umbrella', mechanisms: ['SCRAM-SHA-256'] },
  newbie: { user: 'newbie', password: 'newbie-pw', tenant: 'hooli', mechanisms: ['SCRAM-SHA-256'] },
} as const;

type User = (typeof users)[keyof typeof users];

function entryOf(u: User): CredentialEntry {
  return hashPassword({
    user: u.user,
    db: 'db' in u ? u.db : 'admin',
    tenant: u.tenant,
    password: u.password,
    mechanisms: u.mechanisms,
    iterations: 4096,
  });
}

const dir = mkdtempSync(join(tmpdir(), 'mtp-identity-scram-'));
const credentialsFile = join(dir, 'credentials.yaml');
const initialEntries = [users.alice, users.legacy, users.shop, users.odd].map(entryOf);
const dbName = uniqueDbName('scram');

let proxy: TestProxy;
let direct: MongoClient;
let host: string;
const clients = new Set<MongoClient>();

/** Replaces the file in one step, as a deploy or a Kubernetes secret update does. */
function writeCredentials(entries: CredentialEntry[]): void {
  writeFileSync(`${credentialsFile}.tmp`, formatCredentialsFile(entries), { mode: 0o600 });
  renameSync(`${credentialsFile}.tmp`, credentialsFile);
}

/** `mongodb://user:pass@host:port/?directConnection=true&authSource=…[&authMechanism=…]` */
function uriFor(options: { user: string; password: string; authSource?: string; mechanism?: string }): string {
  const credentials = `${encodeURIComponent(options.user)}:${encodeURIComponent(options.password)}@`;
  const params = new URLSearchParams({ directConnection: 'true', authSource: options.authSource ?? 'admin' });
  if (options.mechanism !== undefined) params.set('authMechanism', options.mechanism);
  return `mongodb://${credentials}${host}/?${params.toString()}`;
}

function connect(options: { user: string; password: string; authSource?: string; mechanism?: string }): MongoClient {
  const client = new MongoClient(uriFor(options), { serverSelectionTimeoutMS: 10_000, maxPoolSize: 1 });
  clients.add(client);
  return client;
}

async function expectAuthenticationFailed(promise: Promise<unknown>): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, 'expected authentication to fail').toBeInstanceOf(MongoServerError);
  expect((error as MongoServerError).code).toBe(18);
  expect((error as MongoServerError).message).toBe('Authentication failed.');
}

beforeAll(async () => {
  writeCredentials(initialEntries);
  proxy = await startTestProxy({
    listeners: [
      { name: 'scram', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['scram'], staticTenant: null },
    ],
    identity: {
      scram: { credentialsFile, mechanisms: ['SCRAM-SHA-256', 'SCRAM-SHA-1'] },
      failureDelay: { baseMS: 0, maxMS: 0 },
      reloadIntervalMS: RELOAD_MS,
    },
  });
  host = new URL(proxy.uri).host;
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

describe('the right user works', () => {
  it.each([
    ['SCRAM-SHA-256', users.alice, 'SCRAM-SHA-256'],
    ['SCRAM-SHA-1', users.alice, 'SCRAM-SHA-1'],
    ['negotiated (saslSupportedMechs + speculativeAuthenticate)', users.alice, undefined],
    ['negotiated for a SCRAM-SHA-1-only user', users.legacy, undefined],
    ['explicit SCRAM-SHA-1 for a SCRAM-SHA-1-only user', users.legacy, 'SCRAM-SHA-1'],
    ['a name that needs SASL and URI escaping', users.odd, 'SCRAM-SHA-256'],
  ] as const)('%s', async (title, user, mechanism) => {
    const client = connect({
      user: user.user,
      password: user.password,
      ...(mechanism === undefined ? {} : { mechanism }),
    });
    const collection = `right_${title.replace(/[^a-z0-9]+/gi, '_')}`;
    await client.db(dbName).collection(collection).insertOne({ by: user.user });
    expect(await client.db(dbName).collection(collection).countDocuments()).toBe(1);
    const stored = await direct
      .db(dbName)
      .collection(collection)
      .find({}, { projection: { _id: 0 } })
      .toArray();
    expect(stored.map(({ by }) => by)).toEqual([user.user]);
    await client.close();
  });

  it('authenticates in the authSource of the entry only', async () => {
    const client = connect({
      user: users.shop.user,
      password: users.shop.password,
      authSource: 'shop',
      mechanism: 'SCRAM-SHA-256',
    });
    await client.db(dbName).collection('authsource').insertOne({ ok: true });
    expect(await direct.db(dbName).collection('authsource').countDocuments()).toBe(1);
    await expectAuthenticationFailed(
      connect({ user: users.shop.user, password: users.shop.password, authSource: 'admin' })
        .db(dbName)
        .command({ ping: 1 }),
    );
    await expectAuthenticationFailed(
      connect({ user: users.alice.user, password: users.alice.password, authSource: 'shop' })
        .db(dbName)
        .command({ ping: 1 }),
    );
  });

  it('uses speculative authentication when the driver negotiates (no saslStart round trip)', async () => {
    const startsBefore = await metricValue(proxy.proxy, 'operations_total', { command: 'saslStart' });
    const continuesBefore = await metricValue(proxy.proxy, 'operations_total', { command: 'saslContinue' });
    const client = connect({ user: users.alice.user, password: users.alice.password });
    await client.db(dbName).command({ ping: 1 });
    expect(await metricValue(proxy.proxy, 'operations_total', { command: 'saslStart' })).toBe(startsBefore);
    expect(await metricValue(proxy.proxy, 'operations_total', { command: 'saslContinue' })).toBeGreaterThan(
      continuesBefore,
    );
    await client.close();
  });

  it('answers connectionStatus with the authenticated user', async () => {
    const client = connect({ user: users.alice.user, password: users.alice.password, mechanism: 'SCRAM-SHA-256' });
    const status = await client.db('admin').command({ connectionStatus: 1 });
    expect(status.ok).toBe(1);
    if (status.authInfo !== undefined) {
      // As a MongoDB server answers: the user name and its authentication database.
      expect(status.authInfo.authenticatedUsers).toEqual([{ user: 'alice', db: 'admin' }]);
    }
    if (status.tenant !== undefined) expect(status.tenant).toBe('acme');
    await client.close();

    const shop = connect({ user: users.shop.user, password: users.shop.password, authSource: 'shop' });
    const shopStatus = await shop.db('admin').command({ connectionStatus: 1 });
    if (shopStatus.authInfo !== undefined) {
      expect(shopStatus.authInfo.authenticatedUsers).toEqual([{ user: 'shop-app', db: 'shop' }]);
    }
    await shop.close();
  });
});

describe('wrong credentials are refused and nothing is forwarded', () => {
  it.each([
    ['a wrong password (SCRAM-SHA-256)', { user: 'alice', password: 'not-it', mechanism: 'SCRAM-SHA-256' }],
    ['a wrong password (SCRAM-SHA-1)', { user: 'alice', password: 'not-it', mechanism: 'SCRAM-SHA-1' }],
    ['a wrong password (negotiated)', { user: 'alice', password: 'not-it' }],
    ['an unknown user (SCRAM-SHA-256)', { user: 'mallory', password: 'whatever', mechanism: 'SCRAM-SHA-256' }],
    ['an unknown user (SCRAM-SHA-1)', { user: 'mallory', password: 'whatever', mechanism: 'SCRAM-SHA-1' }],
    ['an unknown user (negotiated)', { user: 'mallory', password: 'whatever' }],
    [
      'a SASLprep-equivalent but wrong case password',
      { user: 'alice', password: 'ALICE PÄSSWORD ☃', mechanism: 'SCRAM-SHA-256' },
    ],
  ])('%s gets AuthenticationFailed (18)', async (title, options) => {
    const collection = `refused_${title.replace(/[^a-z0-9]+/gi, '_')}`;
    const client = connect(options);
    await expectAuthenticationFailed(client.db(dbName).collection(collection).insertOne({ leaked: true }));
    await client.close();
    expect(await direct.db(dbName).collection(collection).countDocuments()).toBe(0);
  });

  it('counts the failures in metrics', async () => {
    const before = await metricValue(proxy.proxy, 'authentications_total', { outcome: 'failure' });
    const client = connect({ user: 'mallory', password: 'x', mechanism: 'SCRAM-SHA-256' });
    await expectAuthenticationFailed(client.db(dbName).command({ ping: 1 }));
    await client.close();
    expect(await metricValue(proxy.proxy, 'authentications_total', { outcome: 'failure' })).toBeGreaterThan(before);
  });
});

describe('mongosh', () => {
  it('runs a find with --username/--password/--authenticationDatabase', async () => {
    // Seeded directly: alice's tenant by hand, and another tenant's document that must stay invisible.
    await direct
      .db(dbName)
      .collection('shell')
      .insertMany([
        { tenantId: users.alice.tenant, k: 1 },
        { tenantId: users.alice.tenant, k: 2 },
        { tenantId: 'someone-else', k: 3 },
      ]);
    const script = `print(JSON.stringify(db.getSiblingDB('${dbName}').shell.find({}, {_id: 0, tenantId: 0}).sort({k: 1}).toArray()))`;
    const result = await run(
      MONGOSH,
      [
        '--quiet',
        '--norc',
        `mongodb://${host}/?directConnection=true`,
        '--username',
        users.alice.user,
        '--password',
        users.alice.password,
        '--authenticationDatabase',
        'admin',
        '--eval',
        script,
      ],
      { timeout: 60_000 },
    );
    expect(JSON.parse(result.stdout.trim().split('\n').pop()!)).toEqual([{ k: 1 }, { k: 2 }]);
  }, 90_000);

  it('fails with a wrong password', async () => {
    const error = await run(
      MONGOSH,
      [
        '--quiet',
        '--norc',
        `mongodb://${host}/?directConnection=true`,
        '--username',
        users.alice.user,
        '--password',
        'wrong',
        '--authenticationDatabase',
        'admin',
        '--eval',
        'print(1)',
      ],
      { timeout: 60_000 },
    ).then(
      () => undefined,
      (e: unknown) => e as { code: number; stdout: string; stderr: string },
    );
    expect(error).toBeDefined();
    expect(`${error!.stdout}${error!.stderr}`).toMatch(/Authentication failed/);
  }, 90_000);
});

describe('hot replacement of the credentials file', () => {
  it('is seen by new connections; an authenticated connection keeps working', async () => {
    const existing = connect({ user: users.alice.user, password: users.alice.password, mechanism: 'SCRAM-SHA-256' });
    await existing.db(dbName).collection('reload').insertOne({ step: 'before' });

    const newbie = { user: users.newbie.user, password: users.newbie.password, mechanism: 'SCRAM-SHA-256' };
    await expectAuthenticationFailed(connect(newbie).db(dbName).command({ ping: 1 }));

    // alice leaves and newbie arrives.
    writeCredentials([...initialEntries.filter((entry) => entry.user !== 'alice'), entryOf(users.newbie)]);
    await new Promise((resolve) => setTimeout(resolve, RELOAD_MS * 3));
    let added: MongoClient | undefined;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const attempt = connect(newbie);
      try {
        await attempt.db(dbName).collection('reload').insertOne({ step: 'newbie' });
        added = attempt;
        break;
      } catch (error) {
        await attempt.close();
        if (Date.now() > deadline) throw error;
        await new Promise((resolve) => setTimeout(resolve, RELOAD_MS));
      }
    }
    expect(added).toBeDefined();

    // A new connection as alice is refused, but the one authenticated before the change is untouched.
    await expectAuthenticationFailed(
      connect({ user: users.alice.user, password: users.alice.password, mechanism: 'SCRAM-SHA-256' })
        .db(dbName)
        .command({ ping: 1 }),
    );
    await existing.db(dbName).collection('reload').insertOne({ step: 'after' });
    const steps = await direct.db(dbName).collection('reload').find().sort({ _id: 1 }).toArray();
    expect(steps.map((d) => d.step)).toEqual(['before', 'newbie', 'after']);

    // A broken replacement keeps the users in force.
    writeFileSync(`${credentialsFile}.tmp`, 'users:\n  - user: half-written\n');
    renameSync(`${credentialsFile}.tmp`, credentialsFile);
    await new Promise((resolve) => setTimeout(resolve, RELOAD_MS * 3));
    const stillThere = connect(newbie);
    await stillThere.db(dbName).command({ ping: 1 });
    await stillThere.close();
  });
});

describe('one identity per connection', () => {
  /** A complete SCRAM-SHA-256 conversation on an existing raw connection; returns the final reply. */
  async function login(c: RawClient, user: { user: string; password: string }): Promise<{ ok: number; code?: number }> {
    const scram = new ScramClient({ mechanism: 'SCRAM-SHA-256', username: user.user, password: user.password });
    const first = await c.command(
      opMsg({
        saslStart: 1,
        mechanism: 'SCRAM-SHA-256',
        payload: scram.clientFirst(),
        options: { skipEmptyExchange: true },
        $db: 'admin',
      }),
    );
    if (first.ok !== 1) return first as { ok: number; code?: number };
    const final = await c.command(
      opMsg({
        saslContinue: 1,
        conversationId: first.conversationId,
        payload: await scram.clientFinal(first.payload.buffer),
        $db: 'admin',
      }),
    );
    return final as { ok: number; code?: number };
  }

  it('refuses re-authentication as another user; the same user again is accepted', async () => {
    const [hostName, port] = host.split(':');
    const c = await RawClient.connect(hostName!, Number(port));
    try {
      // Runs after the reload test (alice removed, newbie added): newbie and odd both exist.
      expect((await login(c, users.newbie)).ok).toBe(1);
      expect((await login(c, users.newbie)).ok).toBe(1);
      // users.odd is valid (admin, SCRAM-SHA-256) but another identity and tenant.
      const other = await login(c, users.odd);
      expect(other.ok).toBe(0);
      expect(other.code).toBe(18);
      const status = await c.command(opMsg({ connectionStatus: 1, $db: 'admin' }));
      expect(status.tenant).toBe(users.newbie.tenant);
      expect(status.authInfo.authenticatedUsers).toEqual([{ user: 'newbie', db: 'admin' }]);
    } finally {
      c.close();
    }
  });
});
