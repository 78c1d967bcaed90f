/**
 * Issue 15, a large insert's rewrite in slices (src/wire/copy-job.ts, ValidationScheduler.copy):
 * through the server, a batch of 256 KiB or more is stamped and forwarded with its copies put off
 * and run in slices. What reaches the upstream is every document stamped with the tenant, right
 * after `_id`, the rest as sent; a forged tenant anywhere in such a batch refuses the command
 * before anything is written.
 */
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

const pad = 'q'.repeat(2_000);

describe('a large insert rewritten in slices', () => {
  it('stamps every document (driver body array and kind-1 sequence) and refuses a forged tenant', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['acme', 'globex']);
    const db = uniqueDbName('sliced_insert');
    const direct = directClient();
    try {
      // The driver's insertMany: ~600 KB in one command.
      const docs = Array.from({ length: 300 }, (_, n) => ({ _id: `d-${n}` as never, n, pad }));
      const result = await tenants.clientFor('acme').db(db).collection('items').insertMany(docs);
      expect(result.insertedCount).toBe(300);

      // A raw kind-1 sequence of ~400 KB.
      const raw = await tenants.rawFor('acme');
      const seq = Array.from({ length: 200 }, (_, n) => ({ _id: `s-${n}`, n, pad }));
      raw.write(
        opMsg({ insert: 'items', ordered: true, $db: db }, { sequences: [{ id: 'documents', docs: seq }] }).bytes,
      );
      expect(replyDocument((await raw.readFrame(60_000))!)).toMatchObject({ ok: 1, n: 200 });

      const stored = await direct.db(db).collection('items').find({}).sort({ n: 1, _id: 1 }).toArray();
      expect(stored).toHaveLength(500);
      for (const doc of stored) {
        // The stamp right after _id, everything else byte for byte as sent.
        expect(Object.keys(doc)).toEqual(['_id', 'tenantId', 'n', 'pad']);
        expect(doc['tenantId']).toBe('acme');
        expect(doc['pad']).toBe(pad);
      }
      expect(await tenants.clientFor('globex').db(db).collection('items').countDocuments()).toBe(0);
      expect(await tenants.clientFor('acme').db(db).collection('items').countDocuments()).toBe(500);

      // A forged tenant as the last document of a ~400 KB batch: nothing written.
      const forged = [
        ...Array.from({ length: 199 }, (_, n) => ({ _id: `f-${n}`, n, pad })),
        { _id: 'f-last', tenantId: 'globex', pad },
      ];
      raw.write(
        opMsg({ insert: 'forged', ordered: true, $db: db }, { sequences: [{ id: 'documents', docs: forged }] }).bytes,
      );
      const refused = replyDocument((await raw.readFrame(60_000))!);
      expect(refused).toMatchObject({ ok: 0, code: 13 });
      expect(await direct.db(db).collection('forged').countDocuments()).toBe(0);
    } finally {
      await direct
        .db(db)
        .dropDatabase()
        .catch(() => undefined);
      await direct.close();
    }
  });
});
