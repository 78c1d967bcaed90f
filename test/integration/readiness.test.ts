/**
 * `/readyz` follows the upstream (issue 6: "config loaded and upstream reachable, false while
 * draining"): 503 while the circuit breaker of the only server is open, 200 again once it
 * recovered; with `metrics.readinessFollowsUpstream: false` it stays 200 through the outage.
 */
import { describe, expect } from 'vitest';
import type { FaultProxy } from '../helpers/fault-proxy.js';
import { it, type IntegrationFixtures } from '../helpers/fixtures.js';
import { readyz } from '../helpers/metrics.js';
import type { TestProxy } from '../helpers/proxy.js';
import { opMsg, replyDocument } from '../helpers/raw-client.js';

async function startBehindFaults(
  { faultProxy, startProxy }: Pick<IntegrationFixtures, 'faultProxy' | 'startProxy'>,
  readinessFollowsUpstream: boolean,
): Promise<{ faults: FaultProxy; proxy: TestProxy; ping: () => Promise<Record<string, unknown>> }> {
  const faults = await faultProxy();
  const proxy = await startProxy({
    metrics: { readinessFollowsUpstream },
    upstream: {
      uri: faults.uri,
      maxIdleConnections: 0, // every command opens a connection, so refused connects reach the breaker
      retry: { maxAttempts: 1, initialBackoffMS: 0, maxBackoffMS: 0 },
      circuitBreaker: { failureThreshold: 2, openMS: 500, halfOpenProbes: 1 },
    },
  });
  const client = await proxy.raw();
  return {
    faults,
    proxy,
    ping: async () => {
      client.write(opMsg({ ping: 1, $db: 'admin' }).bytes);
      return replyDocument((await client.readFrame(20_000))!);
    },
  };
}

describe('/readyz and the upstream', () => {
  it('is 503 while the upstream circuit breaker is open and 200 again after it closed', async ({
    faultProxy,
    startProxy,
  }) => {
    const { faults, proxy, ping } = await startBehindFaults({ faultProxy, startProxy }, true);
    expect(await readyz(proxy.proxy)).toBe(200);
    faults.setMode('refuse');
    for (let i = 0; i < 2; i++) expect(await ping()).toMatchObject({ ok: 0, code: 6 });
    expect(await readyz(proxy.proxy)).toBe(503);

    faults.setMode('pass');
    // Half-open after openMS: ready again, and a successful probe closes the breaker.
    await expect.poll(() => readyz(proxy.proxy), { timeout: 20_000, interval: 100 }).toBe(200);
    await expect.poll(async () => (await ping()).ok, { timeout: 20_000, interval: 100 }).toBe(1);
    expect(await readyz(proxy.proxy)).toBe(200);
  });

  it('stays 200 through an outage with readinessFollowsUpstream off', async ({ faultProxy, startProxy }) => {
    const { faults, proxy, ping } = await startBehindFaults({ faultProxy, startProxy }, false);
    faults.setMode('refuse');
    for (let i = 0; i < 3; i++) expect(await ping()).toMatchObject({ ok: 0, code: 6 });
    expect(await readyz(proxy.proxy)).toBe(200);
  });
});
