/**
 * The fault suite's oracle (test/helpers/mixed-load.ts checkLedger) must catch every broken
 * invariant, or the fault tests prove nothing: each case below writes a database state straight
 * to the upstream, sets the ledger a load would have kept, and expects the matching violation.
 */
import { MongoNetworkError, MongoServerError, type Db, type MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MixedLoad, NO_WRITES_PERFORMED, checkLedger, describeError } from '../helpers/mixed-load.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

let client: MongoClient;
let db: Db;
let collections = 0;

beforeAll(() => {
  client = directClient();
  db = client.db(uniqueDbName('faults_ledger'));
});

afterAll(async () => {
  await db?.dropDatabase().catch(() => undefined);
  await client?.close();
});

/** A load that never ran, on a collection of its own holding `documents`. */
async function ledgerOver(documents: Array<{ _id: string; kind: string; n?: number }>): Promise<MixedLoad> {
  const load = new MixedLoad({ clients: [client], database: db.databaseName, collection: `case${collections++}` });
  if (documents.length > 0)
    await db.collection<{ _id: string; kind: string; n?: number }>(load.collection).insertMany(documents);
  return load;
}

const serverError = (code: number, codeName: string, labels: string[] = []): MongoServerError =>
  new MongoServerError({ ok: 0, code, codeName, errmsg: `${codeName} (test)`, errorLabels: labels });

describe('checkLedger', () => {
  it('accepts a database that agrees with the ledger, unknown outcomes included', async () => {
    const load = await ledgerOver([
      { _id: 'a', kind: 'insert' },
      { _id: 'b', kind: 'insert' }, // failed with an unknown outcome, but applied
      { _id: 'c1', kind: 'counter', n: 3 },
    ]);
    load.ledger.insertsAcked.add('a');
    load.ledger.insertsFailed.set('b', describeError('insert', serverError(9001, 'SocketException')));
    load.ledger.insertsFailed.set(
      'c',
      describeError('insert', serverError(6, 'HostUnreachable', [NO_WRITES_PERFORMED])),
    );
    load.counterIds.add('c1');
    load.ledger.incAcked.set('c1', 2);
    load.ledger.incUnknown.set('c1', 1);
    load.ledger.errors.push(
      describeError('find', serverError(6, 'HostUnreachable')),
      describeError('find', new MongoNetworkError('reset')),
    );
    expect((await checkLedger(db, load)).violations).toEqual([]);
  });

  it('reports a lost acknowledged insert, a phantom one, and one applied despite NoWritesPerformed', async () => {
    const load = await ledgerOver([
      { _id: 'phantom', kind: 'insert' },
      { _id: 'not-performed', kind: 'insert' },
    ]);
    load.ledger.insertsAcked.add('lost');
    load.ledger.insertsFailed.set(
      'not-performed',
      describeError('insert', serverError(6, 'HostUnreachable', [NO_WRITES_PERFORMED])),
    );
    const { violations } = await checkLedger(db, load);
    expect(violations).toEqual([
      expect.stringMatching(/^acknowledged inserts missing from the database: lost/),
      expect.stringMatching(/^documents no insert of this load produced: phantom/),
      expect.stringMatching(/^inserts answered NoWritesPerformed but applied: not-performed/),
    ]);
  });

  it('reports counters below their acknowledged increments or above everything sent', async () => {
    const load = await ledgerOver([
      { _id: 'low', kind: 'counter', n: 1 },
      { _id: 'high', kind: 'counter', n: 4 },
    ]);
    for (const id of ['low', 'high', 'gone']) load.counterIds.add(id);
    load.ledger.incAcked.set('low', 2);
    load.ledger.incAcked.set('high', 2);
    load.ledger.incUnknown.set('high', 1);
    load.ledger.incAcked.set('gone', 1);
    const { violations } = await checkLedger(db, load);
    expect(violations).toEqual([
      expect.stringMatching(/^counter low = 1 lost acknowledged increments/),
      expect.stringMatching(/^counter high = 4 was incremented more often than sent/),
      expect.stringMatching(/^counter gone is missing/),
    ]);
  });

  it('reports a read that failed with an error the driver does not retry, and a write that failed strangely', async () => {
    const load = await ledgerOver([]);
    load.ledger.errors.push(
      describeError('find', serverError(2, 'BadValue')),
      describeError('inc', new TypeError('not a MongoDB error')),
      describeError('insert', serverError(96, 'OperationFailed')), // a server answer: allowed for writes
    );
    const { violations } = await checkLedger(db, load);
    expect(violations).toEqual([
      expect.stringMatching(/^a read failed with an error the driver does not retry: MongoServerError 2/),
      expect.stringMatching(/^a write failed with an unexpected error: TypeError/),
    ]);
  });
});
