/**
 * The TCP fault injector of test/helpers/fault-proxy.ts, exercised against a plain echo server
 * (exact bytes, backpressure) and against the shared upstream through the official driver (what a
 * driver sees for each fault). Timing assertions are lower bounds only.
 */
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { MongoClient, MongoNetworkError, type MongoClientOptions } from 'mongodb';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { type FaultProxy, HIGH_WATER_MARK, startFaultProxy, targetFromUri } from '../helpers/fault-proxy.js';
import { directClient, uniqueDbName, upstreamUri } from '../helpers/upstream.js';
import { sleep, until } from '../helpers/wait.js';

// ---------------------------------------------------------------------------------------------
// A plain echo server that also records what each connection received.

interface EchoConnection {
  socket: net.Socket;
  received: number;
  ended: boolean;
  closed: boolean;
}

interface EchoServer {
  port: number;
  connections: EchoConnection[];
  /** Stop echoing and reading on new connections (to test backpressure). */
  silent: boolean;
  close(): Promise<void>;
}

async function startEcho(): Promise<EchoServer> {
  const echo: EchoServer = {
    port: 0,
    connections: [],
    silent: false,
    close: () =>
      new Promise<void>((resolve) => {
        for (const c of echo.connections) c.socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    const conn: EchoConnection = { socket, received: 0, ended: false, closed: false };
    echo.connections.push(conn);
    socket.on('error', () => {});
    socket.on('close', () => (conn.closed = true));
    socket.on('end', () => {
      conn.ended = true;
      socket.end();
    });
    if (echo.silent) {
      socket.pause();
      return;
    }
    socket.on('data', (data: Buffer) => {
      conn.received += data.length;
      if (!socket.write(data)) {
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  echo.port = (server.address() as net.AddressInfo).port;
  return echo;
}

/** A client socket that collects everything it receives. */
interface TestClient {
  socket: net.Socket;
  received(): Buffer;
  /** Resolves once at least n bytes arrived. */
  waitFor(n: number): Promise<Buffer>;
  /** Resolves with the error (or undefined) when the socket closes. */
  closed: Promise<Error | undefined>;
}

async function connectClient(port: number): Promise<TestClient> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  const chunks: Buffer[] = [];
  let total = 0;
  const waiters: Array<{ n: number; resolve: (b: Buffer) => void }> = [];
  let lastError: Error | undefined;
  socket.on('error', (error) => (lastError = error));
  const closed = new Promise<Error | undefined>((resolve) => socket.on('close', () => resolve(lastError)));
  socket.on('data', (data: Buffer) => {
    chunks.push(data);
    total += data.length;
    for (const w of [...waiters]) {
      if (total >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(Buffer.concat(chunks));
      }
    }
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return {
    socket,
    received: () => Buffer.concat(chunks),
    waitFor: (n) =>
      total >= n ? Promise.resolve(Buffer.concat(chunks)) : new Promise((resolve) => waiters.push({ n, resolve })),
    closed,
  };
}

/** Timers may fire a millisecond or two "early" against a clock read elsewhere. */
const SLACK_MS = 5;

// ---------------------------------------------------------------------------------------------

describe('fault proxy against an echo server', () => {
  let echo: EchoServer;
  let faults: FaultProxy;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    echo = await startEcho();
  });
  afterAll(async () => {
    await echo.close();
  });
  beforeEach(async () => {
    // A fresh proxy per test, so settings never leak between tests.
    faults = await startFaultProxy({ target: { host: '127.0.0.1', port: echo.port } });
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.destroy();
    await faults.close();
    echo.silent = false;
  });

  async function client(): Promise<TestClient> {
    const c = await connectClient(faults.port);
    clients.push(c);
    return c;
  }

  it('forwards bytes both ways, loopback only, and counts them', async () => {
    expect(faults.host).toBe('127.0.0.1');
    expect(faults.uri).toBe(`mongodb://127.0.0.1:${faults.port}/?directConnection=true`);
    const c = await client();
    const payload = Buffer.alloc(200_000, 7);
    c.socket.write(payload);
    const back = await c.waitFor(payload.length);
    expect(back.equals(payload)).toBe(true);
    const stats = faults.stats();
    expect(stats).toMatchObject({
      connectionsOpen: 1,
      connectionsTotal: 1,
      connectionsRefused: 0,
      bytesClientToUpstream: payload.length,
      bytesUpstreamToClient: payload.length,
      bytesDropped: 0,
    });
    c.socket.end();
    expect(await c.closed).toBeUndefined();
    await until(() => faults.stats().connectionsOpen === 0, {
      timeoutMS: 5_000,
      message: 'the connection to be counted closed',
    });
    expect(faults.stats().connectionsTotal).toBe(1);
  });

  it('latency delays each direction, also on an existing connection, and keeps order under jitter', async () => {
    const c = await client();
    c.socket.write('a');
    await c.waitFor(1);

    faults.setLatency(100, { jitterMS: 50 });
    const started = performance.now();
    c.socket.write('b');
    await c.waitFor(2);
    expect(performance.now() - started).toBeGreaterThanOrEqual(200 - SLACK_MS);

    // Many small writes with jitter come back complete and in order.
    faults.setLatency(5, { jitterMS: 30 });
    const parts: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const part = Buffer.from(`<${i}>`);
      parts.push(part);
      c.socket.write(part);
      if (i % 20 === 0) await sleep(1);
    }
    const expected = Buffer.concat([Buffer.from('ab'), ...parts]);
    const back = await c.waitFor(expected.length);
    expect(back.toString()).toBe(expected.toString());
  });

  it('bandwidth throttles each direction', async () => {
    const c = await client();
    faults.setBandwidth(20_000);
    const payload = Buffer.alloc(10_000, 1);
    const started = performance.now();
    c.socket.write(payload);
    await c.waitFor(payload.length);
    // 10,000 bytes at 20,000 B/s in 1,000-byte slices: the last slice leaves >= 450 ms after the first.
    expect(performance.now() - started).toBeGreaterThanOrEqual(450 - SLACK_MS);
    faults.setBandwidth(null);
    c.socket.write(payload);
    await c.waitFor(2 * payload.length);
  });

  it('keeps its memory bounded when the target stops reading', async () => {
    echo.silent = true;
    const c = await client();
    const chunk = Buffer.alloc(64 * 1024, 3);
    let written = 0;
    // Write 64 MiB (more than loopback's kernel buffers absorb); the proxy must not hold it.
    while (written < 64 * 1024 * 1024) {
      c.socket.write(chunk);
      written += chunk.length;
    }
    await sleep(300);
    const stats = faults.stats();
    expect(stats.bufferedBytes).toBeLessThanOrEqual(2 * HIGH_WATER_MARK + 64 * 1024);
    expect(stats.peakBufferedBytes).toBeLessThanOrEqual(2 * HIGH_WATER_MARK + 64 * 1024);
    // Much of the 8 MiB is still waiting in the client's socket: backpressure reached it.
    expect(stats.bytesClientToUpstream).toBeLessThan(written);
    expect(c.socket.writableLength).toBeGreaterThan(0);
  });

  it('resetAll resets existing connections with ECONNRESET and leaves the proxy usable', async () => {
    const c = await client();
    c.socket.write('x');
    await c.waitFor(1);
    faults.resetAll();
    const error = await c.closed;
    expect((error as NodeJS.ErrnoException | undefined)?.code).toBe('ECONNRESET');
    await until(() => echo.connections.at(-1)?.closed === true, {
      timeoutMS: 5_000,
      message: 'the target side to be closed',
    });
    const again = await client();
    again.socket.write('y');
    expect((await again.waitFor(1)).toString()).toBe('y');
  });

  it('blackhole accepts and reads but never forwards or answers', async () => {
    const existing = await client();
    existing.socket.write('1');
    await existing.waitFor(1);
    const targetConnections = echo.connections.length;

    faults.setMode('blackhole');
    expect(faults.mode).toBe('blackhole');
    existing.socket.write('2');
    const fresh = await client(); // accepted
    fresh.socket.write('hello');
    await until(() => faults.stats().bytesDropped === 6, {
      timeoutMS: 5_000,
      message: 'the proxy to read and drop 6 bytes',
    });
    await sleep(150);
    expect(existing.received().toString()).toBe('1');
    expect(fresh.received().length).toBe(0);
    expect(echo.connections.length).toBe(targetConnections); // the new one never reached the target
    expect(existing.socket.destroyed || fresh.socket.destroyed).toBe(false);
  });

  it('refuse closes new connections at once and leaves existing ones working', async () => {
    const existing = await client();
    faults.setMode('refuse');
    const refused = net.connect({ host: '127.0.0.1', port: faults.port });
    refused.on('error', () => {});
    const outcome = await new Promise<{ data: number; closed: boolean }>((resolve) => {
      let data = 0;
      refused.on('data', (d: Buffer) => (data += d.length));
      refused.on('close', () => resolve({ data, closed: true }));
    });
    expect(outcome).toEqual({ data: 0, closed: true });
    expect(faults.stats().connectionsRefused).toBe(1);
    existing.socket.write('still here');
    expect((await existing.waitFor(10)).toString()).toBe('still here');
    faults.setMode('pass');
    const later = await client();
    later.socket.write('z');
    expect((await later.waitFor(1)).toString()).toBe('z');
  });

  it('half-open forwards client→target only and keeps both sockets open', async () => {
    const c = await client();
    c.socket.write('a');
    await c.waitFor(1);
    faults.setMode('half-open');
    c.socket.write('bcdef');
    const target = echo.connections.at(-1)!;
    await until(() => target.received === 6, { timeoutMS: 5_000, message: 'the target to receive the bytes' });
    await until(() => faults.stats().bytesDropped === 5, { timeoutMS: 5_000, message: 'the echo to be dropped' });
    await sleep(100);
    expect(c.received().toString()).toBe('a');
    // Even the target's FIN is hidden from the client.
    target.socket.end();
    await sleep(100);
    expect(c.socket.destroyed).toBe(false);
    expect(c.socket.readableEnded).toBe(false);
  });

  it('cutAfterBytes delivers exactly n bytes to the target then closes the connection', async () => {
    const before = await client();
    before.socket.write('0123456789');
    await before.waitFor(10);
    faults.cutAfterBytes(4); // counted from now on the existing connection
    before.socket.write('abcdefgh');
    await before.closed;
    const existingTarget = echo.connections.at(-1)!;
    await until(() => existingTarget.ended, { timeoutMS: 5_000, message: 'the target to see the FIN' });
    expect(existingTarget.received).toBe(14);

    const fresh = await client(); // counted from its start
    fresh.socket.write(Buffer.alloc(100, 9));
    await fresh.closed;
    const freshTarget = echo.connections.at(-1)!;
    await until(() => freshTarget.ended, { timeoutMS: 5_000, message: 'the target to see the FIN' });
    expect(freshTarget.received).toBe(4);
    faults.cutAfterBytes(null);
  });

  it('close destroys everything, refuses new connections and is idempotent', async () => {
    const c = await client();
    c.socket.write('q');
    await c.waitFor(1);
    await Promise.all([faults.close(), faults.close()]);
    await c.closed;
    await faults.close();
    await expect(connectClient(faults.port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });
});

// ---------------------------------------------------------------------------------------------

interface Doc {
  _id: string;
  [field: string]: unknown;
}

describe('fault proxy in front of the shared upstream, through the driver', () => {
  let faults: FaultProxy;
  let direct: MongoClient;
  const dbName = uniqueDbName('faultproxy');
  const clients: MongoClient[] = [];

  beforeAll(async () => {
    faults = await startFaultProxy({ target: targetFromUri(upstreamUri()) });
    direct = directClient();
    await direct.connect();
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close(true).catch(() => {})));
    await direct
      .db(dbName)
      .dropDatabase()
      .catch(() => {});
    await direct.close();
    await faults.close();
  });
  afterEach(() => {
    faults.setMode('pass');
    faults.setLatency(0);
    faults.setBandwidth(null);
    faults.cutAfterBytes(null);
  });

  async function connect(options: MongoClientOptions = {}): Promise<MongoClient> {
    const client = new MongoClient(faults.uriFor(upstreamUri()), {
      serverSelectionTimeoutMS: 2_000,
      connectTimeoutMS: 2_000,
      retryReads: false,
      retryWrites: false,
      ...options,
    });
    clients.push(client);
    await client.connect();
    return client;
  }

  it('targetFromUri and uriFor keep the target and the options', () => {
    expect(targetFromUri('mongodb://u:p@db.example:27019,other:1/?replicaSet=rs0&tls=true')).toEqual({
      host: 'db.example',
      port: 27019,
    });
    expect(targetFromUri('mongodb://[::1]/')).toEqual({ host: '::1', port: 27017 });
    const uri = faults.uriFor('mongodb://u:p@db.example:27019/app?replicaSet=rs0&authSource=admin');
    expect(uri).toBe(`mongodb://u:p@127.0.0.1:${faults.port}/app?authSource=admin&directConnection=true`);
  });

  it('passes commands through and counts connections and bytes', async () => {
    const before = faults.stats();
    const client = await connect();
    const coll = client.db(dbName).collection<Doc>('pass');
    await coll.insertOne({ _id: 'p1', n: 1 });
    expect(await coll.findOne({ _id: 'p1' })).toEqual({ _id: 'p1', n: 1 });
    const during = faults.stats();
    expect(during.connectionsOpen).toBeGreaterThan(before.connectionsOpen);
    expect(during.connectionsTotal).toBeGreaterThan(before.connectionsTotal);
    expect(during.bytesClientToUpstream).toBeGreaterThan(before.bytesClientToUpstream);
    expect(during.bytesUpstreamToClient).toBeGreaterThan(before.bytesUpstreamToClient);
    await client.close();
    await until(() => faults.stats().connectionsOpen === before.connectionsOpen, {
      timeoutMS: 5_000,
      message: 'the driver connections to close',
    });
  });

  it('latency adds at least the round trip to a command', async () => {
    const client = await connect();
    const db = client.db(dbName);
    await db.command({ ping: 1 });
    faults.setLatency(100);
    const started = performance.now();
    await db.command({ ping: 1 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(200 - SLACK_MS);
  });

  it('resetAll fails an in-flight command with a network error', async () => {
    const client = await connect();
    const db = client.db(dbName);
    await db.command({ ping: 1 });
    faults.setLatency(1_000); // keeps the ping in flight
    const pending = db.command({ ping: 1 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    await sleep(100);
    faults.resetAll();
    const error = await pending;
    expect(error).toBeInstanceOf(MongoNetworkError);
  });

  it('blackhole makes commands time out and new clients fail server selection', async () => {
    const client = await connect({ socketTimeoutMS: 500 });
    const db = client.db(dbName);
    await db.command({ ping: 1 });
    faults.setMode('blackhole');
    const started = performance.now();
    const error = await db.command({ ping: 1 }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(error).toBeInstanceOf(MongoNetworkError);
    expect(error?.message).toMatch(/timed out/i);
    expect(performance.now() - started).toBeGreaterThanOrEqual(500 - SLACK_MS);

    const fresh = new MongoClient(faults.uri, { serverSelectionTimeoutMS: 600, connectTimeoutMS: 400 });
    clients.push(fresh);
    await expect(fresh.connect()).rejects.toMatchObject({ name: 'MongoServerSelectionError' });
  });

  it('refuse makes a new client fail server selection', async () => {
    const before = faults.stats().connectionsRefused;
    faults.setMode('refuse');
    const fresh = new MongoClient(faults.uri, { serverSelectionTimeoutMS: 600 });
    clients.push(fresh);
    await expect(fresh.connect()).rejects.toMatchObject({ name: 'MongoServerSelectionError' });
    expect(faults.stats().connectionsRefused).toBeGreaterThan(before);
  });

  it('half-open: the write is applied upstream but its acknowledgement never arrives', async () => {
    const client = await connect({ socketTimeoutMS: 700 });
    const coll = client.db(dbName).collection<Doc>('halfopen');
    await coll.insertOne({ _id: 'warm' });
    faults.setMode('half-open');
    const error = await coll.insertOne({ _id: 'h1' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MongoNetworkError);
    expect(await direct.db(dbName).collection<Doc>('halfopen').findOne({ _id: 'h1' })).toEqual({ _id: 'h1' });
  });

  it('bandwidth slows a large reply to at least its size over the rate', async () => {
    const client = await connect();
    const coll = client.db(dbName).collection<Doc>('bandwidth');
    const blob = 'x'.repeat(20_000);
    await coll.insertOne({ _id: 'b1', blob });
    faults.setBandwidth(40_000);
    const started = performance.now();
    const doc = await coll.findOne({ _id: 'b1' });
    expect(doc?.blob).toBe(blob);
    // >= 20,000 reply bytes at 40,000 B/s in 2,000-byte slices: >= 450 ms after the first slice.
    expect(performance.now() - started).toBeGreaterThanOrEqual(450 - SLACK_MS);
  });

  it('cutAfterBytes cuts a command in the middle: network error, nothing applied', async () => {
    const client = await connect();
    const coll = client.db(dbName).collection<Doc>('cut');
    await coll.insertOne({ _id: 'warm' });
    faults.cutAfterBytes(30); // inside the next message (header 16 bytes + flags + body)
    const error = await coll.insertOne({ _id: 'c1', pad: 'y'.repeat(200) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(MongoNetworkError);
    await sleep(100);
    expect(await direct.db(dbName).collection<Doc>('cut').findOne({ _id: 'c1' })).toBeNull();
  });
});
