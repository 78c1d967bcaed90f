/**
 * Issue 13: Mongoose autoIndex and syncIndexes, run twice through the proxy for two tenants, in a
 * shared collection: each tenant ends with the same index listing it would see direct (its own
 * names and keys), and nothing of the other tenant's. The unique index is declared by the
 * operator (FerretDB has no partial indexes, so a per-tenant unique index is not possible there).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mongoose from 'mongoose';
import type { MongoClient } from 'mongodb';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

const CATALOGUE = uniqueDbName('mtpcat');
const dbName = uniqueDbName('ten13m');

let tenants: TenantProxy;
let direct: MongoClient;

const userSchema = (): mongoose.Schema => {
  const schema = new mongoose.Schema({
    email: { type: String, unique: true },
    status: String,
    createdAt: Date,
    nickname: { type: String, index: true },
  });
  schema.index({ status: 1, createdAt: -1 });
  return schema;
};

beforeAll(async () => {
  direct = await directClient();
  tenants = await startTenantProxy(['acme', 'globex'], {
    isolation: {
      tenancy: {
        catalogueDatabase: CATALOGUE,
        sharedIndexes: [{ namespace: `${dbName}.users`, name: 'email_1', key: ['email'], unique: true }],
      },
    },
  });
});

afterAll(async () => {
  await tenants?.stop();
  for (const db of [dbName, CATALOGUE]) await direct?.db(db).dropDatabase();
  await direct?.close();
});

async function runApp(tenant: string, round: number): Promise<Array<[string, unknown]>> {
  const connection = mongoose.createConnection(tenants.uriFor(tenant), { dbName, autoIndex: true });
  try {
    const User = connection.model('User', userSchema());
    await User.init(); // autoIndex: createIndexes for every schema index
    await User.create({ email: `${tenant}-${round}@x`, status: 'open', createdAt: new Date(), nickname: tenant });
    await User.syncIndexes();
    await User.syncIndexes();
    const listed = await User.listIndexes();
    return listed.map((index) => [index.name as string, index.key]);
  } finally {
    await connection.close();
  }
}

describe('issue 13: Mongoose through the proxy', () => {
  it('autoIndex and syncIndexes twice for two tenants: each lists its schema indexes; nothing is dropped from the other', async () => {
    const expected = [
      ['_id_', { _id: 1 }],
      ['email_1', { email: 1 }],
      ['nickname_1', { nickname: 1 }],
      ['status_1_createdAt_-1', { status: 1, createdAt: -1 }],
    ];
    for (let round = 0; round < 2; round += 1) {
      expect(await runApp('acme', round)).toEqual(expected);
      expect(await runApp('globex', round)).toEqual(expected);
    }
    // Upstream: one declared unique index and one shared physical index per distinct non-unique key.
    const physical = (await direct.db(dbName).collection('users').listIndexes().toArray()).map((index) => index.key);
    expect(physical).toEqual(
      expect.arrayContaining([
        { _id: 1 },
        { tenantId: 1, email: 1 },
        { tenantId: 1, nickname: 1 },
        { tenantId: 1, status: 1, createdAt: -1 },
      ]),
    );
    expect(physical).toHaveLength(4);
    // Unique within each tenant: both tenants hold "dup@x" once; a second one for acme fails.
    const users = direct.db(dbName).collection('users');
    await users.insertOne({ tenantId: 'acme', email: 'dup@x' });
    await users.insertOne({ tenantId: 'globex', email: 'dup@x' });
    await expect(users.insertOne({ tenantId: 'acme', email: 'dup@x' })).rejects.toThrow(/duplicate|E11000/i);
  });
});
