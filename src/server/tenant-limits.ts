/**
 * Per-tenant limits (issue 5, "Backpressure and limits"), shared by every listener:
 * - connections: at most `maxConnectionsPerTenant` client connections with that tenant;
 * - in flight: at most `maxInFlightPerTenant` commands forwarded upstream at once, across all of
 *   the tenant's connections;
 * - rate: a token bucket of `operationsBurstPerTenant` tokens (0: the rate) refilled at
 *   `operationsPerSecondPerTenant` per second; every command but hello takes one when it arrives,
 *   before it is parsed, whether it is then forwarded, answered locally or refused (issue 15);
 * - bytes: `bytesPerSecondPerTenant` of request bytes, charged before parsing (a generic cell
 *   rate: a tenant may run ahead of the rate by max(rate, maxMessageSizeBytes) bytes). A message
 *   beyond that is delayed (the caller waits, not reading the client) up to MAX_BYTES_WAIT_MS,
 *   and refused unparsed past that, so a flood of big messages costs the proxy little.
 * - CPU: `cpuMillisPerSecondPerTenant` of the proxy's own work on the tenant's requests (validating,
 *   decoding, routing and rewriting them, copying big rewrites), measured once per message and per
 *   slice of the validation scheduler and charged after the fact (`chargeCpu`), with the same cell
 *   rate as the bytes (a tenant may run ahead by one second's worth). Over it the tenant is slowed:
 *   its next requests wait at admission (`admitRequest`), and its queued slices wait behind those of
 *   tenants under their budget (`overCpuBudget`, read by the validation scheduler); a request that
 *   would wait longer than MAX_CPU_WAIT_MS is refused unparsed (a hello only waits). Unauthenticated
 *   connections share one account (UNAUTHENTICATED_ACCOUNT), charged and slowed like a tenant.
 * A limit of 0 is unlimited. Over a limit the caller gets a `TenantLimitExceeded` to answer with
 * at once: nothing here queues, so a client never hangs on a limit.
 *
 * Pure: no sockets, timers or metrics; the clock is injected. Memory stays bounded: a tenant is
 * remembered only while it has connections or commands in flight, or while its bucket is still
 * refilling (idle tenants are forgotten at most `sweepIntervalMS` after their bucket is full).
 */
import { TenantLimitExceeded, type TenantLimitReason } from '../errors.js';

export { TenantLimitExceeded, type TenantLimitReason };

export interface TenantLimitSettings {
  /** Client connections per tenant; 0 unlimited. */
  maxConnectionsPerTenant: number;
  /** Commands forwarded upstream at once per tenant; 0 unlimited. */
  maxInFlightPerTenant: number;
  /** Commands per second per tenant (token bucket refill rate; all but hello); 0 unlimited. */
  operationsPerSecondPerTenant: number;
  /** Request bytes per second per tenant, charged before parsing; 0 (or absent) unlimited. */
  bytesPerSecondPerTenant?: number;
  /** The largest message: the byte budget always lets one through at once. */
  maxMessageSizeBytes?: number;
  /** Token bucket size; 0 means the same as the rate. */
  operationsBurstPerTenant: number;
  /** Milliseconds of the proxy's CPU per second per tenant (its work on the tenant's requests); 0 (or absent) unlimited. */
  cpuMillisPerSecondPerTenant?: number;
}

export interface TenantLimitsOptions {
  /** Milliseconds from a monotonic clock. Default `performance.now()`. */
  now?: () => number;
  /** How often (at most) idle tenants with a full bucket are forgotten. Default 1000 ms. */
  sweepIntervalMS?: number;
}

interface TenantState {
  connections: number;
  inFlight: number;
  tokens: number;
  /** When `tokens` was last brought up to date. */
  refilledAt: number;
  /** Byte budget: when the bytes charged so far will have been paid for at the rate (ms clock). */
  bytesPaidAt: number;
  /** CPU budget: when the CPU time charged so far will have been paid for at the rate (ms clock). */
  cpuPaidAt: number;
}

/** A message may wait this long for the tenant's byte budget; one that would wait longer is refused. */
export const MAX_BYTES_WAIT_MS = 2000;

/** A request may wait this long for the tenant's CPU budget; one that would wait longer is refused (not a hello). */
export const MAX_CPU_WAIT_MS = 2000;

/** How far ahead of its CPU rate a tenant may run, in milliseconds of the rate (one second's worth). */
export const CPU_ALLOWANCE_MS = 1000;

/**
 * What `admitRequest` decided: refused, or admitted after `delayMS` (0: at once); `delayedBy`
 * names the budget that delays it the longest, `at` is the clock reading it was decided at
 * (where the request's CPU meter may start, sparing a read).
 */
