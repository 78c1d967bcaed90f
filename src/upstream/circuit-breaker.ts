/**
 * A circuit breaker per upstream: after `failureThreshold` consecutive failures it opens and
 * fails fast; after its open time it half-opens and lets `halfOpenProbes` requests through; one
 * probe success closes it, one probe failure re-opens it. The open time starts at
 * `initialOpenMS` and doubles on every re-open up to `openMS` (a restart of a few hundred ms is
 * not punished with the full `openMS`); a request that succeeds while closed or half-open resets
 * it. `probeSucceeded()` closes an open circuit at once: the owner's heartbeat `hello` saw the
 * server answer again (server-set.ts). Pure and deterministic:
 * time comes only from the injected `now` (monotonic milliseconds), and the open → half-open
 * transition happens when the breaker is next asked (`state`, `canRequest()`, `stateValue`).
 *
 * API for the forwarding path:
 *
 * ```ts
 * type CircuitState = 'closed' | 'open' | 'half-open'
 * CIRCUIT_STATE_VALUE: { closed: 0, 'half-open': 1, open: 2 }   // gauge values (by severity)
 * CIRCUIT_BREAKER_DEFAULTS: { failureThreshold: 5, openMS: 10_000, halfOpenProbes: 1 }
 * class CircuitBreaker {
 *   constructor(options?: { failureThreshold?; openMS?; initialOpenMS?; halfOpenProbes?; now?: () => number })
 *   readonly state: CircuitState
 *   readonly stateValue: 0 | 1 | 2
 *   readonly consecutiveFailures: number
 *   readonly retryAfterMS: number                    // until half-open; 0 unless open
 *   canRequest(): boolean                            // true = go ahead (takes a probe slot when half-open)
 *   onSuccess(): void
 *   onFailure(): void
 *   onCancel(): void                                 // allowed but never sent: frees the probe slot
 *   probeSucceeded(): void                           // a health check answered: open/half-open → closed
 *   onStateChange(listener: (state, previous) => void): () => void   // returns unsubscribe
 * }
 * ```
 *
 * Usage: `if (!breaker.canRequest()) reply(translateUpstreamFailure({ kind: 'circuit-open', … }))`;
 * otherwise exactly one of onSuccess / onFailure / onCancel per request allowed. What counts as a
 * failure is the caller's choice: upstream unavailability (network errors, timeouts, state-change
 * codes), never a command error the server answered normally. The gauge:
 * `new Gauge({ …, collect() { this.set(breaker.stateValue) } })` or an onStateChange listener.
 *
 * Results arriving in a state they were not requested in are handled conservatively: while open,
 * late successes and failures are ignored (the open period is neither cut short nor extended);
 * in half-open, a late failure re-opens and a late success closes.
 */

export type CircuitState = 'closed' | 'open' | 'half-open';

/** Numeric values for a metric gauge. */
export const CIRCUIT_STATE_VALUE = Object.freeze({ closed: 0, 'half-open': 1, open: 2 } as const);

export type CircuitStateValue = (typeof CIRCUIT_STATE_VALUE)[CircuitState];

// ---------------------------------------------------------------------------------------------
// Defaults: every tunable in one place.
// ---------------------------------------------------------------------------------------------

export const CIRCUIT_BREAKER_DEFAULTS = Object.freeze({
  /** Consecutive failures that open the circuit. */
  failureThreshold: 5,
  /** How long the circuit stays open before probing, in ms. */
  openMS: 10_000,
  /** Requests let through at once while half-open. */
  halfOpenProbes: 1,
});

export interface CircuitBreakerOptions {
  failureThreshold?: number;
  /** The longest open time (the cap of the doubling). */
  openMS?: number;
  /** The first open time; doubles on every re-open without a success in between. Default: `openMS` (fixed). */
  initialOpenMS?: number;
  halfOpenProbes?: number;
  /** Monotonic clock in ms; default `performance.now()`. */
  now?: () => number;
}

export type CircuitStateListener = (state: CircuitState, previous: CircuitState) => void;

export class CircuitBreaker {
  readonly failureThreshold: number;
  readonly openMS: number;
  readonly initialOpenMS: number;
  readonly halfOpenProbes: number;
  readonly #now: () => number;
  #state: CircuitState = 'closed';
  #failures = 0;
  #openedAt = 0;
  /** Openings since a request last succeeded: the exponent of the open time. */
  #openings = 0;
  #probesInFlight = 0;
  readonly #listeners = new Set<CircuitStateListener>();

