import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, ProxyError } from '../../../src/errors.js';
import { UpstreamConnection, requestCommandName } from '../../../src/upstream/connection.js';
import { deserialize, type Document } from '../../../src/wire/bson.js';
import { type FakeHandler, type FakeUpstream, startFakeUpstream } from '../../helpers/fake-upstream.js';
import { opMsg } from '../../helpers/raw-client.js';

let server: FakeUpstream | undefined;
const connections: UpstreamConnection[] = [];

afterEach(async () => {
  for (const c of connections.splice(0)) c.close();
  await server?.close();
  server = undefined;
});

/** An OP_MSG frame with the given ids and flags. */
const frameOf = (doc: Document, requestId: number, responseTo: number, flags = 0): Buffer =>
  opMsg(doc, { requestId, responseTo, flags }).bytes;

async function setup(handler: FakeHandler): Promise<{ server: FakeUpstream; connection: UpstreamConnection }> {
  // Every message goes to the handler: there is no handshake at this level.
  server = await startFakeUpstream(handler, { answerHandshake: false });
  const connection = await UpstreamConnection.connect({ address: server.address, connectTimeoutMS: 2_000 });
  connections.push(connection);
  return { server, connection };
}

const bodyOf = (reply: Buffer) => deserialize(reply.subarray(21));

async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );
}

describe('UpstreamConnection request/reply', () => {
  it('numbers requests itself and delivers the matching reply', async () => {
    const { server: s, connection } = await setup((m, peer) => void peer.reply({ ok: 1, echo: m.body.ping }, m));
    const replies: [number, boolean][] = [];
    const frame = frameOf({ ping: 7, $db: 'admin' }, 12345, 0);
    await connection.request(frame, (reply, more) => replies.push([bodyOf(reply).echo as number, more]));
    await connection.request(frameOf({ ping: 8, $db: 'admin' }, 12345, 0), (reply, more) =>
      replies.push([bodyOf(reply).echo as number, more]),
    );
    expect(replies).toEqual([
      [7, false],
      [8, false],
    ]);
    expect(s.peers[0]?.received.map((m) => m.requestId)).toEqual([1, 2]);
    expect(frame.readInt32LE(4)).toBe(1); // the caller's private copy was overwritten
    expect(connection.busy).toBe(false);
  });

  it('follows an exhaust stream: each later reply answers the previous reply', async () => {
    const { connection } = await setup(async (m, peer) => {
      const first = await peer.reply({ batch: 1 }, m, { moreToCome: true });
      const second = await peer.reply({ batch: 2 }, first, { moreToCome: true, compress: 'zlib' });
      await peer.reply({ batch: 3 }, second);
    });
    const seen: [number, boolean][] = [];
    await connection.request(frameOf({ getMore: 1, $db: 'x' }, 0, 0, 1 << 16), (reply, more) =>
      seen.push([bodyOf(reply).batch as number, more]),
    );
    expect(seen).toEqual([
      [1, true],
      [2, true],
      [3, false],
    ]);
    expect(connection.closed).toBe(false);
  });

  it('fails the connection when an exhaust reply answers the wrong id', async () => {
    const { connection } = await setup(async (m, peer) => {
      await peer.reply({ batch: 1 }, m, { moreToCome: true });
      await peer.reply({ batch: 2 }, m); // should answer the first reply, not the request
    });
    const error = await rejection(connection.request(frameOf({ getMore: 1, $db: 'x' }, 0, 0), () => undefined));
    expect(ProxyError.is(error) && error.code).toBe(ErrorCodes.ProtocolError);
    expect(connection.closed).toBe(true);
  });

  it('closes on an unsolicited reply and emits close once with the error', async () => {
    const { server: s, connection } = await setup(() => undefined);
    const closes: (Error | undefined)[] = [];
    connection.on('close', (error) => closes.push(error));
    await new Promise((resolve) => setTimeout(resolve, 20));
    await s.peers[0]?.reply({ ok: 1 }, 99);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(connection.closed).toBe(true);
    expect(closes).toHaveLength(1);
    expect(closes[0]?.message).toMatch(/unsolicited/);
  });

  it('rejects with a NetworkError-labelled SocketException when the server hangs up', async () => {
    const { connection } = await setup((_m, peer) => void peer.socket.destroy());
    const error = await rejection(connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined));
    expect(ProxyError.is(error)).toBe(true);
    expect((error as ProxyError).code).toBe(ErrorCodes.SocketException);
    expect((error as ProxyError).labels).toContain('NetworkError');
    expect(connection.closed).toBe(true);
    // Later use fails fast with the same kind of error.
    const again = await rejection(connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined));
    expect((again as ProxyError).code).toBe(ErrorCodes.SocketException);
    expect(() => connection.send(frameOf({ ping: 1, $db: 'a' }, 0, 0, 2))).toThrow(/closed/);
  });

  it('allows only one request at a time', async () => {
    const { connection } = await setup(() => undefined);
    const first = connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined);
    await expect(connection.request(frameOf({ ping: 2, $db: 'a' }, 0, 0), () => undefined)).rejects.toThrow(
      /already has a request in flight/,
    );
    expect(() => connection.send(frameOf({ ping: 3, $db: 'a' }, 0, 0, 2))).toThrow(/in flight/);
    connection.close();
    await expect(first).rejects.toThrow(/closed by the proxy/);
  });

  it('sends moreToCome requests without waiting for a reply, in order with later requests', async () => {
    const { server: s, connection } = await setup((m, peer) => {
      if ((m.flags & 2) === 0) void peer.reply({ ok: 1 }, m);
    });
    connection.send(frameOf({ insert: 'c', $db: 'a' }, 0, 0, 2));
    connection.send(frameOf({ insert: 'd', $db: 'a' }, 0, 0, 2));
    await connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined);
    expect(s.peers[0]?.received.map((m) => Object.keys(m.body)[0])).toEqual(['insert', 'insert', 'ping']);
    expect(s.peers[0]?.received.map((m) => m.requestId)).toEqual([1, 2, 3]);
  });

  it('rejects with what onReply threw and closes the connection', async () => {
    const { connection } = await setup((m, peer) => void peer.reply({ ok: 1 }, m));
    const boom = new Error('client went away');
    await expect(
      connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => {
        throw boom;
      }),
    ).rejects.toBe(boom);
    expect(connection.closed).toBe(true);
  });

  it('close(error) rejects the pending request with that error', async () => {
    const { connection } = await setup(() => undefined);
    const pending = connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined);
    const reason = new Error('deadline');
    connection.close(reason);
    await expect(pending).rejects.toBe(reason);
    expect(connection.closeError).toBe(reason);
  });
});