export type RequestAdmission =
  { refusal: TenantLimitExceeded } | { refusal?: undefined; delayMS: number; delayedBy?: 'bytes' | 'cpu'; at?: number };

/** What the validation scheduler reads and charges of the CPU budget (TenantLimits implements it). */
export interface CpuBudget {
  /** The budget's clock, milliseconds. */
  now(): number;
  /** Whether `account` has run ahead of its CPU rate by more than its allowance at `now`. */
  overCpuBudget(account: string, now: number): boolean;
  /** Charges `ms` of CPU spent on `account`'s requests, measured up to `now`. */
  chargeCpu(account: string, ms: number, now?: number): void;
}

export class TenantLimits implements CpuBudget {
  private readonly tenants = new Map<string, TenantState>();
  private readonly clock: () => number;
  private readonly sweepIntervalMS: number;
  private lastSweep: number;
  private settings: TenantLimitSettings;
  private burst = 0;
  #enabled = false;

  constructor(settings: TenantLimitSettings, options: TenantLimitsOptions = {}) {
    this.clock = options.now ?? (() => performance.now());
    this.sweepIntervalMS = options.sweepIntervalMS ?? 1000;
    this.settings = settings;
    this.lastSweep = this.now();
    this.reconfigure(settings);
  }

  /** The clock limits are kept by, milliseconds (monotonic). */
  now(): number {
    return this.clock();
  }

  /** Whether a CPU budget is set: the proxy's work on requests is measured and charged. */
  get cpuMetered(): boolean {
    return (this.settings.cpuMillisPerSecondPerTenant ?? 0) > 0;
  }

  /** Whether any limit is set; when none is, only connections are counted. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /**
   * New limits (hot reload), for every tenant at once. Counts of open connections and commands
   * in flight carry over, so a lowered limit applies to what is already open: nothing is closed,
   * but more is refused until the tenant is under the new limit. Buckets are refilled at the old
   * rate up to now, then capped at the new size (or full when there was no rate limit). CPU
   * already charged is still owed, paid for at the new CPU rate.
   * Commands in flight are counted only while some limit is set: those forwarded before limits
   * were turned on are not counted when they end (they are short-lived; connections are not).
   */
  reconfigure(settings: TenantLimitSettings): void {
    const now = this.now();
    const previousBurst = this.burst;
    if (previousBurst > 0) for (const state of this.tenants.values()) this.refill(state, now);
    const previousCpuRate = this.settings.cpuMillisPerSecondPerTenant ?? 0;
    const cpuRate = settings.cpuMillisPerSecondPerTenant ?? 0;
    this.settings = settings;
    const rate = settings.operationsPerSecondPerTenant;
    this.burst = rate > 0 ? (settings.operationsBurstPerTenant > 0 ? settings.operationsBurstPerTenant : rate) : 0;
    this.#enabled =
      settings.maxConnectionsPerTenant > 0 ||
      settings.maxInFlightPerTenant > 0 ||
      rate > 0 ||
      (settings.bytesPerSecondPerTenant ?? 0) > 0 ||
      (settings.cpuMillisPerSecondPerTenant ?? 0) > 0;
    for (const [tenant, state] of this.tenants) {
      // A bucket that did not exist (no rate limit before) starts full, as for a new tenant.
      state.tokens = previousBurst > 0 ? Math.min(state.tokens, this.burst) : this.burst;
      state.refilledAt = now;
      // CPU already charged stays owed, paid for at the new rate (nothing is owed without a rate).
      const owedMS = Math.max(0, state.cpuPaidAt - now);
      state.cpuPaidAt = previousCpuRate > 0 && cpuRate > 0 ? now + (owedMS * previousCpuRate) / cpuRate : now;
      this.forgetIfIdle(tenant, state, now);
    }
  }

  /** Tenants currently remembered (for tests and memory checks). */
  get trackedTenants(): number {
    return this.tenants.size;
  }

  /**
   * Counts a connection whose tenant was just established, or refuses it (nothing counted).
   * Counted even when no limit is set, so a limit a reload turns on knows what is already open.
   */
  openConnection(tenant: string): TenantLimitExceeded | undefined {
    const state = this.state(tenant);
    const limit = this.settings.maxConnectionsPerTenant;
    if (limit > 0 && state.connections >= limit) {
      this.forgetIfIdle(tenant, state);
      return new TenantLimitExceeded('connections', `tenant connection limit (${limit}) reached`);
    }
    state.connections += 1;
    return undefined;
  }

