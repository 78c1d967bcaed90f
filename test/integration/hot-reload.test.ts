/**
 * Hot reload (issue 6, "Configuration"), in-process: the proxy is started from a YAML file the
 * way `serve` starts it (the same file is loaded again on every reload) and the file is changed
 * under it. Checked through the MongoDB driver against the test upstream: a tightened namespace
 * policy applies to connections already open from their next command, a lowered per-tenant
 * limit to new connections, a new log level at once, a new credentials file to new logins, the
 * audit stream moves to a file, listener certificates swap for new handshakes; a Kubernetes
 * ConfigMap symlink swap is seen; an open cursor and the existing connections survive every
 * reload; an invalid, unreadable or unloadable configuration is rejected, logged and counted
 * while the previous one keeps serving; restart-only settings are reported.
 * SIGHUP through the real command line: cli-reload.test.ts.
 */
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { stringify } from 'yaml';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import { configFileSource, startProxy, type RunningProxy } from '../../src/main.js';
import { directClient, uniqueDbName, upstreamUri } from '../helpers/upstream.js';
import { metricValue } from '../helpers/metrics.js';
import { RawClient, opMsg } from '../helpers/raw-client.js';
import { until } from '../helpers/wait.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { formatCredentialsFile, hashPassword } from '../../src/identity/credentials.js';

const TENANT = 'acme';
let dir = '';
let file = '';
let proxy: RunningProxy | undefined;
let logs: Array<Record<string, unknown>> = [];
let logger: Logger;
const clients: MongoClient[] = [];
const raws: RawClient[] = [];
const direct = directClient();
const databases: string[] = [];

beforeAll(async () => {
  await direct.connect();
});

afterAll(async () => {
  for (const db of databases) await direct.db(db).dropDatabase();
  await direct.close();
});

afterEach(async () => {
  for (const raw of raws.splice(0)) raw.close();
  await Promise.allSettled(clients.splice(0).map((client) => client.close()));
  await proxy?.close();
  proxy = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** The settings every test starts from, shaped like the YAML file. */
function settings(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    listeners: [{ name: 'app', listen: '127.0.0.1:0', methods: ['static'], staticTenant: TENANT }],
    upstream: { uri: upstreamUri(), connectTimeoutMS: 5000 },
    metrics: { listen: '127.0.0.1:0' },
    log: { level: 'info' },
    reload: { watchConfigFile: true, intervalMS: 25 },
    ...overrides,
  };
}

function writeConfig(values: Record<string, unknown>): void {
  writeFileSync(file, stringify(values));
}

/** Starts the proxy from `file` (written by `prepare`, default: `values` as YAML in a new directory). */
async function start(
  values: Record<string, unknown>,
  options: { prepare?: () => void; beforeStart?: () => void } = {},
): Promise<RunningProxy> {
  dir = mkdtempSync(join(tmpdir(), 'mtp-reload-'));
  file = join(dir, 'config.yaml');
  if (options.prepare === undefined) writeConfig(values);
  else options.prepare();
  logs = [];
  logger = createLogger({
    level: 'info',
    destination: { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) },
  });
  // As `serve` does: the same file and environment on every load.
  const source = configFileSource({ file, env: {} });
  const config = source.load();
  options.beforeStart?.();
  // Audit lines for stdout land in the same array; a file destination is opened by the proxy.
  const auditToLogs = { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) };
  proxy = await startProxy(config, {
    logger,
    source,
    auditStream: (destination) => (destination === 'stdout' ? auditToLogs : undefined),
  });
  return proxy;
}

function client(): MongoClient {
  const { host, port } = proxy!.address;
  const created = new MongoClient(`mongodb://${host}:${port}/?directConnection=true`, {
    serverSelectionTimeoutMS: 10_000,
    retryReads: false,
  });
  clients.push(created);
  return created;
}

async function raw(): Promise<RawClient> {
  const created = await RawClient.connect(proxy!.address.host, proxy!.address.port);
  raws.push(created);
  return created;
}

/** A metric of the running proxy (test/helpers/metrics.ts). */
const metric = (name: string, labels: Record<string, string> = {}): Promise<number> =>
  metricValue(proxy!, name, labels);

/** Changes the file and waits until the watcher has reloaded it (`result`: success or failure). */
async function changeFile(values: Record<string, unknown> | string, result: 'success' | 'failure'): Promise<void> {
  const before = await metric('config_reloads_total', { result });
  if (typeof values === 'string') writeFileSync(file, values);
  else writeConfig(values);
  await until(async () => (await metric('config_reloads_total', { result })) > before, {
    timeoutMS: 20_000,
    message: `a ${result}ful reload`,
  });
}

