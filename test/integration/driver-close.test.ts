/**
 * What drivers send when an application closes its client: `endSessions` as an unacknowledged
 * command (w:0, OP_MSG moreToCome). It is not a protocol violation: it is forwarded and the
 * client gets no reply (nor is it answered before a tenant exists), the connection stays usable, and
 * neither the protocol error counter nor the `error` outcome moves, so closing clients does not
 * look like an attack on the dashboard.
 */
import { randomUUID } from 'node:crypto';
import { Binary, UUID } from 'bson';
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { samples } from '../helpers/metrics.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';
import { until } from '../helpers/wait.js';

const MORE_TO_COME = 1 << 1;

const endSessions = (): Buffer =>
  opMsg({ endSessions: [{ id: new Binary(new UUID(randomUUID()).buffer, 4) }], $db: 'admin' }, { flags: MORE_TO_COME })
    .bytes;

describe('a driver closing its client (endSessions with moreToCome)', () => {
  it('is forwarded without a reply to the client: no protocol error, no error outcome, the connection stays open', async ({
    startProxy,
  }) => {
    const proxy = await startProxy();
    const client = proxy.client();
    const db = client.db(uniqueDbName('driver_close'));
    await client.withSession(async (session) => {
      await db.collection('items').insertOne({ n: 1 }, { session });
    });
    await client.close(); // sends endSessions for the pooled session, with w:0

    await until(
      async () =>
        [...(await samples(proxy.proxy, 'operations_total')).keys()].some((labels) =>
          labels.includes('command="endSessions"'),
        ),
      { timeoutMS: 20_000 },
    );
    const operations = await samples(proxy.proxy, 'operations_total');
    const endSessionsOutcomes = [...operations.keys()].filter((labels) => labels.includes('command="endSessions"'));
    expect(
      endSessionsOutcomes.every((labels) => /outcome="(ok|rewritten)"/.test(labels)),
      endSessionsOutcomes.join(', '),
    ).toBe(true);
    expect(
      [...(await samples(proxy.proxy, 'protocol_errors_total')).values()].reduce((sum, value) => sum + value, 0),
    ).toBe(0);

    // The same on a raw connection: no reply to the endSessions, and the next command is answered.
    const c = await proxy.raw();
    c.write(endSessions());
    const ping = opMsg({ ping: 1, $db: 'admin' });
    c.write(ping.bytes);
    const reply = await c.readFrame(20_000);
    expect(reply?.responseTo).toBe(ping.requestId);
    expect(replyDocument(reply!).ok).toBe(1);
  });

  it('before a tenant exists, is not answered either (a reply nobody asked for would answer the next command)', async ({
    startProxy,
  }) => {
    const proxy = await startProxy({
      listeners: [
        { name: 'handshake-only', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: [], staticTenant: null },
      ],
    });
    const c = await proxy.raw();
    c.write(endSessions());
    const ping = opMsg({ ping: 1, $db: 'admin' });
    c.write(ping.bytes);
    const reply = await c.readFrame(20_000);
    expect(reply?.responseTo).toBe(ping.requestId);
    expect(replyDocument(reply!).ok).toBe(1);
  });
});

