/**
 * Issue 13: statistics computed from the tenant's own documents (catalogue 25), the cost bound,
 * and operator-declared shared indexes created by the `ensure-indexes` subcommand.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calculateObjectSize } from 'bson';
import { MongoServerError, type MongoClient } from 'mongodb';
import { runCli, type CliIo } from '../../src/cli/index.js';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName, upstreamUri } from '../helpers/upstream.js';

const CATALOGUE = uniqueDbName('mtpcat');
const dbName = uniqueDbName('ten13s');

let tenants: TenantProxy;
let direct: MongoClient;
let acme: MongoClient;
const tmp = mkdtempSync(join(tmpdir(), 'mtp-ensure-'));

beforeAll(async () => {
  direct = await directClient();
  tenants = await startTenantProxy(['acme', 'globex'], {
    isolation: { tenancy: { catalogueDatabase: CATALOGUE, statsMaxDocuments: 10 } },
  });
  acme = tenants.clientFor('acme');
});

afterAll(async () => {
  await tenants?.stop();
  for (const db of [dbName, CATALOGUE]) await direct?.db(db).dropDatabase();
  await direct?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('issue 13: statistics of the tenant', () => {
  it("collStats / dbStats / validate count only acme's documents; the upstream holds more", async () => {
    const docs = [{ n: 1 }, { n: 2, s: 'x' }];
    await acme
      .db(dbName)
      .collection('stats')
      .insertMany(docs.map((doc) => ({ ...doc })));
    await direct
      .db(dbName)
      .collection('stats')
      .insertMany(Array.from({ length: 5 }, (_, n) => ({ tenantId: 'globex', n, secret: 'SECRET-globex' })));
    const stored = await direct.db(dbName).collection('stats').find({ tenantId: 'acme' }).toArray();
    const size = stored.reduce((sum, doc) => sum + calculateObjectSize(doc), 0);
    const coll = await acme.db(dbName).command({ collStats: 'stats' });
    expect(coll).toMatchObject({ ok: 1, count: 2, size, nindexes: 1, ns: `${dbName}.stats` });
    const db = await acme.db(dbName).command({ dbStats: 1 });
    expect(db).toMatchObject({ ok: 1, collections: 1, objects: 2, dataSize: size });
    const validated = await acme.db(dbName).command({ validate: 'stats' });
    expect(validated).toMatchObject({ ok: 1, valid: true, nrecords: 2 });
    expect(JSON.stringify([coll, db, validated])).not.toContain('SECRET');
    // count / estimatedDocumentCount were already the tenant's.
    expect(await acme.db(dbName).collection('stats').estimatedDocumentCount()).toBe(2);
  });

  it('the cost bound: more than statsMaxDocuments of the tenant is refused with the rule, not approximated', async () => {
    await acme
      .db(dbName)
      .collection('big')
      .insertMany(Array.from({ length: 11 }, (_, n) => ({ n })));
    const error = await acme
      .db(dbName)
      .command({ collStats: 'big' })
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(MongoServerError);
    expect((error as MongoServerError).message).toMatch(/tenancy\.stats-cost/);
  });
});

describe('issue 13: ensure-indexes', () => {
  it('creates the declared shared indexes, tenant-prefixed, and is idempotent', async () => {
    const file = join(tmp, 'config.yaml');
    writeFileSync(
      file,
      [
        'upstream:',
        `  uri: "${upstreamUri()}"`,
        'isolation:',
        '  tenancy:',
        '    sharedIndexes:',
        `      - namespace: ${dbName}.people`,
        '        name: email_1',
        '        key: [email, -created]',
        '        unique: true',
        '',
      ].join('\n'),
    );
    for (let round = 0; round < 2; round += 1) {
      let stdout = '';
      const exits: number[] = [];
      const io: CliIo = {
        stdout: (text) => void (stdout += text),
        stderr: (text) => void (stdout += text),
        exit: (code) => void exits.push(code),
        env: {},
      };
      await runCli(['ensure-indexes', '--config', file], io);
      expect(exits).toEqual([0]);
      expect(stdout).toBe(`ok ${dbName}.people email_1\n`);
    }
    const indexes = await direct.db(dbName).collection('people').listIndexes().toArray();
    const declared = indexes.find((index) => index.name === 'email_1');
    expect(declared?.key).toEqual({ tenantId: 1, email: 1, created: -1 });
    expect(declared?.unique).toBe(true);
  });
});
