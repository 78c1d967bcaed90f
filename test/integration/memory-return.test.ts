/**
 * Issue 15, "Memory not returned": once a big request is answered, nothing in the proxy references
 * its buffers, so the next garbage collection gives them back (the noisy-neighbour suite measures
 * the RSS of a separate proxy process; here the proxy runs in-process and the check is the
 * ArrayBuffer memory after a forced collection, test/helpers/memory.ts). A refused request (never
 * forwarded) and a forwarded one, each bigger than anything else the test process holds.
 */
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { MiB, settledMemory } from '../helpers/memory.js';
import { opMsg, type RawClient, replyDocument } from '../helpers/raw-client.js';
import { uniqueDbName } from '../helpers/upstream.js';

/** Builds and sends the frame in its own frame of the stack, so this process keeps no reference to it. */
function sendOnce(client: RawClient, build: () => Buffer): number {
  const frame = build();
  client.write(frame);
  return frame.length;
}

/** ArrayBuffer memory the proxy (and this process) holds after `request` is answered, against before. */
async function retainedAfter(client: RawClient, build: () => Buffer): Promise<{ sent: number; retained: number }> {
  client.write(opMsg({ ping: 1, $db: 'admin' }).bytes);
  expect(replyDocument((await client.readFrame())!)).toMatchObject({ ok: 1 });
  const baseline = await settledMemory();
  const sent = sendOnce(client, build);
  const reply = await client.readFrame(60_000);
  expect(reply, 'the big request is answered').not.toBeNull();
  replyDocument(reply!);
  const after = await settledMemory();
  return { sent, retained: after.arrayBuffers - baseline.arrayBuffers };
}

describe('memory after a big request is answered', () => {
  it('a ~9 MiB find refused for $where (never forwarded) leaves none of its bytes held', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['acme']);
    const client = await tenants.rawFor('acme');
    const { sent, retained } = await retainedAfter(client, () => {
      const tags = Array.from({ length: 800_000 }, (_, i) => i);
      return opMsg({ find: 'flood', filter: { tags: { $in: tags }, $where: 'true' }, $db: 'app' }).bytes;
    });
    expect(sent).toBeGreaterThan(8 * MiB);
    expect(retained, `ArrayBuffer bytes still held after a ${sent}-byte refused request`).toBeLessThan(2 * MiB);
  });

  it('a ~45 MB insert forwarded upstream leaves none of its bytes held (nor copies made of it)', async ({
    startTenantProxy,
  }) => {
    const tenants = await startTenantProxy(['acme'], { limits: { maxMessageSizeBytes: 48_000_000 } });
    const client = await tenants.rawFor('acme');
    const db = uniqueDbName('memory_return');
    const { sent, retained } = await retainedAfter(client, () => {
      const pad = 'm'.repeat(100_000);
      const docs = Array.from({ length: 450 }, (_, n) => ({ _id: `big-${n}`, pad }));
      return opMsg({ insert: 'big', ordered: true, $db: db }, { sequences: [{ id: 'documents', docs }] }).bytes;
    });
    expect(sent).toBeGreaterThan(40 * MiB);
    expect(retained, `ArrayBuffer bytes still held after a ${sent}-byte forwarded insert`).toBeLessThan(2 * MiB);
  });
});