const logged = (message: string): Array<Record<string, unknown>> => logs.filter((line) => line['msg'] === message);

async function seed(): Promise<string> {
  const db = uniqueDbName('reload');
  databases.push(db);
  const items = Array.from({ length: 5 }, (_, index) => ({ _id: index as never, tenantId: TENANT, n: index }));
  await direct.db(db).collection('items').insertMany(items);
  await direct
    .db(db)
    .collection('secrets')
    .insertOne({ _id: 's' as never, tenantId: TENANT, value: 'hidden' });
  return db;
}

describe('hot reload when the configuration file changes', () => {
  it('tightens the policy for open connections, lowers a tenant limit and raises the log level; an open cursor keeps working', async () => {
    const db = await seed();
    await start(settings());
    expect(await metric('config_last_reload_successful')).toBe(1);
    const started = await metric('config_last_reload_success_timestamp_seconds');
    expect(started).toBeGreaterThan(0);

    const app = client().db(db);
    const cursor = app.collection('items').find({}, { batchSize: 2, sort: { _id: 1 } });
    expect((await cursor.next())?.n).toBe(0);
    expect((await app.collection('secrets').findOne())?.value).toBe('hidden');

    await changeFile(
      settings({
        isolation: { namespaces: [{ match: `${db}.secrets`, access: 'denied' }] },
        limits: { maxConnectionsPerTenant: 1 },
        log: { level: 'debug' },
      }),
      'success',
    );

    // The same client connection, its next command: refused by the new policy.
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
    // The cursor opened before the reload runs to its end (getMore on the same connections).
    expect((await cursor.toArray()).map((doc) => doc.n)).toEqual([1, 2, 3, 4]);
    expect(await app.collection('items').countDocuments()).toBe(5);
    // The tenant already has more connections than the new limit: they stay, a new one is refused.
    const extra = await raw();
    expect(await extra.command(opMsg({ hello: 1, $db: 'admin' }))).toMatchObject({
      ok: 0,
      code: 96,
      errmsg: 'tenant connection limit (1) reached',
    });

    // The new level reaches loggers created before the reload (this connection's).
    expect(logger.level).toBe('debug');
    expect(logs.some((line) => line['level'] === 'debug' && line['connectionId'] !== undefined)).toBe(true);
    const [reloaded] = logged('configuration reloaded');
    expect(reloaded).toMatchObject({ level: 'info', trigger: 'file', component: 'reload' });
    expect(reloaded!['applied']).toEqual(['isolation.namespaces[0]', 'log.level', 'limits.maxConnectionsPerTenant']);
    expect(logged('configuration file changed; reloading')).toHaveLength(1);

    expect(await metric('config_reloads_total', { result: 'success' })).toBe(1);
    expect(await metric('config_reloads_total', { result: 'failure' })).toBe(0);
    expect(await metric('config_last_reload_successful')).toBe(1);
    expect(await metric('config_last_reload_success_timestamp_seconds')).toBeGreaterThanOrEqual(started);
  });

  it('rejects an invalid, unparsable or missing file: the previous configuration keeps serving; logged and counted', async () => {
    const db = await seed();
    const strict = settings({ isolation: { namespaces: [{ match: `${db}.secrets`, access: 'denied' }] } });
    await start(strict);
    const app = client().db(db);
    const cursor = app.collection('items').find({}, { batchSize: 2, sort: { _id: 1 } });
    expect((await cursor.next())?.n).toBe(0);

    // Schema violation, in a file that would also have loosened the policy.
    await changeFile(settings({ limits: { maxConnections: 0 } }), 'failure');
    expect(await metric('config_last_reload_successful')).toBe(0);
    const [failure] = logged('configuration reload failed; the previous configuration keeps running');
    expect(failure).toMatchObject({ level: 'error', trigger: 'file', path: 'limits.maxConnections' });
    expect(String(failure!['err'])).toMatch(
      /^limits\.maxConnections: must be >= 1 \(got 0, from .*config\.yaml:\d+\)$/,
    );
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);

    await changeFile('limits: [\n', 'failure');
    expect(String(logged('configuration reload failed; the previous configuration keeps running')[1]!['err'])).toMatch(
      /invalid YAML/,
    );

    unlinkSync(file);
    const missing = await proxy!.reload();
    expect(missing).toMatchObject({ ok: false, trigger: 'api' });
    expect(missing.ok === false && missing.error).toMatch(/cannot read config file: no such file/);

    expect(await metric('config_reloads_total', { result: 'failure' })).toBe(3);
    expect(await metric('config_reloads_total', { result: 'success' })).toBe(0);
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
    expect((await cursor.toArray()).map((doc) => doc.n)).toEqual([1, 2, 3, 4]);

    // A good file again: loosened, and the gauge recovers.
    await changeFile(settings(), 'success');
    expect(await metric('config_last_reload_successful')).toBe(1);
    expect((await app.collection('secrets').findOne())?.value).toBe('hidden');
  });
});

