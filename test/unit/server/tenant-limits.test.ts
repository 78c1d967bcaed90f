import { describe, expect, it } from 'vitest';
import {
  MAX_CPU_WAIT_MS,
  TenantLimits,
  TenantLimitExceeded,
  type TenantLimitSettings,
} from '../../../src/server/tenant-limits.js';
import { UNAUTHENTICATED_ACCOUNT } from '../../../src/server/buffer-budget.js';
import { ErrorCodes } from '../../../src/errors.js';
import { encodeErrorReply } from '../../../src/protocol/replies.js';

const UNLIMITED: TenantLimitSettings = {
  maxConnectionsPerTenant: 0,
  maxInFlightPerTenant: 0,
  operationsPerSecondPerTenant: 0,
  operationsBurstPerTenant: 0,
};

/** What a connection does for a forwarded command: charge it on arrival, then admit it upstream. */
function take(l: TenantLimits, tenant: string): TenantLimitExceeded | undefined {
  return l.admitRequest(tenant, 0, true).refusal ?? l.startOperation(tenant);
}

function limits(settings: Partial<TenantLimitSettings>): { limits: TenantLimits; clock: { now: number } } {
  const clock = { now: 1_000 };
  return { limits: new TenantLimits({ ...UNLIMITED, ...settings }, { now: () => clock.now }), clock };
}

