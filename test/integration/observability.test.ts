/**
 * Metrics and the audit stream seen from outside: the official driver runs commands through the
 * proxy, then the test scrapes /metrics over HTTP and reads the audit events the proxy wrote.
 * Outcomes (ok, rewritten, denied, upstream_error), per-tenant series, the upstream / proxy time
 * split, open cursors, TLS handshakes, authentication outcomes; audit events without secrets or
 * values, bounded in size.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MongoClient, MongoServerError } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCredentialsFile, hashPassword } from '../../src/identity/credentials.js';
import { createLogger } from '../../src/observability/logger.js';
import { makeTestPki, type TestPki } from '../helpers/certs.js';
import { fetchMetricsPath, sumSamples } from '../helpers/metrics.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { uniqueDbName } from '../helpers/upstream.js';
import { RawClient, opMsg } from '../helpers/raw-client.js';

const PASSWORD = 'correct horse battery staple';
const WRONG_PASSWORD = 'wrong-password-9f8e7d';
const MAX_EVENT_BYTES = 512;
const dir = mkdtempSync(join(tmpdir(), 'mtp-observability-'));
const credentialsFile = join(dir, 'credentials.yaml');
const dbName = uniqueDbName('observability');

let pki: TestPki;
let proxy: TestProxy;
const clients = new Set<MongoClient>();

function listenerUri(name: string, extra: Record<string, string> = {}, credentials = ''): string {
  const { host, port } = proxy.proxy.addresses[name]!;
  const params = new URLSearchParams({ directConnection: 'true', ...extra });
  return `mongodb://${credentials}${host}:${port}/?${params.toString()}`;
}

function client(uri: string): MongoClient {
  const created = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, maxPoolSize: 1 });
  clients.add(created);
  return created;
}

/** The `/metrics` page, as a scraper gets it. */
async function scrape(): Promise<string> {
  const response = await fetchMetricsPath(proxy.proxy, '/metrics');
  expect(response.status).toBe(200);
  return response.text();
}

/** Sum of a family's samples whose labels include every `key="value"` in `labels`. */
async function failure(promise: Promise<unknown>): Promise<MongoServerError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(MongoServerError);
  return error as MongoServerError;
}