  /** Undoes a successful `openConnection`. */
  closeConnection(tenant: string): void {
    const state = this.tenants.get(tenant);
    if (state === undefined) return;
    state.connections = Math.max(0, state.connections - 1);
    this.forgetIfIdle(tenant, state);
  }

  /**
   * Charges one request of `bytes` (and, unless it is a hello, one operation token) as it
   * arrives, before anything parses it. Refused: nothing is charged. Admitted: the caller waits
   * `delayMS` (the tenant is over its byte rate) before handling it.
   */
  admitRequest(tenant: string, bytes: number, operation: boolean): RequestAdmission {
    if (!this.enabled) return { delayMS: 0 };
    const now = this.now();
    this.maybeSweep(now);
    const state = this.state(tenant, now);
    const rate = this.settings.operationsPerSecondPerTenant;
    if (operation && rate > 0) {
      this.refill(state, now);
      if (state.tokens < 1) {
        this.forgetIfIdle(tenant, state, now);
        return {
          refusal: new TenantLimitExceeded('rate', `tenant rate limit (${rate} operations per second) reached`),
        };
      }
    }
    const cpu = this.cpuDelay(state, operation, now);
    if (cpu instanceof TenantLimitExceeded) {
      this.forgetIfIdle(tenant, state, now);
      return { refusal: cpu };
    }
    let delayMS = 0;
    const byteRate = this.settings.bytesPerSecondPerTenant ?? 0;
    if (byteRate > 0) {
      const paidAt = Math.max(state.bytesPaidAt, now) + (bytes / byteRate) * 1000;
      delayMS = Math.max(0, paidAt - this.byteAllowanceMS(byteRate) - now);
      if (delayMS > MAX_BYTES_WAIT_MS) {
        this.forgetIfIdle(tenant, state, now);
        return {
          refusal: new TenantLimitExceeded('bytes', `tenant byte rate limit (${byteRate} bytes per second) reached`),
        };
      }
      state.bytesPaidAt = paidAt;
    }
    if (operation && rate > 0) state.tokens -= 1;
    if (cpu > delayMS) return { delayMS: cpu, delayedBy: 'cpu', at: now };
    return delayMS > 0 ? { delayMS, delayedBy: 'bytes', at: now } : { delayMS: 0, at: now };
  }

  /**
   * The CPU budget alone, for connections without a tenant (their shared account): nothing else
   * is charged to them. Refused (not a hello) or admitted after `delayMS`.
   */
  admitUnauthenticated(account: string, operation: boolean): RequestAdmission {
    if ((this.settings.cpuMillisPerSecondPerTenant ?? 0) <= 0) return { delayMS: 0 };
    const state = this.tenants.get(account);
    if (state === undefined) return { delayMS: 0 };
    const cpu = this.cpuDelay(state, operation, this.now());
    if (cpu instanceof TenantLimitExceeded) return { refusal: cpu };
    return cpu > 0 ? { delayMS: cpu, delayedBy: 'cpu' } : { delayMS: 0 };
  }

  /**
   * Charges `ms` of CPU the proxy spent on `account`'s requests (measured after the work, once per
   * message or slice), `now` being when the measurement ended. Free while no CPU rate is set.
   */
  chargeCpu(account: string, ms: number, now?: number): void {
    const cpuRate = this.settings.cpuMillisPerSecondPerTenant ?? 0;
    if (cpuRate <= 0 || !(ms > 0)) return;
    const at = now ?? this.now();
    const state = this.state(account, at);
    state.cpuPaidAt = Math.max(state.cpuPaidAt, at) + (ms / cpuRate) * 1000;
  }

  /** Whether `account` has spent more CPU than its rate plus one second's allowance (it is slowed). */
  overCpuBudget(account: string, now: number): boolean {
    if ((this.settings.cpuMillisPerSecondPerTenant ?? 0) <= 0) return false;
    const state = this.tenants.get(account);
    return state !== undefined && state.cpuPaidAt - CPU_ALLOWANCE_MS > now;
  }

  /** How long a request of `state` waits for its CPU budget, or its refusal past MAX_CPU_WAIT_MS (a hello only waits). */
  private cpuDelay(state: TenantState, operation: boolean, now: number): number | TenantLimitExceeded {
    const cpuRate = this.settings.cpuMillisPerSecondPerTenant ?? 0;
    if (cpuRate <= 0) return 0;
    const delayMS = Math.max(0, state.cpuPaidAt - CPU_ALLOWANCE_MS - now);
    if (delayMS <= MAX_CPU_WAIT_MS) return delayMS;
    if (!operation) return MAX_CPU_WAIT_MS;
    return new TenantLimitExceeded('cpu', `tenant CPU limit (${cpuRate} ms per second) reached`);
  }

