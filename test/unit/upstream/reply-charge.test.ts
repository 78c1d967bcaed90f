/**
 * Issue 15: the bytes of a reply still being read off the upstream are charged to the requester
 * (connection.ts, ReplyCharge), from the moment the decoder holds its frame, and every byte
 * charged is handed over with its delivered reply or released when the reply is dropped: on
 * every path (delivered, upstream gone mid-reply, reply timeout, onReply throwing, compressed
 * exhaust streams, shed mid-reply). A shed requester's connection is read to the end of its
 * reply, never left half-read.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { BufferBudget } from '../../../src/server/buffer-budget.js';
import { REPLY_CHARGE_MIN_BYTES, type ReplyCharge, UpstreamConnection } from '../../../src/upstream/connection.js';
import { deserialize, type Document } from '../../../src/wire/bson.js';
import { compressMessage } from '../../../src/wire/op-compressed.js';
import { type FakeHandler, type FakeUpstream, startFakeUpstream } from '../../helpers/fake-upstream.js';
import { opMsg } from '../../helpers/raw-client.js';

let server: FakeUpstream | undefined;
const connections: UpstreamConnection[] = [];

afterEach(async () => {
  for (const c of connections.splice(0)) c.close();
  await server?.close();
  server = undefined;
});

async function setup(handler: FakeHandler): Promise<UpstreamConnection> {
  server = await startFakeUpstream(handler, { answerHandshake: false });
  const connection = await UpstreamConnection.connect({ address: server.address, connectTimeoutMS: 2_000 });
  connections.push(connection);
  return connection;
}

const MORE_TO_COME = 2;
const EXHAUST_ALLOWED = 1 << 16;

/** A reply frame of about `bytes` bytes answering `responseTo`. */
function bigReply(bytes: number, responseTo: number, requestId: number, more = false): Buffer {
  return opMsg({ ok: 1, pad: 'r'.repeat(bytes) }, { requestId, responseTo, flags: more ? MORE_TO_COME : 0 }).bytes;
}

const request = (doc: Document = { ping: 1, $db: 'admin' }, flags = 0): Buffer => opMsg(doc, { flags }).bytes;

/** Records what the connection charged, released and handed over; refuses charges once `shedAt` is passed. */
class Recorder implements ReplyCharge {
  charged = 0;
  released = 0;
  handed: number[] = [];
  calls: string[] = [];
  shed = false;
  constructor(private readonly shedAt = Infinity) {}
  get held(): number {
    return this.charged - this.released - this.handed.reduce((a, b) => a + b, 0);
  }
  chargeReply(bytes: number): boolean {
    this.calls.push(`${this.shed ? 'after shed: ' : ''}charge ${bytes}`);
    if (this.shed) return false;
    if (this.charged + bytes > this.shedAt) {
      // As BufferAccount: the account closes and lets go of everything.
      this.shed = true;
      return false;
    }
    this.charged += bytes;
    return true;
  }
  releaseReply(bytes: number): void {
    this.calls.push(`${this.shed ? 'after shed: ' : ''}release ${bytes}`);
    this.released += bytes;
  }
  handOverReply(bytes: number): void {
    this.calls.push(`${this.shed ? 'after shed: ' : ''}hand over ${bytes}`);
    this.handed.push(bytes);
  }
}