describe('hot reload of a Kubernetes ConfigMap mount', () => {
  it('does not miss a change made after the file was loaded, while the proxy was starting', async () => {
    const db = await seed();
    await start(settings(), {
      beforeStart: () =>
        writeConfig(settings({ isolation: { namespaces: [{ match: `${db}.secrets`, access: 'denied' }] } })),
    });
    await until(async () => (await metric('config_reloads_total', { result: 'success' })) === 1, {
      timeoutMS: 20_000,
      message: 'the reload of the change',
    });
    await expect(client().db(db).collection('secrets').findOne()).rejects.toThrow(/denied/);
  });

  it('sees the atomic symlink swap the kubelet makes, and reloads', async () => {
    const db = await seed();
    // The kubelet's layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/; an update
    // writes a new timestamped directory and renames a new ..data symlink over the old one.
    const version = (name: string, values: Record<string, unknown>): void => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'config.yaml'), stringify(values));
    };
    await start(settings(), {
      prepare: () => {
        version('..2026_11_26_09_00_00.1', settings());
        symlinkSync('..2026_11_26_09_00_00.1', join(dir, '..data'));
        symlinkSync(join('..data', 'config.yaml'), file);
      },
    });
    const app = client().db(db);
    expect((await app.collection('secrets').findOne())?.value).toBe('hidden');

    version(
      '..2026_11_26_09_01_00.2',
      settings({ isolation: { namespaces: [{ match: `${db}.secrets`, access: 'denied' }] } }),
    );
    const before = await metric('config_reloads_total', { result: 'success' });
    symlinkSync('..2026_11_26_09_01_00.2', join(dir, '..data_tmp'));
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
    rmSync(join(dir, '..2026_11_26_09_00_00.1'), { recursive: true });
    await until(async () => (await metric('config_reloads_total', { result: 'success' })) > before, {
      timeoutMS: 20_000,
      message: 'a reload after the swap',
    });
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
  });
});

