/**
 * Warnings that a client can cause once per connection (a tenant over its connection limit, the
 * proxy at its global or unauthenticated limit) are written at most once per key and interval:
 * a flood of refused connections must not become a flood of log lines, which costs the proxy
 * its CPU and every tenant the log pipeline (issue 15). The lines left out are counted, and the
 * next line written for the key says how many (`suppressed`); the metrics count every one.
 *
 * Bounded: at most `maxKeys` keys are remembered; past that the oldest is forgotten (its next
 * line is written, which only means one more line). Pure: the clock is injectable.
 */
import type { Logger } from 'pino';

export interface LogThrottleOptions {
  /** Milliseconds between two lines of one key. Default 10 s. */
  intervalMS?: number;
  /** Keys remembered at once. Default 1,024. */
  maxKeys?: number;
  now?: () => number;
}

interface KeyState {
  loggedAt: number;
  suppressed: number;
}

export class LogThrottle {
  private readonly keys = new Map<string, KeyState>();
  private readonly intervalMS: number;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(options: LogThrottleOptions = {}) {
    this.intervalMS = options.intervalMS ?? 10_000;
    this.maxKeys = options.maxKeys ?? 1_024;
    this.now = options.now ?? Date.now;
  }

  /**
   * Whether to write the line for `key` now: undefined to leave it out (counted), or the number
   * of lines left out for the key since the last one written.
   */
  admit(key: string): number | undefined {
    const now = this.now();
    const state = this.keys.get(key);
    if (state !== undefined && now - state.loggedAt < this.intervalMS) {
      state.suppressed++;
      return undefined;
    }
    const suppressed = state?.suppressed ?? 0;
    // Re-inserted: the map's order is the order of the last line written, oldest first.
    this.keys.delete(key);
    if (this.keys.size >= this.maxKeys) {
      const oldest = this.keys.keys().next().value;
      if (oldest !== undefined) this.keys.delete(oldest);
    }
    this.keys.set(key, { loggedAt: now, suppressed: 0 });
    return suppressed;
  }

  /** Keys remembered (tests). */
  get size(): number {
    return this.keys.size;
  }
}

/**
 * `msg` at warn on `logger` with `fields`, unless `throttle` leaves it out for `key`; the line
 * written after some were left out carries `suppressed`. Without a throttle, every line.
 */
export function warnThrottled(
  throttle: LogThrottle | undefined,
  key: string,
  logger: Pick<Logger, 'warn'>,
  fields: Record<string, unknown>,
  msg: string,
): void {
  const suppressed = throttle === undefined ? 0 : throttle.admit(key);
  if (suppressed === undefined) return;
  logger.warn(suppressed > 0 ? { ...fields, suppressed } : fields, msg);
}
