/**
 * Slow clients and floods (issue 5, "Proof"): 1,000 clients trickling bytes of a frame (and 200
 * idle ones), clients that send many requests and never read the replies, bursts over the total
 * and per-tenant connection limits. In each, the proxy's memory stays bounded and another tenant, on an ordinary
 * driver, keeps working. Two static-tenant listeners (flood, victim) in front of the shared
 * upstream; the flooding clients are raw sockets (test/helpers/raw-client.ts).
 */
import type { MongoClient } from 'mongodb';
import { describe, expect } from 'vitest';
import { defaultConfig } from '../../src/config/index.js';
import type { ProxyConfig } from '../../src/config/types.js';
import { MiB, settledMemory } from '../helpers/memory.js';
import { metricValue } from '../helpers/metrics.js';
import { it } from '../helpers/fixtures.js';
import type { DeepPartial } from '../helpers/proxy.js';
import { opMsg, replyDocument, type RawClient } from '../helpers/raw-client.js';
import type { TenantProxy } from '../helpers/tenants.js';
import { uniqueDbName } from '../helpers/upstream.js';
import { until, withDeadline } from '../helpers/wait.js';

/** `count` raw connections as `tenant`, opened in batches so the listen backlog never overflows. */
async function connectMany(tenants: TenantProxy, tenant: string, count: number, batch = 100): Promise<RawClient[]> {
  const clients: RawClient[] = [];
  for (let opened = 0; opened < count; opened += batch) {
    const next = await Promise.all(
      Array.from({ length: Math.min(batch, count - opened) }, () => tenants.rawFor(tenant)),
    );
    clients.push(...next);
  }
  return clients;
}

/** The victim tenant's work: inserts and reads through the driver, all of which must succeed. */
async function victimWorks(client: MongoClient, database: string, operations: number): Promise<void> {
  const collection = client.db(database).collection<{ _id: string; n: number }>('victim');
  for (let i = 0; i < operations; i++) {
    const _id = `v-${Date.now().toString(36)}-${i}-${Math.random().toString(36).slice(2)}`;
    await collection.insertOne({ _id, n: i });
    expect(await collection.findOne({ _id })).toMatchObject({ _id, n: i });
  }
}

const hello = (): ReturnType<typeof opMsg> => opMsg({ hello: 1, $db: 'admin' });
const clientConnections = (tenants: TenantProxy): Promise<number> =>
  metricValue(tenants.proxy.proxy, 'client_connections');
const acceptedConnections = (tenants: TenantProxy): Promise<number> =>
  metricValue(tenants.proxy.proxy, 'client_connections_total');

