/**
 * Topology monitoring and server selection (issue 5) against three fake replica-set members
 * whose hello replies the test changes (an election): new writes follow the new primary,
 * retryable writes caught by the step-down are retried there, `$readPreference: secondary` reads
 * go to a secondary. The real replSetStepDown test needs a MongoDB replica set (MONGODB_URI).
 */
import { Long, ObjectId, UUID } from 'bson';
import { describe, expect } from 'vitest';
import { FAKE_HELLO, type FakeUpstream } from '../helpers/fake-upstream.js';
import { it, type IntegrationFixtures } from '../helpers/fixtures.js';
import { opMsg, replyDocument, type RawClient } from '../helpers/raw-client.js';
import { directClient, needsMongoDB, uniqueDbName } from '../helpers/upstream.js';

interface ReplicaSet {
  members: FakeUpstream[];
  hosts: string[];
  /** Makes member `index` the primary (a new election: higher electionId). */
  elect(index: number): void;
  /** Which members received a command with this name, in order. */
  servedBy(name: string): number[];
}

async function startReplicaSet(fakeUpstream: IntegrationFixtures['fakeUpstream'], size = 3): Promise<ReplicaSet> {
  let primary = 0;
  let term = 1;
  const hosts: string[] = [];
  const members: FakeUpstream[] = [];
  for (let i = 0; i < size; i++) {
    const member = await fakeUpstream(
      (message) => {
        const name = Object.keys(message.body)[0];
        if ((name === 'insert' || name === 'update' || name === 'delete') && i !== primary) {
          return [{ ok: 0, code: 10107, codeName: 'NotWritablePrimary', errmsg: 'not primary' }];
        }
        if (name === 'find')
          return [{ cursor: { id: Long.fromNumber(0), ns: 'app.c', firstBatch: [{ member: i }] }, ok: 1 }];
        return [{ ok: 1, n: 1 }];
      },
      {
        hello: () => ({
          ...FAKE_HELLO,
          setName: 'rs0',
          hosts,
          me: hosts[i],
          primary: hosts[primary],
          isWritablePrimary: i === primary,
          secondary: i !== primary,
          electionId: new ObjectId(`7fffffff${String(term).padStart(16, '0')}`),
          setVersion: 1,
          lastWrite: { lastWriteDate: new Date() },
          tags: { member: String(i) },
        }),
      },
    );
    members.push(member);
    hosts.push(member.hostPort);
  }
  return {
    members,
    hosts,
    elect(index) {
      primary = index;
      term++;
    },
    servedBy(name) {
      return members.flatMap((member, index) => member.received.filter((m) => name in m.body).map(() => index));
    },
  };
}

async function command(client: RawClient, doc: Record<string, unknown>): Promise<Record<string, unknown>> {
  client.write(opMsg(doc).bytes);
  return replyDocument((await client.readFrame(30_000))!);
}

