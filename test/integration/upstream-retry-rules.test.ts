/**
 * Which failures the proxy retries and what the client gets otherwise (issue 5), made exact with
 * the fake upstream, which can reset a connection right after a request arrived: that is the
 * worst case, where the server may have applied the command. Reads and retryable writes (a
 * txnNumber, on an upstream that de-duplicates them: here a mongos) are sent again; a plain
 * write, a getMore and anything in a transaction are sent once and answered with the labels
 * drivers act on.
 */
import { Long, UUID } from 'bson';
import { describe, expect } from 'vitest';
import { FAKE_HELLO, type FakeUpstream } from '../helpers/fake-upstream.js';
import { it } from '../helpers/fixtures.js';
import { opMsg, replyDocument, type RawClient } from '../helpers/raw-client.js';

let fake: FakeUpstream;
let client: RawClient;
/** Connections to reset, per command name, before answering normally. */
let failures: Record<string, number> = {};

// Stopped after each test by the fixtures.
it.beforeEach(async ({ fakeUpstream, startProxy }) => {
  failures = {};
  fake = await fakeUpstream(
    (message) => {
      const name = Object.keys(message.body)[0] as string;
      if ((failures[name] ?? 0) > 0) {
        failures[name]!--;
        return 'close';
      }
      if (name === 'find') return [{ cursor: { id: Long.fromNumber(7), ns: 'app.c', firstBatch: [{ v: 1 }] }, ok: 1 }];
      if (name === 'getMore' && (message.flags & EXHAUST_ALLOWED) !== 0) {
        // Two batches of an exhaust stream, then the connection breaks.
        const batch = (n: number) => ({ cursor: { id: Long.fromNumber(7), ns: 'app.c', nextBatch: [{ n }] }, ok: 1 });
        return { delayMs: 0, replies: [batch(1), batch(2)], thenClose: true };
      }
      if (name === 'getMore') return [{ cursor: { id: Long.fromNumber(0), ns: 'app.c', nextBatch: [] }, ok: 1 }];
      return [{ ok: 1, n: 1 }];
    },
    { hello: () => ({ ...FAKE_HELLO, msg: 'isdbgrid' }) },
  );
  const proxy = await startProxy({
    upstream: {
      uri: fake.uri,
      retry: { maxAttempts: 3, initialBackoffMS: 1, maxBackoffMS: 5 },
      circuitBreaker: { failureThreshold: 4, openMS: 60_000, halfOpenProbes: 1 },
    },
  });
  client = await proxy.raw();
});

async function command(doc: Record<string, unknown>): Promise<Record<string, unknown>> {
  client.write(opMsg(doc).bytes);
  return replyDocument((await client.readFrame(20_000))!);
}

const EXHAUST_ALLOWED = 1 << 16;
const received = (name: string): number => fake.received.filter((m) => name in m.body).length;
const lsid = { id: new UUID() };

describe('retried by the proxy', () => {
  it('a find whose connection broke after it was sent', async () => {
    failures.find = 1;
    expect(await command({ find: 'c', filter: {}, $db: 'app' })).toMatchObject({ ok: 1 });
    expect(received('find')).toBe(2);
  });

  it('a retryable write (txnNumber outside a transaction): the same bytes again', async () => {
    failures.insert = 1;
    expect(
      await command({ insert: 'c', documents: [{ a: 1 }], lsid, txnNumber: Long.fromNumber(5), $db: 'app' }),
    ).toMatchObject({ ok: 1 });
    const [first, second] = fake.received.filter((m) => 'insert' in m.body);
    expect(received('insert')).toBe(2);
    expect(second!.body.txnNumber).toEqual(first!.body.txnNumber);
    expect(second!.body.lsid).toEqual(first!.body.lsid);
  });

  it('up to maxAttempts, then an error labelled for the driver; dropped requests never open the breaker', async () => {
    failures.find = 3;
    const reply = await command({ find: 'c', filter: {}, $db: 'app' });
    expect(reply).toMatchObject({ ok: 0, code: 9001, codeName: 'SocketException' });
    expect(String(reply.errmsg)).toMatch(/after 3 attempts/);
    expect(received('find')).toBe(3);

    failures.insert = 10;
    const write = await command({
      insert: 'c',
      documents: [{ a: 1 }],
      lsid,
      txnNumber: Long.fromNumber(6),
      $db: 'app',
    });
    // Issue 15: the server drops these requests' connections but answers a fresh connection's
    // hello, so the failures are the requests' own and the breaker (threshold 4) stays closed:
    // every attempt is sent, and the error must not claim NoWritesPerformed (they may have written).
    expect(write).toMatchObject({ ok: 0, code: 9001, errorLabels: ['RetryableWriteError'] });
    expect(String(write.errmsg)).toMatch(/after 3 attempts/);
    expect(received('insert')).toBe(3);
    failures.insert = 0;
  });
});

describe('sent once, never again', () => {
  it('a write without txnNumber: no retry label (it may have been applied)', async () => {
    failures.insert = 1;
    const reply = await command({ insert: 'c', documents: [{ a: 1 }], $db: 'app' });
    expect(reply).toMatchObject({ ok: 0, code: 9001 });
    expect(reply.errorLabels).toBeUndefined();
    expect(received('insert')).toBe(1);
  });

  it('a getMore (its batch would be lost)', async () => {
    expect(await command({ find: 'c', filter: {}, batchSize: 1, $db: 'app' })).toMatchObject({ ok: 1 });
    failures.getMore = 1;
    expect(await command({ getMore: Long.fromNumber(7), collection: 'c', $db: 'app' })).toMatchObject({
      ok: 0,
      code: 9001,
    });
    expect(received('getMore')).toBe(1);
  });

  it('an exhaust stream cut after batches reached the client: the client connection is closed', async () => {
    expect(await command({ find: 'c', filter: {}, batchSize: 1, $db: 'app' })).toMatchObject({ ok: 1 });
    client.write(opMsg({ getMore: Long.fromNumber(7), collection: 'c', $db: 'app' }, { flags: EXHAUST_ALLOWED }).bytes);
    const frames = [await client.readFrame(20_000), await client.readFrame(20_000)];
    expect(frames.map((frame) => replyDocument(frame!).cursor.nextBatch[0].n)).toEqual([1, 2]);
    expect(await client.waitClosed(20_000)).toBe(true);
    expect(received('getMore')).toBe(1);
  });

  it('a command inside a transaction: TransientTransactionError; a commit: UnknownTransactionCommitResult', async () => {
    const txn = { lsid, txnNumber: Long.fromNumber(9), autocommit: false };
    failures.insert = 1;
    const insert = await command({ insert: 'c', documents: [{ a: 1 }], ...txn, startTransaction: true, $db: 'app' });
    expect(insert).toMatchObject({ ok: 0, errorLabels: ['TransientTransactionError'] });
    expect(received('insert')).toBe(1);

    failures.commitTransaction = 1;
    const commit = await command({ commitTransaction: 1, ...txn, $db: 'admin' });
    expect(commit).toMatchObject({ ok: 0, errorLabels: ['RetryableWriteError', 'UnknownTransactionCommitResult'] });
    expect(received('commitTransaction')).toBe(1);
  });
});
