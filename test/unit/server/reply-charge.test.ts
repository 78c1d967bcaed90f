/**
 * Issue 15, the client connection's side of charging upstream replies while they are read
 * (connection.ts, ReplyCharge): the client connection is its command's ReplyCharge; what the
 * upstream charged is handed over to the reply's write (counted once), and every path
 * (delivered, failed, held back for a retry then dropped, shed, compressed) leaves the shared
 * budget at exactly 0 once the clients have read their replies or left. Over an in-memory duplex,
 * with a scripted Upstream standing in for the real one (test/unit/upstream/reply-charge.test.ts
 * covers the real connection's charges).
 */
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import { ErrorCodes, UpstreamError } from '../../../src/errors.js';
import { BufferBudget } from '../../../src/server/buffer-budget.js';
import type { ConnectionObserver } from '../../../src/server/connection-observer.js';
import type { UpstreamConnection } from '../../../src/upstream/connection.js';
import {
  UpstreamSession,
  type ForwardRequest,
  type ForwardResult,
  type Upstream,
} from '../../../src/upstream/upstream.js';
import { serialize } from '../../../src/wire/bson.js';
import { compressMessage, decompressMessage } from '../../../src/wire/op-compressed.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';
import { scanReply } from '../../../src/wire/reply-scan.js';
import { OP_COMPRESSED, RawClient, opMsg, replyDocument } from '../../helpers/raw-client.js';
import { MEMORY_SERVER as SERVER, openMemoryConnection } from '../../helpers/memory-connection.js';

const MiB = 1024 * 1024;

type Script = (request: ForwardRequest) => Promise<void> | void;

/** Each forwarded command is answered by `script`, which charges through `request.replyCharge` as connection.ts does. */
class ScriptedUpstream implements Pick<Upstream, 'openSession' | 'endSession' | 'forward'> {
  constructor(private readonly script: Script) {}
  openSession(): UpstreamSession {
    return new UpstreamSession();
  }
  endSession(): void {}
  async forward(request: ForwardRequest): Promise<ForwardResult> {
    await this.script(request);
    return { attempts: 1 };
  }
}

const noop = (): void => undefined;
const silentObserver = (): ConnectionObserver => ({
  logger: pino({ level: 'silent' }),
  opened: noop,
  closed: noop,
  tenantEstablished: noop,
  tenantOverConnectionLimit: noop,
  bytes: noop,
  compressed: noop,
  protocolError: noop,
  tenantCommandStarted: noop,
  tenantCommandEnded: noop,
  commandFinished: noop,
  decision: noop,
  refused: noop,
  overTenantLimit: noop,
  shed: noop,
  delayedByTenantLimit: noop,
});

interface Opened {
  client: RawClient;
  closed: Promise<void>;
}

/** A client connection of tenant `tenant` (static listener) over an in-memory duplex. */
function openClient(upstream: ScriptedUpstream, budget: BufferBudget, tenant = 'acme'): Opened {
  const { client, closed } = openMemoryConnection({
    upstream,
    observe: silentObserver,
    tenant,
    extra: { bufferBudget: budget },
  });
  return { client, closed };
}

/** An upstream reply of about `bytes` bytes. */
const replyOf = (bytes: number, extra: Record<string, unknown> = {}): Buffer =>
  encodeOpMsg({ requestId: 500, responseTo: 0, body: serialize({ n: 1, ok: 1, pad: 'r'.repeat(bytes), ...extra }) });

const networkError = (): UpstreamError =>
  new UpstreamError(ErrorCodes.SocketException, 'upstream connection failed mid-reply', { labels: ['NetworkError'] });