describe('identity and audit settings', () => {
  it('new connections authenticate against a new credentials file; an authenticated connection keeps working', async () => {
    const db = await seed();
    await start(settings({ reload: { watchConfigFile: false } }));
    const entry = (user: string, tenant: string): ReturnType<typeof hashPassword> =>
      hashPassword({
        user,
        db: 'admin',
        tenant,
        password: `${user}-pw`,
        mechanisms: ['SCRAM-SHA-256'],
        iterations: 4096,
      });
    const first = join(dir, 'users-1.yaml');
    const second = join(dir, 'users-2.yaml');
    writeFileSync(first, formatCredentialsFile([entry('alice', TENANT)]), { mode: 0o600 });
    writeFileSync(second, formatCredentialsFile([entry('bob', TENANT)]), { mode: 0o600 });
    const withUsers = (credentialsFile: string): Record<string, unknown> =>
      settings({
        listeners: [{ name: 'app', listen: '127.0.0.1:0', methods: ['scram'] }],
        identity: { scram: { credentialsFile } },
        reload: { watchConfigFile: false },
      });
    const login = (user: string): MongoClient => {
      const { host, port } = proxy!.address;
      const created = new MongoClient(
        `mongodb://${user}:${user}-pw@${host}:${port}/?directConnection=true&authSource=admin`,
        {
          serverSelectionTimeoutMS: 10_000,
        },
      );
      clients.push(created);
      return created;
    };

    // The listener had no scram method at start: a reload enables it with the first file.
    writeConfig(withUsers(first));
    expect(await proxy!.reload()).toMatchObject({
      ok: true,
      applied: ['listeners[0].methods', 'listeners[0].staticTenant', 'identity.scram.credentialsFile'],
    });
    const alice = login('alice');
    expect(await alice.db(db).collection('items').countDocuments()).toBe(5);

    writeConfig(withUsers(second));
    expect(await proxy!.reload()).toMatchObject({ ok: true, applied: ['identity.scram.credentialsFile'] });
    await expect(login('alice').db(db).collection('items').countDocuments()).rejects.toThrow(/Authentication failed/);
    expect(await login('bob').db(db).collection('items').countDocuments()).toBe(5);
    expect(await alice.db(db).collection('items').countDocuments()).toBe(5);

    // A credentials file that does not load is a rejected reload.
    writeConfig(withUsers(join(dir, 'missing.yaml')));
    const rejected = await proxy!.reload();
    expect(rejected.ok === false && rejected.error).toMatch(/^identity\.scram\.credentialsFile: /);
    expect(await login('bob').db(db).collection('items').countDocuments()).toBe(5);
  });

  it('a connection still unauthenticated at the reload authenticates under the new settings: a removed method or credential cannot be used later', async () => {
    await start(settings({ reload: { watchConfigFile: false } }));
    const users = join(dir, 'users.yaml');
    const alice = hashPassword({
      user: 'alice',
      db: 'admin',
      tenant: TENANT,
      password: 'alice-pw',
      mechanisms: ['SCRAM-SHA-256'],
      iterations: 4096,
    });
    writeFileSync(users, formatCredentialsFile([alice]), { mode: 0o600 });
    const scramListener = (methods: string[]): Record<string, unknown> =>
      settings({
        listeners: [{ name: 'app', listen: '127.0.0.1:0', methods }],
        identity: { scram: { credentialsFile: users } },
        reload: { watchConfigFile: false },
      });
    writeConfig(scramListener(['scram']));
    expect(await proxy!.reload()).toMatchObject({ ok: true });
    const saslStart = (): ReturnType<typeof opMsg> =>
      opMsg({
        saslStart: 1,
        mechanism: 'SCRAM-SHA-256',
        payload: Buffer.from('n,,n=alice,r=abcdefghijklmnop'),
        $db: 'admin',
      });

    const saslContinue = (): ReturnType<typeof opMsg> =>
      opMsg({ saslContinue: 1, conversationId: 1, payload: Buffer.from('c=biws,r=x,p=eA=='), $db: 'admin' });
    // A reload that changes nothing about identity leaves a conversation in progress alone.
    const unaffected = await raw();
    expect(await unaffected.command(saslStart())).toMatchObject({ ok: 1, done: false });
    writeConfig({ ...scramListener(['scram']), log: { level: 'warn' } });
    expect(await proxy!.reload()).toMatchObject({ ok: true, applied: ['log.level'] });
    expect(await unaffected.command(saslContinue())).toMatchObject({ ok: 0, codeName: 'AuthenticationFailed' });

    // Opened (and a conversation started) while scram was enabled; nothing authenticated yet.
    const idle = await raw();
    const started = await raw();
    expect(await started.command(saslStart())).toMatchObject({ ok: 1, done: false });

    writeConfig(scramListener([]));
    expect(await proxy!.reload()).toMatchObject({
      ok: true,
      applied: expect.arrayContaining(['listeners[0].methods']),
    });
    // The method is gone for them too, and a conversation begun before the reload does not finish.
    expect(await idle.command(saslStart())).toMatchObject({ ok: 0, codeName: 'MechanismUnavailable' });
    expect(await started.command(saslContinue())).toMatchObject({
      ok: 0,
      errmsg: 'No SASL session state found',
    });
  });

  it('moves the audit stream to a file, and rejects a file that cannot be opened', async () => {
    const db = await seed();
    const strict = { namespaces: [{ match: `${db}.secrets`, access: 'denied' }] };
    await start(settings({ isolation: strict, reload: { watchConfigFile: false } }));
    const app = client().db(db);
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
    expect(logs.filter((line) => line['audit'] === true)).toHaveLength(1);

    const auditFile = join(dir, 'audit', 'events.jsonl');
    writeConfig(settings({ isolation: strict, audit: { destination: auditFile }, reload: { watchConfigFile: false } }));
    expect(await proxy!.reload()).toMatchObject({ ok: true, applied: ['audit.destination'] });
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
    expect(logs.filter((line) => line['audit'] === true)).toHaveLength(1);
    await until(() => readFileSync(auditFile, 'utf8').includes('"decision":"refused"'), {
      timeoutMS: 20_000,
      message: 'the audit line in the file',
    });

    // A directory where the file should be: rejected, the audit stream stays where it is.
    mkdirSync(join(dir, 'taken.jsonl'));
    writeConfig(
      settings({
        isolation: strict,
        audit: { destination: join(dir, 'taken.jsonl') },
        reload: { watchConfigFile: false },
      }),
    );
    const rejected = await proxy!.reload();
    expect(rejected.ok === false && rejected.error).toMatch(
      /^audit\.destination: .*taken\.jsonl cannot be opened for appending \(EISDIR\)$/,
    );
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
    await until(() => readFileSync(auditFile, 'utf8').trim().split('\n').length === 2, {
      timeoutMS: 20_000,
      message: 'a second audit line in the file',
    });
  });
});

