/**
 * Slow clients and floods (issue 5, "Proof"): 1,000 clients trickling bytes of a frame, a client
 * that sends many requests and never reads the replies, bursts over the total and per-tenant
 * connection limits. In each, the proxy's memory stays bounded and another tenant, on an ordinary
 * driver, keeps working. Two static-tenant listeners (flood, victim) in front of the shared
 * upstream; the flooding clients are raw sockets (test/helpers/raw-client.ts).
 */
import type { MongoClient } from 'mongodb';
import { afterEach, describe, expect, it } from 'vitest';
import type { ProxyConfig } from '../../src/config/types.js';
import { MiB, settledMemory } from '../helpers/memory.js';
import { metricValue } from '../helpers/metrics.js';
import type { DeepPartial } from '../helpers/proxy.js';
import { RawClient, opMsg, replyDocument } from '../helpers/raw-client.js';
import { startTenantProxy, type TenantProxy } from '../helpers/tenants.js';
import { uniqueDbName } from '../helpers/upstream.js';
import { until } from '../helpers/wait.js';

let tenants: TenantProxy | undefined;
const raw = new Set<RawClient>();

afterEach(async () => {
  for (const client of raw) client.close();
  raw.clear();
  await tenants?.stop();
  tenants = undefined;
});

async function start(limits: DeepPartial<ProxyConfig['limits']>): Promise<TenantProxy> {
  tenants = await startTenantProxy(['flood', 'victim'], { limits });
  return tenants;
}