describe('1,000 clients trickling bytes of a frame (and 200 saying nothing)', () => {
  it('are each closed after frameTimeoutMS (clientIdleTimeoutMS) with a counted protocol error, while another tenant keeps working and memory stays bounded', async ({
    startTenantProxy,
  }) => {
    const frameTimeoutMS = 10_000;
    const clientIdleTimeoutMS = 15_000;
    const tenants = await startTenantProxy(['flood', 'victim'], {
      limits: { frameTimeoutMS, clientIdleTimeoutMS },
    });
    const database = uniqueDbName('flood_trickle');
    // Frequent heartbeats keep the victim's monitoring connection from going idle.
    const victim = tenants.clientFor('victim', { maxPoolSize: 2, heartbeatFrequencyMS: 1_000 });
    await victimWorks(victim, database, 5);
    const baseline = await settledMemory();

    // Each trickling client sends the first byte of its frame as soon as it is connected, so its
    // frame clock (not the idle clock) starts then, however long connecting all 1,200 takes on a
    // loaded machine; `firstByteAt` is noted before the write, so the proxy's clock starts later.
    const frame = hello().bytes;
    const trickling: Array<{ client: RawClient; firstByteAt: number; sent: number }> = [];
    const accepted = await acceptedConnections(tenants);
    for (const client of await connectMany(tenants, 'flood', 1_000)) {
      const firstByteAt = Date.now();
      client.write(frame.subarray(0, 1));
      trickling.push({ client, firstByteAt, sent: 1 });
    }
    const silent = await connectMany(tenants, 'flood', 200);
    // Counted by the accept counter: a client the proxy already closed still counts as accepted.
    await until(async () => (await acceptedConnections(tenants)) >= accepted + 1_200, {
      timeoutMS: 60_000,
      message: 'the proxy did not accept all flooding connections',
    });
    // One more byte of the frame a second on every connection: far from whole within the timeout.
    // (Faster, the 1,000 writes and reads of each tick starve the victim on a loaded machine.)
    const trickle = setInterval(() => {
      for (const entry of trickling) {
        if (entry.client.closed || entry.sent >= frame.length) continue;
        entry.client.write(frame.subarray(entry.sent, entry.sent + 1));
        entry.sent++;
      }
    }, 1_000);
    try {
      // While they hold their connections, the victim is served normally.
      await victimWorks(victim, database, 30);
      const during = await settledMemory();
      // Both ends of 1,200 sockets live in this process; a few bytes per frame are buffered.
      expect(during.heapUsed - baseline.heapUsed).toBeLessThan(48 * MiB);
      expect(during.arrayBuffers - baseline.arrayBuffers).toBeLessThan(16 * MiB);

      await until(() => [...trickling.map((entry) => entry.client), ...silent].every((client) => client.closed), {
        timeoutMS: 60_000,
        message: 'flooding clients still open',
      });
    } finally {
      clearInterval(trickle);
    }
    // No frame was ever whole, and no client was closed before its clock ran out: each clock
    // starts when the proxy sees the connection or the byte, after the times noted here. The
    // slack is libuv's loop time, cached at the start of each loop iteration, by which a timer
    // armed late in a busy iteration (here: 100 connections or 1,000 writes) counts from earlier.
    const loopTimeSlackMS = 1_000;
    for (const { client, firstByteAt, sent } of trickling) {
      expect(sent).toBeLessThan(frame.length);
      expect(client.closedAt! - firstByteAt).toBeGreaterThanOrEqual(frameTimeoutMS - loopTimeSlackMS);
    }
    for (const client of silent) {
      expect(client.closedAt! - client.connectedAt).toBeGreaterThanOrEqual(clientIdleTimeoutMS - loopTimeSlackMS);
    }
    // Only the trickling ones broke the protocol; the silent ones were merely idle.
    expect(await metricValue(tenants.proxy.proxy, 'protocol_errors_total', { reason: 'FrameTimeout' })).toBe(1_000);
    // A client connecting now is served (the victim's pool connection may have idled out meanwhile).
    await victim.close();
    await victimWorks(tenants.clientFor('victim'), database, 5);
    await until(async () => (await clientConnections(tenants)) <= 2, {
      message: 'closed flooding connections still counted',
    });
    // At least the idle clock plus accepting 1,200 connections, which alone can take a minute on a loaded machine.
  }, 240_000);
});

/** Replies of about 4 MiB: every `find` on `big` returns four documents of 1 MiB. */
async function seedBigDocuments(tenants: TenantProxy, database: string): Promise<void> {
  const seeder = tenants.clientFor('flood');
  const big = 'x'.repeat(MiB);
  await seeder
    .db(database)
    .collection<{ _id: string; big: string }>('big')
    .insertMany(Array.from({ length: 4 }, (_, i) => ({ _id: `big-${i}`, big })));
  await seeder.close();
}

const REPLY_BYTES = 4 * MiB;
/** Requests each greedy client pipelines: ~800 MiB of replies if the proxy buffered them. */
const GREEDY_REQUESTS = 200;

/**
 * `count` flood-tenant clients that pipeline GREEDY_REQUESTS finds each and never read; resolves
 * once the proxy has stopped sending to clients (bytes sent to clients stop growing), with the
 * bytes sent to clients since they connected.
 */
