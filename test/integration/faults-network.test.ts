/**
 * Fault suite (issue 5, "Proof"): network faults between the proxy and the upstream, injected by
 * the TCP fault injector (test/helpers/fault-proxy.ts) during a mixed read/write load through the
 * proxy: added latency, resets (RST) in the middle of replies, messages cut in the middle,
 * black-holed new connections and half-open connections. After each, the database, read
 * directly, must agree with what the drivers were told (test/helpers/mixed-load.ts), every
 * operation must have an outcome (no hang), and at the end the proxy's memory must be back near
 * its baseline.
 *
 *   drivers ──▶ proxy ──▶ fault proxy ──▶ shared upstream
 *
 * Run alone, repeatedly: `npm run test:faults`.
 */
import type { MongoClient } from 'mongodb';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy, targetFromUri, type FaultProxy } from '../helpers/fault-proxy.js';
import { MiB, settledMemory, type SettledMemory } from '../helpers/memory.js';
import { metricValue } from '../helpers/metrics.js';
import { MixedLoad, checkLedger, reportLedger, type LedgerCheck } from '../helpers/mixed-load.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { directClient, uniqueDbName, upstreamUri } from '../helpers/upstream.js';
import { sleep, until } from '../helpers/wait.js';

/** The proxy's upstream connect (and handshake) timeout here: black holes must fail fast. */
const CONNECT_TIMEOUT_MS = 2_000;
/** The proxy's bound on a reply that never comes: half-open connections must fail fast too. */
const SOCKET_TIMEOUT_MS = 3_000;
/** Successful operations wanted before a fault, and again after it is healed. */
const PROGRESS = 100;
/**
 * The circuit breaker's open period: resets and black holes open it, and recovery waits it out.
 * The default (10 s) adds that much idle time per fault and proves nothing more.
 */
const BREAKER_OPEN_MS = 1_000;

let faults: FaultProxy;
let proxy: TestProxy;
let direct: MongoClient;
let database: string;
let baseline: SettledMemory;
const loadClients = new Set<MongoClient>();

beforeAll(async () => {
  faults = await startFaultProxy({ target: targetFromUri(upstreamUri()) });
  proxy = await startTestProxy({
    upstream: {
      uri: faults.uriFor(upstreamUri()),
      connectTimeoutMS: CONNECT_TIMEOUT_MS,
      socketTimeoutMS: SOCKET_TIMEOUT_MS,
      circuitBreaker: { openMS: BREAKER_OPEN_MS },
    },
  });
  direct = directClient();
  database = uniqueDbName('faults_network');
  // Warm up first-use allocations (JIT, caches, metric labels), then take the memory baseline.
  await runLoad('warmup', { during: async () => {} });
  await until(async () => (await metricValue(proxy.proxy, 'client_connections')) === 0, {
    message: 'warm-up clients still connected',
  });
  baseline = await settledMemory();
});

afterEach(async () => {
  faults.setMode('pass');
  faults.setLatency(0);
  faults.setBandwidth(null);
  faults.cutAfterBytes(null);
  await Promise.allSettled([...loadClients].map((client) => client.close()));
  loadClients.clear();
});

afterAll(async () => {
  await proxy?.stop();
  await direct?.close();
  await faults?.close();
});

interface FaultRun {
  load: MixedLoad;
  check: LedgerCheck;
}

/**
 * Runs the mixed load through the proxy: PROGRESS successes, then `inject` and `during` (which
 * waits while the fault acts), then `heal` and PROGRESS more successes (within
 * `recoveryTimeoutMS`); stops the load (every operation must settle within `stopTimeoutMS`) and
 * checks the ledger against the database.
 */
async function runLoad(
  collection: string,
  fault: {
    inject?: () => void;
    during: (load: MixedLoad) => Promise<void>;
    heal?: () => void;
    recoveryTimeoutMS?: number;
    stopTimeoutMS?: number;
  },
): Promise<FaultRun> {
  const clients = Array.from({ length: 3 }, () => proxy.client({ maxPoolSize: 3 }));
  for (const client of clients) loadClients.add(client);
  const load = new MixedLoad({ clients, database, collection, workersPerClient: 3 });
  load.start();
  try {
    await until(() => load.succeeded >= PROGRESS, {
      timeoutMS: 30_000,
      message: `${collection}: no progress before the fault`,
    });
    fault.inject?.();
    await fault.during(load);
    fault.heal?.();
    const succeededAtHeal = load.succeeded;
    await until(() => load.succeeded >= succeededAtHeal + PROGRESS, {
      timeoutMS: fault.recoveryTimeoutMS ?? 30_000,
      message: `${collection}: no recovery after the fault`,
    });
    await load.stop(fault.stopTimeoutMS);
  } catch (error) {
    load.abort();
    throw error;
  }
  await Promise.all(clients.map((client) => client.close()));
  const check = await checkLedger(direct.db(database), load);
  reportLedger(collection, check);
  return { load, check };
}