describe('UpstreamConnection flow control', () => {
  it('pause() holds replies back until resume()', async () => {
    const { server: s, connection } = await setup(() => undefined);
    const got: number[] = [];
    const done = connection.request(frameOf({ find: 'c', $db: 'a' }, 0, 0), (reply) =>
      got.push(bodyOf(reply).n as number),
    );
    await new Promise((resolve) => setTimeout(resolve, 20));
    connection.pause();
    const peer = s.peers[0];
    const received = peer?.received[0];
    if (peer === undefined || received === undefined) throw new Error('no request');
    await peer.reply({ n: 1 }, received);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(got).toEqual([]);
    connection.resume();
    await done;
    expect(got).toEqual([1]);
  });

  it('keeps order through a large write that fills the socket buffer', async () => {
    let paused = true;
    const { server: s, connection } = await setup((m, peer) => {
      if ((m.flags & 2) === 0) void peer.reply({ ok: 1 }, m);
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    s.peers[0]?.socket.pause();
    setTimeout(() => {
      paused = false;
      s.peers[0]?.socket.resume();
    }, 150);
    const big = 'x'.repeat(8 * 1024 * 1024);
    connection.send(frameOf({ insert: 'big', doc: big, $db: 'a' }, 0, 0, 2));
    await connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined);
    expect(paused).toBe(false);
    expect(s.peers[0]?.received.map((m) => Object.keys(m.body)[0])).toEqual(['insert', 'ping']);
  });
});

describe('UpstreamConnection compression', () => {
  it('compresses ordinary commands but never hello or SASL, and decompresses replies', async () => {
    const { server: s, connection } = await setup(
      (m, peer) => void peer.reply({ ok: 1, n: 5 }, m, { compress: 'zlib' }),
    );
    connection.setCompression('zlib', 6);
    expect(connection.compressor).toBe('zlib');
    const replies: number[] = [];
    for (const body of [{ find: 'c' }, { hello: 1 }, { saslStart: 1 }, { insert: 'c' }]) {
      await connection.request(frameOf({ ...body, $db: 'a' }, 0, 0), (reply) => {
        expect(reply.readInt32LE(12)).toBe(2013);
        replies.push(bodyOf(reply).n as number);
      });
    }
    expect(replies).toEqual([5, 5, 5, 5]);
    expect(s.peers[0]?.received.map((m) => [Object.keys(m.body)[0], m.wireOpCode])).toEqual([
      ['find', 2012],
      ['hello', 2013],
      ['saslStart', 2013],
      ['insert', 2012],
    ]);
  });

  it('fails the connection on a corrupt compressed reply', async () => {
    const { connection } = await setup((m, peer) => {
      const bad = Buffer.alloc(16 + 9 + 4);
      bad.writeInt32LE(bad.length, 0);
      bad.writeInt32LE(1, 4);
      bad.writeInt32LE(m.requestId, 8);
      bad.writeInt32LE(2012, 12);
      bad.writeInt32LE(2013, 16);
      bad.writeInt32LE(100, 20);
      bad[24] = 2; // zlib, garbage payload
      peer.socket.write(bad);
    });
    const error = await rejection(connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined));
    expect((error as ProxyError).code).toBe(ErrorCodes.ProtocolError);
    expect(connection.closed).toBe(true);
  });
});

