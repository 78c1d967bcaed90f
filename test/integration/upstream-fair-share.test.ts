/**
 * Issue 15, the upstream side: one tenant's requests cannot take the upstream from another.
 *
 * - A message the tenant stamp pushes past the upstream's maxMessageSizeBytes (or a document
 *   past maxBsonObjectSize) is answered BSONObjectTooLarge and never sent: the upstream does not
 *   drop a connection, the breaker stays closed, the other tenant is served.
 * - A per-tenant cap on open upstream cursors; the cursors of a client that leaves are killed.
 * - After an upstream restart the breaker closes on its first successful health check, not
 *   after the rest of its open time.
 */
import { serialize } from 'bson';
import { type Document, Long, MongoClient, MongoServerError } from 'mongodb';
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { metricValue, readyz, sumSamples, scrape } from '../helpers/metrics.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';
import { startTenantProxy } from '../helpers/tenants.js';
import { startRestartableFerretDB, uniqueDbName, upstreamUri } from '../helpers/upstream.js';
import { until } from '../helpers/wait.js';

const CLIENT_MAX_MESSAGE = 48_000_000;

/**
 * An OP_MSG insert of exactly `total` bytes: 46 documents of about 1 MB in a `documents`
 * sequence (the last one sized to make up the total).
 */
function insertOfExactly(total: number, db: string): Buffer {
  const count = 46;
  const body = { insert: 'big', ordered: true, $db: db };
  const doc = (i: number, length: number) => ({ _id: i, s: 'x'.repeat(length) });
  const empty = serialize(doc(0, 0)).length;
  const overhead = opMsg(body, { sequences: [{ id: 'documents', docs: [] }] }).bytes.length;
  const each = Math.floor((total - overhead) / count);
  const docs = Array.from({ length: count - 1 }, (_, i) => doc(i, each - empty));
  const used = overhead + docs.reduce((n, d) => n + serialize(d).length, 0);
  docs.push(doc(count - 1, total - used - empty));
  const frame = opMsg(body, { sequences: [{ id: 'documents', docs }] }).bytes;
  expect(frame.length).toBe(total);
  return frame;
}

describe('size limits after the rewrite', () => {
  it('an insert the tenant stamp pushes past maxMessageSizeBytes gets BSONObjectTooLarge; the breaker stays closed', async ({
    defer,
  }) => {
    const tenants = await startTenantProxy(['noisy', 'quiet']);
    defer(() => tenants.stop());
    const db = uniqueDbName('fair_size');
    const frame = insertOfExactly(CLIENT_MAX_MESSAGE - 30, db);
    const raw = await tenants.rawFor('noisy');
    // The reproduction: five of them used to open the breaker for every tenant.
    for (let i = 0; i < 5; i++) {
      raw.write(frame);
      const reply = await raw.readFrame(60_000);
      expect(reply).not.toBeNull();
      const document = replyDocument(reply!);
      expect(document).toMatchObject({ ok: 0, code: 10334, codeName: 'BSONObjectTooLarge' });
      expect(String(document.errmsg)).toMatch(/maxMessageSizeBytes \(48000000\).*smaller documents per batch/);
    }
    const metrics = await scrape(tenants.proxy.proxy);
    expect(sumSamples(metrics, 'circuit_breaker_transitions_total')).toBe(0);
    expect(sumSamples(metrics, 'circuit_breaker_state')).toBe(0);
    expect(await readyz(tenants.proxy.proxy)).toBe(200);
    const quiet = tenants.clientFor('quiet');
    expect(await quiet.db(db).command({ ping: 1 })).toMatchObject({ ok: 1 });
    await quiet.db(db).collection('small').insertOne({ a: 1 });
    // Nothing of the refused batch reached the upstream.
    const direct = new MongoClient(upstreamUri());
    defer(() => direct.close());
    expect(await direct.db(db).collection('big').countDocuments()).toBe(0);
  });

  it('a document the stamp pushes past maxBsonObjectSize gets BSONObjectTooLarge through the driver', async ({
    defer,
  }) => {
    const tenants = await startTenantProxy(['noisy']);
    defer(() => tenants.stop());
    const db = uniqueDbName('fair_doc');
    const client = tenants.clientFor('noisy');
    const empty = serialize({ _id: 1, s: '' }).length;
    const document: Document = { _id: 1, s: 'x'.repeat(16 * 1024 * 1024 - 8 - empty) };
    const error = await client
      .db(db)
      .collection('big')
      .insertOne(document)
      .then(
        () => undefined,
        (failure: unknown) => failure,
      );
    expect(error).toBeInstanceOf(MongoServerError);
    expect(error).toMatchObject({ code: 10334 });
    // The insert rewrite refuses it (rule document.too-large); the frame check behind it would too.
    expect((error as Error).message).toMatch(/with the tenant field the document exceeds 16777216 bytes/);
    expect(await client.db(db).command({ ping: 1 })).toMatchObject({ ok: 1 });
    expect(await metricValue(tenants.proxy.proxy, 'circuit_breaker_state')).toBe(0);
  });
});