describe('unacknowledged commands on a shared upstream connection', () => {
  it('leave nothing behind for the next client: w:0 writes and endSessions interleaved with acknowledged writes over a pool of one', async ({
    faultProxy,
    startProxy,
  }) => {
    // A server may answer moreToCome anyway (FerretDB does). Were the command sent as is, that
    // stray reply would reach the pooled connection after it went to another client, and fail the
    // other client's write. The proxy asks for the reply and drops it.
    const faults = await faultProxy();
    const proxy = await startProxy({
      upstream: { uri: faults.uri, maxPoolSize: 1, retry: { maxAttempts: 1, initialBackoffMS: 0, maxBackoffMS: 0 } },
    });
    const database = uniqueDbName('fnf_shared');
    const unacknowledged = await proxy.raw();
    const acknowledged = await proxy.raw();
    const connectionsBefore = faults.stats().connectionsTotal;
    for (let i = 0; i < 20; i++) {
      unacknowledged.write(
        opMsg(
          { insert: 'items', documents: [{ _id: `w0-${i}` }], writeConcern: { w: 0 }, $db: database },
          { flags: MORE_TO_COME },
        ).bytes,
      );
      unacknowledged.write(endSessions());
      const insert = opMsg({ insert: 'items', documents: [{ _id: `ack-${i}` }], $db: database });
      acknowledged.write(insert.bytes);
      const reply = await acknowledged.readFrame(20_000);
      expect(reply?.responseTo).toBe(insert.requestId);
      expect(replyDocument(reply!)).toMatchObject({ ok: 1, n: 1 });
    }
    // The w:0 client gets no reply at all; its next acknowledged command is answered in order.
    const ping = opMsg({ ping: 1, $db: 'admin' });
    unacknowledged.write(ping.bytes);
    expect((await unacknowledged.readFrame(20_000))?.responseTo).toBe(ping.requestId);
    // No upstream connection failed and was replaced along the way.
    expect(faults.stats().connectionsTotal).toBe(connectionsBefore);
    const direct = await directClient();
    try {
      expect(await direct.db(database).collection('items').countDocuments({ _id: /^w0-/ })).toBe(20);
      expect(await direct.db(database).collection('items').countDocuments({ _id: /^ack-/ })).toBe(20);
    } finally {
      await direct.close();
    }
  });
});

describe('a client that leaves right after an unacknowledged command', () => {
  it('is not a protocol violation while the proxy still waits for the upstream reply it drops', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream((message) =>
      'endSessions' in message.body ? { delayMs: 300, replies: [{ ok: 1 }] } : [{ ok: 1 }],
    );
    const proxy = await startProxy({ upstream: { uri: fake.uri } });
    const c = await proxy.raw();
    const ping = opMsg({ ping: 1, $db: 'admin' });
    expect((await c.command(ping)).ok).toBe(1);
    c.write(endSessions());
    await until(async () => fake.received.some((message) => 'endSessions' in message.body), { timeoutMS: 20_000 });
    c.close(); // what a driver does right after sending endSessions
    await until(async () => (await samples(proxy.proxy, 'client_connections')).get('') === 0, { timeoutMS: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, 400)); // the upstream reply has arrived and been dropped
    expect(
      [...(await samples(proxy.proxy, 'protocol_errors_total')).values()].reduce((sum, value) => sum + value, 0),
    ).toBe(0);
  });

  it('is not an upstream error either: the command completes and its upstream connection is kept', async ({
    fakeUpstream,
    startProxy,
  }) => {
    // A driver closes its socket right after its w:0 endSessions; whether the proxy sees the
    // close before the upstream reply is a race that a slow (loaded) upstream loses every time.
    // The delay makes the close always come first.
    const fake = await fakeUpstream((message) =>
      'endSessions' in message.body ? { delayMs: 300, replies: [{ ok: 1 }] } : [{ ok: 1 }],
    );
    const proxy = await startProxy({ upstream: { uri: fake.uri } });
    const c = await proxy.raw();
    expect((await c.command(opMsg({ ping: 1, $db: 'admin' }))).ok).toBe(1);
    const upstreamConnections = fake.openConnections;
    c.write(endSessions());
    await until(async () => fake.received.some((message) => 'endSessions' in message.body), { timeoutMS: 20_000 });
    c.close();
    await until(
      async () =>
        [...(await samples(proxy.proxy, 'operations_total')).keys()].some((labels) =>
          labels.includes('command="endSessions"'),
        ),
      { timeoutMS: 20_000 },
    );
    const outcomes = [...(await samples(proxy.proxy, 'operations_total')).keys()].filter((labels) =>
      labels.includes('command="endSessions"'),
    );
    expect(
      outcomes.every((labels) => /outcome="(ok|rewritten)"/.test(labels)),
      outcomes.join(', '),
    ).toBe(true);
    // The reply was awaited and dropped on a healthy connection, which went back to the pool.
    expect(fake.openConnections).toBe(upstreamConnections);
  });
});
