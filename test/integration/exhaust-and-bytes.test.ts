/**
 * Behaviour FerretDB does not implement (exhaust getMore streams), tested against an in-process
 * fake upstream that records the exact bytes the proxy sends. The end-to-end exhaust case with
 * a real driver needs MongoDB and runs only when MONGODB_URI points at one.
 */
import { describe, expect } from 'vitest';
import { Long } from 'bson';
import { it } from '../helpers/fixtures.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';

const EXHAUST_ALLOWED = 1 << 16;
const MORE_TO_COME = 1 << 1;

describe('exhaust cursors', () => {
  it('relays every streamed reply in order, each answering the previous one', async ({ fakeUpstream, startProxy }) => {
    const fake = await fakeUpstream((message) => {
      if ('find' in message.body) return [{ cursor: { id: Long.fromNumber(7), ns: 'db.c', firstBatch: [] }, ok: 1 }];
      if ('getMore' in message.body && (message.flags & EXHAUST_ALLOWED) !== 0) {
        return [1, 2, 3].map((batch) => ({
          cursor: { id: Long.fromNumber(batch === 3 ? 0 : 7), ns: 'db.c', nextBatch: [{ batch }] },
          ok: 1,
        }));
      }
      return [{ ok: 1 }];
    });
    const proxy = await startProxy({ upstream: { uri: fake.uri } });
    const c = await proxy.raw();
    // The cursor must be this tenant's (catalogue 20): open it first.
    expect((await c.command(opMsg({ find: 'c', $db: 'db' }))).ok).toBe(1);
    const request = opMsg({ getMore: Long.fromNumber(7), collection: 'c', $db: 'db' }, { flags: EXHAUST_ALLOWED });
    c.write(request.bytes);

    const frames = [await c.readFrame(), await c.readFrame(), await c.readFrame()];
    expect(frames.map((f) => replyDocument(f!).cursor.nextBatch[0].batch)).toEqual([1, 2, 3]);
    expect(frames[0]!.responseTo).toBe(request.requestId);
    expect(frames[1]!.responseTo).toBe(frames[0]!.requestId);
    expect(frames[2]!.responseTo).toBe(frames[1]!.requestId);
    const flags = frames.map((f) => f!.bytes.readUInt32LE(16) & MORE_TO_COME);
    expect(flags).toEqual([MORE_TO_COME, MORE_TO_COME, 0]);

    // The request reached the upstream with exhaustAllowed intact.
    expect(fake.received[1]!.flags & EXHAUST_ALLOWED).toBe(EXHAUST_ALLOWED);
    // And the connection is back in request/response step afterwards.
    expect((await c.command(opMsg({ ping: 1, $db: 'admin' }))).ok).toBe(1);
    c.close();
  });
});

describe('upstream connection reuse', () => {
  it('never reuses an upstream connection whose reply is still outstanding when its client leaves', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream((message) =>
      message.body.comment === 'slow' ? { delayMs: 100, replies: [{ ok: 1, who: 'slow' }] } : [{ ok: 1, who: 'fast' }],
    );
    const proxy = await startProxy({ upstream: { uri: fake.uri, maxIdleConnections: 4 } });
    for (let round = 0; round < 5; round += 1) {
      const leaving = await proxy.raw();
      leaving.write(opMsg({ ping: 1, comment: 'slow', $db: 'admin' }).bytes);
      await new Promise((resolve) => setTimeout(resolve, 10));
      leaving.close();
      const next = await proxy.raw();
      // Must be answered by its own request, never by the slow reply meant for the one who left.
      expect((await next.command(opMsg({ ping: 1, comment: 'fast', $db: 'admin' }))).who).toBe('fast');
      next.close();
    }
  });
});

describe('bytes sent upstream', () => {
  it('never forwards client metadata, hello or auth commands', async ({ fakeUpstream, startProxy }) => {
    const fake = await fakeUpstream(() => [{ ok: 1 }]);
    const proxy = await startProxy({ upstream: { uri: fake.uri } });
    const client = await proxy.client({ appName: 'secret-app-name' });
    await client.db('x').command({ ping: 1 });
    await client.db('admin').command({ hello: 1 });
    await client.db('admin').command({ isMaster: 1 });
    const forwarded = fake.received.map((m) => Object.keys(m.body)[0]);
    expect(forwarded).toContain('ping');
    expect(forwarded).not.toContain('hello');
    expect(forwarded).not.toContain('isMaster');
    for (const message of fake.received) expect(message.bytes.includes(Buffer.from('secret-app-name'))).toBe(false);
  });

  it('forwards a moreToCome (w:0) request asking the upstream for a reply it drops: the client gets none', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream(() => [{ ok: 1 }]);
    const proxy = await startProxy({ upstream: { uri: fake.uri } });
    const c = await proxy.raw();
    c.write(
      opMsg({ insert: 'c', documents: [{ a: 1 }], writeConcern: { w: 0 }, $db: 'db' }, { flags: MORE_TO_COME }).bytes,
    );
    const ping = opMsg({ ping: 1, $db: 'admin' });
    c.write(ping.bytes);
    // The first frame the client sees answers its ping: the insert's reply never reaches it.
    expect((await c.readFrame(20_000))?.responseTo).toBe(ping.requestId);
    // Upstream, the insert went out acknowledged, so a pooled connection never carries a stray reply.
    expect('insert' in fake.received[0]!.body).toBe(true);
    expect(fake.received[0]!.flags & MORE_TO_COME).toBe(0);
    c.close();
  });

  it('strips a verified checksum when forwarding and clears unknown optional bits', async ({
    fakeUpstream,
    startProxy,
  }) => {
    const fake = await fakeUpstream(() => [{ ok: 1 }]);
    const proxy = await startProxy({ upstream: { uri: fake.uri } });
    const c = await proxy.raw();
    expect((await c.command(opMsg({ ping: 1, $db: 'admin' }, { flags: 1 << 20 }))).ok).toBe(1);
    expect(fake.received[0]!.flags).toBe(0);
    c.close();
  });
});
