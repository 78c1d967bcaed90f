/**
 * The per-connection pipeline over an in-memory duplex (no TCP socket, no upstream server):
 * hand-built wire frames in, a fake Upstream behind, replies and observer events asserted.
 * The isolation engine, routing and the identity gate are the real ones.
 */
import { Long } from 'bson';
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import type { IdentityMethod, ProxyConfig } from '../../../src/config/types.js';
import { TenantLimits } from '../../../src/server/tenant-limits.js';
import { ErrorCodes, UpstreamError } from '../../../src/errors.js';
import type { AuditLog, DecisionAuditEvent } from '../../../src/observability/audit.js';
import { ProxyMetrics } from '../../../src/observability/metrics.js';
import { ClientConnection, type ClientConnectionDeps } from '../../../src/server/client-connection.js';
import { createConnectionObserver, type ConnectionObserver } from '../../../src/server/connection-observer.js';
import { SLICED_VALIDATION_MIN_BYTES, ValidationScheduler } from '../../../src/server/validation-scheduler.js';
import {
  UpstreamSession,
  type ForwardRequest,
  type ForwardResult,
  type Upstream,
} from '../../../src/upstream/upstream.js';
import type { UpstreamConnection } from '../../../src/upstream/connection.js';
import { deserialize, serialize, type Document } from '../../../src/wire/bson.js';
import { compressMessage, decompressMessage } from '../../../src/wire/op-compressed.js';
import { encodeOpMsg } from '../../../src/wire/op-msg.js';
import { scanReply } from '../../../src/wire/reply-scan.js';
import { OP_COMPRESSED, OP_MSG, OP_REPLY, RawClient, opMsg, opQuery, replyDocument } from '../../helpers/raw-client.js';
import { MEMORY_SERVER as SERVER, openMemoryConnection } from '../../helpers/memory-connection.js';

const MORE_TO_COME = 2;

/** What the fake upstream answers a forwarded command with: reply documents, or a failure. */
type Respond = (request: ForwardRequest) => Document[] | Promise<Document[]>;

/** Records every forward and answers from `respond`; a moreToCome request gets nothing. */
class FakeUpstream implements Pick<Upstream, 'openSession' | 'endSession' | 'forward'> {
  readonly requests: ForwardRequest[] = [];
  readonly ended: UpstreamSession[] = [];

  constructor(private readonly respond: Respond) {}

  openSession(): UpstreamSession {
    return new UpstreamSession();
  }

  endSession(session: UpstreamSession): void {
    this.ended.push(session);
  }

  async forward(request: ForwardRequest): Promise<ForwardResult> {
    this.requests.push(request);
    if (request.fireAndForget) return { attempts: 1 };
    for (const document of await this.respond(request)) {
      const reply = encodeOpMsg({ requestId: 500, responseTo: 0, body: serialize(document) });
      request.onReply(reply, false, {} as UpstreamConnection, scanReply(reply));
    }
    return { attempts: 1 };
  }

  /** The body of the n-th forwarded frame, decoded. */
  body(index: number): Document {
    const frame = this.requests[index]?.frame;
    if (frame === undefined) throw new Error(`no request ${index}`);
    return deserialize(frame.subarray(21, 21 + frame.readInt32LE(21)));
  }
}

interface RecordedEvent {
  event: keyof ConnectionObserver;
  args: unknown[];
}

/** An observer that records every event (and logs nowhere). */
function recordingObserver(): ConnectionObserver & { events: RecordedEvent[] } {
  const events: RecordedEvent[] = [];
  const record =
    (event: keyof ConnectionObserver) =>
    (...args: unknown[]): void => {
      events.push({ event, args });
    };
  return {
    events,
    logger: pino({ level: 'silent' }),
    opened: record('opened'),
    closed: record('closed'),
    tenantEstablished: record('tenantEstablished'),
    tenantOverConnectionLimit: record('tenantOverConnectionLimit'),
    bytes: record('bytes'),
    compressed: record('compressed'),
    protocolError: record('protocolError'),
    tenantCommandStarted: record('tenantCommandStarted'),
    tenantCommandEnded: record('tenantCommandEnded'),
    commandFinished: record('commandFinished'),
    decision: record('decision'),
    refused: record('refused'),
    overTenantLimit: record('overTenantLimit'),
    delayedByTenantLimit: record('delayedByTenantLimit'),
    shed: record('shed'),
  };
}

