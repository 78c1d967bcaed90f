/**
 * A client that opens an exhaust stream and then stops reading holds the pooled upstream
 * connection of that stream (it is paused for backpressure). Review of issue 5: it must not hold
 * it forever, or a handful of such clients starve every tenant sharing the pool.
 */
import { Long } from 'bson';
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';

const EXHAUST_ALLOWED = 1 << 16;

describe('a client that stops reading an exhaust stream', () => {
  it('is closed after clientIdleTimeoutMS, which frees the pool connection for other clients', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const big = 'x'.repeat(1024 * 1024);
    const fake = await fakeUpstream((message) => {
      if ('find' in message.body) return [{ cursor: { id: Long.fromNumber(7), ns: 'db.c', firstBatch: [] }, ok: 1 }];
      if ('getMore' in message.body && (message.flags & EXHAUST_ALLOWED) !== 0) {
        // Far more than the socket buffers between the proxy and a client that does not read.
        return Array.from({ length: 64 }, (_, batch) => ({
          cursor: { id: Long.fromNumber(batch === 63 ? 0 : 7), ns: 'db.c', nextBatch: [{ batch, big }] },
          ok: 1,
        }));
      }
      return [{ ok: 1 }];
    });
    const proxy = await startProxy({
      upstream: { uri: fake.uri, maxPoolSize: 1, waitQueueTimeoutMS: 60_000 },
      limits: { clientIdleTimeoutMS: 1_000 },
    });
    const stalled = await proxy.raw();
    expect((await stalled.command(opMsg({ find: 'c', $db: 'db' }))).ok).toBe(1);
    stalled.socket.pause(); // from now on it never reads
    const closed = new Promise<void>((resolve) => stalled.socket.once('close', () => resolve()));
    stalled.write(opMsg({ getMore: Long.fromNumber(7), collection: 'c', $db: 'db' }, { flags: EXHAUST_ALLOWED }).bytes);
    await expect.poll(() => fake.received.some((m) => 'getMore' in m.body), { timeout: 20_000 }).toBe(true);

    // Another client shares the pool of one connection: it is served once the stalled one is gone.
    const other = await proxy.raw();
    try {
      other.write(opMsg({ count: 'c', $db: 'db' }).bytes);
      const reply = await other.readFrame(40_000);
      expect(reply === null ? undefined : replyDocument(reply).ok).toBe(1);
    } finally {
      other.close();
    }
    stalled.socket.resume();
    await closed;
  }, 60_000);
});