describe('open cursors', () => {
  it('a tenant at its cursor cap gets OperationFailed; getMore, killCursors and other tenants are unaffected', async ({
    defer,
  }) => {
    const tenants = await startTenantProxy(['noisy', 'quiet'], { limits: { maxOpenCursorsPerTenant: 5 } });
    defer(() => tenants.stop());
    const db = uniqueDbName('fair_cursors');
    const noisy = tenants.clientFor('noisy').db(db).collection('c');
    await noisy.insertMany(Array.from({ length: 10 }, (_, i) => ({ i })));
    const cursors = [];
    for (let i = 0; i < 5; i++) {
      const cursor = noisy.find({}, { batchSize: 1 });
      await cursor.next();
      cursors.push(cursor);
    }
    expect(await metricValue(tenants.proxy.proxy, 'open_cursors')).toBe(5);
    const refused = await noisy
      .find({}, { batchSize: 1 })
      .next()
      .then(
        () => undefined,
        (failure: unknown) => failure,
      );
    expect(refused).toBeInstanceOf(MongoServerError);
    expect(refused).toMatchObject({ code: 96, codeName: 'OperationFailed' });
    expect((refused as Error).message).toMatch(/open cursor limit \(5\) reached/);
    // Existing cursors continue; the other tenant opens its own.
    expect(await cursors[0]!.next()).toMatchObject({ i: expect.any(Number) });
    const quiet = tenants.clientFor('quiet').db(db).collection('c');
    await quiet.insertOne({ q: 1 });
    expect(await quiet.find({}, { batchSize: 1 }).toArray()).toHaveLength(1);
    // Closing one frees a slot.
    await cursors[1]!.close();
    const again = noisy.find({}, { batchSize: 1 });
    expect(await again.next()).not.toBeNull();
    await Promise.all([again, ...cursors].map((cursor) => cursor.close()));
  });

  it('a client that leaves with 50 open cursors: they are killed upstream and open_cursors returns to 0', async ({
    defer,
  }) => {
    const tenants = await startTenantProxy(['noisy']);
    defer(() => tenants.stop());
    const db = uniqueDbName('fair_reap');
    await tenants
      .clientFor('noisy')
      .db(db)
      .collection('c')
      .insertMany(Array.from({ length: 5 }, (_, i) => ({ i })));
    const raw = await tenants.rawFor('noisy');
    const ids: Long[] = [];
    for (let i = 0; i < 50; i++) {
      const reply = await raw.command(opMsg({ find: 'c', filter: {}, batchSize: 1, $db: db }));
      expect(reply).toMatchObject({ ok: 1 });
      // Promoted to a number when it fits in 53 bits.
      ids.push(Long.fromString(String((reply.cursor as { id: unknown }).id)));
    }
    expect(ids.every((id) => !id.isZero())).toBe(true);
    expect(await metricValue(tenants.proxy.proxy, 'open_cursors')).toBe(50);
    // The upstream has them (shared-collection: the physical namespace is the client's).
    const direct = new MongoClient(upstreamUri());
    defer(() => direct.close());
    const getMore = (id: Long) => direct.db(db).command({ getMore: id, collection: 'c', batchSize: 1 });
    expect(await getMore(ids[0]!)).toMatchObject({ ok: 1 });

    raw.close();
    await until(async () => (await metricValue(tenants.proxy.proxy, 'open_cursors')) === 0, {
      message: 'open_cursors did not return to 0 after the client left',
    });
    await until(async () => (await metricValue(tenants.proxy.proxy, 'cursors_reaped_total')) === 50, {
      message: 'the proxy did not kill the 50 cursors upstream',
    });
    for (const id of [ids[0]!, ids[49]!]) {
      await expect(getMore(id)).rejects.toMatchObject({ code: 43 });
    }
  });
});

describe('breaker recovery', () => {
  it('after an upstream restart, commands succeed within a second of the server answering again', async ({
    defer,
    startProxy,
  }) => {
    const ferret = await startRestartableFerretDB();
    defer(() => ferret.stop());
    // The default breaker (openMS 10 s, initialOpenMS 250 ms, probeIntervalMS 250 ms).
    const proxy = await startProxy({ upstream: { uri: ferret.uri } });
    const client = proxy.client({ serverSelectionTimeoutMS: 2_000, retryReads: false });
    defer(() => client.close());
    const db = client.db(uniqueDbName('fair_breaker'));
    await db.command({ ping: 1 });
    await db.collection('c').insertOne({ a: 1 });

    await ferret.kill();
    await until(
      async () => {
        await db
          .collection('c')
          .findOne({})
          .catch(() => undefined);
        return (await metricValue(proxy.proxy, 'circuit_breaker_state')) === 2;
      },
      { message: 'the breaker did not open while the upstream was down' },
    );
    await ferret.restart();
    const back = performance.now();
    await until(
      async () => {
        try {
          await db.collection('c').findOne({});
          return true;
        } catch {
          return false;
        }
      },
      { timeoutMS: 10_000, intervalMS: 20, message: 'commands did not succeed after the restart' },
    );
    const recoveredMS = performance.now() - back;
    console.log(`breaker recovery: commands succeed ${recoveredMS.toFixed(0)} ms after the upstream answers again`);
    // One probe interval (250 ms) plus a health check and a command; the old breaker took openMS (10 s).
    expect(recoveredMS).toBeLessThan(1_000);
    expect(await metricValue(proxy.proxy, 'circuit_breaker_state')).toBe(0);
    expect(await readyz(proxy.proxy)).toBe(200);
  });
});