interface Harness {
  client: RawClient;
  upstream: FakeUpstream;
  connection: ClientConnection;
  /** Resolves when the proxy side has closed (the connection's onClosed). */
  closed: Promise<void>;
}

interface HarnessOptions {
  methods?: IdentityMethod[];
  /** Config values (as in a file), over the defaults. */
  config?: Record<string, unknown>;
  respond?: Respond;
  observe?: ClientConnectionDeps['observe'];
  validation?: ClientConnectionDeps['validation'];
  tenantLimits?: (config: ProxyConfig) => TenantLimits;
}

function open(options: HarnessOptions = {}): Harness {
  const upstream = new FakeUpstream(options.respond ?? (() => [{ ok: 1 }]));
  const { client, connection, closed } = openMemoryConnection({
    upstream,
    observe: options.observe ?? (() => recordingObserver()),
    ...(options.config !== undefined ? { config: options.config } : {}),
    ...(options.methods !== undefined ? { methods: options.methods } : {}),
    ...(options.tenantLimits !== undefined ? { tenantLimits: options.tenantLimits } : {}),
    ...(options.validation !== undefined ? { extra: { validation: options.validation } } : {}),
  });
  return { client, upstream, connection, closed };
}

/** A harness whose observer records events. */
function recorded(options: HarnessOptions = {}): Harness & { events: RecordedEvent[] } {
  const observer = recordingObserver();
  return { ...open({ ...options, observe: () => observer }), events: observer.events };
}

function eventsNamed(events: RecordedEvent[], event: keyof ConnectionObserver): unknown[][] {
  return events.filter((recorded) => recorded.event === event).map((recorded) => recorded.args);
}

/** The outcome of every finished command, in order. */
function outcomes(events: RecordedEvent[]): string[] {
  return eventsNamed(events, 'commandFinished').map((args) => (args[1] as { outcome: string }).outcome);
}

/** The outcomes once `count` commands are finished (a command is reported just after its reply is written). */
async function finished(events: RecordedEvent[], count: number): Promise<string[]> {
  await vi.waitFor(() => expect(outcomes(events)).toHaveLength(count));
  return outcomes(events);
}