describe('UpstreamConnection.connect', () => {
  it('maps a refused connection to HostUnreachable', async () => {
    const s = await startFakeUpstream(() => undefined, { answerHandshake: false });
    const { port } = s;
    await s.close();
    const error = await rejection(
      UpstreamConnection.connect({ address: { host: '127.0.0.1', port }, connectTimeoutMS: 1_000 }),
    );
    expect((error as ProxyError).code).toBe(ErrorCodes.HostUnreachable);
    expect((error as ProxyError).labels).toEqual(['NetworkError']);
  });

  it('fails the connection when a reply frame exceeds maxMessageSize', async () => {
    server = await startFakeUpstream((m, peer) => void peer.reply({ ok: 1, pad: 'y'.repeat(2000) }, m), {
      answerHandshake: false,
    });
    const connection = await UpstreamConnection.connect({
      address: server.address,
      connectTimeoutMS: 1_000,
      maxMessageSize: 1024,
    });
    connections.push(connection);
    const error = await rejection(connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), () => undefined));
    expect((error as ProxyError).code).toBe(ErrorCodes.ProtocolError);
  });
});

describe('requestCommandName', () => {
  it('finds the body after a document sequence and ignores other opcodes', () => {
    const seqDoc = Buffer.from([5, 0, 0, 0, 0]);
    const ident = Buffer.from('documents\0');
    const body = frameOf({ insert: 'c', $db: 'a' }, 0, 0).subarray(20);
    const seq = Buffer.alloc(1 + 4 + ident.length + seqDoc.length);
    seq[0] = 1;
    seq.writeInt32LE(4 + ident.length + seqDoc.length, 1);
    ident.copy(seq, 5);
    seqDoc.copy(seq, 5 + ident.length);
    const frame = Buffer.concat([Buffer.alloc(20), seq, body]);
    frame.writeInt32LE(frame.length, 0);
    frame.writeInt32LE(2013, 12);
    expect(requestCommandName(frame)).toBe('insert');
    const query = Buffer.from(frame);
    query.writeInt32LE(2004, 12);
    expect(requestCommandName(query)).toBeUndefined();
    expect(requestCommandName(frame.subarray(0, 22))).toBeUndefined();
  });
});

describe('UpstreamConnection hardening (review)', () => {
  it('a pause left by the previous reply stream does not stall the next request on the same connection', async () => {
    // An exhaust stream whose last replies arrive in the same chunk: the client pauses on the
    // moreToCome reply, the stream still completes, and the connection goes back to the pool.
    const { connection } = await setup((m, peer) => {
      if (m.body.getMore !== undefined) {
        const more = frameOf({ n: 1 }, 501, m.requestId, 2);
        const last = frameOf({ n: 2 }, 502, 501);
        peer.socket.write(Buffer.concat([more, last]));
      } else {
        void peer.reply({ ok: 1, n: 3 }, m);
      }
    });
    const got: number[] = [];
    await connection.request(frameOf({ getMore: 1, $db: 'x' }, 0, 0, 1 << 16), (reply, more) => {
      got.push(bodyOf(reply).n as number);
      if (more) connection.pause(); // a slow client; its 'drain' may never come
    });
    expect(got).toEqual([1, 2]);
    // Another client's request on the (pooled) connection must get its reply.
    await connection.request(frameOf({ ping: 1, $db: 'a' }, 0, 0), (reply) => got.push(bodyOf(reply).n as number));
    expect(got).toEqual([1, 2, 3]);
  });

  it('replyTimeoutMS: a request with no reply (half-open upstream) fails with NetworkTimeout and closes the connection', async () => {
    const { connection } = await setup(() => undefined);
    const error = await rejection(
      connection.request(frameOf({ insert: 'c', $db: 'a' }, 0, 0), () => undefined, { replyTimeoutMS: 100 }),
    );
    expect(ProxyError.is(error) && error.code).toBe(ErrorCodes.NetworkTimeout);
    expect(ProxyError.is(error) && error.labels).toContain('NetworkError');
    expect(error.message).toMatch(/no reply from upstream .* within 100 ms/);
    expect(connection.closed).toBe(true);
  });

  it('replyTimeoutMS restarts with every reply of a stream and is suspended while the consumer has paused reading', async () => {
    const { server: s, connection } = await setup(() => undefined);
    const got: number[] = [];
    const done = connection.request(
      frameOf({ getMore: 1, $db: 'x' }, 0, 0, 1 << 16),
      (reply) => got.push(bodyOf(reply).n as number),
      {
        replyTimeoutMS: 300,
      },
    );
    await expect.poll(() => s.peers[0]?.received.length ?? 0).toBe(1);
    const peer = s.peers[0]!;
    const first = await peer.reply({ n: 1 }, peer.received[0]!, { moreToCome: true });
    await expect.poll(() => got).toEqual([1]);
    connection.pause();
    // Paused (the client is slow), the upstream's silence is not the upstream's fault.
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(connection.closed).toBe(false);
    connection.resume();
    await peer.reply({ n: 2 }, first);
    await done;
    expect(got).toEqual([1, 2]);
  });
});