describe('client connection: replies charged while the upstream reads them (issue 15)', () => {
  it('hands the charge over to the reply write: the reply is counted once, then released when read', async () => {
    const budget = new BufferBudget(64 * MiB);
    const reply = replyOf(2 * MiB);
    const totals: number[] = [];
    const upstream = new ScriptedUpstream((request) => {
      const charge = request.replyCharge;
      if (charge === undefined) throw new Error('no replyCharge');
      totals.push(budget.total);
      // As the upstream connection does: charged while assembled, handed over with the reply.
      expect(charge.chargeReply(reply.length)).toBe(true);
      totals.push(budget.total);
      charge.handOverReply(reply.length);
      request.onReply(reply, false, {} as UpstreamConnection, scanReply(reply));
      totals.push(budget.total);
    });
    const { client, closed } = openClient(upstream, budget);
    client.socket.pause();
    client.write(opMsg({ count: 'orders', $db: 'app' }).bytes);
    await vi.waitFor(() => expect(totals).toHaveLength(3));
    const [before, reading, written] = totals as [number, number, number];
    expect(reading - before).toBe(reply.length);
    // Written to the client (unread) under the same charge: not twice.
    expect(written).toBe(reading);
    client.socket.resume();
    const frame = await client.readFrame();
    expect(frame === null ? undefined : replyDocument(frame).n).toBe(1);
    await vi.waitFor(() => expect(budget.total).toBe(0));
    client.close();
    await closed;
    expect(budget.total).toBe(0);
  });

  it('a sequence of random delivered / failed / retried / dropped / shed / compressed replies leaves the budget at 0', async () => {
    const budget = new BufferBudget(8 * MiB);
    let seed = 1515;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const size = (): number => Math.floor(random() * 3 * MiB) + 1;
    type Mode = 'deliver' | 'fail' | 'retry' | 'dropped' | 'shed' | 'compressed';
    const modes: Mode[] = ['deliver', 'fail', 'retry', 'dropped', 'shed', 'compressed'];
    let mode: Mode = 'deliver';
    /** Charges `bytes` in 1-3 pieces, as reads of an assembled frame; false when shed. */
    const chargeInPieces = (request: ForwardRequest, bytes: number): boolean => {
      const charge = request.replyCharge;
      if (charge === undefined) throw new Error('no replyCharge');
      const pieces = 1 + Math.floor(random() * 3);
      let left = bytes;
      for (let p = 0; p < pieces; p++) {
        const piece = p === pieces - 1 ? left : Math.floor(left / 2);
        left -= piece;
        if (!charge.chargeReply(piece)) return false;
      }
      return true;
    };
    const upstream = new ScriptedUpstream((request) => {
      const charge = request.replyCharge;
      if (charge === undefined) throw new Error('no replyCharge');
      const reply = replyOf(size());
      switch (mode) {
        case 'deliver':
        case 'compressed':
          chargeInPieces(request, reply.length);
          charge.handOverReply(reply.length);
          request.onReply(reply, false, {} as UpstreamConnection, scanReply(reply));
          return;
        case 'fail': {
          const bytes = Math.floor(reply.length / 2);
          chargeInPieces(request, bytes);
          charge.releaseReply(bytes);
          throw networkError();
        }
        case 'retry': {
          // A first attempt's error reply is held back (handed over, not delivered); the retry's is delivered.
          const held = replyOf(70_000, { ok: 0, code: 91 });
          chargeInPieces(request, held.length);
          charge.handOverReply(held.length);
          chargeInPieces(request, reply.length);
          charge.handOverReply(reply.length);
          request.onReply(reply, false, {} as UpstreamConnection, scanReply(reply));
          return;
        }
        case 'dropped':
          // Held back, then the forward fails without delivering it.
          chargeInPieces(request, reply.length);
          charge.handOverReply(reply.length);
          throw networkError();
        case 'shed':
          // More than the whole budget: the connection is shed; the upstream then sees it leave.
          expect(charge.chargeReply(budget.maxBytes + 1)).toBe(false);
          throw networkError();
      }
    });
    let current = openClient(upstream, budget);
    const seen = new Set<Mode>();
    for (let i = 0; i < 60; i++) {
      mode = modes[Math.floor(random() * modes.length)] as Mode;
      seen.add(mode);
      const request = opMsg({ count: 'orders', $db: 'app' }).bytes;
      current.client.write(mode === 'compressed' ? await compressMessage(request, 'zlib') : request);
      const frame = await current.client.readFrame();
      if (mode === 'shed') {
        expect(frame).toBeNull();
        await current.closed;
        current = openClient(upstream, budget);
      } else {
        expect(frame).not.toBeNull();
        const reply = frame as NonNullable<typeof frame>;
        if (mode === 'compressed') {
          expect(reply.opCode).toBe(OP_COMPRESSED);
          const plain = await decompressMessage(reply.bytes, SERVER.maxMessageSizeBytes);
          expect(plain.length).toBeGreaterThan(1);
        } else {
          expect(replyDocument(reply).ok).toBe(mode === 'fail' || mode === 'dropped' ? 0 : 1);
        }
      }
      // Everything charged for this command was handed over, released or taken back.
      await vi.waitFor(() => expect(budget.total).toBe(0));
    }
    expect([...seen].sort()).toEqual([...modes].sort());
    current.client.close();
    await current.closed;
    expect(budget.total).toBe(0);
    expect(budget.activeTenants).toBe(0);
  });

  it('a tenant whose replies being read take it over its share is shed; the bystander is not', async () => {
    const budget = new BufferBudget(16 * MiB);
    /** Each command's forward waits here, mid-reply, with its bytes charged. */
    const reading: Array<() => void> = [];
    const upstream = new ScriptedUpstream(async (request) => {
      const charge = request.replyCharge;
      if (charge === undefined) throw new Error('no replyCharge');
      const reply = replyOf((request.tenant === 'acme' ? 6 : 1) * MiB);
      if (!charge.chargeReply(reply.length)) throw networkError();
      await new Promise<void>((resolve) => reading.push(resolve));
      charge.handOverReply(reply.length);
      request.onReply(reply, false, {} as UpstreamConnection, scanReply(reply));
    });
    const bystander = openClient(upstream, budget, 'globex');
    bystander.client.write(opMsg({ count: 'orders', $db: 'app' }).bytes);
    await vi.waitFor(() => expect(reading).toHaveLength(1));
    const noisy = [openClient(upstream, budget), openClient(upstream, budget), openClient(upstream, budget)];
    for (const { client } of noisy) client.write(opMsg({ count: 'orders', $db: 'app' }).bytes);
    // 1 + 3 x 6 MiB > 16 MiB: acme (over its half) loses a connection, globex keeps its reply.
    await vi.waitFor(() => expect(budget.shed).toBe(1));
    expect(budget.bytesOf('globex')).toBeGreaterThan(MiB);
    expect(budget.total).toBeLessThanOrEqual(budget.maxBytes);
    for (const resolve of reading.splice(0)) resolve();
    const frame = await bystander.client.readFrame();
    expect(frame === null ? undefined : replyDocument(frame).ok).toBe(1);
    const answered = await Promise.all(noisy.map(({ client }) => client.readFrame()));
    expect(answered.filter((f) => f === null)).toHaveLength(1);
    for (const { client } of [bystander, ...noisy]) client.close();
    await Promise.all([bystander, ...noisy].map(({ closed }) => closed));
    expect(budget.total).toBe(0);
  });
});