  constructor(options: CircuitBreakerOptions = {}) {
    const failureThreshold = options.failureThreshold ?? CIRCUIT_BREAKER_DEFAULTS.failureThreshold;
    const openMS = options.openMS ?? CIRCUIT_BREAKER_DEFAULTS.openMS;
    const halfOpenProbes = options.halfOpenProbes ?? CIRCUIT_BREAKER_DEFAULTS.halfOpenProbes;
    if (!Number.isInteger(failureThreshold) || failureThreshold < 1) {
      throw new RangeError(`failureThreshold must be an integer >= 1, got ${failureThreshold}`);
    }
    if (!(Number.isFinite(openMS) && openMS >= 0))
      throw new RangeError(`openMS must be a finite number >= 0, got ${openMS}`);
    if (!Number.isInteger(halfOpenProbes) || halfOpenProbes < 1) {
      throw new RangeError(`halfOpenProbes must be an integer >= 1, got ${halfOpenProbes}`);
    }
    this.failureThreshold = failureThreshold;
    const initialOpenMS = Math.min(options.initialOpenMS ?? openMS, openMS);
    if (!(Number.isFinite(initialOpenMS) && initialOpenMS >= 0))
      throw new RangeError(`initialOpenMS must be a finite number >= 0, got ${initialOpenMS}`);
    this.openMS = openMS;
    this.initialOpenMS = initialOpenMS;
    this.halfOpenProbes = halfOpenProbes;
    this.#now = options.now ?? (() => performance.now());
  }

  get state(): CircuitState {
    this.#refresh();
    return this.#state;
  }

  get stateValue(): CircuitStateValue {
    return CIRCUIT_STATE_VALUE[this.state];
  }

  /** Failures in a row while closed (reset by a success or by opening). */
  get consecutiveFailures(): number {
    return this.#failures;
  }

  /** Milliseconds until the circuit half-opens; 0 unless it is open. */
  get retryAfterMS(): number {
    if (this.state !== 'open') return 0;
    return Math.max(0, this.#openedAt + this.currentOpenMS - this.#now());
  }

  /** How long the circuit stays open this time (or will, if it opens now while closed). */
  get currentOpenMS(): number {
    const openings = this.#state === 'open' ? this.#openings : this.#openings + 1;
    // 2^30 × any positive initial time is past every cap: no overflow to Infinity · 0.
    return Math.min(this.openMS, this.initialOpenMS * 2 ** Math.min(Math.max(0, openings - 1), 30));
  }

  /** May a request go upstream now? A `true` in half-open takes one probe slot. */
  canRequest(): boolean {
    this.#refresh();
    switch (this.#state) {
      case 'closed':
        return true;
      case 'open':
        return false;
      case 'half-open':
        if (this.#probesInFlight >= this.halfOpenProbes) return false;
        this.#probesInFlight++;
        return true;
    }
  }

  onSuccess(): void {
    this.#refresh();
    switch (this.#state) {
      case 'closed':
        this.#failures = 0;
        this.#openings = 0;
        return;
      case 'open':
        return;
      case 'half-open':
        this.#openings = 0;
        this.#transition('closed');
        return;
    }
  }

  /**
   * A health check outside the request path (a fresh connection's `hello`) succeeded: an open or
   * half-open circuit closes now instead of waiting out its open time. The open time keeps its
   * level until a request succeeds, so a server that keeps failing right after answering hello
   * is still backed off more and more.
   */
  probeSucceeded(): void {
    this.#refresh();
    if (this.#state !== 'closed') this.#transition('closed');
  }

  onFailure(): void {
    this.#refresh();
    switch (this.#state) {
      case 'closed':
        this.#failures++;
        if (this.#failures >= this.failureThreshold) this.#transition('open');
        return;
      case 'open':
        return;
      case 'half-open':
        this.#transition('open');
        return;
    }
  }

  /** A request allowed by canRequest() was never sent (client gone, cancelled): no verdict. */
  onCancel(): void {
    if (this.#state === 'half-open' && this.#probesInFlight > 0) this.#probesInFlight--;
  }

  /**
   * Calls `listener(state, previous)` after every transition (the breaker is already in the new
   * state). Returns a function that removes it. Every listener runs even if one throws; the first
   * error is then rethrown to whoever caused the transition.
   */
  onStateChange(listener: CircuitStateListener): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }

  #refresh(): void {
    if (this.#state === 'open' && this.#now() - this.#openedAt >= this.currentOpenMS) this.#transition('half-open');
  }

  #transition(next: CircuitState): void {
    const previous = this.#state;
    this.#state = next;
    this.#failures = 0;
    this.#probesInFlight = 0;
    if (next === 'open') {
      this.#openedAt = this.#now();
      this.#openings++;
    }
    let firstError: { error: unknown } | undefined;
    for (const listener of [...this.#listeners]) {
      try {
        listener(next, previous);
      } catch (error) {
        firstError ??= { error };
      }
    }
    if (firstError !== undefined) throw firstError.error;
  }
}