async function eventually(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

const audits = (filter: Record<string, unknown>): Record<string, unknown>[] =>
  proxy.auditEvents().filter((event) => Object.entries(filter).every(([key, value]) => event[key] === value));

beforeAll(async () => {
  pki = await makeTestPki();
  const entry = hashPassword({
    user: 'ada',
    db: 'admin',
    tenant: 'globex',
    password: PASSWORD,
    mechanisms: ['SCRAM-SHA-256'],
    iterations: 4096,
  });
  writeFileSync(credentialsFile, formatCredentialsFile([entry]), { mode: 0o600 });
  proxy = await startTestProxy({
    listeners: [
      { name: 'static', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['static'], staticTenant: 'acme' },
      { name: 'scram', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: ['scram'], staticTenant: null },
      {
        name: 'tls',
        listen: { host: '127.0.0.1', port: 0 },
        tls: pki.listenerTls('optional'),
        methods: ['static'],
        staticTenant: 'initech',
      },
    ],
    identity: { scram: { credentialsFile, mechanisms: ['SCRAM-SHA-256'] }, failureDelay: { baseMS: 0, maxMS: 0 } },
    audit: { maxEventBytes: MAX_EVENT_BYTES, rewrites: true },
  });
}, 120_000);

afterAll(async () => {
  await Promise.allSettled([...clients].map((c) => c.close()));
  await proxy?.stop();
  await pki?.remove();
  rmSync(dir, { recursive: true, force: true });
});

describe('operation metrics through the driver', () => {
  it('counts rewritten, ok, denied and upstream_error commands by command, database and outcome, and per tenant', async () => {
    const db = client(listenerUri('static')).db(dbName);
    await db.collection('items').insertMany([{ n: 1 }, { n: 2 }]);
    expect(await db.collection('items').find({}).toArray()).toHaveLength(2);
    await db.command({ ping: 1 });
    await failure(db.collection('items').find({ $where: 'secret-marker-1234 == 1' }).toArray());
    // The upstream itself refuses this ($mod needs two numbers): an error reply from MongoDB.
    await failure(
      db
        .collection('items')
        .find({ n: { $mod: [0, 1] } })
        .toArray(),
    );

    const text = await scrape();
    const ops = (labels: Record<string, string>): number => sumSamples(text, 'operations_total', labels);
    expect(ops({ command: 'insert', database: dbName, outcome: 'rewritten' })).toBe(1);
    expect(ops({ command: 'find', database: dbName, outcome: 'rewritten' })).toBe(1);
    expect(ops({ command: 'ping', database: dbName, outcome: 'ok' })).toBe(1);
    expect(ops({ command: 'find', database: dbName, outcome: 'denied' })).toBe(1);
    expect(ops({ command: 'find', database: dbName, outcome: 'upstream_error' })).toBe(1);
    expect(sumSamples(text, 'operation_duration_seconds_count', { command: 'find', database: dbName })).toBe(3);
    // Time split: every forwarded find waited on the upstream; the refused one never reached it.
    expect(sumSamples(text, 'upstream_wait_seconds_count', { command: 'find' })).toBeGreaterThanOrEqual(2);
    expect(sumSamples(text, 'proxy_overhead_seconds_count', { command: 'find' })).toBe(
      sumSamples(text, 'upstream_wait_seconds_count', { command: 'find' }),
    );
    expect(
      sumSamples(text, 'policy_decisions_total', { decision: 'refused', rule: 'operator.where' }),
    ).toBeGreaterThanOrEqual(1);
    expect(sumSamples(text, 'policy_decisions_total', { decision: 'rewritten' })).toBeGreaterThanOrEqual(2);
    // Per tenant: operations by outcome (denials and errors included), connections, nothing in flight.
    const tenant = (outcome: string): number =>
      sumSamples(text, 'tenant_operations_total', { tenant: 'acme', outcome });
    expect(tenant('rewritten')).toBeGreaterThanOrEqual(2);
    expect(tenant('denied')).toBe(1);
    expect(tenant('upstream_error')).toBe(1);
    expect(sumSamples(text, 'tenant_connections', { tenant: 'acme' })).toBeGreaterThanOrEqual(1);
    expect(sumSamples(text, 'tenant_operations_in_flight', { tenant: 'acme' })).toBe(0);
    expect(sumSamples(text, 'bytes_received_total', { direction: 'client' })).toBeGreaterThan(0);
    expect(sumSamples(text, 'bytes_sent_total', { direction: 'upstream' })).toBeGreaterThan(0);
    expect(text).toMatch(
      /^mongo_tenant_proxy_build_info\{version="[^"]+",commit="[^"]+",node_version="\d+\.\d+\.\d+"\} 1$/m,
    );
  });

  it('shows a cursor as open until it is exhausted or killed', async () => {
    const collection = client(listenerUri('static')).db(dbName).collection('cursor_items');
    await collection.insertMany(Array.from({ length: 10 }, (_, n) => ({ n })));
    const before = sumSamples(await scrape(), 'open_cursors');
    const cursor = collection.find({}, { batchSize: 2 });
    await cursor.next();
    expect(sumSamples(await scrape(), 'open_cursors')).toBe(before + 1);
    await cursor.close(); // killCursors
    expect(sumSamples(await scrape(), 'open_cursors')).toBe(before);
    const drained = collection.find({}, { batchSize: 3 });
    expect(await drained.toArray()).toHaveLength(10);
    expect(sumSamples(await scrape(), 'open_cursors')).toBe(before);
  });

  it('counts TLS handshakes by listener and outcome', async () => {
    const before = await scrape();
    const ok = (text: string): number =>
      sumSamples(text, 'tls_handshakes_total', { listener: 'tls', outcome: 'success' });
    const failed = (text: string): number =>
      sumSamples(text, 'tls_handshakes_total', { listener: 'tls', outcome: 'failure' });
    await client(listenerUri('tls', { tls: 'true', tlsCAFile: pki.caFile }))
      .db(dbName)
      .command({ ping: 1 });
    expect(ok(await scrape())).toBeGreaterThan(ok(before));
    // Not TLS at all: the handshake fails on the first bytes.
    const { host, port } = proxy.proxy.addresses['tls']!;
    const socket = tcpConnect({ host, port });
    socket.on('error', () => undefined);
    socket.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    await eventually(async () => failed(await scrape()) > failed(before), 'a failed TLS handshake to be counted');
    socket.destroy();
    expect(
      sumSamples(await scrape(), 'operations_total', { command: 'ping', database: dbName }),
    ).toBeGreaterThanOrEqual(2);
  });
});

describe('the audit stream', () => {
  it('records authentication successes and failures with mechanism, user, tenant, address and listener; never the password', async () => {
    const good = client(
      listenerUri(
        'scram',
        { authSource: 'admin', authMechanism: 'SCRAM-SHA-256' },
        `ada:${encodeURIComponent(PASSWORD)}@`,
      ),
    );
    await good.db(dbName).command({ ping: 1 });
    const bad = client(
      listenerUri('scram', { authSource: 'admin', authMechanism: 'SCRAM-SHA-256' }, `ada:${WRONG_PASSWORD}@`),
    );
    expect((await failure(bad.db(dbName).command({ ping: 1 }))).code).toBe(18);

    const success = audits({ event: 'authentication', outcome: 'success', listener: 'scram' });
    expect(success).toContainEqual(
      expect.objectContaining({
        audit: true,
        method: 'scram',
        mechanism: 'SCRAM-SHA-256',
        user: 'ada',
        tenant: 'globex',
        remoteAddress: '127.0.0.1',
        connectionId: expect.any(Number),
      }),
    );
    const failed = audits({ event: 'authentication', outcome: 'failure', listener: 'scram' });
    expect(failed).toContainEqual(
      expect.objectContaining({
        method: 'scram',
        mechanism: 'SCRAM-SHA-256',
        user: 'ada',
        reason: 'AuthenticationFailed',
        remoteAddress: '127.0.0.1',
      }),
    );
    const text = proxy.auditText();
    expect(text).not.toContain(PASSWORD);
    expect(text).not.toContain(WRONG_PASSWORD);
    expect(text).not.toMatch(/payload|r=|p=|v=/);

    const metrics = await scrape();
    const auth = (outcome: string): number =>
      sumSamples(metrics, 'authentications_total', {
        listener: 'scram',
        method: 'scram',
        mechanism: 'SCRAM-SHA-256',
        outcome,
      });
    expect(auth('success')).toBeGreaterThanOrEqual(1);
    expect(auth('failure')).toBeGreaterThanOrEqual(1);
    // The refused authentication step is a denied command, audited once (as an authentication).
    expect(
      sumSamples(metrics, 'operations_total', { command: 'saslContinue', outcome: 'denied' }),
    ).toBeGreaterThanOrEqual(1);
    expect(audits({ event: 'decision', commandName: 'saslContinue' })).toEqual([]);
  });

  it('records every denial: an isolation rule and a command before authentication; names only, never values', async () => {
    const db = client(listenerUri('static')).db(dbName);
    await failure(db.collection('people').find({ $where: 'this.ssn == "secret-ssn-5555"' }).toArray());
    expect(audits({ event: 'decision', decision: 'refused', rule: 'operator.where', tenant: 'acme' })).toContainEqual(
      expect.objectContaining({
        commandName: 'find',
        namespace: `${dbName}.people`,
        listener: 'static',
        remoteAddress: '127.0.0.1',
      }),
    );
    // Rewrites are decisions too (audited because audit.rewrites is on here).
    await db.collection('people').insertOne({ name: 'secret-name-6666' });
    expect(
      audits({ event: 'decision', decision: 'rewritten', tenant: 'acme', commandName: 'insert' }).length,
    ).toBeGreaterThanOrEqual(1);

    const anonymous = client(listenerUri('scram')).db(dbName);
    expect((await failure(anonymous.collection('people').find({ name: 'secret-name-7777' }).toArray())).code).toBe(13);
    const unauthenticated = audits({
      event: 'decision',
      decision: 'refused',
      rule: 'auth.required',
      listener: 'scram',
    });
    expect(unauthenticated).toContainEqual(
      expect.objectContaining({ commandName: 'find', namespace: `${dbName}.people` }),
    );
    expect(unauthenticated[0]).not.toHaveProperty('tenant');

    const text = proxy.auditText();
    expect(text).not.toMatch(/secret-ssn-5555|secret-name-6666|secret-name-7777/);
    for (const event of proxy.auditEvents()) {
      expect(Object.keys(event)).not.toEqual(expect.arrayContaining(['filter']));
      expect(event).not.toHaveProperty('command');
    }
  });

  it('truncates oversize events to audit.maxEventBytes', async () => {
    const longName = `c${'x'.repeat(3000)}`;
    const db = client(listenerUri('static')).db(dbName);
    await failure(db.collection(longName).find({ $where: 'true' }).toArray());
    const longUser = `u${'y'.repeat(5000)}`;
    const bad = client(
      listenerUri('scram', { authSource: 'admin', authMechanism: 'SCRAM-SHA-256' }, `${longUser}:${WRONG_PASSWORD}@`),
    );
    await failure(bad.db(dbName).command({ ping: 1 }));

    const lines = proxy
      .auditText()
      .split('\n')
      .filter((line) => line !== '');
    const oversize = lines.filter((line) => line.includes('"truncated":true'));
    expect(oversize.length).toBeGreaterThanOrEqual(2);
    for (const line of lines) expect(Buffer.byteLength(line)).toBeLessThanOrEqual(MAX_EVENT_BYTES);
    const events = oversize.map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(events).toContainEqual(
      expect.objectContaining({
        event: 'decision',
        rule: expect.any(String),
        namespace: expect.stringMatching(/^.+…$/),
      }),
    );
    expect(events).toContainEqual(
      expect.objectContaining({ event: 'authentication', outcome: 'failure', user: expect.stringMatching(/^uy+…$/) }),
    );
  });
});

describe('the audit stream and requests without a reply (moreToCome)', () => {
  it('records a moreToCome request the proxy refuses, which closes the connection, as one denial', async () => {
    const { host, port } = proxy.proxy.addresses['static']!;
    const MORE_TO_COME = 2;
    // Not a fire-and-forget command: refused (catalogue 50).
    const reader = await RawClient.connect(host, port);
    reader.write(opMsg({ find: 'audited_unacked', filter: {}, $db: dbName }, { flags: MORE_TO_COME }).bytes);
    expect(await reader.waitClosed(10_000)).toBe(true);
    // An unacknowledged write the isolation policy refuses: audited once, though the refusal also closes the connection.
    const writer = await RawClient.connect(host, port);
    writer.write(opMsg({ insert: 'system.js', documents: [{ _id: 1 }], $db: dbName }, { flags: MORE_TO_COME }).bytes);
    expect(await writer.waitClosed(10_000)).toBe(true);
    expect(
      audits({
        event: 'decision',
        decision: 'refused',
        rule: 'moreToCome.command',
        commandName: 'find',
        tenant: 'acme',
      }),
    ).toHaveLength(1);
    expect(
      audits({ event: 'decision', decision: 'refused', commandName: 'insert', namespace: `${dbName}.system.js` }),
    ).toHaveLength(1);
  });
});

describe('the audit stream with per-tenant limits', () => {
  it('records a command refused by a tenant limit as a denial with rule limit.rate', async () => {
    const limited = await startTestProxy({ limits: { operationsPerSecondPerTenant: 1, operationsBurstPerTenant: 1 } });
    try {
      const collection = limited.client({ retryReads: false }).db(dbName).collection('limited');
      // One token a second: back-to-back finds are refused until it refills.
      let refused = false;
      for (let attempt = 0; attempt < 20 && !refused; attempt++) {
        refused = await collection
          .find({})
          .toArray()
          .then(
            () => false,
            () => true,
          );
      }
      expect(refused).toBe(true);
      expect(limited.auditEvents()).toContainEqual(
        expect.objectContaining({
          event: 'decision',
          decision: 'refused',
          rule: 'limit.rate',
          tenant: 'test-tenant',
          commandName: 'find',
        }),
      );
      const text = await (await fetchMetricsPath(limited.proxy, '/metrics')).text();
      expect(
        sumSamples(text, 'tenant_operations_total', { tenant: 'test-tenant', outcome: 'denied' }),
      ).toBeGreaterThanOrEqual(1);
      expect(sumSamples(text, 'tenant_limit_rejections_total', { reason: 'rate' })).toBeGreaterThanOrEqual(1);
    } finally {
      await limited.stop();
    }
  });
});

describe('request-scoped logs', () => {
  it('logs each command at debug with connection, tenant, command, namespace and durations, never values', async () => {
    const chunks: string[] = [];
    const logger = createLogger({ level: 'info', destination: { write: (line: string) => void chunks.push(line) } });
    const debugProxy = await startTestProxy({}, { logger });
    try {
      const db = debugProxy.client().db(dbName);
      await db.command({ ping: 1 }); // at info: no per-command line
      logger.level = 'debug'; // what a reload of log.level does: existing connections follow
      await db.collection('logged').insertOne({ card: 'secret-card-4242' });
      expect(await db.collection('logged').find({ card: 'secret-card-4242' }).toArray()).toHaveLength(1);
      await failure(db.collection('logged').find({ $where: 'secret-where-4343' }).toArray());
      const lines = chunks
        .join('')
        .split('\n')
        .filter((line) => line !== '');
      const handled = lines
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .filter((line) => line['msg'] === 'command handled');
      expect(handled.map((line) => line['commandName'])).toEqual(expect.arrayContaining(['insert', 'find']));
      expect(handled.find((line) => line['commandName'] === 'ping')).toBeUndefined();
      const find = handled.find((line) => line['commandName'] === 'find' && line['outcome'] === 'rewritten')!;
      expect(find).toMatchObject({
        level: 'debug',
        connectionId: expect.any(Number),
        remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
        tenant: 'test-tenant',
        namespace: `${dbName}.logged`,
        durationMs: expect.any(Number),
        upstreamMs: expect.any(Number),
      });
      expect(handled).toContainEqual(
        expect.objectContaining({ commandName: 'find', outcome: 'denied', namespace: `${dbName}.logged` }),
      );
      expect(lines.join('\n')).not.toMatch(/secret-card-4242|secret-where-4343/);
    } finally {
      await debugProxy.stop();
    }
  });
});
