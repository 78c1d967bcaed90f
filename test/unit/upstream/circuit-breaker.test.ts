import { describe, expect, it } from 'vitest';
import {
  CIRCUIT_BREAKER_DEFAULTS,
  CIRCUIT_STATE_VALUE,
  CircuitBreaker,
  type CircuitBreakerOptions,
  type CircuitState,
} from '../../../src/upstream/circuit-breaker.js';

function fakeClock(start = 1_000) {
  let time = start;
  return {
    now: () => time,
    advance(ms: number) {
      time += ms;
    },
  };
}

function setup(options: Omit<CircuitBreakerOptions, 'now'> = {}) {
  const clock = fakeClock();
  const breaker = new CircuitBreaker({
    failureThreshold: 3,
    openMS: 1_000,
    halfOpenProbes: 1,
    ...options,
    now: clock.now,
  });
  const changes: Array<[CircuitState, CircuitState]> = [];
  breaker.onStateChange((state, previous) => changes.push([state, previous]));
  return { clock, breaker, changes };
}

function fail(breaker: CircuitBreaker, times: number): void {
  for (let i = 0; i < times; i++) {
    expect(breaker.canRequest()).toBe(true);
    breaker.onFailure();
  }
}

describe('CircuitBreaker', () => {
  it('has explicit defaults', () => {
    expect(CIRCUIT_BREAKER_DEFAULTS).toEqual({ failureThreshold: 5, openMS: 10_000, halfOpenProbes: 1 });
    expect(Object.isFrozen(CIRCUIT_BREAKER_DEFAULTS)).toBe(true);
    const breaker = new CircuitBreaker();
    expect(breaker).toMatchObject({ failureThreshold: 5, openMS: 10_000, halfOpenProbes: 1, state: 'closed' });
  });

  it('uses a monotonic clock by default', () => {
    const breaker = new CircuitBreaker({ failureThreshold: 1, openMS: 60_000 });
    breaker.onFailure();
    expect(breaker.state).toBe('open');
    expect(breaker.retryAfterMS).toBeGreaterThan(59_000);
    expect(breaker.retryAfterMS).toBeLessThanOrEqual(60_000);
  });

  it('rejects invalid options', () => {
    expect(() => new CircuitBreaker({ failureThreshold: 0 })).toThrow(RangeError);
    expect(() => new CircuitBreaker({ failureThreshold: 2.5 })).toThrow(RangeError);
    expect(() => new CircuitBreaker({ openMS: -1 })).toThrow(RangeError);
    expect(() => new CircuitBreaker({ openMS: Number.NaN })).toThrow(RangeError);
    expect(() => new CircuitBreaker({ halfOpenProbes: 0 })).toThrow(RangeError);
  });

  it('exports gauge values by severity: 0 closed, 1 half-open, 2 open', () => {
    expect(CIRCUIT_STATE_VALUE).toEqual({ closed: 0, 'half-open': 1, open: 2 });
    const { breaker, clock } = setup();
    expect(breaker.stateValue).toBe(0);
    fail(breaker, 3);
    expect(breaker.stateValue).toBe(2);
    clock.advance(1_000);
    expect(breaker.stateValue).toBe(1);
  });

  it('stays closed below the threshold and counts only consecutive failures', () => {
    const { breaker, changes } = setup();
    fail(breaker, 2);
    expect(breaker.consecutiveFailures).toBe(2);
    breaker.onSuccess();
    expect(breaker.consecutiveFailures).toBe(0);
    fail(breaker, 2);
    expect(breaker.state).toBe('closed');
    expect(breaker.canRequest()).toBe(true);
    expect(changes).toEqual([]);
  });

  it('opens after N consecutive failures and fails fast', () => {
    const { breaker, changes } = setup();
    fail(breaker, 3);
    expect(breaker.state).toBe('open');
    expect(breaker.consecutiveFailures).toBe(0);
    expect(changes).toEqual([['open', 'closed']]);
    for (let i = 0; i < 10; i++) expect(breaker.canRequest()).toBe(false);
  });

  it('a threshold of one opens on the first failure', () => {
    const { breaker } = setup({ failureThreshold: 1 });
    fail(breaker, 1);
    expect(breaker.state).toBe('open');
  });

  it('half-opens exactly after openMS, not before', () => {
    const { breaker, clock, changes } = setup();
    fail(breaker, 3);
    clock.advance(999);
    expect(breaker.retryAfterMS).toBe(1);
    expect(breaker.canRequest()).toBe(false);
    expect(breaker.state).toBe('open');
    clock.advance(1);
    expect(breaker.state).toBe('half-open');
    expect(breaker.retryAfterMS).toBe(0);
    expect(changes).toEqual([
      ['open', 'closed'],
      ['half-open', 'open'],
    ]);
  });

  it('half-open lets halfOpenProbes requests through at once', () => {
    const { breaker, clock } = setup({ halfOpenProbes: 2 });
    fail(breaker, 3);
    clock.advance(1_000);
    expect(breaker.canRequest()).toBe(true);
    expect(breaker.canRequest()).toBe(true);
    expect(breaker.canRequest()).toBe(false);
    expect(breaker.state).toBe('half-open');
  });

  it('closes on a probe success', () => {
    const { breaker, clock, changes } = setup();
    fail(breaker, 3);
    clock.advance(1_000);
    expect(breaker.canRequest()).toBe(true);
    expect(breaker.canRequest()).toBe(false);
    breaker.onSuccess();
    expect(breaker.state).toBe('closed');
    expect(breaker.canRequest()).toBe(true);
    expect(changes.at(-1)).toEqual(['closed', 'half-open']);
    // and needs a full run of failures to open again
    fail(breaker, 2);
    expect(breaker.state).toBe('closed');
    fail(breaker, 1);
    expect(breaker.state).toBe('open');
  });

  it('re-opens on a probe failure, for a fresh openMS', () => {
    const { breaker, clock, changes } = setup();
    fail(breaker, 3);
    clock.advance(5_000);
    expect(breaker.canRequest()).toBe(true);
    breaker.onFailure();
    expect(breaker.state).toBe('open');
    expect(breaker.retryAfterMS).toBe(1_000);
    expect(breaker.canRequest()).toBe(false);
    clock.advance(999);
    expect(breaker.canRequest()).toBe(false);
    clock.advance(1);
    expect(breaker.canRequest()).toBe(true);
    expect(changes).toEqual([
      ['open', 'closed'],
      ['half-open', 'open'],
      ['open', 'half-open'],
      ['half-open', 'open'],
    ]);
  });

  it('a cancelled probe frees its slot without a verdict', () => {
    const { breaker, clock } = setup();
    fail(breaker, 3);
    clock.advance(1_000);
    expect(breaker.canRequest()).toBe(true);
    expect(breaker.canRequest()).toBe(false);
    breaker.onCancel();
    expect(breaker.state).toBe('half-open');
    expect(breaker.canRequest()).toBe(true);
    breaker.onCancel();
    breaker.onCancel(); // extra cancels never make room for more than halfOpenProbes
    expect(breaker.canRequest()).toBe(true);
    expect(breaker.canRequest()).toBe(false);
  });

  it('onCancel is a no-op when closed or open', () => {
    const { breaker } = setup();
    breaker.onCancel();
    expect(breaker.state).toBe('closed');
    fail(breaker, 3);
    breaker.onCancel();
    expect(breaker.state).toBe('open');
    expect(breaker.canRequest()).toBe(false);
  });

  it('ignores late results while open: the open period is neither cut short nor extended', () => {
    const { breaker, clock, changes } = setup();
    fail(breaker, 3);
    clock.advance(500);
    breaker.onSuccess();
    breaker.onFailure();
    expect(breaker.state).toBe('open');
    expect(breaker.retryAfterMS).toBe(500);
    clock.advance(500);
    expect(breaker.state).toBe('half-open');
    expect(changes).toHaveLength(2);
  });

  it('a result reported after openMS acts on the half-open state', () => {
    const { breaker, clock } = setup();
    fail(breaker, 3);
    clock.advance(1_000);
    breaker.onFailure(); // e.g. a straggler: re-opens, conservatively
    expect(breaker.state).toBe('open');
    clock.advance(1_000);
    breaker.onSuccess();
    expect(breaker.state).toBe('closed');
  });

  it('openMS of 0 half-opens at once', () => {
    const { breaker } = setup({ openMS: 0 });
    fail(breaker, 3);
    expect(breaker.state).toBe('half-open');
    expect(breaker.canRequest()).toBe(true);
  });

  it('is deterministic under the injected clock across many cycles', () => {
    const { breaker, clock, changes } = setup({ failureThreshold: 2, openMS: 100 });
    for (let cycle = 0; cycle < 5; cycle++) {
      fail(breaker, 2);
      clock.advance(100);
      expect(breaker.canRequest()).toBe(true);
      breaker.onSuccess();
    }
    expect(changes).toHaveLength(15);
    expect(breaker.state).toBe('closed');
  });

  describe('listeners', () => {
    it('see the new state already in place, and the previous one', () => {
      const clock = fakeClock();
      const breaker = new CircuitBreaker({ failureThreshold: 1, openMS: 10, now: clock.now });
      const seen: Array<[CircuitState, CircuitState, CircuitState, number]> = [];
      breaker.onStateChange((state, previous) => seen.push([state, previous, breaker.state, breaker.stateValue]));
      breaker.onFailure();
      expect(seen).toEqual([['open', 'closed', 'open', 2]]);
    });

    it('can be removed', () => {
      const { breaker, changes } = setup({ failureThreshold: 1 });
      const other: CircuitState[] = [];
      const off = breaker.onStateChange((state) => other.push(state));
      off();
      off();
      breaker.onFailure();
      expect(other).toEqual([]);
      expect(changes).toEqual([['open', 'closed']]);
    });

    it('all run even when one throws; the first error reaches the caller and the state is consistent', () => {
      const clock = fakeClock();
      const breaker = new CircuitBreaker({ failureThreshold: 1, openMS: 10, now: clock.now });
      const calls: string[] = [];
      breaker.onStateChange(() => {
        calls.push('a');
        throw new Error('first');
      });
      breaker.onStateChange(() => {
        calls.push('b');
        throw new Error('second');
      });
      breaker.onStateChange(() => calls.push('c'));
      expect(() => breaker.onFailure()).toThrow('first');
      expect(calls).toEqual(['a', 'b', 'c']);
      expect(breaker.state).toBe('open');
      expect(breaker.canRequest()).toBe(false);
    });

    it('a listener added twice runs once; one removed during a transition still runs for it', () => {
      const { breaker } = setup({ failureThreshold: 1 });
      const calls: string[] = [];
      const listener = () => calls.push('x');
      breaker.onStateChange(listener);
      breaker.onStateChange(listener);
      let offSecond = () => {};
      breaker.onStateChange(() => offSecond());
      offSecond = breaker.onStateChange(() => calls.push('y'));
      breaker.onFailure();
      expect(calls).toEqual(['x', 'y']);
    });

    it('can drive a gauge', () => {
      const { breaker, clock } = setup();
      let gauge = breaker.stateValue as number;
      breaker.onStateChange((state) => {
        gauge = CIRCUIT_STATE_VALUE[state];
      });
      fail(breaker, 3);
      expect(gauge).toBe(2);
      clock.advance(1_000);
      expect(breaker.canRequest()).toBe(true);
      expect(gauge).toBe(1);
      breaker.onSuccess();
      expect(gauge).toBe(0);
    });
  });
});

