import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ErrorCodes, ProxyError, UpstreamError } from '../../../src/errors.js';
import type { UpstreamConnection } from '../../../src/upstream/connection.js';
import { ConnectionPool, type PoolOptions } from '../../../src/upstream/pool.js';

/** Just what the pool touches of an UpstreamConnection. */
class FakeConnection extends EventEmitter {
  closed = false;
  busy = false;
  lastUsed = 0;
  constructor(readonly id: number) {
    super();
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', undefined);
  }
}

function setup(overrides: Partial<PoolOptions> = {}) {
  const opened: FakeConnection[] = [];
  let failNext = 0;
  const pool = new ConnectionPool({
    address: 'h:1',
    maxPoolSize: 2,
    minPoolSize: 0,
    maxIdleConnections: 2,
    idleTimeoutMS: 0,
    maxLifetimeMS: 0,
    waitQueueTimeoutMS: 0,
    open: async () => {
      if (failNext > 0) {
        failNext--;
        throw new UpstreamError(ErrorCodes.HostUnreachable, 'refused', { labels: ['NetworkError'] });
      }
      const connection = new FakeConnection(opened.length + 1);
      opened.push(connection);
      return connection as unknown as UpstreamConnection;
    },
    ...overrides,
  });
  return { pool, opened, failNextOpen: (n = 1) => (failNext = n) };
}

const fake = (connection: UpstreamConnection): FakeConnection => connection as unknown as FakeConnection;

afterEach(() => {
  vi.useRealTimers();
});