/** `count` raw connections as `tenant`, opened in batches so the listen backlog never overflows. */
async function connectMany(tenant: string, count: number, batch = 100): Promise<RawClient[]> {
  const clients: RawClient[] = [];
  for (let opened = 0; opened < count; opened += batch) {
    const next = await Promise.all(Array.from({ length: Math.min(batch, count - opened) }, () => tenants!.rawFor(tenant)));
    for (const client of next) {
      raw.add(client);
      clients.push(client);
    }
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
const clientConnections = (): Promise<number> => metricValue(tenants!.proxy.proxy, 'client_connections');

describe('1,000 clients trickling bytes of a frame', () => {
  it('are each closed after frameTimeoutMS with a counted protocol error, while another tenant keeps working and memory stays bounded', async () => {
    await start({ frameTimeoutMS: 6_000 });
    const database = uniqueDbName('flood_trickle');
    const victim = tenants!.clientFor('victim', { maxPoolSize: 2 });
    await victimWorks(victim, database, 5);
    const baseline = await settledMemory();

    const trickling = await connectMany('flood', 1_000);
    const frame = hello().bytes;
    // One byte of the frame every 250 ms on every connection: far from whole within the timeout.
    let sent = 0;
    const trickle = setInterval(() => {
      if (sent >= frame.length) return;
      for (const client of trickling) if (!client.closed) client.write(frame.subarray(sent, sent + 1));
      sent++;
    }, 250);
    try {
      await until(async () => (await clientConnections()) >= 1_000, { message: 'the trickling clients are not all connected' });
      await until(() => sent >= 2, { message: 'the trickle did not start' });
      // While they hold their connections, the victim is served normally.
      await victimWorks(victim, database, 30);
      const during = await settledMemory();
      expect(trickling.filter((client) => client.closed)).toEqual([]);
      // Both ends of 1,000 sockets live in this process; a few bytes per frame are buffered.
      expect(during.heapUsed - baseline.heapUsed).toBeLessThan(48 * MiB);
      expect(during.arrayBuffers - baseline.arrayBuffers).toBeLessThan(16 * MiB);

      await until(() => trickling.every((client) => client.closed), { timeoutMS: 30_000, message: 'trickling clients still open' });
    } finally {
      clearInterval(trickle);
    }
    expect(sent).toBeLessThan(frame.length);
    expect(await metricValue(tenants!.proxy.proxy, 'protocol_errors_total', { reason: 'FrameTimeout' })).toBe(1_000);
    await victimWorks(victim, database, 5);
    await until(async () => (await clientConnections()) <= 2, { message: 'closed trickling connections still counted' });
  });
});

describe('a client that sends many requests and never reads the replies', () => {
  it('is held back by socket backpressure (bounded memory), while another tenant keeps working', async () => {
    await start({});
    const database = uniqueDbName('flood_noread');
    // Four documents of 1 MiB: every find below answers about 4 MiB.
    const seeder = tenants!.clientFor('flood');
    const big = 'x'.repeat(MiB);
    await seeder.db(database).collection<{ _id: string; big: string }>('big').insertMany(Array.from({ length: 4 }, (_, i) => ({ _id: `big-${i}`, big })));
    await seeder.close();
    const victim = tenants!.clientFor('victim', { maxPoolSize: 2 });
    await victimWorks(victim, database, 5);
    const baseline = await settledMemory();

    const greedy = (await connectMany('flood', 1))[0]!;
    greedy.socket.pause(); // never reads: the kernel buffers fill, then the proxy's writes stall
    const requests = 200; // ~800 MiB of replies if the proxy buffered them
    for (let i = 0; i < requests; i++) greedy.write(opMsg({ find: 'big', filter: {}, batchSize: 10, $db: database }).bytes);

    // Wait until the proxy stops sending to it: bytes sent to clients stop growing.
    const sentToClients = (): Promise<number> => metricValue(tenants!.proxy.proxy, 'bytes_sent_total', { direction: 'client' });
    let previous = -1;
    await until(
      async () => {
        const now = await sentToClients();
        const stalled = now === previous && now > 4 * MiB;
        previous = now;
        return stalled;
      },
      { timeoutMS: 30_000, intervalMS: 500, message: 'the proxy kept sending to a client that does not read' },
    );
    expect(previous).toBeLessThan(requests * 4 * MiB);
    const held = await settledMemory();
    // A reply or two in flight, not hundreds.
    expect(held.arrayBuffers - baseline.arrayBuffers).toBeLessThan(32 * MiB);
    expect(held.heapUsed - baseline.heapUsed).toBeLessThan(32 * MiB);

    // Another tenant is unaffected: its own connections, its own upstream connections.
    await victimWorks(victim, database, 20);
    expect(greedy.closed).toBe(false);

    greedy.close();
    raw.delete(greedy);
    await until(async () => (await clientConnections()) <= 2, { message: 'the greedy connection is still counted' });
    await until(async () => (await metricValue(tenants!.proxy.proxy, 'upstream_connections', { state: 'in_use' })) <= 2, {
      message: "the greedy client's upstream connection was not given back",
    });
    const after = await settledMemory();
    expect(after.arrayBuffers - baseline.arrayBuffers).toBeLessThan(16 * MiB);
  });
});

/** Sends hello on every client: the ones answered are served, the others were closed unanswered. */
async function helloOnEach(clients: RawClient[]): Promise<{ answered: RawClient[]; refused: Array<{ client: RawClient; reply: unknown }> }> {
  const outcomes = await Promise.all(
    clients.map(async (client) => {
      const request = hello();
      client.write(request.bytes);
      const frame = await client.readFrame(10_000);
      return { client, reply: frame === null ? null : replyDocument(frame) };
    }),
  );
  return {
    answered: outcomes.filter((outcome) => outcome.reply !== null && (outcome.reply as { ok?: number }).ok === 1).map((o) => o.client),
    refused: outcomes.filter((outcome) => outcome.reply === null || (outcome.reply as { ok?: number }).ok !== 1),
  };
}

describe('a burst over the connection limits', () => {
  it('limits.maxConnections: the connections over the limit are closed at once, the others and other tenants are served', async () => {
    const limit = 60;
    await start({ maxConnections: limit });
    const database = uniqueDbName('flood_burst');
    const victim = tenants!.clientFor('victim', { maxPoolSize: 1 });
    await victimWorks(victim, database, 5);
    const held = await clientConnections(); // the victim's monitoring and pool connections

    const burst = await connectMany('flood', 100, 100);
    const { answered, refused } = await helloOnEach(burst);
    expect(answered.length).toBe(limit - held);
    expect(refused.length).toBe(100 - (limit - held));
    expect(refused.every(({ client, reply }) => reply === null && client.closed)).toBe(true);
    expect(await metricValue(tenants!.proxy.proxy, 'client_connections_refused_total', { reason: 'max_connections' })).toBe(refused.length);

    // Served ones keep working, and so does the other tenant.
    for (const client of answered.slice(0, 5)) expect((await client.command(hello())).ok).toBe(1);
    await victimWorks(victim, database, 10);

    // Once the burst is gone, new connections are accepted again.
    for (const client of burst) client.close();
    await until(async () => (await clientConnections()) === held, { message: 'burst connections still counted' });
    const late = await tenants!.rawFor('flood');
    raw.add(late);
    expect((await late.command(hello())).ok).toBe(1);
  });

  it('limits.maxConnectionsPerTenant: a tenant bursting over its limit gets a clear error on the extra connections; another tenant connects freely', async () => {
    const perTenant = 20;
    await start({ maxConnectionsPerTenant: perTenant });
    const database = uniqueDbName('flood_tenant_burst');

    const burst = await connectMany('flood', 100, 100);
    const { answered, refused } = await helloOnEach(burst);
    expect(answered.length).toBe(perTenant);
    expect(refused.length).toBe(100 - perTenant);
    for (const { reply } of refused) {
      expect(reply).toMatchObject({ ok: 0, code: 96, codeName: 'OperationFailed', errmsg: `tenant connection limit (${perTenant}) reached` });
    }
    await until(() => refused.every(({ client }) => client.closed), { message: 'refused connections not closed' });
    expect(await metricValue(tenants!.proxy.proxy, 'tenant_limit_rejections_total', { reason: 'connections' })).toBe(refused.length);

    // The other tenant is not affected by the flooding tenant's limit.
    const victim = tenants!.clientFor('victim', { maxPoolSize: 5 });
    await victimWorks(victim, database, 10);
  });
});