describe('ClientConnection over an in-memory duplex', () => {
  it('validates a large request in slices and answers it as it answers it whole (issue 15, CPU floods)', async () => {
    const tags = Array.from({ length: 40_000 }, (_, n) => `t${n}`);
    // A large find refused for its $where last; a large insert forwarded; one whose BSON is
    // invalid deep inside (a key repeated in the last document): each answered the same both ways.
    const where = opMsg({ find: 'orders', filter: { tags: { $in: tags }, $where: 'true' }, $db: 'app' }).bytes;
    const insert = opMsg({ insert: 'orders', documents: [{ _id: 1, tags }], $db: 'app' }).bytes;
    const invalid = Buffer.from(
      opMsg({
        insert: 'orders',
        documents: [
          { _id: 1, tags },
          { _id: 2, zz: 1, zy: 2 },
        ],
        $db: 'app',
      }).bytes,
    );
    invalid.write('zz', invalid.lastIndexOf('zy'), 'latin1'); // zz repeated
    expect(where.length).toBeGreaterThan(SLICED_VALIDATION_MIN_BYTES);
    const answers = async (validation: ValidationScheduler | undefined): Promise<unknown[]> => {
      const { client, upstream } = open({ validation });
      const replies: unknown[] = [];
      for (const frame of [where, insert, invalid]) {
        client.write(frame);
        const reply = await client.readFrame();
        if (reply === null) throw new Error('closed');
        replies.push(replyDocument(reply));
      }
      replies.push(upstream.requests.length, upstream.body(0)['documents']);
      client.close();
      return replies;
    };
    const scheduler = new ValidationScheduler({ turnBytes: 4096, sliceBytes: 1024 });
    const sliced = await answers(scheduler);
    expect(scheduler.validatedBytes).toBeGreaterThan(where.length);
    expect(sliced).toEqual(await answers(undefined));
    expect(sliced[0]).toMatchObject({
      ok: 0,
      code: ErrorCodes.Unauthorized,
      errmsg: expect.stringContaining('operator.where'),
    });
    expect(sliced[1]).toMatchObject({ ok: 1 });
    expect(sliced[2]).toMatchObject({ ok: 0, errmsg: expect.stringContaining('duplicate key "zz"') });
    expect(sliced[3]).toBe(1);
  });

  it("charges a request's CPU to its tenant with one clock read more; over budget it waits, past the bound it is refused unparsed (code 96, labels)", async () => {
    const clock = { now: 1_000, reads: 0 };
    let limits!: TenantLimits;
    const harness = (cpu: number): Harness & { events: RecordedEvent[] } =>
      recorded({
        config: { limits: { cpuMillisPerSecondPerTenant: cpu } },
        tenantLimits: (config) =>
          (limits = new TenantLimits(config.limits, {
            now: () => {
              clock.reads += 1;
              return clock.now;
            },
          })),
      });
    const find = (): ReturnType<typeof opMsg> => opMsg({ find: 'orders', filter: { status: 'open' }, $db: 'app' });
    /** Clock reads of one forwarded find. */
    const readsOfFind = async (client: RawClient, events: RecordedEvent[], count: number): Promise<number> => {
      const before = clock.reads;
      expect(await client.command(find())).toMatchObject({ ok: 1 });
      await finished(events, count);
      return clock.reads - before;
    };

    const off = harness(0);
    await off.client.command(opMsg({ hello: 1, $db: 'admin' }));
    const readsOff = await readsOfFind(off.client, off.events, 2);
    off.client.close();

    const on = harness(100);
    const charges = vi.spyOn(limits, 'chargeCpu');
    await on.client.command(opMsg({ hello: 1, $db: 'admin' }));
    charges.mockClear();
    // The meter starts at the admission's reading: one read more, one charge, to the tenant.
    expect(await readsOfFind(on.client, on.events, 2)).toBe(readsOff + 1);
    expect(charges.mock.calls).toEqual([['acme', 0, clock.now]]);

    // Half a second over its allowance: the next request waits (the fake clock says 1 ms), then runs.
    limits.chargeCpu('acme', 100.1);
    expect(await on.client.command(find())).toMatchObject({ ok: 1 });
    expect(eventsNamed(on.events, 'delayedByTenantLimit')).toEqual([['cpu']]);
    const forwarded = on.upstream.requests.length;

    // Far over it: refused before parsing, nothing forwarded.
    limits.chargeCpu('acme', 1_000);
    const refused = await on.client.command(find());
    expect(refused).toMatchObject({
      ok: 0,
      code: ErrorCodes.OperationFailed,
      errmsg: 'tenant CPU limit (100 ms per second) reached',
      errorLabels: ['SystemOverloadedError', 'RetryableError'],
    });
    expect(on.upstream.requests).toHaveLength(forwarded);
    expect(eventsNamed(on.events, 'overTenantLimit').map((args) => (args[1] as { reason: string }).reason)).toEqual([
      'cpu',
    ]);
    // Paid for at the rate (11 s later): served at once again.
    clock.now += 11_000;
    expect(await on.client.command(find())).toMatchObject({ ok: 1 });
    expect(eventsNamed(on.events, 'delayedByTenantLimit')).toHaveLength(1);
    on.client.close();
  });

  it('a request waiting for admission under its byte rate is dropped at once when its client leaves (nothing holds it)', async () => {
    // Timers are faked so the admission wait can only end through the close; I/O runs as usual.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const clock = { now: 1_000 };
      const h = recorded({
        config: { limits: { bytesPerSecondPerTenant: 1_000_000, maxMessageSizeBytes: 1_000_000 } },
        tenantLimits: (config) => new TenantLimits(config.limits, { now: () => clock.now }),
      });
      const turns = async (until: () => boolean): Promise<void> => {
        for (let n = 0; n < 1_000 && !until(); n++) await new Promise((resolve) => setImmediate(resolve));
        expect(until()).toBe(true);
      };
      const find = (bytes: number): ReturnType<typeof opMsg> =>
        opMsg({ find: 'orders', filter: { note: 'x'.repeat(bytes) }, $db: 'app' });
      await h.client.command(opMsg({ hello: 1, $db: 'admin' }));
      // Just within the allowance (a second at the rate, the bytes charged as read): served at once.
      expect(await h.client.command(find(998_000))).toMatchObject({ ok: 1 });
      const forwarded = h.upstream.requests.length;
      // Past it, whole in one read: waits at admission (the fake clock never moves), then its client leaves.
      h.client.write(find(4_000).bytes);
      await turns(() => eventsNamed(h.events, 'delayedByTenantLimit').some(([reason]) => reason === 'bytes'));
      expect(h.connection.idle).toBe(false);
      h.client.close();
      await h.closed;
      await turns(() => h.connection.idle);
      expect(h.upstream.requests).toHaveLength(forwarded);
    } finally {
      vi.useRealTimers();
    }
  });

  it('stops reading while its tenant is over its byte rate, charged as read; the frame clock waits too', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const clock = { now: 1_000 };
      const h = recorded({
        config: { limits: { bytesPerSecondPerTenant: 1_000_000, maxMessageSizeBytes: 1_000_000, frameTimeoutMS: 50 } },
        tenantLimits: (config) => new TenantLimits(config.limits, { now: () => clock.now }),
      });
      const turns = async (until: () => boolean): Promise<void> => {
        for (let n = 0; n < 1_000 && !until(); n++) await new Promise((resolve) => setImmediate(resolve));
        expect(until()).toBe(true);
      };
      const socket = (h.connection as unknown as { socket: { isPaused(): boolean } }).socket;
      await h.client.command(opMsg({ hello: 1, $db: 'admin' }));
      // 1.6 MB of finds at 1 MB/s with a second's allowance: the second one is cut off mid-read.
      const big = opMsg({ find: 'orders', filter: { note: 'x'.repeat(800_000) }, $db: 'app' });
      expect(await h.client.command(big)).toMatchObject({ ok: 1 });
      // In pieces, as TCP delivers it: the piece that takes the tenant past its allowance stops the reading.
      for (let at = 0; at < big.bytes.length; at += 100_000) h.client.write(big.bytes.subarray(at, at + 100_000));
      await turns(() => eventsNamed(h.events, 'delayedByTenantLimit').some(([reason]) => reason === 'read'));
      await turns(() => socket.isPaused() && !h.connection.idle);
      // Nothing else is read, and the partial frame is not timed out (50 ms), however long the pause.
      vi.advanceTimersByTime(1_000);
      expect(socket.isPaused()).toBe(true);
      expect(h.upstream.requests).toHaveLength(1);
      // Once paid for (the clock moves two seconds), reading resumes and the second find is served.
      clock.now += 2_000;
      vi.advanceTimersByTime(1_000);
      await turns(() => h.upstream.requests.length === 2);
      expect(eventsNamed(h.events, 'protocolError')).toEqual([]);
      h.client.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('answers the handshake itself and forwards nothing', async () => {
    const { client, upstream, connection, events } = recorded();
    const reply = await client.command(opMsg({ hello: 1, $db: 'admin' }));
    expect(reply).toMatchObject({ isWritablePrimary: true, maxWireVersion: 21, connectionId: connection.id, ok: 1 });
    expect(upstream.requests).toHaveLength(0);
    expect(eventsNamed(events, 'opened')).toHaveLength(1);
    expect(eventsNamed(events, 'tenantEstablished')).toEqual([
      [{ tenant: 'acme', method: 'static', principal: 'static' }],
    ]);
    expect(await finished(events, 1)).toEqual(['ok']);
    client.close();
  });

  it("forwards a find rewritten for the tenant, with the decoded command's traits, and relays the reply", async () => {
    const batch = [{ _id: 1, status: 'open' }];
    const { client, upstream, events } = recorded({
      respond: () => [{ cursor: { id: Long.fromNumber(0), ns: 'app.orders', firstBatch: batch }, ok: 1 }],
    });
    const request = opMsg({ find: 'orders', filter: { status: 'open' }, $db: 'app' });
    client.write(request.bytes);
    const frame = await client.readFrame();
    if (frame === null) throw new Error('closed');
    expect(frame.opCode).toBe(OP_MSG);
    expect(frame.responseTo).toBe(request.requestId);
    expect(replyDocument(frame)).toMatchObject({ cursor: { firstBatch: batch }, ok: 1 });

    const [forwarded] = upstream.requests;
    expect(forwarded).toMatchObject({ tenant: 'acme', fireAndForget: false, traits: { name: 'find', db: 'app' } });
    expect(upstream.body(0)['filter']).toEqual({ $and: [{ tenantId: { $eq: 'acme' } }, { status: 'open' }] });
    expect(eventsNamed(events, 'decision')).toContainEqual([
      expect.objectContaining({ name: 'find', db: 'app', namespace: 'app.orders' }),
      'acme',
      'rewritten',
      'filter.tenant',
    ]);
    await finished(events, 1);
    expect(eventsNamed(events, 'commandFinished')[0]?.[1]).toMatchObject({
      outcome: 'rewritten',
      tenant: 'acme',
      upstreamSeconds: expect.any(Number),
    });
    client.close();
  });

  it('refuses what the isolation engine refuses: an error reply, nothing forwarded, audited once as its decision', async () => {
    const { client, upstream, events } = recorded();
    const reply = await client.command(opMsg({ mapReduce: 'orders', map: 'function () {}', $db: 'app' }));
    expect(reply).toMatchObject({ ok: 0, code: ErrorCodes.Unauthorized });
    expect(String(reply['errmsg'])).toContain('command.server-js');
    expect(upstream.requests).toHaveLength(0);
    expect(eventsNamed(events, 'decision').map((args) => args.slice(2))).toEqual([['refused', 'command.server-js']]);
    expect(eventsNamed(events, 'refused')).toHaveLength(0);
    expect(await finished(events, 1)).toEqual(['denied']);
    client.close();
  });

  it('before authentication answers ping itself and refuses data commands as auth.required', async () => {
    const { client, upstream, events } = recorded({ methods: [] });
    expect(await client.command(opMsg({ ping: 1, $db: 'admin' }))).toEqual({ ok: 1 });
    const refused = await client.command(opMsg({ find: 'orders', $db: 'app' }));
    expect(refused).toMatchObject({ ok: 0, code: ErrorCodes.Unauthorized });
    expect(upstream.requests).toHaveLength(0);
    expect(eventsNamed(events, 'refused')).toEqual([
      [expect.objectContaining({ name: 'find', namespace: 'app.orders' }), undefined, 'auth.required'],
    ]);
    expect(await finished(events, 2)).toEqual(['ok', 'denied']);
    client.close();
  });

  it('forwards a w:0 insert without a reply and answers the next command in order', async () => {
    const { client, upstream, events } = recorded();
    const insert = opMsg({ insert: 'orders', documents: [{ a: 1 }], $db: 'app' }, { flags: MORE_TO_COME });
    const ping = opMsg({ ping: 1, $db: 'admin' });
    client.write(Buffer.concat([insert.bytes, ping.bytes]));
    const frame = await client.readFrame();
    expect(frame?.responseTo).toBe(ping.requestId);
    expect(upstream.requests.map((request) => [request.traits.name, request.fireAndForget])).toEqual([
      ['insert', true],
      ['ping', false],
    ]);
    expect(await finished(events, 2)).toEqual(['rewritten', 'ok']);
    client.close();
  });

  it('closes the connection on a moreToCome command that expects a reply (catalogue 50)', async () => {
    const { client, upstream, closed, events } = recorded();
    client.write(opMsg({ find: 'orders', $db: 'app' }, { flags: MORE_TO_COME }).bytes);
    expect(await client.readFrame()).toBeNull();
    await closed;
    expect(upstream.requests).toHaveLength(0);
    expect(eventsNamed(events, 'refused').map((args) => args[2])).toEqual(['moreToCome.command']);
    expect(eventsNamed(events, 'protocolError')).toEqual([['InvalidOptions']]);
    expect(eventsNamed(events, 'closed')).toEqual([['acme']]);
  });

  it('answers the legacy OP_QUERY handshake with an OP_REPLY', async () => {
    const { client, upstream } = open();
    const request = opQuery('admin.$cmd', { isMaster: 1 });
    client.write(request.bytes);
    const frame = await client.readFrame();
    if (frame === null) throw new Error('closed');
    expect(frame.opCode).toBe(OP_REPLY);
    expect(frame.responseTo).toBe(request.requestId);
    expect(replyDocument(frame)).toMatchObject({ ismaster: true, ok: 1 });
    expect(upstream.requests).toHaveLength(0);
    client.close();
  });

  it('answers a compressed request compressed the same way', async () => {
    const { client, events } = recorded({ respond: () => [{ n: 0, ok: 1 }] });
    const request = opMsg({ count: 'orders', $db: 'app' });
    client.write(await compressMessage(request.bytes, 'zlib'));
    const frame = await client.readFrame();
    if (frame === null) throw new Error('closed');
    expect(frame.opCode).toBe(OP_COMPRESSED);
    const reply = await decompressMessage(frame.bytes, SERVER.maxMessageSizeBytes);
    expect(reply.readInt32LE(8)).toBe(request.requestId);
    expect(replyDocument({ ...frame, opCode: OP_MSG, bytes: reply })).toMatchObject({ n: 0, ok: 1 });
    expect(eventsNamed(events, 'compressed')).toEqual([
      ['zlib', 'received'],
      ['zlib', 'sent'],
    ]);
    client.close();
  });

  it('answers an upstream failure like a server error', async () => {
    const { client, events } = recorded({
      respond: () => {
        throw new UpstreamError(ErrorCodes.HostUnreachable, 'no upstream server reachable', {
          labels: ['RetryableWriteError'],
        });
      },
    });
    const reply = await client.command(opMsg({ find: 'orders', $db: 'app' }));
    expect(reply).toMatchObject({ ok: 0, code: ErrorCodes.HostUnreachable, errorLabels: ['RetryableWriteError'] });
    expect(await finished(events, 1)).toEqual(['upstream_error']);
    client.close();
  });

  it('aborts the upstream request and ends its session when the client leaves mid-command', async () => {
    let forwarded!: () => void;
    const reached = new Promise<void>((resolve) => (forwarded = resolve));
    const { client, upstream, closed, events } = recorded({
      respond: (request) =>
        new Promise<Document[]>((_resolve, reject) => {
          forwarded();
          request.signal?.addEventListener('abort', () => reject(new Error('aborted')));
        }),
    });
    client.write(opMsg({ find: 'orders', $db: 'app' }).bytes);
    await reached;
    client.close();
    await closed;
    expect(upstream.requests[0]?.signal?.aborted).toBe(true);
    expect(upstream.ended).toHaveLength(1);
    expect(eventsNamed(events, 'closed')).toEqual([['acme']]);
  });
});

