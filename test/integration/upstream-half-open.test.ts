/**
 * A half-open upstream (request sent, no reply ever) must not hold a client, or its pool slot,
 * forever (review of issue 5): upstream.socketTimeoutMS bounds every attempt, and a command's
 * maxTimeMS bounds it even when socketTimeoutMS is 0. Uses the fault injector's blackhole mode
 * on connections that are already pooled.
 */
import { MongoServerError } from 'mongodb';
import { describe, expect } from 'vitest';
import { it } from '../helpers/fixtures.js';
import { metricValue } from '../helpers/metrics.js';
import type { TestProxy } from '../helpers/proxy.js';
import { uniqueDbName } from '../helpers/upstream.js';

function inUse(tp: TestProxy): Promise<number> {
  return metricValue(tp.proxy, 'upstream_connections', { state: 'in_use' });
}

async function failure(promise: Promise<unknown>): Promise<MongoServerError> {
  const error = await promise.then(
    () => new Error('expected the command to fail'),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(MongoServerError);
  return error as MongoServerError;
}

describe('half-open upstream', () => {
  it('socketTimeoutMS: a write whose reply never comes fails with NetworkTimeout, without a retry label, and the pool slot is freed', async ({
    faultProxy,
    startProxy,
  }) => {
    const faults = await faultProxy();
    const proxy = await startProxy({ upstream: { uri: faults.uri, socketTimeoutMS: 1_000, maxPoolSize: 1 } });
    const db = uniqueDbName('halfopen');
    const client = proxy.client({ retryReads: false, retryWrites: false });
    await client
      .db(db)
      .collection('c')
      .insertOne({ _id: 'warmup' as never });

    faults.setMode('blackhole');
    const error = await failure(
      client
        .db(db)
        .collection('c')
        .insertOne({ _id: 'lost' as never }),
    );
    expect(error.code).toBe(89);
    expect(error.errorLabels).not.toContain('RetryableWriteError');
    expect(error.message).toMatch(/did not reply in time/);
    await expect.poll(() => inUse(proxy), { timeout: 20_000 }).toBe(0);

    faults.setMode('pass');
    faults.resetAll();
    await expect
      .poll(
        async () =>
          (
            await client
              .db(db)
              .collection('c')
              .findOne({ _id: 'warmup' as never })
          )?._id,
        { timeout: 30_000 },
      )
      .toBe('warmup');
  });

  it('with socketTimeoutMS 0 a command carrying maxTimeMS still gets its answer (maxTimeMS + grace), not a hang', async ({
    faultProxy,
    startProxy,
  }) => {
    const faults = await faultProxy();
    const proxy = await startProxy({ upstream: { uri: faults.uri } });
    const db = uniqueDbName('halfopen');
    const client = proxy.client({ retryReads: false, retryWrites: false });
    await client
      .db(db)
      .collection('c')
      .insertOne({ _id: 'doc' as never });

    faults.setMode('blackhole');
    const error = await failure(
      client
        .db(db)
        .collection('c')
        .findOne({ _id: 'doc' as never }, { maxTimeMS: 200 }),
    );
    expect(error.code).toBe(89);
  }, 60_000);
});