/** Waits until `count` more operations have failed. */
const failures = (count: number) => (load: MixedLoad) => {
  const before = load.ledger.errors.length;
  return until(() => load.ledger.errors.length >= before + count, {
    timeoutMS: 20_000,
    message: `fewer than ${count} operations failed under the fault`,
  });
};

describe('network faults between the proxy and the upstream, during a mixed load', () => {
  it('added latency with jitter: every operation succeeds, the database agrees', async () => {
    const { load, check } = await runLoad('latency', {
      inject: () => faults.setLatency(40, { jitterMS: 40 }),
      during: (running) => {
        const before = running.succeeded;
        return until(() => running.succeeded >= before + PROGRESS, {
          timeoutMS: 30_000,
          message: 'no progress under latency',
        });
      },
      heal: () => faults.setLatency(0),
    });
    expect(check.violations).toEqual([]);
    expect(load.ledger.errors).toEqual([]);
  });

  it('connection resets (RST) in the middle of throttled replies: no acknowledged write lost or doubled, reads fail retryably', async () => {
    const { load, check } = await runLoad('resets', {
      // Slow enough that most replies are in transit when the resets hit.
      inject: () => faults.setBandwidth(8_000),
      during: async (running) => {
        for (let reset = 0; reset < 4; reset++) {
          const errors = running.ledger.errors.length;
          const succeeded = running.succeeded;
          faults.resetAll();
          await until(() => running.succeeded >= succeeded + 10, {
            timeoutMS: 20_000,
            message: `reset ${reset + 1}: no progress afterwards (${running.succeeded - succeeded} succeeded, ${running.ledger.errors.length - errors} failed, ${running.inFlight} in flight)`,
          });
        }
      },
      heal: () => faults.setBandwidth(null),
    });
    expect(check.violations).toEqual([]);
    expect(load.ledger.errors.length).toBeGreaterThan(0);
  });

  it('messages cut in the middle (the upstream gets part of a request, then FIN): the database agrees', async () => {
    const { load, check } = await runLoad('cut', {
      // Past the proxy's upstream handshake, so connections die mid-command.
      inject: () => faults.cutAfterBytes(700),
      during: failures(10),
      heal: () => faults.cutAfterBytes(null),
    });
    expect(check.violations).toEqual([]);
    expect(load.ledger.errors.length).toBeGreaterThan(0);
  });

  it('black-holed upstream connections: the proxy gives up after connectTimeoutMS with a retryable error instead of hanging', async () => {
    const { load, check } = await runLoad('blackhole', {
      inject: () => {
        faults.setMode('blackhole');
        faults.resetAll(); // pooled connections die; new ones are accepted and never answered
      },
      // The resets fail what was in flight at once; the black hole's own failures come after
      // connectTimeoutMS (NetworkTimeout today), so count failures only from halfway there.
      during: async (running) => {
        await sleep(CONNECT_TIMEOUT_MS / 2);
        await failures(3)(running);
      },
      heal: () => faults.setMode('pass'),
      stopTimeoutMS: 4 * CONNECT_TIMEOUT_MS + 5_000,
    });
    expect(check.violations).toEqual([]);
    expect(load.ledger.errors.length).toBeGreaterThan(0);
  });

  // Without an upstream read bound (upstream.socketTimeoutMS, or maxTimeMS + 5 s) a command whose
  // connection went half-open (requests arrive, replies never come back, no FIN or RST) would wait
  // forever, and so would the driver (its socketTimeoutMS defaults to none).
  it('half-open upstream connections: commands in flight fail with a retryable error instead of hanging', async () => {
    const { load, check } = await runLoad('half-open', {
      inject: () => faults.setMode('half-open'),
      during: () => sleep(1_000),
      // Replies already dropped are gone: only a timeout in the proxy (upstream.socketTimeoutMS) can end those commands.
      heal: () => faults.setMode('pass'),
      recoveryTimeoutMS: 15_000,
      stopTimeoutMS: 15_000,
    });
    expect(check.violations).toEqual([]);
    expect(load.ledger.errors.length).toBeGreaterThan(0);
  });

  it('afterwards: still serves new clients, holds no client connection, and memory is back near its baseline', async () => {
    // Connections left stuck by a fault (half-open) are the upstream's to lose: reset them.
    faults.resetAll();
    const fresh = proxy.client();
    const collection = fresh.db(database).collection<{ _id: string; kind: string }>('after-faults');
    await collection.insertOne({ _id: 'after', kind: 'fresh' });
    expect(await collection.findOne({ _id: 'after' })).toMatchObject({ _id: 'after' });
    await fresh.close();

    await until(async () => (await metricValue(proxy.proxy, 'client_connections')) === 0, {
      message: 'client connections not released',
    });
    await until(async () => (await metricValue(proxy.proxy, 'upstream_connections', { state: 'in_use' })) === 0, {
      message: 'upstream connections still in use',
    });
    const after = await settledMemory();
    expect(after.heapUsed - baseline.heapUsed).toBeLessThan(24 * MiB);
    expect(after.arrayBuffers - baseline.arrayBuffers).toBeLessThan(16 * MiB);
  });
});