describe('reply bytes charged while they are read (issue 15)', () => {
  it('charges a big reply once its frame is being assembled and hands the charge over with it', async () => {
    let frame: Buffer | undefined;
    const halfSent = vi.fn();
    const connection = await setup((m, peer) => {
      frame = bigReply(4 * 1024 * 1024, m.requestId, 900);
      // Half now, the rest once the test saw the charge.
      peer.socket.write(frame.subarray(0, frame.length / 2));
      halfSent(peer);
    });
    const charge = new Recorder();
    const delivered: Buffer[] = [];
    const done = connection.request(request(), (reply) => delivered.push(reply), { replyCharge: charge });
    // The whole frame's buffer is allocated (and charged) before its second half arrived (first,
    // while less than a sixteenth of it is here, the chunks the decoder holds).
    await vi.waitFor(() => expect(charge.charged).toBe(frame?.length));
    expect(delivered).toHaveLength(0);
    const peer = halfSent.mock.calls[0]?.[0] as { socket: { write(b: Buffer): void } };
    peer.socket.write((frame as Buffer).subarray((frame as Buffer).length / 2));
    await done;
    expect(delivered).toHaveLength(1);
    expect(charge.handed).toEqual([frame?.length]);
    expect(charge.released).toBe(0);
    expect(charge.held).toBe(0);
  });

  it('never charges small replies (below REPLY_CHARGE_MIN_BYTES)', async () => {
    const connection = await setup((m, peer) => {
      const frame = bigReply(REPLY_CHARGE_MIN_BYTES / 2, m.requestId, 901);
      // Byte by byte in two writes: the decoder holds part of it between reads.
      peer.socket.write(frame.subarray(0, 100));
      setTimeout(() => peer.socket.write(frame.subarray(100)), 20);
    });
    const charge = new Recorder();
    for (let i = 0; i < 3; i++) await connection.request(request(), () => undefined, { replyCharge: charge });
    expect(charge.calls).toEqual([]);
  });

  it('releases the charge of a reply cut by the upstream hanging up mid-reply', async () => {
    const connection = await setup((m, peer) => {
      const frame = bigReply(2 * 1024 * 1024, m.requestId, 902);
      peer.socket.write(frame.subarray(0, frame.length / 2), () => setTimeout(() => peer.socket.destroy(), 50));
    });
    const charge = new Recorder();
    await expect(connection.request(request(), () => undefined, { replyCharge: charge })).rejects.toThrow();
    expect(charge.charged).toBeGreaterThan(2 * 1024 * 1024);
    expect(charge.released).toBe(charge.charged);
    expect(charge.handed).toEqual([]);
    expect(connection.closed).toBe(true);
  });

  it('releases the charge of a reply whose rest never comes (replyTimeoutMS)', async () => {
    const connection = await setup((m, peer) => {
      const frame = bigReply(2 * 1024 * 1024, m.requestId, 903);
      peer.socket.write(frame.subarray(0, frame.length / 2));
    });
    const charge = new Recorder();
    await expect(
      connection.request(request(), () => undefined, { replyCharge: charge, replyTimeoutMS: 300 }),
    ).rejects.toThrow(/within 300 ms/);
    expect(charge.charged).toBeGreaterThan(0);
    expect(charge.released).toBe(charge.charged);
    expect(charge.held).toBe(0);
  });

  it('hands over each reply of a compressed exhaust stream, and releases nothing twice when the consumer throws', async () => {
    const connection = await setup(async (m, peer) => {
      let to = m.requestId;
      for (let batch = 0; batch < 4; batch++) {
        const last = batch === 3;
        const plain = opMsg(
          // Incompressible: stays big once compressed.
          { batch, pad: randomBytes(600_000) },
          { requestId: 1000 + batch, responseTo: to, flags: last ? 0 : MORE_TO_COME },
        ).bytes;
        const frame = await compressMessage(plain, 'zlib');
        // In pieces, so that each frame is assembled over several reads.
        for (let at = 0; at < frame.length; at += 100_000) peer.socket.write(frame.subarray(at, at + 100_000));
        to = 1000 + batch;
      }
    });
    const charge = new Recorder();
    const batches: number[] = [];
    await connection.request(
      request({ getMore: 1, collection: 'c', $db: 'x' }, EXHAUST_ALLOWED),
      (reply) => batches.push(deserialize(reply.subarray(21)).batch as number),
      { replyCharge: charge },
    );
    expect(batches).toEqual([0, 1, 2, 3]);
    expect(charge.handed).toHaveLength(4);
    expect(charge.handed.every((bytes) => bytes > 500_000)).toBe(true);
    expect(charge.held).toBe(0);
    expect(charge.released).toBe(0);

    // The consumer throws on the second reply: the connection closes, the rest is released.
    const second = new Recorder();
    await expect(
      connection.request(
        request({ getMore: 1, collection: 'c', $db: 'x' }, EXHAUST_ALLOWED),
        (reply) => {
          if (deserialize(reply.subarray(21)).batch === 1) throw new Error('consumer failed');
        },
        { replyCharge: second },
      ),
    ).rejects.toThrow('consumer failed');
    expect(connection.closed).toBe(true);
    expect(second.held).toBe(0);
  });

  it('a requester shed mid-reply is charged no more; the reply is read to its end and the connection stays usable', async () => {
    const connection = await setup((m, peer) => {
      if (m.body.ping === 2) return [{ ok: 1, second: true }];
      const frame = bigReply(3 * 1024 * 1024, m.requestId, 904);
      for (let at = 0; at < frame.length; at += 64 * 1024) peer.socket.write(frame.subarray(at, at + 64 * 1024));
      return 'no-reply';
    });
    // Refuses the first charge: the frame is bigger than what it may hold.
    const charge = new Recorder(1024 * 1024);
    const delivered: Buffer[] = [];
    await connection.request(request({ ping: 1, $db: 'admin' }), (reply) => delivered.push(reply), {
      replyCharge: charge,
    });
    expect(charge.shed).toBe(true);
    // The refused charge (the whole frame, once assembled) was the last call: nothing charged,
    // released or handed over after it.
    expect(charge.calls.at(-1)).toMatch(/^charge 3\d{6}$/);
    expect(charge.calls.filter((call) => call.startsWith('after shed'))).toEqual([]);
    expect(delivered).toHaveLength(1);
    expect(connection.busy).toBe(false);
    // Not half-read: the next request on it gets its own reply.
    const next: Document[] = [];
    await connection.request(request({ ping: 2, $db: 'admin' }), (reply) => next.push(deserialize(reply.subarray(21))));
    expect(next).toEqual([{ ok: 1, second: true }]);
  });

  it('random delivered / failed / timed-out / shed replies leave a real budget at 0', async () => {
    // Each connection's reply is decided by the request's `mode`.
    const budget = new BufferBudget(6 * 1024 * 1024);
    const connectionsUsed: UpstreamConnection[] = [];
    server = await startFakeUpstream(
      (m, peer) => {
        const bytes = m.body.bytes as number;
        const frame = bigReply(bytes, m.requestId, 905);
        const mode = m.body.mode as string;
        const cut = mode === 'hangup' || mode === 'timeout' ? Math.floor(frame.length / 2) : frame.length;
        for (let at = 0; at < cut; at += 48 * 1024)
          peer.socket.write(frame.subarray(at, Math.min(cut, at + 48 * 1024)));
        if (mode === 'hangup') peer.socket.end(() => peer.socket.destroy());
        return 'no-reply';
      },
      { answerHandshake: false },
    );
    let seed = 15;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const modes = ['deliver', 'hangup', 'timeout', 'shed', 'throw'] as const;
    const seen = new Set<string>();
    for (let i = 0; i < 40; i++) {
      const mode = modes[Math.floor(random() * modes.length)] as (typeof modes)[number];
      seen.add(mode);
      let connection = connectionsUsed.find((c) => !c.closed);
      if (connection === undefined) {
        connection = await UpstreamConnection.connect({ address: server.address, connectTimeoutMS: 2_000 });
        connections.push(connection);
        connectionsUsed.push(connection);
      }
      // A tenant's account, as a client connection would hold it: delivered replies are its
      // charge until "flushed" (released here at once).
      let shed = false;
      const account = budget.open(`tenant${i % 3}`, { accountShed: () => (shed = true) });
      const charge: ReplyCharge = {
        chargeReply: (bytes) => account.charge(bytes),
        releaseReply: (bytes) => account.release(bytes),
        handOverReply: (bytes) => account.release(bytes),
      };
      const bytes =
        mode === 'shed' ? 8 * 1024 * 1024 : Math.floor(random() * 3 * 1024 * 1024) + (random() < 0.3 ? 100 : 70_000);
      const outcome = await connection
        .request(
          request({ ping: 1, mode, bytes, $db: 'admin' }),
          () => {
            if (mode === 'throw') throw new Error('consumer failed');
          },
          { replyCharge: charge, ...(mode === 'timeout' ? { replyTimeoutMS: 200 } : {}) },
        )
        .then(
          () => 'ok',
          () => 'failed',
        );
      expect(outcome).toBe(mode === 'deliver' || mode === 'shed' ? 'ok' : 'failed');
      if (mode === 'shed') expect(shed).toBe(true);
      expect(account.bytes).toBe(0);
      expect(budget.total).toBe(0);
      account.close();
    }
    expect([...seen].sort()).toEqual([...modes].sort());
    expect(budget.total).toBe(0);
    expect(budget.activeTenants).toBe(0);
  });
});
