/**
 * Upstream.forward against a scriptable fake server: the failure paths found by the review of
 * issue 5 (interrupting in-use connections when heartbeats time out, transaction pins the server
 * already aborted, wait-queue entries of clients that left, retry labels on upstreams that do not
 * de-duplicate writes).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ProxyError } from '../../../src/errors.js';
import { commandTraits } from '../../../src/upstream/command-traits.js';
import { Upstream, type UpstreamSession } from '../../../src/upstream/upstream.js';
import { Binary, Long, type Document, serialize } from '../../../src/wire/bson.js';
import { FAKE_HELLO, type FakeHandler, type FakeUpstream, startFakeUpstream } from '../../helpers/fake-upstream.js';
import { opMsg } from '../../helpers/raw-client.js';

const servers: FakeUpstream[] = [];
const upstreams: Upstream[] = [];

afterEach(async () => {
  for (const upstream of upstreams.splice(0)) await upstream.close();
  for (const server of servers.splice(0)) await server.close();
});

async function fakeUpstream(
  handler: (name: string, ...args: Parameters<FakeHandler>) => void,
  options: Partial<ConstructorParameters<typeof Upstream>[0]> = {},
  query = '',
): Promise<{ upstream: Upstream; server: FakeUpstream }> {
  const server = await startFakeUpstream((m, peer) => handler(Object.keys(m.body)[0] ?? '', m, peer), {
    answerHandshake: false,
  });
  servers.push(server);
  const upstream = new Upstream({
    uri: `mongodb://127.0.0.1:${server.port}/${query}`,
    connectTimeoutMS: 2_000,
    maxIdleConnections: 4,
    idleTimeoutMS: 60_000,
    ...options,
  });
  upstreams.push(upstream);
  await upstream.start();
  return { upstream, server };
}

function forward(
  upstream: Upstream,
  session: UpstreamSession,
  doc: Document,
  signal?: AbortSignal,
): Promise<Document[]> {
  const replies: Document[] = [];
  const body = serialize(doc);
  return upstream
    .forward({
      frame: opMsg(doc, { requestId: 0 }).bytes,
      traits: commandTraits(body),
      tenant: 't',
      session,
      fireAndForget: false,
      signal,
      onReply: (reply) => replies.push(reply as unknown as Document),
    })
    .then(() => replies);
}

async function rejection(promise: Promise<unknown>): Promise<ProxyError> {
  const error = await promise.then(
    () => new Error('expected a rejection'),
    (e: unknown) => e,
  );
  if (!ProxyError.is(error)) throw error;
  return error;
}

const lsid = { id: new Binary(Buffer.alloc(16, 7), 4) };

describe('Upstream.forward hardening (review)', () => {
  it('a heartbeat that times out interrupts the connections in use on that server (CMAP interruptInUseConnections)', async () => {
    let silent = false;
    const { upstream } = await fakeUpstream(
      (name, m, peer) => {
        if (name === 'hello' || name === 'isMaster') {
          if (!silent)
            void peer.reply(
              { ...FAKE_HELLO, setName: 'rs', hosts: [`127.0.0.1:${servers[0]!.port}`], setVersion: 1 },
              m,
            );
        } else if (name === 'insert') {
          silent = true; // the server goes half-open: nothing answers any more
        } else {
          void peer.reply({ ok: 1 }, m);
        }
      },
      { heartbeatFrequencyMS: 200, connectTimeoutMS: 1_000 },
      '?replicaSet=rs',
    );
    expect(upstream.info.kind).toBe('replicaSet');
    const error = await rejection(
      forward(upstream, upstream.openSession(), { insert: 'c', documents: [{ a: 1 }], $db: 'db' }),
    );
    expect(error.code).toBe(89);
    expect(error.labels).not.toContain('RetryableWriteError');
    expect(upstream.stats.inUse).toBe(0);
  }, 30_000);

  it('a transaction the server aborted (TransientTransactionError / NoSuchTransaction) releases its pinned connection', async () => {
    const { upstream } = await fakeUpstream((name, m, peer) => {
      if (name === 'find') {
        void peer.reply(
          {
            ok: 0,
            code: 251,
            codeName: 'NoSuchTransaction',
            errmsg: 'aborted',
            errorLabels: ['TransientTransactionError'],
          },
          m,
        );
      } else {
        void peer.reply({ ok: 1, n: 1 }, m);
      }
    });
    const session = upstream.openSession();
    const txn = { lsid, txnNumber: Long.fromNumber(1), autocommit: false };
    await forward(upstream, session, { insert: 'c', documents: [{ a: 1 }], ...txn, startTransaction: true, $db: 'db' });
    expect(upstream.stats.pinned).toBe(1);
    await forward(upstream, session, { find: 'c', ...txn, $db: 'db' });
    // The driver may never send abortTransaction for it (or send it on another connection):
    // the pin must not hold a pool slot until the client connection closes.
    expect(upstream.stats).toMatchObject({ pinned: 0, inUse: 0 });
  });

  it('a client that leaves while waiting for a pool connection leaves the wait queue at once', async () => {
    const { upstream } = await fakeUpstream(
      (name, m, peer) => {
        if (name !== 'find') void peer.reply({ ok: 1 }, m); // find: never answered, holds the only connection
      },
      { maxPoolSize: 1, waitQueueTimeoutMS: 60_000 },
    );
    const holder = forward(upstream, upstream.openSession(), { find: 'c', $db: 'db' }).catch(() => undefined);
    await expect.poll(() => upstream.stats.inUse).toBe(1);
    const controller = new AbortController();
    const waiting = rejection(forward(upstream, upstream.openSession(), { count: 'c', $db: 'db' }, controller.signal));
    await expect.poll(() => upstream.stats.waiting).toBe(1);
    controller.abort();
    await expect.poll(() => upstream.stats.waiting).toBe(0);
    await waiting;
    await upstream.close();
    await holder;
  });

  it('no RetryableWriteError on a lost txnNumber write when the upstream does not de-duplicate (standalone / FerretDB)', async () => {
    const { upstream } = await fakeUpstream((name, m, peer) => {
      if (name === 'insert') peer.socket.destroy();
      else void peer.reply({ ok: 1 }, m);
    });
    expect(upstream.info.kind).toBe('standalone');
    const error = await rejection(
      forward(upstream, upstream.openSession(), {
        insert: 'c',
        documents: [{ a: 1 }],
        lsid,
        txnNumber: Long.fromNumber(1),
        $db: 'db',
      }),
    );
    expect(error.code).toBe(9001);
    // A driver retrying on that label would apply the write a second time.
    expect(error.labels).not.toContain('RetryableWriteError');
  });

  it('the client connection that started a transaction leaves while another one runs a command of it: that command completes', async () => {
    // Drivers spread one session's commands over their connections, so the pin's owner (the
    // client connection that sent startTransaction) may close while another runs on the pin.
    let answerFind: (() => void) | undefined;
    const { upstream } = await fakeUpstream((name, m, peer) => {
      if (name === 'find')
        answerFind = () =>
          void peer.reply({ ok: 1, cursor: { id: Long.fromNumber(0), ns: 'db.c', firstBatch: [] } }, m);
      else void peer.reply({ ok: 1, n: 1 }, m);
    });
    const owner = upstream.openSession();
    const other = upstream.openSession();
    const txn = { lsid, txnNumber: Long.fromNumber(1), autocommit: false };
    await forward(upstream, owner, { insert: 'c', documents: [{ a: 1 }], ...txn, startTransaction: true, $db: 'db' });
    const running = forward(upstream, other, { find: 'c', ...txn, $db: 'db' });
    await expect.poll(() => answerFind !== undefined).toBe(true);
    upstream.endSession(owner);
    answerFind!();
    expect(await running).toHaveLength(1);
    await expect.poll(() => upstream.stats).toMatchObject({ pinned: 0, inUse: 0, idle: 1 });
  });

  it('a secondary that is briefly unknown (one failed heartbeat) keeps its cursors: the getMore still goes there', async () => {
    let failHello = false;
    const member =
      (secondary: boolean): FakeHandler =>
      (m, peer) => {
        const name = Object.keys(m.body)[0] ?? '';
        const hosts = servers.slice(0, 2).map((s) => `127.0.0.1:${s.port}`);
        if (name === 'hello' || name === 'isMaster') {
          if (secondary && failHello) {
            failHello = false;
            peer.socket.destroy();
            return;
          }
          void peer.reply(
            { ...FAKE_HELLO, setName: 'rs', hosts, setVersion: 1, isWritablePrimary: !secondary, secondary },
            m,
          );
        } else if (name === 'find') {
          void peer.reply({ ok: 1, cursor: { id: Long.fromNumber(42), ns: 'db.c', firstBatch: [] } }, m);
        } else if (name === 'getMore') {
          void peer.reply(
            secondary
              ? { ok: 1, cursor: { id: Long.fromNumber(0), ns: 'db.c', nextBatch: [] } }
              : { ok: 0, code: 43, codeName: 'CursorNotFound' },
            m,
          );
        } else {
          void peer.reply({ ok: 1 }, m);
        }
      };
    const primary = await startFakeUpstream(member(false), { answerHandshake: false });
    const secondary = await startFakeUpstream(member(true), { answerHandshake: false });
    servers.push(primary, secondary);
    const upstream = new Upstream({
      uri: `mongodb://127.0.0.1:${primary.port}/?replicaSet=rs`,
      connectTimeoutMS: 2_000,
      maxIdleConnections: 4,
      idleTimeoutMS: 60_000,
      heartbeatFrequencyMS: 100,
    });
    upstreams.push(upstream);
    await upstream.start();
    const secondaryKey = `127.0.0.1:${secondary.port}`;
    await expect.poll(() => upstream.topology[secondaryKey]).toBe('secondary');
    const session = upstream.openSession();
    await forward(upstream, session, { find: 'c', $readPreference: { mode: 'secondary' }, $db: 'db' });
    failHello = true;
    await expect.poll(() => failHello).toBe(false); // the failed check marked it unknown
    await expect.poll(() => upstream.topology[secondaryKey]).toBe('secondary');
    const replies = await forward(upstream, session, { getMore: Long.fromNumber(42), collection: 'c', $db: 'db' });
    expect(replies).toHaveLength(1);
    const getMores = (server: FakeUpstream): number =>
      server.peers.flatMap((p) => p.received).filter((m) => 'getMore' in m.body).length;
    expect(getMores(secondary)).toBe(1);
    expect(getMores(primary)).toBe(0);
  });

  it('an abandoned transaction (no commit, no abort, client connection still open) gives its pinned connection back', async () => {
    const { upstream } = await fakeUpstream((_name, m, peer) => void peer.reply({ ok: 1, n: 1 }, m), {
      abandonedPinMS: 300,
    });
    const session = upstream.openSession();
    const txn = { lsid, txnNumber: Long.fromNumber(1), autocommit: false };
    await forward(upstream, session, { insert: 'c', documents: [{ a: 1 }], ...txn, startTransaction: true, $db: 'db' });
    expect(upstream.stats.pinned).toBe(1);
    await expect.poll(() => upstream.stats, { timeout: 10_000 }).toMatchObject({ pinned: 0, inUse: 0, idle: 1 });
  });

  it('close() during an in-flight request and a monitored topology: the request fails at once, every socket closes', async () => {
    const { upstream, server } = await fakeUpstream(
      (name, m, peer) => {
        if (name === 'hello' || name === 'isMaster')
          void peer.reply({ ...FAKE_HELLO, setName: 'rs', hosts: [`127.0.0.1:${servers[0]!.port}`], setVersion: 1 }, m);
        else if (name !== 'find') void peer.reply({ ok: 1 }, m); // find: never answered
      },
      { heartbeatFrequencyMS: 100 },
      '?replicaSet=rs',
    );
    const pending = rejection(forward(upstream, upstream.openSession(), { find: 'c', $db: 'db' }));
    await expect.poll(() => server.peers.some((p) => p.received.some((m) => 'find' in m.body))).toBe(true);
    await upstream.close();
    const error = await pending;
    expect(error.code).not.toBe(undefined);
    expect(upstream.stats).toMatchObject({ open: 0, inUse: 0, idle: 0, pending: 0, waiting: 0, pinned: 0 });
    // Pool and monitoring sockets alike are gone (the fake server sees them all close).
    await expect
      .poll(() => server.peers.filter((p) => !p.socket.destroyed && p.socket.readyState !== 'closed').length)
      .toBe(0);
  });

  it('close() while a passthrough connection is being opened: it is closed when it lands, never leaked', async () => {
    let hellos = 0;
    let answerLate: (() => void) | undefined;
    const { upstream, server } = await fakeUpstream((name, m, peer) => {
      if (name === 'hello' || name === 'isMaster') {
        hellos++;
        if (hellos === 1) void peer.reply(FAKE_HELLO, m);
        else answerLate = () => void peer.reply(FAKE_HELLO, m);
      } else {
        void peer.reply({ ok: 1 }, m);
      }
    });
    const opening = upstream.openUnauthenticated().then(
      (connection) => connection,
      (error: unknown) => error,
    );
    await expect.poll(() => answerLate !== undefined).toBe(true);
    await upstream.close();
    answerLate!();
    const result = await opening;
    expect(ProxyError.is(result) && result.codeName).toBe('ShutdownInProgress');
    expect(upstream.stats.dedicated).toBe(0);
    await expect.poll(() => server.peers.filter((p) => !p.socket.destroyed).length).toBe(0);
  });
});
