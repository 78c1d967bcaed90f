/**
 * What drivers send when an application closes its client: `endSessions` as an unacknowledged
 * command (w:0, OP_MSG moreToCome). It is not a protocol violation: it is forwarded without
 * waiting for a reply (nor answered, before a tenant exists), the connection stays usable, and
 * neither the protocol error counter nor the `error` outcome moves, so closing clients does not
 * look like an attack on the dashboard.
 */
import { randomUUID } from 'node:crypto';
import { Binary, UUID } from 'bson';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { RawClient, opMsg, replyDocument } from '../helpers/raw-client.js';
import { uniqueDbName } from '../helpers/upstream.js';

const MORE_TO_COME = 1 << 1;

let proxy: TestProxy | undefined;
const raw = new Set<RawClient>();

afterEach(async () => {
  for (const client of raw) client.close();
  raw.clear();
  await proxy?.stop();
  proxy = undefined;
});

async function rawClient(): Promise<RawClient> {
  const { host, port } = proxy!.proxy.address;
  const client = await RawClient.connect(host, port);
  raw.add(client);
  return client;
}

/** The samples of one metric family, as `{labels} value` pairs keyed by their label text. */
async function samples(name: string): Promise<Map<string, number>> {
  const text = await proxy!.proxy.metrics.registry.metrics();
  const found = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const cut = line.lastIndexOf(' ');
    found.set(line.slice(name.length, cut), Number(line.slice(cut + 1)));
  }
  return found;
}

async function until(condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const endSessions = (): Buffer => opMsg({ endSessions: [{ id: new Binary(new UUID(randomUUID()).buffer, 4) }], $db: 'admin' }, { flags: MORE_TO_COME }).bytes;

describe('a driver closing its client (endSessions with moreToCome)', () => {
  it('is forwarded fire-and-forget: no protocol error, no error outcome, the connection stays open', async () => {
    proxy = await startTestProxy();
    const client = proxy.client();
    const db = client.db(uniqueDbName('driver_close'));
    await client.withSession(async (session) => {
      await db.collection('items').insertOne({ n: 1 }, { session });
    });
    await client.close(); // sends endSessions for the pooled session, with w:0

    await until(async () => [...(await samples('mongo_tenant_proxy_operations_total')).keys()].some((labels) => labels.includes('command="endSessions"')));
    const operations = await samples('mongo_tenant_proxy_operations_total');
    const endSessionsOutcomes = [...operations.keys()].filter((labels) => labels.includes('command="endSessions"'));
    expect(endSessionsOutcomes.every((labels) => /outcome="(ok|rewritten)"/.test(labels)), endSessionsOutcomes.join(', ')).toBe(true);
    expect([...(await samples('mongo_tenant_proxy_protocol_errors_total')).values()].reduce((sum, value) => sum + value, 0)).toBe(0);

    // The same on a raw connection: no reply to the endSessions, and the next command is answered.
    const c = await rawClient();
    c.write(endSessions());
    const ping = opMsg({ ping: 1, $db: 'admin' });
    c.write(ping.bytes);
    const reply = await c.readFrame(20_000);
    expect(reply?.responseTo).toBe(ping.requestId);
    expect(replyDocument(reply!).ok).toBe(1);
  });

  it('before a tenant exists, is not answered either (a reply nobody asked for would answer the next command)', async () => {
    proxy = await startTestProxy({ listeners: [{ name: 'handshake-only', listen: { host: '127.0.0.1', port: 0 }, tls: null, methods: [], staticTenant: null }] });
    const c = await rawClient();
    c.write(endSessions());
    const ping = opMsg({ ping: 1, $db: 'admin' });
    c.write(ping.bytes);
    const reply = await c.readFrame(20_000);
    expect(reply?.responseTo).toBe(ping.requestId);
    expect(replyDocument(reply!).ok).toBe(1);
  });
});
