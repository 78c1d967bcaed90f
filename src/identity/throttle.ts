/**
 * Slows down guessing: after a failed authentication, the next failure answer for the same user
 * or the same client address waits `baseMS`, doubling per further failure up to `maxMS`.
 * Failures are forgotten after a quiet period; the table is bounded so a flood of made-up user
 * names cannot grow memory.
 */
import type { FailureThrottle } from './types.js';

export interface ThrottleOptions {
  baseMS: number;
  maxMS: number;
  /** Failures older than this no longer count. */
  forgetAfterMS?: number;
  /** Most keys remembered; the oldest are dropped first. */
  maxEntries?: number;
  now?: () => number;
}

interface Entry {
  failures: number;
  last: number;
}

export function createFailureThrottle(options: ThrottleOptions): FailureThrottle {
  const forgetAfterMS = options.forgetAfterMS ?? 15 * 60_000;
  const maxEntries = options.maxEntries ?? 10_000;
  const now = options.now ?? Date.now;
  // Map keeps insertion order: re-inserting on update makes the first key the least recent.
  const entries = new Map<string, Entry>();

  const keysOf = (key: { user: string | undefined; address: string }): string[] =>
    key.user === undefined ? [`a:${key.address}`] : [`a:${key.address}`, `u:${key.user}`];

  const failuresOf = (name: string): number => {
    const entry = entries.get(name);
    if (entry === undefined) return 0;
    if (now() - entry.last > forgetAfterMS) {
      entries.delete(name);
      return 0;
    }
    return entry.failures;
  };

  return {
    delayFor(key) {
      if (options.baseMS <= 0) return 0;
      const failures = Math.max(...keysOf(key).map(failuresOf));
      if (failures === 0) return 0;
      return Math.min(options.maxMS, options.baseMS * 2 ** Math.min(failures - 1, 30));
    },
    recordFailure(key) {
      for (const name of keysOf(key)) {
        const failures = failuresOf(name) + 1;
        entries.delete(name);
        entries.set(name, { failures, last: now() });
      }
      while (entries.size > maxEntries) {
        const oldest = entries.keys().next().value;
        if (oldest === undefined) break;
        entries.delete(oldest);
      }
    },
    recordSuccess(key) {
      // A success clears the user's record; the address keeps its history (one address may
      // guess many users).
      if (key.user !== undefined) entries.delete(`u:${key.user}`);
    },
  };
}
