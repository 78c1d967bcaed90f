/**
 * Requests waiting for their tenant's turn (src/server/turn-share.ts, issue 15 "connection
 * flood") change nothing a client sees: with a zero share every request of every connection
 * waits for a turn, and two tenants' driver workloads (inserts, finds, cursors over several
 * batches, updates, deletes, concurrent) give the same stored documents and answers as always,
 * pipelined requests of one connection are answered in order, and a client that leaves while
 * its requests wait disturbs no one. Read back directly from the upstream.
 */
import { describe, expect } from 'vitest';
import { MongoClient } from 'mongodb';
import { it } from '../helpers/fixtures.js';
import { metricValue } from '../helpers/metrics.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';
import { upstreamUri } from '../helpers/upstream.js';

const DB = 'turns';

describe('requests waiting for their turn', () => {
  it('two tenants, every request queued: the same documents and answers, each tenant only its own', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['acme', 'globex'], {}, { turnMS: 0 });
    const collection = `turns_${Date.now()}`;
    const work = async (tenant: string): Promise<unknown> => {
      const client = tenants.clientFor(tenant, { maxPoolSize: 8 });
      const coll = client.db(DB).collection<{ _id: string; i: number; tenant: string; small?: boolean }>(collection);
      await Promise.all(Array.from({ length: 40 }, (_, i) => coll.insertOne({ _id: `${tenant}-${i}`, i, tenant })));
      await coll.insertMany(Array.from({ length: 60 }, (_, i) => ({ _id: `${tenant}-m${i}`, i: 100 + i, tenant })));
      await coll.updateMany({ i: { $lt: 10 } }, { $set: { small: true } });
      await coll.deleteMany({ i: { $gte: 150 } });
      const viaCursor = await coll.find({}, { batchSize: 7 }).sort({ i: 1 }).toArray();
      const counts = await Promise.all(Array.from({ length: 20 }, () => coll.countDocuments({ small: true })));
      return { ids: viaCursor.map((d) => d._id), counts, sample: viaCursor[0] };
    };
    const [acme, globex] = (await Promise.all([work('acme'), work('globex')])) as Array<{
      ids: string[];
      counts: number[];
      sample: Record<string, unknown>;
    }>;
    for (const [tenant, result] of [
      ['acme', acme],
      ['globex', globex],
    ] as const) {
      expect(result!.ids).toEqual([
        ...Array.from({ length: 40 }, (_, i) => `${tenant}-${i}`),
        ...Array.from({ length: 50 }, (_, i) => `${tenant}-m${i}`),
      ]);
      expect(result!.counts).toEqual(Array.from({ length: 20 }, () => 10));
      expect(result!.sample).toEqual({ _id: `${tenant}-0`, i: 0, tenant, small: true });
    }
    // Read directly: every stored document carries its own tenant's stamp.
    const direct = new MongoClient(upstreamUri());
    try {
      const stored = await direct.db(DB).collection(collection).find({}).toArray();
      expect(stored).toHaveLength(180);
      for (const document of stored) expect(String(document._id).startsWith(`${document['tenantId']}-`)).toBe(true);
    } finally {
      await direct.close();
    }
    expect(await metricValue(tenants.proxy.proxy, 'tenant_limit_delays_total', { reason: 'turn' })).toBeGreaterThan(0);
  });

  it('pipelined requests are answered in order; a client leaving while its requests wait disturbs no one', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['acme', 'globex'], {}, { turnMS: 0 });
    const raw = await tenants.rawFor('acme');
    const frames = Array.from({ length: 20 }, (_, i) =>
      opMsg(i % 2 === 0 ? { ping: 1, $db: 'admin' } : { count: 'c', query: { i }, $db: DB }),
    );
    raw.write(Buffer.concat(frames.map((frame) => frame.bytes)));
    for (const frame of frames) {
      const reply = await raw.readFrame();
      expect(reply?.responseTo).toBe(frame.requestId);
      expect(replyDocument(reply!)).toMatchObject({ ok: 1 });
    }
    // Fifty clients send a burst of requests and leave before their answers.
    for (let c = 0; c < 50; c++) {
      const leaving = await tenants.rawFor('acme');
      leaving.write(Buffer.concat(Array.from({ length: 10 }, () => opMsg({ ping: 1, $db: 'admin' }).bytes)));
      leaving.socket.destroy();
    }
    const bystander = tenants.clientFor('globex');
    for (let i = 0; i < 20; i++) expect(await bystander.db('admin').command({ ping: 1 })).toMatchObject({ ok: 1 });
    expect(await raw.command(opMsg({ ping: 1, $db: 'admin' }))).toMatchObject({ ok: 1 });
  });
});