describe('createConnectionObserver', () => {
  it('writes the connection’s lines with its fields, whether or not its own logger was made yet', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const destination = { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) };
    const logger = pino({ level: 'info' }, destination);
    const audit: AuditLog = {
      decision: () => undefined,
      authentication: () => undefined,
      reopen: () => undefined,
      close: async () => undefined,
    };
    const { client, connection, closed } = open({
      observe: (fields) =>
        createConnectionObserver(
          { metrics: new ProxyMetrics({ processMetrics: false }), audit, logger },
          { ...fields, remoteAddress: '10.0.0.1', remotePort: 5000, listener: 'memory' },
        ),
    });
    await client.command(opMsg({ hello: 1, $db: 'admin' }));
    client.close();
    await closed;
    const byMessage = (msg: string): Record<string, unknown> | undefined => lines.find((line) => line.msg === msg);
    const connectionFields = { connectionId: connection.id, remote: '10.0.0.1:5000' };
    expect(byMessage('client connected')).toMatchObject(connectionFields);
    expect(byMessage('tenant established')).toMatchObject({
      ...connectionFields,
      tenant: 'acme',
      method: 'static',
      principal: 'static',
      how: 'connect',
    });
    expect(byMessage('client disconnected')).toMatchObject({
      ...connectionFields,
      tenant: 'acme',
      identityMethod: 'static',
    });
  });

  /** The sum of the samples of a metric whose labels include `labels`. */
  async function metric(metrics: ProxyMetrics, name: string, labels: Record<string, string>): Promise<number> {
    let sum = 0;
    for (const line of (await metrics.metrics()).split('\n')) {
      if (!line.startsWith(`mongo_tenant_proxy_${name}{`)) continue;
      if (!Object.entries(labels).every(([key, value]) => line.includes(`${key}="${value}"`))) continue;
      sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
    return sum;
  }

  it('turns the connection’s events into metrics and audit events carrying the connection', async () => {
    const metrics = new ProxyMetrics();
    const audited: DecisionAuditEvent[] = [];
    const audit: AuditLog = {
      decision: (event) => void audited.push(event),
      authentication: () => undefined,
      reopen: () => undefined,
      close: async () => undefined,
    };
    const { client, connection } = open({
      observe: (fields) =>
        createConnectionObserver(
          { metrics, audit, logger: pino({ level: 'silent' }) },
          { ...fields, listener: 'memory' },
        ),
    });
    await client.command(opMsg({ mapReduce: 'orders', $db: 'app' }));
    await client.command(opMsg({ find: 'orders', $db: 'app' }));
    await vi.waitFor(() => expect(audited.map((event) => event.command)).toContain('find'));
    expect(audited[0]).toEqual({
      tenant: 'acme',
      command: 'mapReduce',
      namespace: 'app.orders',
      rule: 'command.server-js',
      decision: 'refused',
      connectionId: connection.id,
      listener: 'memory',
      remoteAddress: 'unknown',
    });
    expect(audited).toContainEqual(
      expect.objectContaining({ command: 'find', rule: 'filter.tenant', decision: 'rewritten' }),
    );
    await vi.waitFor(async () =>
      expect(await metric(metrics, 'operations_total', { command: 'find', outcome: 'rewritten' })).toBe(1),
    );
    expect(await metric(metrics, 'policy_decisions_total', { decision: 'refused', rule: 'command.server-js' })).toBe(1);
    expect(await metric(metrics, 'operations_total', { command: 'mapReduce', outcome: 'denied' })).toBe(1);
    expect(await metric(metrics, 'tenant_connections', { tenant: 'acme' })).toBe(1);
    client.close();
  });
});