describe('RunningProxy.reload', () => {
  it('reports settings that need a restart, keeps them, and applies the rest', async () => {
    const db = await seed();
    await start(settings({ reload: { watchConfigFile: false } }));
    const app = client().db(db);
    expect(await app.collection('items').countDocuments()).toBe(5);

    writeConfig(
      settings({
        reload: { watchConfigFile: false },
        upstream: { uri: 'mongodb://127.0.0.1:1/', connectTimeoutMS: 5000 },
        listeners: [{ name: 'app', listen: '127.0.0.1:1', methods: ['static'], staticTenant: 'globex' }],
        metrics: { listen: 'off' },
        isolation: { namespaces: [{ match: `${db}.secrets`, access: 'denied' }] },
      }),
    );
    const result = await proxy!.reload();
    expect(result).toEqual({
      ok: true,
      trigger: 'api',
      applied: ['isolation.namespaces[0]'],
      requiresRestart: ['listeners[0].listen', 'listeners[0].staticTenant', 'upstream.uri', 'metrics.listen'],
    });
    expect(
      logged(
        'configuration reloaded, but some changed settings require a restart; they keep their running values until then',
      ),
    ).toEqual([expect.objectContaining({ level: 'warn', requiresRestart: result.ok && result.requiresRestart })]);
    // Still the same upstream and the same tenant on the same listener; the new policy applies.
    expect(await app.collection('items').countDocuments()).toBe(5);
    await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
    expect(await metric('config_reloads_total', { result: 'success' })).toBe(1);
  });

  it('refuses and audits every command of a connection whose tenant the reloaded isolation settings cannot represent', async () => {
    const db = await seed();
    await start(settings({ reload: { watchConfigFile: false } }));
    const app = client().db(db);
    expect(await app.collection('items').countDocuments()).toBe(5);
    writeConfig(settings({ isolation: { tenantValueType: 'int64' }, reload: { watchConfigFile: false } }));
    expect(await proxy!.reload()).toMatchObject({ ok: true, applied: ['isolation.tenantValueType'] });
    await expect(app.collection('items').countDocuments()).rejects.toThrow();
    const refusals = logs.filter((line) => line['audit'] === true && line['decision'] === 'refused');
    expect(refusals).toEqual([
      expect.objectContaining({ rule: 'tenant.unrepresentable', tenant: TENANT, commandName: 'aggregate' }),
    ]);
    // Ownership of stored documents changed meaning: said loudly, naming the setting.
    expect(logs).toContainEqual(
      expect.objectContaining({ level: 'warn', component: 'reload', changed: ['isolation.tenantValueType'] }),
    );
  });

  it("keeps another tenant out of a tenant's database after a reload drops database-per-tenant: through the driver, then read directly", async () => {
    const db = uniqueDbName('rsv');
    const physical = `${TENANT}_${db}`;
    databases.push(physical);
    const listeners = [
      { name: 'app', listen: '127.0.0.1:0', methods: ['static'], staticTenant: TENANT },
      { name: 'other', listen: '127.0.0.1:0', methods: ['static'], staticTenant: 'globex' },
    ];
    const perTenant = settings({
      listeners,
      isolation: { namespaces: [{ match: `${db}.*`, model: 'database-per-tenant' }] },
      reload: { watchConfigFile: false },
    });
    await start(perTenant);
    await client()
      .db(db)
      .collection('notes')
      .insertOne({ _id: 'acme-note' as never, text: 'acme only' });
    expect(await direct.db(physical).collection('notes').countDocuments()).toBe(1);

    writeConfig(settings({ listeners, reload: { watchConfigFile: false } }));
    expect(await proxy!.reload()).toMatchObject({ ok: true });
    const { host, port } = proxy!.addresses['other']!;
    const globex = new MongoClient(`mongodb://${host}:${port}/?directConnection=true`, {
      serverSelectionTimeoutMS: 10_000,
      retryReads: false,
      retryWrites: false,
    });
    clients.push(globex);
    const acmeDatabase = globex.db(physical).collection('notes');
    await expect(acmeDatabase.find({}).toArray()).rejects.toThrow();
    await expect(acmeDatabase.insertOne({ _id: 'globex-note' as never, text: 'planted' })).rejects.toThrow();
    await expect(acmeDatabase.deleteMany({})).rejects.toThrow();
    // The database holds acme's note and nothing else.
    expect(await direct.db(physical).collection('notes').find({}).toArray()).toEqual([
      { _id: 'acme-note', text: 'acme only' },
    ]);
  });

  it('warns loudly and sets the audit-only gauge when a reload turns enforcement off, and clears the gauge when it is back', async () => {
    await start(settings({ reload: { watchConfigFile: false } }));
    expect(await metric('isolation_audit_only')).toBe(0);
    writeConfig(settings({ isolation: { mode: 'audit-only' }, reload: { watchConfigFile: false } }));
    expect(await proxy!.reload()).toMatchObject({ ok: true, applied: ['isolation.mode'] });
    expect(await metric('isolation_audit_only')).toBe(1);
    expect(
      logs.filter((line) => line['level'] === 'warn' && String(line['msg']).startsWith('ISOLATION IS NOT ENFORCED')),
    ).toHaveLength(1);
    writeConfig(settings({ reload: { watchConfigFile: false } }));
    expect(await proxy!.reload()).toMatchObject({ ok: true, applied: ['isolation.mode'] });
    expect(await metric('isolation_audit_only')).toBe(0);
  });

  it('refuses a reload once the shutdown (drain) has begun', async () => {
    await start(settings({ reload: { watchConfigFile: false } }));
    writeConfig(settings({ log: { level: 'debug' }, reload: { watchConfigFile: false } }));
    const closing = proxy!.close();
    const result = await proxy!.reload();
    await closing;
    expect(result).toMatchObject({ ok: false, error: 'the proxy is shutting down' });
    expect(logger.level).toBe('info');
  });

  it('swaps listener certificates for new handshakes, and rejects material that does not load', async () => {
    const pki: TestPki = await makeTestPki();
    try {
      const withTls = (certFile: string, keyFile: string): Record<string, unknown> =>
        settings({
          reload: { watchConfigFile: false },
          listeners: [
            {
              name: 'app',
              listen: '127.0.0.1:0',
              methods: ['static'],
              staticTenant: TENANT,
              tls: { certFile, keyFile },
            },
          ],
        });
      await start(withTls(pki.server.certFile, pki.server.keyFile));
      const serial = (): Promise<string> =>
        new Promise((resolve, reject) => {
          const socket = tls.connect(
            { host: proxy!.address.host, port: proxy!.address.port, rejectUnauthorized: false },
            () => {
              resolve(socket.getPeerCertificate().serialNumber);
              socket.destroy();
            },
          );
          socket.once('error', reject);
        });
      const { host, port } = proxy!.address;
      const open = new MongoClient(
        `mongodb://${host}:${port}/?directConnection=true&tls=true&tlsAllowInvalidCertificates=true`,
        {
          serverSelectionTimeoutMS: 10_000,
        },
      );
      clients.push(open);
      expect(await open.db('admin').command({ ping: 1 })).toMatchObject({ ok: 1 });
      expect((await serial()).toUpperCase()).toBe(pki.server.serialNumber.toUpperCase());

      const garbage = join(dir, 'garbage.pem');
      writeFileSync(garbage, 'not a certificate\n');
      writeConfig(withTls(garbage, pki.server.keyFile));
      const rejected = await proxy!.reload();
      expect(rejected.ok).toBe(false);
      expect(rejected.ok === false && rejected.error).toMatch(
        /^listeners\[0\]\.tls\.certFile: .*garbage\.pem holds no PEM certificate/,
      );
      expect((await serial()).toUpperCase()).toBe(pki.server.serialNumber.toUpperCase());

      const next = await pki.issueClient();
      writeConfig(withTls(next.certFile, next.keyFile));
      expect(await proxy!.reload()).toMatchObject({
        ok: true,
        applied: ['listeners[0].tls.certFile', 'listeners[0].tls.keyFile'],
      });
      expect((await serial()).toUpperCase()).toBe(next.serialNumber.toUpperCase());
      // The connection made before the swap is still served.
      expect(await open.db('admin').command({ ping: 1 })).toMatchObject({ ok: 1 });
      expect(await metric('config_reloads_total', { result: 'failure' })).toBe(1);
    } finally {
      await proxy?.close();
      await pki.remove();
    }
  });
});