describe('ConnectionPool', () => {
  it('never has more than maxPoolSize connections; waiters get the checked-in ones', async () => {
    const { pool, opened } = setup();
    const a = await pool.checkOut('t1');
    const b = await pool.checkOut('t1');
    const waiting = pool.checkOut('t2');
    await Promise.resolve();
    expect(pool.stats).toMatchObject({ open: 2, inUse: 2, waiting: 1, created: 2 });
    pool.checkIn(a);
    expect(await waiting).toBe(a);
    expect(opened).toHaveLength(2);
    pool.checkIn(b);
    expect(pool.stats).toMatchObject({ open: 2, idle: 1, inUse: 1, waiting: 0 });
  });

  it('serves waiting tenants in turn when connections come back', async () => {
    const { pool } = setup({ maxPoolSize: 1 });
    const held = await pool.checkOut('noisy');
    const served: string[] = [];
    const wait = (tenant: string, id: string): Promise<UpstreamConnection> =>
      pool.checkOut(tenant).then((connection) => {
        served.push(id);
        return connection;
      });
    const waiters: Record<string, Promise<UpstreamConnection>> = {
      n1: wait('noisy', 'n1'),
      n2: wait('noisy', 'n2'),
      n3: wait('noisy', 'n3'),
      q1: wait('quiet', 'q1'),
    };
    let current = held;
    for (let i = 0; i < 4; i++) {
      pool.checkIn(current);
      await vi.waitFor(() => expect(served).toHaveLength(i + 1));
      current = await (waiters[served[i] as string] as Promise<UpstreamConnection>);
    }
    expect(served).toEqual(['n1', 'q1', 'n2', 'n3']);
  });

  it('rejects a waiter after waitQueueTimeoutMS with a retryable error, never hangs', async () => {
    vi.useFakeTimers();
    const { pool } = setup({ maxPoolSize: 1, waitQueueTimeoutMS: 100 });
    await pool.checkOut();
    const waiting = pool.checkOut('t').catch((error: unknown) => error);
    await vi.advanceTimersByTimeAsync(150);
    const error = await waiting;
    expect(ProxyError.is(error) && error.code).toBe(ErrorCodes.ExceededTimeLimit);
    expect((error as ProxyError).labels).toContain('NetworkError');
    expect(pool.stats.waiting).toBe(0);
  });

  it('opens a new connection for a waiter when an in-use one closes', async () => {
    const { pool, opened } = setup({ maxPoolSize: 1 });
    const a = await pool.checkOut();
    const waiting = pool.checkOut();
    fake(a).close();
    const b = await waiting;
    expect(b).not.toBe(a);
    expect(opened).toHaveLength(2);
  });

  it('gives the slot to a waiter when an open fails, and reports the failure to its caller', async () => {
    const { pool, failNextOpen } = setup({ maxPoolSize: 1 });
    failNextOpen();
    await expect(pool.checkOut()).rejects.toMatchObject({ code: ErrorCodes.HostUnreachable });
    expect(pool.stats).toMatchObject({ open: 0, pending: 0 });
    const c = await pool.checkOut();
    expect(fake(c).closed).toBe(false);
  });

  it('closes busy (abandoned stream), expired and pre-clear connections instead of reusing them', async () => {
    vi.useFakeTimers();
    const { pool } = setup({ maxPoolSize: 3, maxLifetimeMS: 1_000 });
    const busy = await pool.checkOut();
    const old = await pool.checkOut();
    const cleared = await pool.checkOut();
    fake(busy).busy = true;
    pool.checkIn(busy);
    expect(fake(busy).closed).toBe(true);
    pool.clear();
    pool.checkIn(cleared);
    expect(fake(cleared).closed).toBe(true);
    await vi.advanceTimersByTimeAsync(1_500);
    pool.checkIn(old);
    expect(fake(old).closed).toBe(true);
    expect(pool.stats.open).toBe(0);
  });

  it('keeps at most maxIdleConnections idle and closes them after idleTimeoutMS', async () => {
    vi.useFakeTimers();
    const { pool } = setup({ maxPoolSize: 3, maxIdleConnections: 1, idleTimeoutMS: 500 });
    const a = await pool.checkOut();
    const b = await pool.checkOut();
    pool.checkIn(a);
    pool.checkIn(b);
    expect(fake(b).closed).toBe(true);
    expect(pool.stats.idle).toBe(1);
    await vi.advanceTimersByTimeAsync(600);
    expect(fake(a).closed).toBe(true);
    expect(pool.stats.idle).toBe(0);
  });

  it('keeps a connection that open cursors were opened on past maxIdleConnections, idleTimeoutMS and maxLifetimeMS', async () => {
    vi.useFakeTimers();
    const homes = new Set<FakeConnection>();
    const { pool } = setup({
      maxPoolSize: 3,
      maxIdleConnections: 0,
      idleTimeoutMS: 500,
      maxLifetimeMS: 1_000,
      holdsCursors: (connection) => homes.has(fake(connection)),
    });
    const home = await pool.checkOut();
    const other = await pool.checkOut();
    homes.add(fake(home));
    pool.checkIn(home);
    pool.checkIn(other);
    expect([fake(home).closed, fake(other).closed]).toEqual([false, true]);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(fake(home).closed).toBe(false);
    expect(await pool.checkOut()).toBe(home);
    pool.checkIn(home);
    // Its cursors ended: closed as configured (idle timeout, lifetime); a clear() closes it anyway.
    homes.delete(fake(home));
    await vi.advanceTimersByTimeAsync(600);
    expect(fake(home).closed).toBe(true);
    const cleared = await pool.checkOut();
    homes.add(fake(cleared));
    pool.clear();
    pool.checkIn(cleared);
    expect(fake(cleared).closed).toBe(true);
  });

  it('close() closes everything and rejects waiters', async () => {
    const { pool } = setup({ maxPoolSize: 1 });
    const a = await pool.checkOut();
    const waiting = pool.checkOut().catch((error: unknown) => error);
    pool.close();
    expect(fake(a).closed).toBe(true);
    expect(await waiting).toMatchObject({ code: ErrorCodes.ShutdownInProgress });
    await expect(pool.checkOut()).rejects.toMatchObject({ code: ErrorCodes.ShutdownInProgress });
  });

  it('opens minPoolSize connections in the background', async () => {
    const { pool, opened } = setup({ maxPoolSize: 3, minPoolSize: 2 });
    pool.ensureMinimum();
    await vi.waitFor(() => expect(pool.stats.idle).toBe(2));
    expect(opened).toHaveLength(2);
  });

  describe('per-tenant share cap (maxConnectionsPerTenant)', () => {
    it('makes a tenant at its cap wait while another tenant is served at once', async () => {
      const capWaits: string[] = [];
      const { pool } = setup({
        maxPoolSize: 4,
        maxConnectionsPerTenant: 2,
        onTenantCapWait: (tenant) => capWaits.push(tenant),
      });
      const a1 = await pool.checkOut('a');
      await pool.checkOut('a');
      let a3: UpstreamConnection | undefined;
      const waiting = pool.checkOut('a').then((connection) => (a3 = connection));
      // Room in the pool, but not for tenant a.
      const b1 = await pool.checkOut('b');
      expect(b1).toBeDefined();
      expect(pool.stats).toMatchObject({ inUse: 3, waiting: 1 });
      expect(capWaits).toEqual(['a']);
      // Another tenant's connection coming back does not lift a's cap: it goes idle.
      pool.checkIn(b1);
      await Promise.resolve();
      expect(a3).toBeUndefined();
      expect(pool.stats).toMatchObject({ idle: 1, waiting: 1 });
      // One of a's own does.
      pool.checkIn(a1);
      await waiting;
      expect(a3).toBe(a1);
      expect(pool.stats).toMatchObject({ inUse: 2, waiting: 0 });
    });

    it('serves other tenants first from a full pool, then the capped tenant when its own connection returns', async () => {
      const { pool } = setup({ maxPoolSize: 2, maxConnectionsPerTenant: 1 });
      const a1 = await pool.checkOut('a');
      const b1 = await pool.checkOut('b');
      const order: string[] = [];
      const wait = (tenant: string, label: string): Promise<UpstreamConnection> =>
        pool.checkOut(tenant).then((connection) => {
          order.push(label);
          return connection;
        });
      const a2 = wait('a', 'a2');
      const c1 = wait('c', 'c1');
      // b's connection: a is at its cap, so c (queued later) gets it.
      pool.checkIn(b1);
      expect(await c1).toBe(b1);
      expect(order).toEqual(['c1']);
      // a's own connection returns: it goes to a's waiter.
      pool.checkIn(a1);
      expect(await a2).toBe(a1);
      expect(order).toEqual(['c1', 'a2']);
    });

    it('counts connections being opened toward the tenant', async () => {
      const { pool, opened } = setup({ maxPoolSize: 10, maxConnectionsPerTenant: 2 });
      const first = [pool.checkOut('a'), pool.checkOut('a')];
      const third = pool.checkOut('a');
      await Promise.all(first);
      expect(opened).toHaveLength(2);
      expect(pool.stats.waiting).toBe(1);
      pool.checkIn(await first[0]!);
      expect(await third).toBe(await first[0]!);
      expect(opened).toHaveLength(2);
    });

    it('does not cap requests without a tenant', async () => {
      const { pool } = setup({ maxPoolSize: 3, maxConnectionsPerTenant: 1 });
      await pool.checkOut();
      await pool.checkOut();
      await pool.checkOut();
      expect(pool.stats).toMatchObject({ inUse: 3, waiting: 0 });
    });

    it('frees the share when a held connection closes, and opens a fresh one for the waiter', async () => {
      const { pool, opened } = setup({ maxPoolSize: 3, maxConnectionsPerTenant: 1 });
      const a1 = await pool.checkOut('a');
      const waiting = pool.checkOut('a');
      fake(a1).close();
      const a2 = await waiting;
      expect(a2).not.toBe(a1);
      expect(opened).toHaveLength(2);
    });

    it('times out a capped waiter with the retryable error naming the per-tenant cap', async () => {
      vi.useFakeTimers();
      const { pool } = setup({ maxPoolSize: 3, maxConnectionsPerTenant: 1, waitQueueTimeoutMS: 100 });
      await pool.checkOut('a');
      const waiting = pool.checkOut('a').catch((error: unknown) => error);
      await vi.advanceTimersByTimeAsync(150);
      const error = await waiting;
      expect(ProxyError.is(error) && error.code).toBe(ErrorCodes.ExceededTimeLimit);
      expect((error as ProxyError).labels).toContain('NetworkError');
      expect((error as ProxyError).message).toContain('upstream.maxPoolConnectionsPerTenant');
      expect(pool.stats.waiting).toBe(0);
      // The pool itself was never full: another tenant is served at once.
      await expect(pool.checkOut('b')).resolves.toBeDefined();
    });

    it('rejects a negative or fractional cap', () => {
      expect(() => setup({ maxConnectionsPerTenant: -1 })).toThrow(RangeError);
      expect(() => setup({ maxConnectionsPerTenant: 1.5 })).toThrow(RangeError);
    });
  });
});