describe('CircuitBreaker recovery (issue 15: exponential open time, health-check probes)', () => {
  it('without initialOpenMS the open time stays openMS', () => {
    const { breaker, clock } = setup();
    fail(breaker, 3);
    expect(breaker.currentOpenMS).toBe(1_000);
    clock.advance(999);
    expect(breaker.state).toBe('open');
  });

  it('opens for initialOpenMS first, doubles on each re-open up to openMS, resets on a request success', () => {
    const { breaker, clock } = setup({ initialOpenMS: 250 });
    expect(breaker.currentOpenMS).toBe(250);
    fail(breaker, 3);
    expect(breaker.retryAfterMS).toBe(250);
    const opens: number[] = [];
    for (let i = 0; i < 5; i++) {
      opens.push(breaker.currentOpenMS);
      clock.advance(breaker.currentOpenMS - 1);
      expect(breaker.state).toBe('open');
      clock.advance(1);
      expect(breaker.canRequest()).toBe(true); // the half-open probe
      breaker.onFailure(); // re-opens, twice as long (capped)
    }
    expect(opens).toEqual([250, 500, 1_000, 1_000, 1_000]);
    clock.advance(1_000);
    expect(breaker.canRequest()).toBe(true);
    breaker.onSuccess();
    expect(breaker.state).toBe('closed');
    expect(breaker.currentOpenMS).toBe(250);
  });

  it('initialOpenMS above openMS is capped at openMS', () => {
    expect(new CircuitBreaker({ openMS: 100, initialOpenMS: 5_000 }).initialOpenMS).toBe(100);
  });

  it('probeSucceeded closes an open circuit at once; the next opening keeps its longer open time', () => {
    const { breaker, changes } = setup({ initialOpenMS: 250 });
    fail(breaker, 3);
    breaker.probeSucceeded();
    expect(breaker.state).toBe('closed');
    expect(changes).toEqual([
      ['open', 'closed'],
      ['closed', 'open'],
    ]);
    // No request succeeded since: a server that fails again right away is backed off longer.
    expect(breaker.currentOpenMS).toBe(500);
    fail(breaker, 3);
    expect(breaker.retryAfterMS).toBe(500);
    breaker.probeSucceeded();
    breaker.onSuccess();
    expect(breaker.currentOpenMS).toBe(250);
  });

  it('probeSucceeded closes a half-open circuit and does nothing when closed', () => {
    const { breaker, clock, changes } = setup({ initialOpenMS: 250 });
    breaker.probeSucceeded();
    expect(changes).toEqual([]);
    fail(breaker, 3);
    clock.advance(250);
    expect(breaker.state).toBe('half-open');
    breaker.probeSucceeded();
    expect(breaker.state).toBe('closed');
  });
});
