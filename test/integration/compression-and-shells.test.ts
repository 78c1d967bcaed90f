/**
 * OP_COMPRESSED in both directions with every codec, negotiated through hello, and mongosh
 * working through the proxy as it does direct.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { MongoClient } from 'mongodb';
import { MongoClient as MongoClient6 } from 'mongodb6';
import { scrape } from '../helpers/metrics.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';
import { RawClient, opMsg, rawFrame, replyDocument } from '../helpers/raw-client.js';
import { MONGOSH } from '../helpers/mongosh.js';

const run = promisify(execFile);
let proxy: TestProxy;
let direct: MongoClient;
const dbName = uniqueDbName('compression');

async function compressedCount(compressor: string, direction: 'received' | 'sent'): Promise<number> {
  const text = await scrape(proxy.proxy);
  const pattern = new RegExp(
    `mongo_tenant_proxy_compressed_messages_total\\{[^}]*compressor="${compressor}"[^}]*direction="${direction}"[^}]*\\} (\\d+)`,
  );
  return Number(pattern.exec(text)?.[1] ?? 0);
}

beforeAll(async () => {
  proxy = await startTestProxy();
  direct = await directClient();
});

afterAll(async () => {
  await direct?.close();
  await proxy?.stop();
});

describe('compression', () => {
  for (const compressor of ['snappy', 'zlib'] as const) {
    it(`round-trips documents with ${compressor} (driver 7), compressed both ways`, async () => {
      const before = [await compressedCount(compressor, 'received'), await compressedCount(compressor, 'sent')];
      const client = new MongoClient(`${proxy.uri}&compressors=${compressor}`);
      try {
        const coll = client.db(dbName).collection(compressor);
        const big = 'z'.repeat(50_000);
        await coll.insertMany(Array.from({ length: 20 }, (_, i) => ({ i, big })));
        const docs = await coll.find({}).sort({ i: 1 }).toArray();
        expect(docs).toHaveLength(20);
        expect(docs[19]?.big).toBe(big);
      } finally {
        await client.close();
      }
      expect(await compressedCount(compressor, 'received')).toBeGreaterThan(before[0]!);
      expect(await compressedCount(compressor, 'sent')).toBeGreaterThan(before[1]!);
      expect(await direct.db(dbName).collection(compressor).countDocuments()).toBe(20);
    });
  }

  it('round-trips documents with zstd (driver 6.x, the version whose zstd binding installs here)', async () => {
    const before = await compressedCount('zstd', 'received');
    const client = new MongoClient6(`${proxy.uri}&compressors=zstd`);
    try {
      const coll = client.db(dbName).collection('zstd');
      await coll.insertMany(Array.from({ length: 10 }, (_, i) => ({ i, pad: 'q'.repeat(10_000) })));
      expect(await coll.countDocuments()).toBe(10);
    } finally {
      await client.close();
    }
    expect(await compressedCount('zstd', 'received')).toBeGreaterThan(before);
    expect(await direct.db(dbName).collection('zstd').countDocuments()).toBe(10);
  });

  it('negotiates only the compressors both sides support, in the client order', async () => {
    const c = await RawClient.connect(proxy.proxy.address.host, proxy.proxy.address.port);
    const doc = await c.command(opMsg({ hello: 1, compression: ['lz4', 'zlib', 'snappy'], $db: 'admin' }));
    expect(doc.compression).toEqual(['zlib', 'snappy']);
    c.close();
  });

  it('answers a noop-compressed request', async () => {
    const inner = opMsg({ ping: 1, $db: 'admin' }).bytes;
    const prefix = Buffer.alloc(9);
    prefix.writeInt32LE(2013, 0);
    prefix.writeInt32LE(inner.length - 16, 4);
    prefix[8] = 0;
    const c = await RawClient.connect(proxy.proxy.address.host, proxy.proxy.address.port);
    c.write(rawFrame(2012, Buffer.concat([prefix, inner.subarray(16)])).bytes);
    const reply = await c.readFrame();
    expect(reply).not.toBeNull();
    expect(replyDocument(reply!).ok).toBe(1);
    c.close();
  });
});

describe('mongosh', () => {
  it('inserts and reads through the proxy exactly as direct', async () => {
    const script = `
      const c = db.getSiblingDB('${dbName}').shell;
      c.insertMany([{k: 1}, {k: 2}, {k: 3}]);
      print(JSON.stringify(c.find({}, {_id: 0, tenantId: 0}).sort({k: 1}).toArray()));
      print(JSON.stringify(c.aggregate([{$group: {_id: null, s: {$sum: '$k'}}}]).toArray()));
    `;
    const viaProxy = await run(MONGOSH, ['--quiet', '--norc', proxy.uri, '--eval', script], {
      timeout: 60_000,
    });
    const lines = viaProxy.stdout.trim().split('\n');
    expect(JSON.parse(lines[0]!)).toEqual([{ k: 1 }, { k: 2 }, { k: 3 }]);
    expect(JSON.parse(lines[1]!)).toEqual([{ _id: null, s: 6 }]);
    expect(await direct.db(dbName).collection('shell').countDocuments()).toBe(3);
  }, 90_000);
});
