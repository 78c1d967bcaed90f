/**
 * Issue 15: a reply still being read off the upstream counts in limits.maxBufferedBytes (its
 * frame is charged to the requesting client connection from the moment the proxy assembles it),
 * so a tenant whose huge replies are in flight is shed before they are even read in full, while
 * another tenant works; the shed leaves no upstream connection half-read in the pool.
 *
 * On FerretDB, through a fault proxy that slows the upstream's bytes down (so a ~12 MB reply takes
 * seconds to arrive) and raw sockets for the abuser, the official driver for the bystander. No
 * time is asserted: that the reply was charged before it was read in full is read from the bytes
 * the fault proxy had passed when the budget's gauge showed the reply (before this change the
 * gauge could only show it once every byte of it had arrived).
 */
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { type FaultProxy, startFaultProxy, targetFromUri } from '../helpers/fault-proxy.js';
import { it } from '../helpers/fixtures.js';
import { MiB } from '../helpers/memory.js';
import { metricValue } from '../helpers/metrics.js';
import { RawClient, opMsg, replyDocument } from '../helpers/raw-client.js';
import { upstreamUri } from '../helpers/upstream.js';
import { sleep, until } from '../helpers/wait.js';

const DB = 'replycharge';
const DOCUMENTS = 24;
const DOCUMENT_BYTES = 512 * 1024;

let faults: FaultProxy;

beforeAll(async () => {
  faults = await startFaultProxy({ target: targetFromUri(upstreamUri()) });
});

afterAll(async () => {
  await faults?.close();
});

describe('a huge reply being read for a client that does not read', () => {
  it("is charged to the client's tenant while it arrives; over its share that tenant is shed, the bystander works", async ({
    startTenantProxy,
  }) => {
    const budget = 16 * MiB;
    const tenants = await startTenantProxy(['acme', 'globex'], {
      upstream: { uri: faults.uriFor(upstreamUri()), maxPoolSize: 8 },
      limits: { maxBufferedBytes: budget, clientIdleTimeoutMS: 120_000 },
    });
    const proxy = tenants.proxy.proxy;
    const acme = tenants.clientFor('acme');
    const collection = `huge_${Date.now()}`;
    const pad = 'h'.repeat(DOCUMENT_BYTES);
    for (let i = 0; i < DOCUMENTS; i += 1) await acme.db(DB).collection(collection).insertOne({ i, pad });
    const replyBytes = DOCUMENTS * DOCUMENT_BYTES;

    const bystander: MongoClient = tenants.clientFor('globex', { maxPoolSize: 2 });
    const mine = bystander.db(DB).collection('bystander');
    await mine.insertOne({ mine: true });
    expect(await mine.countDocuments()).toBe(1);

    // From now on the upstream's bytes arrive at 1 MiB/s per connection: a ~12 MiB reply takes seconds.
    faults.setBandwidth(MiB);
    const find = opMsg({ find: collection, filter: {}, batchSize: 1000, $db: DB }).bytes;
    const abusers: RawClient[] = [];
    const sendUnread = async (): Promise<RawClient> => {
      const raw = await tenants.rawFor('acme');
      raw.socket.pause();
      raw.write(find);
      abusers.push(raw);
      return raw;
    };
    let maxBuffered = 0;
    const buffered = async (): Promise<number> => {
      const value = await metricValue(proxy, 'buffered_bytes');
      maxBuffered = Math.max(maxBuffered, value);
      return value;
    };

    // 1. The first huge reply is charged while it arrives: the gauge shows (nearly) all of it while
    // the fault proxy has passed less than the whole reply.
    const passedBefore = faults.stats().bytesUpstreamToClient;
    await sendUnread();
    let passedWhenCharged = 0;
    await until(
      async () => {
        const charged = (await buffered()) >= replyBytes - MiB;
        passedWhenCharged = faults.stats().bytesUpstreamToClient - passedBefore;
        return charged;
      },
      { timeoutMS: 60_000, intervalMS: 20, message: 'the reply in flight was never charged' },
    );
    expect(passedWhenCharged).toBeLessThan(replyBytes);

    // 2. A second one takes acme past the budget while both are still arriving: one of acme's
    // connections is shed; the bystander's commands all succeed meanwhile.
    const errors: unknown[] = [];
    let bystanderOps = 0;
    let stop = false;
    const bystanding = (async () => {
      while (!stop) {
        try {
          expect(await mine.countDocuments()).toBe(1);
          bystanderOps += 1;
        } catch (error) {
          errors.push(error);
        }
        await sleep(20);
      }
    })();
    await sendUnread();
    await until(
      async () => {
        await buffered();
        return (await metricValue(proxy, 'client_connections_shed_total', { reason: 'buffer_budget' })) > 0;
      },
      { timeoutMS: 60_000, intervalMS: 20, message: 'acme was never shed' },
    );
    // One charge may pass the budget before the shed; never by more than a reply.
    expect(maxBuffered).toBeLessThanOrEqual(budget + replyBytes + MiB);
    await until(() => abusers.some((raw) => raw.closed), { message: 'the shed connection stayed open' });
    expect(abusers.filter((raw) => raw.closed)).toHaveLength(1);

    // 3. Full speed again: the survivor gets its whole reply; the shed one got nothing.
    faults.setBandwidth(null);
    for (const raw of abusers) raw.socket.resume();
    const survivors = abusers.filter((raw) => !raw.closed);
    expect(survivors).toHaveLength(1);
    const reply = await (survivors[0] as RawClient).readFrame(60_000);
    expect(reply).not.toBeNull();
    const document = replyDocument(reply as NonNullable<typeof reply>);
    expect(document['ok']).toBe(1);
    expect((document['cursor'] as { firstBatch: unknown[] }).firstBatch).toHaveLength(DOCUMENTS);
    const victim = abusers.find((raw) => raw.closed) as RawClient;
    expect(await victim.readFrame(1)).toBeNull();

    // 4. The pool holds no half-read connection: many small commands over the bystander's pool
    // and acme's own all answer correctly, and the budget is back to 0 once the abusers leave.
    stop = true;
    await bystanding;
    for (let i = 0; i < 40; i += 1) {
      expect(await mine.countDocuments()).toBe(1);
      expect(
        await acme
          .db(DB)
          .collection(collection)
          .countDocuments({ i: { $lt: 3 } }),
      ).toBe(3);
    }
    for (const raw of abusers) raw.close();
    await until(async () => (await metricValue(proxy, 'buffered_bytes')) === 0, { timeoutMS: 20_000 });
    expect(errors).toEqual([]);
    expect(bystanderOps).toBeGreaterThan(0);
    console.info(
      `[reply-charge] charged at ${(passedWhenCharged / MiB).toFixed(1)} of ${(replyBytes / MiB).toFixed(1)} MiB ` +
        `received; buffered max ${(maxBuffered / MiB).toFixed(1)} MiB of ${budget / MiB}; bystander ${bystanderOps} ops, ` +
        `${errors.length} errors`,
    );
  }, 180_000);
});