async function greedyClients(
  tenants: TenantProxy,
  count: number,
  database: string,
): Promise<{ clients: RawClient[]; bytesSent: number }> {
  const clients = await connectMany(tenants, 'flood', count);
  for (const client of clients) {
    client.socket.pause(); // never reads: the kernel buffers fill, then the proxy's writes stall
    for (let i = 0; i < GREEDY_REQUESTS; i++)
      client.write(opMsg({ find: 'big', filter: {}, batchSize: 10, $db: database }).bytes);
  }
  const sentToClients = (): Promise<number> =>
    metricValue(tenants.proxy.proxy, 'bytes_sent_total', { direction: 'client' });
  const before = await sentToClients();
  // Stalled: at least one reply went out, then nothing more for three samples in a row.
  let previous = -1;
  let unchanged = 0;
  await until(
    async () => {
      const now = await sentToClients();
      unchanged = now === previous ? unchanged + 1 : 0;
      previous = now;
      return unchanged >= 3 && now - before >= REPLY_BYTES;
    },
    { timeoutMS: 30_000, intervalMS: 500, message: 'the proxy kept sending to clients that do not read' },
  );
  return { clients, bytesSent: previous - before };
}

/** The greedy clients go away: their connections and upstream connections are given back. */
async function closeGreedy(tenants: TenantProxy, clients: RawClient[]): Promise<void> {
  for (const client of clients) client.close();
  await until(async () => (await clientConnections(tenants)) <= 2, { message: 'greedy connections still counted' });
  await until(async () => (await metricValue(tenants.proxy.proxy, 'upstream_connections', { state: 'in_use' })) <= 2, {
    message: "the greedy clients' upstream connections were not given back",
  });
}

/**
 * A small upstream pool where the build has one (`upstream.maxPoolSize`, the multiplexed pool of
 * issue 5), so that clients that never read could starve the others of upstream connections;
 * without it every client connection has an upstream connection of its own.
 */
function smallUpstreamPool(size: number): DeepPartial<ProxyConfig> {
  const upstream = defaultConfig().upstream as unknown as Record<string, unknown>;
  return 'maxPoolSize' in upstream ? ({ upstream: { maxPoolSize: size } } as DeepPartial<ProxyConfig>) : {};
}

describe('clients that send many requests and never read the replies', () => {
  it('one: is held back by socket backpressure (bounded memory), while another tenant keeps working', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['flood', 'victim']);
    const database = uniqueDbName('flood_noread');
    await seedBigDocuments(tenants, database);
    const victim = tenants.clientFor('victim', { maxPoolSize: 2 });
    await victimWorks(victim, database, 5);
    const baseline = await settledMemory();

    const { clients, bytesSent } = await greedyClients(tenants, 1, database);
    expect(bytesSent).toBeLessThan(GREEDY_REQUESTS * REPLY_BYTES);
    const held = await settledMemory();
    // A reply or two in flight, not hundreds.
    expect(held.arrayBuffers - baseline.arrayBuffers).toBeLessThan(32 * MiB);
    expect(held.heapUsed - baseline.heapUsed).toBeLessThan(32 * MiB);

    await victimWorks(victim, database, 20);
    expect(clients[0]!.closed).toBe(false);

    await closeGreedy(tenants, clients);
    const after = await settledMemory();
    expect(after.arrayBuffers - baseline.arrayBuffers).toBeLessThan(16 * MiB);
  });

  it('more of them than upstream connections in the pool: another tenant still gets upstream connections', async ({
    startTenantProxy,
  }) => {
    const poolSize = 4;
    const greedyCount = 6;
    const tenants = await startTenantProxy(['flood', 'victim'], smallUpstreamPool(poolSize));
    const database = uniqueDbName('flood_noread_pool');
    await seedBigDocuments(tenants, database);
    const victim = tenants.clientFor('victim', { maxPoolSize: 2 });
    await victimWorks(victim, database, 5);
    const baseline = await settledMemory();

    const { clients, bytesSent } = await greedyClients(tenants, greedyCount, database);
    expect(bytesSent).toBeLessThan(greedyCount * GREEDY_REQUESTS * REPLY_BYTES);
    const held = await settledMemory();
    expect(held.arrayBuffers - baseline.arrayBuffers).toBeLessThan(greedyCount * 8 * MiB);

    // Fairness: the stalled clients must not hold every pooled upstream connection hostage.
    await withDeadline(victimWorks(victim, database, 20), 30_000, 'the other tenant while greedy clients stall');

    await closeGreedy(tenants, clients);
  });
});

