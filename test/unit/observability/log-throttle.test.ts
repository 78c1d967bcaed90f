/**
 * Warnings a client can cause once per connection are written at most once per key and interval
 * (src/observability/log-throttle.ts, issue 15): the lines left out are counted and reported with
 * the next one; keys are independent; memory stays bounded.
 */
import { describe, expect, it } from 'vitest';
import { LogThrottle } from '../../../src/observability/log-throttle.js';

describe('LogThrottle', () => {
  it('writes the first line of a key, leaves the next out for the interval, then reports how many it left out', () => {
    const clock = { ms: 0 };
    const throttle = new LogThrottle({ intervalMS: 1_000, now: () => clock.ms });
    expect(throttle.admit('tenant:acme')).toBe(0);
    for (let i = 0; i < 99; i++) {
      clock.ms += 5;
      expect(throttle.admit('tenant:acme')).toBeUndefined();
    }
    // Another key is not held by acme's.
    expect(throttle.admit('tenant:globex')).toBe(0);
    clock.ms = 1_000;
    expect(throttle.admit('tenant:acme')).toBe(99);
    clock.ms = 1_500;
    expect(throttle.admit('tenant:acme')).toBeUndefined();
    clock.ms = 2_000;
    expect(throttle.admit('tenant:acme')).toBe(1);
  });

  it('remembers at most maxKeys keys, forgetting the one written longest ago', () => {
    const clock = { ms: 0 };
    const throttle = new LogThrottle({ intervalMS: 1_000, maxKeys: 3, now: () => clock.ms });
    for (const key of ['a', 'b', 'c']) expect(throttle.admit(key)).toBe(0);
    expect(throttle.admit('d')).toBe(0);
    expect(throttle.size).toBe(3);
    // 'a' was forgotten: its next line is written; 'c' is still held.
    expect(throttle.admit('a')).toBe(0);
    expect(throttle.admit('c')).toBeUndefined();
    for (let i = 0; i < 10_000; i++) throttle.admit(`tenant:${i}`);
    expect(throttle.size).toBe(3);
  });
});
