/**
 * `/readyz` follows the upstream (issue 6: "config loaded and upstream reachable, false while
 * draining"): 503 while the circuit breaker of the only server is open, 200 again once it
 * recovered; with `metrics.readinessFollowsUpstream: false` it stays 200 through the outage.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startFaultProxy, targetFromUri, type FaultProxy } from '../helpers/fault-proxy.js';
import { fetchMetricsPath } from '../helpers/metrics.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { RawClient, opMsg, replyDocument } from '../helpers/raw-client.js';
import { upstreamUri } from '../helpers/upstream.js';

let proxy: TestProxy | undefined;
let faults: FaultProxy | undefined;

afterEach(async () => {
  await proxy?.stop();
  await faults?.close();
  proxy = undefined;
  faults = undefined;
});

async function readyz(tp: TestProxy): Promise<number> {
  return (await fetchMetricsPath(tp.proxy, '/readyz')).status;
}

async function startBehindFaults(
  readinessFollowsUpstream: boolean,
): Promise<{ ping: () => Promise<Record<string, unknown>>; close: () => void }> {
  faults = await startFaultProxy({ target: targetFromUri(upstreamUri()) });
  proxy = await startTestProxy({
    metrics: { readinessFollowsUpstream },
    upstream: {
      uri: faults.uri,
      maxIdleConnections: 0, // every command opens a connection, so refused connects reach the breaker
      retry: { maxAttempts: 1, initialBackoffMS: 0, maxBackoffMS: 0 },
      circuitBreaker: { failureThreshold: 2, openMS: 500, halfOpenProbes: 1 },
    },
  });
  const client = await RawClient.connect(proxy.proxy.address.host, proxy.proxy.address.port);
  return {
    ping: async () => {
      client.write(opMsg({ ping: 1, $db: 'admin' }).bytes);
      return replyDocument((await client.readFrame(20_000))!);
    },
    close: () => client.close(),
  };
}

describe('/readyz and the upstream', () => {
  it('is 503 while the upstream circuit breaker is open and 200 again after it closed', async () => {
    const { ping, close } = await startBehindFaults(true);
    try {
      expect(await readyz(proxy!)).toBe(200);
      faults!.setMode('refuse');
      for (let i = 0; i < 2; i++) expect(await ping()).toMatchObject({ ok: 0, code: 6 });
      expect(await readyz(proxy!)).toBe(503);

      faults!.setMode('pass');
      // Half-open after openMS: ready again, and a successful probe closes the breaker.
      await expect.poll(() => readyz(proxy!), { timeout: 20_000, interval: 100 }).toBe(200);
      await expect.poll(async () => (await ping()).ok, { timeout: 20_000, interval: 100 }).toBe(1);
      expect(await readyz(proxy!)).toBe(200);
    } finally {
      close();
    }
  });

  it('stays 200 through an outage with readinessFollowsUpstream off', async () => {
    const { ping, close } = await startBehindFaults(false);
    try {
      faults!.setMode('refuse');
      for (let i = 0; i < 3; i++) expect(await ping()).toMatchObject({ ok: 0, code: 6 });
      expect(await readyz(proxy!)).toBe(200);
    } finally {
      close();
    }
  });
});