describe('replica set failover (fake members)', () => {
  it('sends new writes to the new primary after an election', async ({ fakeUpstream, startProxy }) => {
    const rs = await startReplicaSet(fakeUpstream);
    const proxy = await startProxy({
      upstream: { uri: `mongodb://${rs.hosts.join(',')}/?replicaSet=rs0`, heartbeatFrequencyMS: 500 },
    });
    const c = await proxy.raw();
    expect(await command(c, { insert: 'c', documents: [{ a: 1 }], $db: 'app' })).toMatchObject({ ok: 1 });
    expect(rs.servedBy('insert')).toEqual([0]);

    rs.elect(1);
    // A write sent before monitoring noticed may get NotWritablePrimary (not retried: no txnNumber);
    // the proxy then re-checks at once, and new writes reach member 1.
    await expect
      .poll(async () => (await command(c, { insert: 'c', documents: [{ a: 2 }], $db: 'app' })).ok, {
        timeout: 20_000,
        interval: 100,
      })
      .toBe(1);
    const before = rs.servedBy('insert').length;
    for (let i = 0; i < 3; i++)
      expect(await command(c, { insert: 'c', documents: [{ a: 3 }], $db: 'app' })).toMatchObject({ ok: 1 });
    expect(rs.servedBy('insert').slice(before)).toEqual([1, 1, 1]);
  });

  it('retries a retryable write that met the step-down on the new primary', async ({ fakeUpstream, startProxy }) => {
    const rs = await startReplicaSet(fakeUpstream);
    // A long heartbeat: only the NotWritablePrimary reply can make the proxy look again.
    const proxy = await startProxy({
      upstream: { uri: `mongodb://${rs.hosts.join(',')}/?replicaSet=rs0`, heartbeatFrequencyMS: 60_000 },
    });
    const c = await proxy.raw();
    const lsid = { id: new UUID() };
    expect(
      await command(c, { insert: 'c', documents: [{ a: 1 }], lsid, txnNumber: Long.fromNumber(1), $db: 'app' }),
    ).toMatchObject({ ok: 1 });
    rs.elect(2);
    const reply = await command(c, {
      insert: 'c',
      documents: [{ a: 2 }],
      lsid,
      txnNumber: Long.fromNumber(2),
      $db: 'app',
    });
    expect(reply).toMatchObject({ ok: 1 });
    expect(rs.servedBy('insert')).toEqual([0, 0, 2]);
  });

  it('sends reads with $readPreference secondary to a secondary, and tags pick the member', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const rs = await startReplicaSet(fakeUpstream);
    const proxy = await startProxy({
      upstream: { uri: `mongodb://${rs.hosts.join(',')}/?replicaSet=rs0`, heartbeatFrequencyMS: 500 },
    });
    const c = await proxy.raw();
    const servedBy = async (readPreference?: Record<string, unknown>): Promise<number> => {
      const reply = await command(c, {
        find: 'c',
        filter: {},
        ...(readPreference ? { $readPreference: readPreference } : {}),
        $db: 'app',
      });
      return (reply as { cursor: { firstBatch: Array<{ member: number }> } }).cursor.firstBatch[0]!.member;
    };
    expect(await servedBy()).toBe(0);
    for (let i = 0; i < 5; i++) expect(await servedBy({ mode: 'secondary' })).not.toBe(0);
    expect(await servedBy({ mode: 'secondary', tags: [{ member: '2' }] })).toBe(2);
    expect(await servedBy({ mode: 'nearest', tags: [{ member: '0' }] })).toBe(0);
    expect(await servedBy({ mode: 'primaryPreferred' })).toBe(0);
  });
});

describe('mongos lists', () => {
  it('balances commands over several mongos', async ({ fakeUpstream, startProxy }) => {
    const members: FakeUpstream[] = [];
    for (let i = 0; i < 2; i++) {
      members.push(await fakeUpstream(() => [{ ok: 1 }], { hello: () => ({ ...FAKE_HELLO, msg: 'isdbgrid' }) }));
    }
    const proxy = await startProxy({
      upstream: { uri: `mongodb://${members.map((m) => m.hostPort).join(',')}/`, heartbeatFrequencyMS: 500 },
    });
    const clients = await Promise.all(Array.from({ length: 20 }, () => proxy.raw()));
    // Wait until monitoring has described both mongos.
    await expect
      .poll(
        async () => {
          await Promise.all(clients.map((client) => command(client, { ping: 1, $db: 'admin' })));
          return members.every((member) => member.received.some((m) => 'ping' in m.body));
        },
        { timeout: 20_000, interval: 100 },
      )
      .toBe(true);
  });
});

describe('replSetStepDown on a real replica set', () => {
  it.skipIf(needsMongoDB('needs a MongoDB replica set (replSetStepDown)'))(
    'keeps writing through a step-down',
    async ({ startProxy }) => {
      const proxy = await startProxy({ upstream: { heartbeatFrequencyMS: 500 } });
      const db = uniqueDbName('stepdown');
      const client = proxy.client();
      const collection = client.db(db).collection('c');
      await collection.insertOne({ step: 'before' });
      const admin = directClient();
      try {
        await admin
          .db('admin')
          .command({ replSetStepDown: 10, force: true })
          .catch(() => undefined);
        await expect
          .poll(
            async () =>
              await collection.insertOne({ step: 'after' }).then(
                () => true,
                () => false,
              ),
            { timeout: 60_000, interval: 500 },
          )
          .toBe(true);
        expect(await admin.db(db).collection('c').countDocuments({ step: 'before' })).toBe(1);
      } finally {
        await admin.close();
      }
    },
    90_000,
  );
});
