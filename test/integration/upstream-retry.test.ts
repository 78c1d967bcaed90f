/**
 * Retries and the circuit breaker against a real FerretDB behind the TCP fault injector
 * (issue 5): a read whose connection is reset under it succeeds after a retry; a write without a
 * txnNumber under a reset is never resent (applied at most once) and comes back as an error with
 * labels; refused connections open the breaker, which fails fast and recovers.
 */
import { MongoClient, MongoServerError } from 'mongodb';
import { describe, expect } from 'vitest';
import type { FaultProxy } from '../helpers/fault-proxy.js';
import { it } from '../helpers/fixtures.js';
import { scrape } from '../helpers/metrics.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';
import { directClient, uniqueDbName } from '../helpers/upstream.js';

/** Resolves once the fault proxy has forwarded more bytes to the upstream than `before`. */
async function requestReachedUpstream(faults: FaultProxy, before: number): Promise<void> {
  await expect
    .poll(() => faults.stats().bytesClientToUpstream, { timeout: 20_000, interval: 5 })
    .toBeGreaterThan(before);
}

describe('retries through the fault injector', () => {
  it('retries a find whose upstream connection is reset after the request was sent, and succeeds', async ({
    faultProxy,
    startProxy,
  }) => {
    const faults = await faultProxy();
    const proxy = await startProxy({ upstream: { uri: faults.uri } });
    const db = uniqueDbName('retryread');
    // Driver retries off: a success can only come from the proxy's own retry.
    const client: MongoClient = proxy.client({ retryReads: false, retryWrites: false });
    await client
      .db(db)
      .collection('c')
      .insertOne({ _id: 'doc' as never, v: 1 });
    // A first read lets the proxy learn that c is no view (catalogue 22), so the reset below hits the find itself.
    await client
      .db(db)
      .collection('c')
      .findOne({ _id: 'doc' as never });

    faults.setLatency(1_500);
    const before = faults.stats().bytesClientToUpstream;
    const pending = client
      .db(db)
      .collection('c')
      .findOne({ _id: 'doc' as never });
    await requestReachedUpstream(faults, before);
    faults.setLatency(0);
    faults.resetAll();
    expect(await pending).toMatchObject({ v: 1 });
    expect(await scrape(proxy.proxy)).toMatch(
      /^mongo_tenant_proxy_upstream_retries_total\{command="find",reason="network"\} 1$/m,
    );
  });

  it('never resends a write without txnNumber: a reset under it is an error with labels, applied at most once', async ({
    faultProxy,
    startProxy,
  }) => {
    const faults = await faultProxy();
    const proxy = await startProxy({ upstream: { uri: faults.uri } });
    const db = uniqueDbName('retrywrite');
    const client: MongoClient = proxy.client({ retryReads: false, retryWrites: false });
    await client
      .db(db)
      .collection('c')
      .insertOne({ _id: 'warmup' as never });

    faults.setLatency(1_500);
    const before = faults.stats().bytesClientToUpstream;
    const pending = client
      .db(db)
      .collection('c')
      .insertOne({ _id: 'once' as never })
      .then(
        () => undefined,
        (error: unknown) => error,
      );
    await requestReachedUpstream(faults, before);
    // Give FerretDB time to apply it: the reply is what gets lost.
    await new Promise((resolve) => setTimeout(resolve, 300));
    faults.setLatency(0);
    faults.resetAll();
    const error = await pending;
    expect(error).toBeInstanceOf(MongoServerError);
    expect((error as MongoServerError).code).toBe(9001);
    expect((error as MongoServerError).errorLabels).not.toContain('RetryableWriteError');
    expect((error as MongoServerError).message).toMatch(/connection to the upstream server failed/);
    const direct = directClient();
    try {
      expect(
        await direct
          .db(db)
          .collection('c')
          .countDocuments({ _id: 'once' as never }),
      ).toBeLessThanOrEqual(1);
    } finally {
      await direct.close();
    }
    expect(await scrape(proxy.proxy)).not.toMatch(/upstream_retries_total\{command="insert"/);
  });
});

describe('circuit breaker', () => {
  it('opens after refused connects, fails fast, half-opens after openMS and closes on success', async ({
    faultProxy,
    startProxy,
  }) => {
    const faults = await faultProxy();
    const proxy = await startProxy({
      upstream: {
        uri: faults.uri,
        maxIdleConnections: 0, // every command needs a new connection
        retry: { maxAttempts: 1, initialBackoffMS: 0, maxBackoffMS: 0 },
        circuitBreaker: { failureThreshold: 2, openMS: 500, halfOpenProbes: 1 },
      },
    });
    const c = await proxy.raw();
    const ping = async (): Promise<Record<string, unknown>> => {
      c.write(opMsg({ ping: 1, $db: 'admin' }).bytes);
      return replyDocument((await c.readFrame(20_000))!);
    };
    try {
      expect(await ping()).toMatchObject({ ok: 1 });
      faults.setMode('refuse');
      for (let i = 0; i < 2; i++) expect(await ping()).toMatchObject({ ok: 0, code: 6, codeName: 'HostUnreachable' });
      const refused = faults.stats().connectionsRefused;
      const fast = await ping();
      expect(fast).toMatchObject({ ok: 0, code: 6 });
      expect(String(fast.errmsg)).toMatch(/circuit breaker open/);
      expect(faults.stats().connectionsRefused).toBe(refused); // nothing was even tried
      expect(await scrape(proxy.proxy)).toMatch(/^mongo_tenant_proxy_circuit_breaker_state\{server="[^"]+"\} 2$/m);

      faults.setMode('pass');
      await expect.poll(async () => (await ping()).ok, { timeout: 20_000, interval: 100 }).toBe(1);
      const text = await scrape(proxy.proxy);
      expect(text).toMatch(/^mongo_tenant_proxy_circuit_breaker_state\{server="[^"]+"\} 0$/m);
      expect(text).toMatch(
        /^mongo_tenant_proxy_circuit_breaker_transitions_total\{server="[^"]+",from="closed",to="open"\} 1$/m,
      );
      expect(text).toMatch(
        /^mongo_tenant_proxy_circuit_breaker_transitions_total\{server="[^"]+",from="half-open",to="closed"\} 1$/m,
      );
    } finally {
      c.close();
    }
  });
});