/** Sends hello on every client: the ones answered are served, the others were closed unanswered. */
async function helloOnEach(
  clients: RawClient[],
): Promise<{ answered: RawClient[]; refused: Array<{ client: RawClient; reply: unknown }> }> {
  const outcomes = await Promise.all(
    clients.map(async (client) => {
      const request = hello();
      client.write(request.bytes);
      const frame = await client.readFrame(10_000);
      return { client, reply: frame === null ? null : replyDocument(frame) };
    }),
  );
  return {
    answered: outcomes
      .filter((outcome) => outcome.reply !== null && (outcome.reply as { ok?: number }).ok === 1)
      .map((o) => o.client),
    refused: outcomes.filter((outcome) => outcome.reply === null || (outcome.reply as { ok?: number }).ok !== 1),
  };
}

describe('a burst over the connection limits', () => {
  it('limits.maxConnections: the connections over the limit are closed at once, the others and other tenants are served', async ({
    startTenantProxy,
  }) => {
    const limit = 60;
    const tenants = await startTenantProxy(['flood', 'victim'], { limits: { maxConnections: limit } });
    const database = uniqueDbName('flood_burst');
    const victim = tenants.clientFor('victim', { maxPoolSize: 1 });
    await victimWorks(victim, database, 5);
    const held = await clientConnections(tenants); // the victim's monitoring and pool connections

    const burst = await connectMany(tenants, 'flood', 100, 100);
    const { answered, refused } = await helloOnEach(burst);
    expect(answered.length).toBe(limit - held);
    expect(refused.length).toBe(100 - (limit - held));
    expect(refused.every(({ client, reply }) => reply === null && client.closed)).toBe(true);
    expect(
      await metricValue(tenants.proxy.proxy, 'client_connections_refused_total', { reason: 'max_connections' }),
    ).toBe(refused.length);

    // Served ones keep working, and so does the other tenant.
    for (const client of answered.slice(0, 5)) expect((await client.command(hello())).ok).toBe(1);
    await victimWorks(victim, database, 10);

    // Once the burst is gone, new connections are accepted again.
    for (const client of burst) client.close();
    await until(async () => (await clientConnections(tenants)) === held, {
      message: 'burst connections still counted',
    });
    const late = await tenants.rawFor('flood');
    expect((await late.command(hello())).ok).toBe(1);
  });

  it('limits.maxConnectionsPerTenant: a tenant bursting over its limit gets a clear error on the extra connections; another tenant connects freely', async ({
    startTenantProxy,
  }) => {
    const perTenant = 20;
    const tenants = await startTenantProxy(['flood', 'victim'], { limits: { maxConnectionsPerTenant: perTenant } });
    const database = uniqueDbName('flood_tenant_burst');

    const burst = await connectMany(tenants, 'flood', 100, 100);
    const { answered, refused } = await helloOnEach(burst);
    expect(answered.length).toBe(perTenant);
    expect(refused.length).toBe(100 - perTenant);
    for (const { reply } of refused) {
      expect(reply).toMatchObject({
        ok: 0,
        code: 96,
        codeName: 'OperationFailed',
        errmsg: `tenant connection limit (${perTenant}) reached`,
      });
    }
    await until(() => refused.every(({ client }) => client.closed), { message: 'refused connections not closed' });
    expect(await metricValue(tenants.proxy.proxy, 'tenant_limit_rejections_total', { reason: 'connections' })).toBe(
      refused.length,
    );

    // The other tenant is not affected by the flooding tenant's limit.
    const victim = tenants.clientFor('victim', { maxPoolSize: 5 });
    await victimWorks(victim, database, 10);
  });
});
