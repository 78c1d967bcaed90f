/**
 * Hot reload through the real command line (issue 6): `mongo-tenant-proxy serve --config <file>`
 * in a child process, its file changed and SIGHUP sent. The reload re-applies the flags it was
 * started with, tightens the policy for the open driver connection, keeps an open cursor going,
 * and an invalid file is rejected (logged, counted on /metrics) while the proxy keeps serving.
 * File-watch reloads and the other settings: hot-reload.test.ts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { stringify } from 'yaml';
import { buildCli, spawnCli, type BuiltCli, type CliProcess } from '../helpers/cli-process.js';
import { directClient, uniqueDbName, upstreamUri } from '../helpers/upstream.js';

const TENANT = 'acme';
const RELOADED = 'configuration reloaded';
const FAILED = 'configuration reload failed; the previous configuration keeps running';
let cli: BuiltCli;
let dir = '';
const direct = directClient();
const db = uniqueDbName('cli_reload');

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mtp-cli-reload-'));
  await direct.connect();
  await direct
    .db(db)
    .collection('items')
    .insertMany(Array.from({ length: 5 }, (_, n) => ({ _id: n as never, tenantId: TENANT, n })));
  await direct
    .db(db)
    .collection('secrets')
    .insertOne({ _id: 's' as never, tenantId: TENANT, value: 'hidden' });
  cli = await buildCli();
});

afterAll(async () => {
  await direct.db(db).dropDatabase();
  await direct.close();
  await cli?.remove();
  rmSync(dir, { recursive: true, force: true });
});

function settings(overrides: Record<string, unknown> = {}): string {
  return stringify({
    listeners: [{ name: 'app', listen: '127.0.0.1:0', methods: ['static'], staticTenant: TENANT }],
    upstream: { uri: upstreamUri() },
    metrics: { listen: '127.0.0.1:0' },
    // Only SIGHUP reloads here.
    reload: { watchConfigFile: false },
    ...overrides,
  });
}

async function metric(address: string, sample: string): Promise<number> {
  const text = await (await fetch(`http://${address}/metrics`)).text();
  const line = text.split('\n').find((candidate) => candidate.startsWith(`mongo_tenant_proxy_${sample} `));
  return line === undefined ? Number.NaN : Number(line.split(' ').pop());
}

describe('mongo-tenant-proxy serve', () => {
  it('reloads its configuration file on SIGHUP without dropping connections, and rejects an invalid one', async () => {
    const file = join(dir, 'config.yaml');
    writeFileSync(file, settings());
    let proxy: CliProcess | undefined = spawnCli(cli.bin, ['serve', '--config', file, '--log-level', 'info']);
    let client: MongoClient | undefined;
    try {
      const listening = await proxy.waitForLine(
        (line) => line['msg'] === 'listening' && typeof line['address'] === 'string',
      );
      const metricsAddress = String(listening['metricsAddress']);
      client = new MongoClient(`mongodb://${String(listening['address'])}/?directConnection=true`, {
        serverSelectionTimeoutMS: 10_000,
      });
      const app = client.db(db);
      const cursor = app.collection('items').find({}, { batchSize: 2, sort: { _id: 1 } });
      expect((await cursor.next())?.n).toBe(0);
      expect((await app.collection('secrets').findOne())?.value).toBe('hidden');

      // The file also asks for log level error: the --log-level flag still wins, as at start.
      writeFileSync(
        file,
        settings({
          isolation: { namespaces: [{ match: `${db}.secrets`, access: 'denied' }] },
          log: { level: 'error' },
        }),
      );
      proxy.child.kill('SIGHUP');
      const reloaded = await proxy.waitForLine((line) => line['msg'] === RELOADED);
      expect(reloaded).toMatchObject({ trigger: 'signal', applied: ['isolation.namespaces[0]'] });
      expect(proxy.lines).toContainEqual(
        expect.objectContaining({ msg: 'reloading the configuration', signal: 'SIGHUP' }),
      );

      await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
      expect((await cursor.next())?.n).toBe(1);

      writeFileSync(file, settings({ limits: { maxConnections: -1 } }));
      proxy.child.kill('SIGHUP');
      const failed = await proxy.waitForLine((line) => line['msg'] === FAILED);
      expect(failed).toMatchObject({ level: 'error', trigger: 'signal', path: 'limits.maxConnections' });
      expect(await metric(metricsAddress, 'config_reloads_total{result="failure"}')).toBe(1);
      expect(await metric(metricsAddress, 'config_reloads_total{result="success"}')).toBe(1);
      expect(await metric(metricsAddress, 'config_last_reload_successful')).toBe(0);

      // Still serving, with the last good configuration.
      await expect(app.collection('secrets').findOne()).rejects.toThrow(/denied/);
      expect((await cursor.toArray()).map((doc) => doc.n)).toEqual([2, 3, 4]);
      await client.close();
      client = undefined;

      proxy.child.kill('SIGTERM');
      expect(await proxy.exited).toBe(0);
      proxy = undefined;
    } finally {
      await client?.close();
      proxy?.child.kill('SIGKILL');
    }
  });
});