describe('TenantLimits', () => {
  it('admits everything when every limit is 0, remembering a tenant only while it has connections', () => {
    const { limits: l } = limits({});
    expect(l.enabled).toBe(false);
    for (let i = 0; i < 1000; i += 1) {
      expect(l.openConnection('acme')).toBeUndefined();
      expect(l.startOperation('acme')).toBeUndefined();
    }
    expect(l.trackedTenants).toBe(1);
    for (let i = 0; i < 1000; i += 1) l.closeConnection('acme');
    expect(l.trackedTenants).toBe(0);
  });

  it('limits connections per tenant, independently for each tenant, and frees a slot on close', () => {
    const { limits: l } = limits({ maxConnectionsPerTenant: 2 });
    expect(l.openConnection('acme')).toBeUndefined();
    expect(l.openConnection('acme')).toBeUndefined();
    const refusal = l.openConnection('acme');
    expect(refusal).toBeInstanceOf(TenantLimitExceeded);
    expect(refusal).toMatchObject({
      reason: 'connections',
      code: ErrorCodes.OperationFailed,
      message: 'tenant connection limit (2) reached',
    });
    expect(refusal!.labels).toEqual([]);
    expect(l.openConnection('globex')).toBeUndefined();
    l.closeConnection('acme');
    expect(l.openConnection('acme')).toBeUndefined();
    expect(l.openConnection('acme')).toBeDefined();
  });

  it('limits commands in flight per tenant and answers with a retryable, overload-labelled error', () => {
    const { limits: l } = limits({ maxInFlightPerTenant: 2 });
    l.openConnection('acme');
    expect(l.startOperation('acme')).toBeUndefined();
    expect(l.startOperation('acme')).toBeUndefined();
    const refusal = l.startOperation('acme');
    expect(refusal).toMatchObject({ reason: 'in_flight', code: 96, message: 'tenant in-flight limit (2) reached' });
    expect(refusal!.labels).toEqual(['SystemOverloadedError', 'RetryableError']);
    expect(l.startOperation('globex')).toBeUndefined();
    l.endOperation('acme');
    expect(l.startOperation('acme')).toBeUndefined();
  });

  it('rate-limits with a token bucket: a burst, then the refill rate', () => {
    const { limits: l, clock } = limits({ operationsPerSecondPerTenant: 10, operationsBurstPerTenant: 3 });
    l.openConnection('acme');
    const run = (): TenantLimitExceeded | undefined => {
      const refusal = take(l, 'acme');
      if (refusal === undefined) l.endOperation('acme');
      return refusal;
    };
    expect([run(), run(), run()]).toEqual([undefined, undefined, undefined]);
    expect(run()).toMatchObject({ reason: 'rate', message: 'tenant rate limit (10 operations per second) reached' });
    clock.now += 99;
    expect(run()).toBeDefined();
    clock.now += 1; // 100 ms: one token
    expect(run()).toBeUndefined();
    expect(run()).toBeDefined();
    clock.now += 10_000; // never more than the burst
    expect([run(), run(), run()]).toEqual([undefined, undefined, undefined]);
    expect(run()).toBeDefined();
    // Other tenants have their own bucket.
    expect(take(l, 'globex')).toBeUndefined();
  });

  it('uses the rate as the burst when the burst is 0', () => {
    const { limits: l } = limits({ operationsPerSecondPerTenant: 5 });
    let admitted = 0;
    for (let i = 0; i < 20; i += 1) if (take(l, 'acme') === undefined) admitted += 1;
    expect(admitted).toBe(5);
  });

  it('counts a command refused by the in-flight limit against the rate too (issue 15: refusals count)', () => {
    const { limits: l } = limits({ maxInFlightPerTenant: 1, operationsPerSecondPerTenant: 2 });
    expect(take(l, 'acme')).toBeUndefined();
    expect(take(l, 'acme')).toMatchObject({ reason: 'in_flight' });
    l.endOperation('acme');
    expect(take(l, 'acme')).toMatchObject({ reason: 'rate' });
  });

  it('takes no token for a hello, and charges request bytes before parsing: a wait, then a refusal', () => {
    const { limits: l, clock } = limits({
      operationsPerSecondPerTenant: 1,
      bytesPerSecondPerTenant: 1000,
      maxMessageSizeBytes: 2000,
    });
    // Two seconds' worth (the larger of the rate and the biggest message) pass at once.
    expect(l.admitRequest('acme', 100, false)).toMatchObject({ delayMS: 0 });
    expect(l.admitRequest('acme', 1900, false)).toMatchObject({ delayMS: 0 });
    // Beyond that a request waits until its bytes are paid for at the rate…
    expect(l.admitRequest('acme', 500, false)).toMatchObject({ delayMS: 500 });
    expect(l.admitRequest('acme', 1500, false)).toMatchObject({ delayMS: 2000 });
    // …and one that would wait more than MAX_BYTES_WAIT_MS is refused, charging nothing.
    const refused = l.admitRequest('acme', 1, false).refusal;
    expect(refused).toMatchObject({ reason: 'bytes', code: ErrorCodes.OperationFailed });
    expect(refused?.labels).toEqual(['SystemOverloadedError', 'RetryableError']);
    clock.now += 1;
    expect(l.admitRequest('acme', 1, false)).toMatchObject({ delayMS: 2000 });
    // Other tenants have their own budget; hellos took no operation token.
    expect(l.admitRequest('globex', 2000, true)).toMatchObject({ delayMS: 0 });
    expect(l.admitRequest('globex', 0, true).refusal).toMatchObject({ reason: 'rate' });
    expect(l.admitRequest('acme', 0, true).refusal).toBeUndefined();
    clock.now += 10_000;
    expect(l.admitRequest('acme', 2000, false)).toMatchObject({ delayMS: 0 });
  });

  it('charges bytes as they are read: past the allowance its connections pause until paid for, then it is forgotten', () => {
    const { limits: l, clock } = limits({ bytesPerSecondPerTenant: 1000, maxMessageSizeBytes: 2000 });
    // Two seconds' worth (the larger of the rate and the biggest message) are read at once.
    expect(l.received('acme', 1500)).toBe(0);
    expect(l.received('acme', 500)).toBe(0);
    expect(l.readPauseMS('acme')).toBe(0);
    // Beyond that its connections stop reading until the excess is paid for at the rate.
    expect(l.received('acme', 250)).toBe(250);
    expect(l.readPauseMS('acme')).toBe(250);
    // A request read meanwhile (bytes charged already) waits at admission as long: nothing more is charged.
    expect(l.admitRequest('acme', 0, false)).toMatchObject({ delayMS: 250, delayedBy: 'bytes' });
    clock.now += 100;
    expect(l.readPauseMS('acme')).toBe(150);
    // Another tenant reads on.
    expect(l.received('globex', 2000)).toBe(0);
    // Paid up: read on, and the tenant is forgotten once nothing else is counted for it.
    clock.now += 10_000;
    expect(l.readPauseMS('acme')).toBe(0);
    expect(l.readPauseMS('globex')).toBe(0);
    expect(l.trackedTenants).toBe(0);
    // Without a byte rate nothing is charged or paused.
    const { limits: off } = limits({});
    expect(off.received('acme', 1_000_000_000)).toBe(0);
    expect(off.readPauseMS('acme')).toBe(0);
  });

  it('forgets idle tenants once their bucket is full again (bounded memory)', () => {
    const { limits: l, clock } = limits({ maxConnectionsPerTenant: 5, operationsPerSecondPerTenant: 10 });
    for (let i = 0; i < 1000; i += 1) {
      const tenant = `t${i}`;
      l.openConnection(tenant);
      expect(take(l, tenant)).toBeUndefined();
      l.endOperation(tenant);
      l.closeConnection(tenant);
    }
    // Buckets still refilling are remembered (forgetting them would grant a fresh burst).
    expect(l.trackedTenants).toBe(1000);
    clock.now += 2_000;
    l.openConnection('busy');
    expect(take(l, 'busy')).toBeUndefined();
    expect(l.trackedTenants).toBe(1);
    l.endOperation('busy');
    l.closeConnection('busy');
    clock.now += 2_000;
    take(l, 'other');
    l.endOperation('other');
    expect(l.trackedTenants).toBeLessThanOrEqual(1);
  });

  it('forgets a tenant at once when only counters are limited', () => {
    const { limits: l } = limits({ maxConnectionsPerTenant: 1, maxInFlightPerTenant: 1 });
    l.openConnection('acme');
    l.startOperation('acme');
    expect(l.trackedTenants).toBe(1);
    l.endOperation('acme');
    l.closeConnection('acme');
    expect(l.trackedTenants).toBe(0);
    // Unknown tenants and extra releases are harmless.
    l.closeConnection('acme');
    l.endOperation('nobody');
    expect(l.openConnection('acme')).toBeUndefined();
  });

  it('is answered as an OperationFailed error reply with its labels', () => {
    const { limits: l } = limits({ maxInFlightPerTenant: 1 });
    l.startOperation('acme');
    const reply = encodeErrorReply(l.startOperation('acme'), 7, 'opMsg');
    const text = reply.toString('latin1');
    expect(text).toContain('OperationFailed');
    expect(text).toContain('SystemOverloadedError');
  });

  describe('reconfigure (hot reload)', () => {
    it('applies a limit turned on to the connections opened while there was none', () => {
      const { limits: l } = limits({});
      for (let i = 0; i < 2; i += 1) expect(l.openConnection('acme')).toBeUndefined();
      l.reconfigure({ ...UNLIMITED, maxConnectionsPerTenant: 2 });
      expect(l.openConnection('acme')).toMatchObject({ reason: 'connections' });
      expect(l.openConnection('globex')).toBeUndefined();
    });

    it('applies a lowered connection limit to the connections already open, without closing any', () => {
      const { limits: l } = limits({ maxConnectionsPerTenant: 5 });
      for (let i = 0; i < 3; i += 1) expect(l.openConnection('acme')).toBeUndefined();
      l.reconfigure({ ...UNLIMITED, maxConnectionsPerTenant: 2 });
      expect(l.openConnection('acme')).toMatchObject({
        reason: 'connections',
        message: 'tenant connection limit (2) reached',
      });
      l.closeConnection('acme');
      expect(l.openConnection('acme')).toMatchObject({ reason: 'connections' });
      l.closeConnection('acme');
      expect(l.openConnection('acme')).toBeUndefined();
      l.reconfigure({ ...UNLIMITED, maxConnectionsPerTenant: 3 });
      expect(l.openConnection('acme')).toBeUndefined();
    });

    it('keeps commands in flight counted across a change of limits', () => {
      const { limits: l } = limits({ maxInFlightPerTenant: 10 });
      expect(l.startOperation('acme')).toBeUndefined();
      expect(l.startOperation('acme')).toBeUndefined();
      l.reconfigure({ ...UNLIMITED, maxInFlightPerTenant: 2 });
      expect(l.startOperation('acme')).toMatchObject({ reason: 'in_flight' });
      l.endOperation('acme');
      expect(l.startOperation('acme')).toBeUndefined();
    });

    it('caps a bucket at a smaller burst, and starts a new rate limit with a full bucket', () => {
      const { limits: l, clock } = limits({ operationsPerSecondPerTenant: 10 });
      expect(take(l, 'acme')).toBeUndefined();
      l.endOperation('acme');
      l.reconfigure({ ...UNLIMITED, operationsPerSecondPerTenant: 2 });
      expect(take(l, 'acme')).toBeUndefined();
      l.endOperation('acme');
      expect(take(l, 'acme')).toBeUndefined();
      l.endOperation('acme');
      expect(take(l, 'acme')).toMatchObject({ reason: 'rate' });
      clock.now += 500;
      expect(take(l, 'acme')).toBeUndefined();
      l.endOperation('acme');

      const { limits: unlimited } = limits({ maxConnectionsPerTenant: 9 });
      expect(unlimited.openConnection('acme')).toBeUndefined();
      unlimited.reconfigure({ ...UNLIMITED, maxConnectionsPerTenant: 9, operationsPerSecondPerTenant: 3 });
      for (let i = 0; i < 3; i += 1) {
        expect(take(unlimited, 'acme')).toBeUndefined();
        unlimited.endOperation('acme');
      }
      expect(take(unlimited, 'acme')).toMatchObject({ reason: 'rate' });
    });

    it('stops counting when every limit is turned off, and forgets idle tenants', () => {
      const { limits: l } = limits({ maxInFlightPerTenant: 1 });
      expect(l.startOperation('acme')).toBeUndefined();
      l.reconfigure(UNLIMITED);
      expect(l.enabled).toBe(false);
      expect(l.startOperation('acme')).toBeUndefined();
      l.endOperation('acme');
      expect(l.trackedTenants).toBe(0);
    });
  });

  describe('CPU budget (cpuMillisPerSecondPerTenant)', () => {
    it('is off without a rate: nothing is metered, charged or delayed', () => {
      const { limits: l } = limits({});
      expect(l.cpuMetered).toBe(false);
      l.chargeCpu('acme', 10_000);
      expect(l.overCpuBudget('acme', l.now())).toBe(false);
      expect(l.trackedTenants).toBe(0);
      expect(l.admitUnauthenticated(UNAUTHENTICATED_ACCOUNT, true)).toEqual({ delayMS: 0 });
    });

    it("lets a tenant run one second's worth ahead, then slows it at admission, then refuses it past the bound", () => {
      const { limits: l, clock } = limits({ cpuMillisPerSecondPerTenant: 100 });
      expect(l.enabled).toBe(true);
      expect(l.cpuMetered).toBe(true);
      // 100 ms of CPU at 100 ms/s: one second ahead of the rate, the allowance: not over yet.
      l.chargeCpu('acme', 100);
      expect(l.overCpuBudget('acme', clock.now)).toBe(false);
      expect(l.admitRequest('acme', 10, true)).toEqual({ delayMS: 0, at: clock.now });
      // 50 ms more: half a second over; its next request waits that long (not another tenant's).
      l.chargeCpu('acme', 50);
      expect(l.overCpuBudget('acme', clock.now)).toBe(true);
      expect(l.admitRequest('acme', 10, true)).toEqual({ delayMS: 500, delayedBy: 'cpu', at: clock.now });
      expect(l.overCpuBudget('globex', clock.now)).toBe(false);
      expect(l.admitRequest('globex', 10, true)).toEqual({ delayMS: 0, at: clock.now });
      // Past MAX_CPU_WAIT_MS of debt a command is refused: code 96 with the byte rate's labels.
      l.chargeCpu('acme', 300);
      const refusal = l.admitRequest('acme', 10, true).refusal;
      expect(refusal).toBeInstanceOf(TenantLimitExceeded);
      expect(refusal).toMatchObject({
        reason: 'cpu',
        code: ErrorCodes.OperationFailed,
        message: 'tenant CPU limit (100 ms per second) reached',
      });
      expect(refusal!.labels).toEqual(['SystemOverloadedError', 'RetryableError']);
      // A hello is never refused by it: it waits the bound.
      expect(l.admitRequest('acme', 10, false)).toMatchObject({ delayMS: MAX_CPU_WAIT_MS, delayedBy: 'cpu' });
      // The debt is paid at the rate: 3.5 s over, so after 3 s the wait is 0.5 s, after 4 s none.
      clock.now += 3_000;
      expect(l.admitRequest('acme', 10, true)).toMatchObject({ delayMS: 500, delayedBy: 'cpu' });
      clock.now += 1_000;
      expect(l.admitRequest('acme', 10, true)).toMatchObject({ delayMS: 0 });
      expect(l.overCpuBudget('acme', clock.now)).toBe(false);
    });

    it('charges after the fact from where the debt stands (an idle tenant starts afresh) and forgets paid-up tenants', () => {
      const { limits: l, clock } = limits({ cpuMillisPerSecondPerTenant: 200 });
      l.chargeCpu('acme', 400);
      expect(l.admitRequest('acme', 0, true)).toMatchObject({ delayMS: 1000, delayedBy: 'cpu' });
      clock.now += 10_000;
      // Idle long enough: the old debt is paid, a new charge counts from now.
      l.chargeCpu('acme', 200, clock.now);
      expect(l.overCpuBudget('acme', clock.now)).toBe(false);
      clock.now += 1_500;
      take(l, 'other');
      l.endOperation('other');
      expect(l.trackedTenants).toBeLessThanOrEqual(1);
    });

    it('keeps one account for connections without a tenant, charged and slowed alone', () => {
      const { limits: l, clock } = limits({ cpuMillisPerSecondPerTenant: 100 });
      expect(l.admitUnauthenticated(UNAUTHENTICATED_ACCOUNT, true)).toEqual({ delayMS: 0 });
      l.chargeCpu(UNAUTHENTICATED_ACCOUNT, 120);
      expect(l.admitUnauthenticated(UNAUTHENTICATED_ACCOUNT, true)).toEqual({ delayMS: 200, delayedBy: 'cpu' });
      expect(l.admitRequest('acme', 0, true)).toMatchObject({ delayMS: 0 });
      l.chargeCpu(UNAUTHENTICATED_ACCOUNT, 300);
      expect(l.admitUnauthenticated(UNAUTHENTICATED_ACCOUNT, true).refusal).toMatchObject({ reason: 'cpu', code: 96 });
      expect(l.admitUnauthenticated(UNAUTHENTICATED_ACCOUNT, false)).toEqual({
        delayMS: MAX_CPU_WAIT_MS,
        delayedBy: 'cpu',
      });
      clock.now += 10_000;
      expect(l.admitUnauthenticated(UNAUTHENTICATED_ACCOUNT, true)).toEqual({ delayMS: 0 });
    });

    it('reloads: what is owed is paid at the new rate; turned off, nothing is owed', () => {
      const { limits: l, clock } = limits({ cpuMillisPerSecondPerTenant: 100 });
      l.openConnection('acme');
      l.chargeCpu('acme', 200);
      expect(l.admitRequest('acme', 0, true)).toMatchObject({ delayMS: 1000 });
      // Twice the rate: 200 ms is one second of it, the allowance.
      l.reconfigure({ ...UNLIMITED, cpuMillisPerSecondPerTenant: 200 });
      expect(l.admitRequest('acme', 0, true)).toMatchObject({ delayMS: 0 });
      l.chargeCpu('acme', 100);
      expect(l.admitRequest('acme', 0, true)).toMatchObject({ delayMS: 500, delayedBy: 'cpu' });
      l.reconfigure({ ...UNLIMITED });
      expect(l.cpuMetered).toBe(false);
      expect(l.admitRequest('acme', 0, true)).toEqual({ delayMS: 0 });
      l.reconfigure({ ...UNLIMITED, cpuMillisPerSecondPerTenant: 100 });
      expect(l.overCpuBudget('acme', clock.now)).toBe(false);
    });
  });
});
