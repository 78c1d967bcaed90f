/**
 * Vitest fixtures for integration tests: each starts what a test asks for and stops it after the
 * test, whether it passed or not, the last started first (a proxy before the fake upstream or
 * fault injector it points at; a proxy's own driver and raw clients before the proxy). Use this
 * `it` instead of vitest's:
 *
 *   it('answers', async ({ fakeUpstream, startProxy }) => {
 *     const fake = await fakeUpstream(() => [{ ok: 1 }]);
 *     const proxy = await startProxy({ upstream: { uri: fake.uri } });
 *     const client = await proxy.raw();
 *     …
 *   });
 */
import { test } from 'vitest';
import { startFakeUpstream } from './fake-upstream.js';
import { startFaultProxy, targetFromUri, type FaultProxy, type FaultProxyOptions } from './fault-proxy.js';
import { startTestProxy } from './proxy.js';
import { startTenantProxy } from './tenants.js';
import { upstreamUri } from './upstream.js';

export interface IntegrationFixtures {
  /** Runs `stop` after the test, in reverse order with everything the fixtures started. */
  defer: (stop: () => unknown) => void;
  /** startFakeUpstream (test/helpers/fake-upstream.ts), closed after the test. */
  fakeUpstream: typeof startFakeUpstream;
  /** The TCP fault injector, in front of the shared test upstream unless told another target; closed after the test. */
  faultProxy: (target?: FaultProxyOptions['target']) => Promise<FaultProxy>;
  /** startTestProxy (test/helpers/proxy.ts), stopped after the test with its clients. */
  startProxy: typeof startTestProxy;
  /** startTenantProxy (test/helpers/tenants.ts), stopped after the test with its clients. */
  startTenantProxy: typeof startTenantProxy;
}

export const it = test.extend<IntegrationFixtures>({
  // eslint-disable-next-line no-empty-pattern -- vitest reads a fixture's dependencies from this pattern
  defer: async ({}, use) => {
    const stops: Array<() => unknown> = [];
    await use((stop) => void stops.push(stop));
    // Every stop runs even when one fails; the first failure fails the test.
    const failures: unknown[] = [];
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch (error) {
        failures.push(error);
      }
    }
    if (failures.length > 0) throw failures[0];
  },
  fakeUpstream: async ({ defer }, use) => {
    await use(async (handler, options) => {
      const fake = await startFakeUpstream(handler, options);
      defer(() => fake.close());
      return fake;
    });
  },
  faultProxy: async ({ defer }, use) => {
    await use(async (target = targetFromUri(upstreamUri())) => {
      const faults = await startFaultProxy({ target });
      defer(() => faults.close());
      return faults;
    });
  },
  startProxy: async ({ defer }, use) => {
    await use(async (overrides, options) => {
      const proxy = await startTestProxy(overrides, options);
      defer(() => proxy.stop());
      return proxy;
    });
  },
  startTenantProxy: async ({ defer }, use) => {
    await use(async (tenants, overrides, options) => {
      const proxy = await startTenantProxy(tenants, overrides, options);
      defer(() => proxy.stop());
      return proxy;
    });
  },
});