  /**
   * Admits one command to be forwarded upstream, or refuses it (the in-flight limit; its rate
   * token was taken by `admitRequest`). Every admitted command needs one `endOperation`.
   */
  startOperation(tenant: string): TenantLimitExceeded | undefined {
    if (!this.enabled) return undefined;
    const now = this.now();
    this.maybeSweep(now);
    const state = this.state(tenant, now);
    const maxInFlight = this.settings.maxInFlightPerTenant;
    if (maxInFlight > 0 && state.inFlight >= maxInFlight) {
      this.forgetIfIdle(tenant, state, now);
      return new TenantLimitExceeded('in_flight', `tenant in-flight limit (${maxInFlight}) reached`);
    }
    state.inFlight += 1;
    return undefined;
  }

  /**
   * Charges `bytes` just read from one of a tenant's connections to its byte rate and returns how
   * long its connections should stop reading (0: read on): until what it sent is back within its
   * allowance, the larger of one second at the rate and `maxMessageSizeBytes`. Charged as read, not
   * once a message is whole: a tenant streaming big messages on many connections at once would
   * otherwise have the proxy read, copy and hold far more than its rate (each connection's partial
   * message) before any of it counted, only to shed it when the byte budget is full. That reading
   * is CPU, memory and garbage every other tenant waits for.
   */
  received(tenant: string, bytes: number): number {
    const byteRate = this.settings.bytesPerSecondPerTenant ?? 0;
    if (byteRate <= 0) return 0;
    const now = this.now();
    this.maybeSweep(now);
    const state = this.state(tenant, now);
    state.bytesPaidAt = Math.max(state.bytesPaidAt, now) + (bytes / byteRate) * 1000;
    return this.readPause(state, byteRate, now);
  }

  /** `received` without new bytes: how long the tenant's connections should still not read. */
  readPauseMS(tenant: string): number {
    const byteRate = this.settings.bytesPerSecondPerTenant ?? 0;
    const state = this.tenants.get(tenant);
    if (byteRate <= 0 || state === undefined) return 0;
    const now = this.now();
    const pauseMS = this.readPause(state, byteRate, now);
    if (pauseMS === 0) this.forgetIfIdle(tenant, state, now);
    return pauseMS;
  }

  private readPause(state: TenantState, byteRate: number, now: number): number {
    return Math.max(0, state.bytesPaidAt - this.byteAllowanceMS(byteRate) - now);
  }

  /** How far ahead of its byte rate a tenant may run: the larger of one second and the biggest message. */
  private byteAllowanceMS(byteRate: number): number {
    return (Math.max(byteRate, this.settings.maxMessageSizeBytes ?? 0) / byteRate) * 1000;
  }

  /** Ends a command admitted by `startOperation` (answered, failed or abandoned). */
  endOperation(tenant: string): void {
    const state = this.tenants.get(tenant);
    if (state === undefined) return;
    state.inFlight = Math.max(0, state.inFlight - 1);
    this.forgetIfIdle(tenant, state);
  }

  private state(tenant: string, now = this.now()): TenantState {
    let state = this.tenants.get(tenant);
    if (state === undefined) {
      state = { connections: 0, inFlight: 0, tokens: this.burst, refilledAt: now, bytesPaidAt: now, cpuPaidAt: now };
      this.tenants.set(tenant, state);
    }
    return state;
  }

  private refill(state: TenantState, now: number): void {
    const elapsed = Math.max(0, now - state.refilledAt);
    state.tokens = Math.min(this.burst, state.tokens + (elapsed * this.settings.operationsPerSecondPerTenant) / 1000);
    state.refilledAt = now;
  }

  /** A tenant with nothing open and a full bucket is the same as one never seen. */
  private forgetIfIdle(tenant: string, state: TenantState, now = this.now()): void {
    if (state.connections > 0 || state.inFlight > 0 || state.bytesPaidAt > now || state.cpuPaidAt > now) return;
    if (this.burst > 0) {
      this.refill(state, now);
      if (state.tokens < this.burst) return;
    }
    this.tenants.delete(tenant);
  }

  /** Forgets now every idle tenant whose budgets are paid up (admissions do it at most every sweepIntervalMS). */
  sweep(): void {
    const now = this.now();
    this.lastSweep = now;
    for (const [tenant, state] of this.tenants) this.forgetIfIdle(tenant, state, now);
  }

  private maybeSweep(now: number): void {
    if (now - this.lastSweep < this.sweepIntervalMS) return;
    this.lastSweep = now;
    for (const [tenant, state] of this.tenants) this.forgetIfIdle(tenant, state, now);
  }
}
