/**
 * Fault suite (issue 5, "Proof"): the upstream is killed with SIGKILL in the middle of a mixed
 * read/write load through the proxy, then started again on the same port with the same data.
 * Twice. Afterwards the database, read directly, must agree with what the drivers were told (see
 * test/helpers/mixed-load.ts for the invariants), the proxy must still serve new clients, and
 * its memory must return near the baseline it had before the load.
 *
 * Uses a FerretDB of its own (not the shared upstream), also when MONGODB_URI is set.
 * Run alone, repeatedly: `npm run test:faults`.
 */
import { MongoClient } from 'mongodb';
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { MiB, settledMemory } from '../helpers/memory.js';
import { metricValue } from '../helpers/metrics.js';
import { MixedLoad, checkLedger, reportLedger } from '../helpers/mixed-load.js';
import type { TestProxy } from '../helpers/proxy.js';
import { startRestartableFerretDB, uniqueDbName } from '../helpers/upstream.js';
import { sleep, until } from '../helpers/wait.js';

/** How long the upstream stays down after the first failures were seen. */
const UPSTREAM_DOWN_MS = 1_500;
/**
 * The circuit breaker's open period: the kill opens it, and recovery after the restart waits it
 * out. The default (10 s) adds that much idle time per cycle and proves nothing more.
 */
const BREAKER_OPEN_MS = 1_000;

/** Load clients: several drivers, each with a small pool, as several application instances. */
function loadClients(proxy: TestProxy, count: number): MongoClient[] {
  return Array.from({ length: count }, () => proxy.client({ maxPoolSize: 3 }));
}

/** Runs a short fault-free load so first-use allocations (JIT, caches, metric labels) are done. */
async function warmUp(proxy: TestProxy, database: string): Promise<void> {
  const clients = loadClients(proxy, 2);
  const load = new MixedLoad({ clients, database, collection: 'warmup', workersPerClient: 2 });
  load.start();
  await until(() => load.succeeded >= 150, { timeoutMS: 30_000, message: 'warm-up load made no progress' });
  await load.stop();
  expect(load.ledger.errors).toEqual([]);
  await Promise.all(clients.map((client) => client.close()));
}

describe('upstream killed and restarted during a mixed load', () => {
  it('loses no acknowledged write, applies none twice, fails reads only retryably, keeps serving and returns to its memory baseline', async ({
    defer,
    startProxy,
  }) => {
    const ferret = await startRestartableFerretDB();
    defer(() => ferret.stop());
    const proxy = await startProxy({ upstream: { uri: ferret.uri, circuitBreaker: { openMS: BREAKER_OPEN_MS } } });
    const direct = new MongoClient(ferret.uri, { serverSelectionTimeoutMS: 20_000 });
    defer(() => direct.close());
    const database = uniqueDbName('faults_restart');

    await warmUp(proxy, database);
    await until(async () => (await metricValue(proxy.proxy, 'client_connections')) === 0, {
      message: 'warm-up clients still connected',
    });
    const baseline = await settledMemory();

    const clients = loadClients(proxy, 4);
    const load = new MixedLoad({ clients, database, workersPerClient: 3 });
    load.start();
    await until(() => load.succeeded >= 150, { timeoutMS: 30_000, message: 'load made no progress before the kill' });

    // Two cycles: the second kills connections the proxy re-established after the first.
    for (let cycle = 1; cycle <= 2; cycle++) {
      await ferret.kill();
      const errorsAtKill = load.ledger.errors.length;
      await until(() => load.ledger.errors.length >= errorsAtKill + 10, {
        message: `cycle ${cycle}: no operation failed while the upstream was down`,
      });
      // Down for longer than any retry budget (backoff caps at 1 s), so failures reach the clients.
      await sleep(UPSTREAM_DOWN_MS);

      await ferret.restart();
      const succeededAtRestart = load.succeeded;
      await until(() => load.succeeded >= succeededAtRestart + 150, {
        timeoutMS: 30_000,
        message: `cycle ${cycle}: the load did not recover after the upstream came back`,
      });
    }
    await load.stop();
    await Promise.all(clients.map((client) => client.close()));

    const check = await checkLedger(direct.db(database), load);
    reportLedger('upstream SIGKILL + restart', check);
    expect(check.violations).toEqual([]);
    expect(load.ledger.errors.length).toBeGreaterThan(0);

    // The proxy survived and serves a client that connects now.
    const fresh = proxy.client();
    const collection = fresh.db(database).collection<{ _id: string; kind: string }>('after-restart');
    await collection.insertOne({ _id: 'after', kind: 'fresh' });
    expect(await collection.findOne({ _id: 'after' })).toMatchObject({ _id: 'after', kind: 'fresh' });
    await fresh.close();

    // Memory: every client connection is gone, no upstream connection is in use or leaked, and
    // the heap and buffers are near the pre-load baseline.
    await until(async () => (await metricValue(proxy.proxy, 'client_connections')) === 0, {
      message: 'client connections not released',
    });
    expect(await metricValue(proxy.proxy, 'upstream_connections', { state: 'in_use' })).toBe(0);
    // No more upstream connections than the load's clients ever had (4 clients × pools of 3).
    expect(await metricValue(proxy.proxy, 'upstream_connections')).toBeLessThanOrEqual(12);
    const after = await settledMemory();
    expect(after.heapUsed - baseline.heapUsed).toBeLessThan(24 * MiB);
    expect(after.arrayBuffers - baseline.arrayBuffers).toBeLessThan(16 * MiB);
  });
});
