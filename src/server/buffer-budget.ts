/**
 * The global byte budget for what client connections make the proxy hold in memory (issue 15):
 * request bytes received and not yet handled (and their decompressed and rewritten copies), reply
 * bytes being read off the upstream for a client (from the moment the upstream connection holds
 * 64 KiB or more of the reply's frame: src/upstream/connection.ts, ReplyCharge), and reply bytes
 * written to a client that has not read them yet. `limits.maxBufferedBytes` bounds
 * the total; each tenant (connections without a tenant share one account) has a fair share:
 *
 *   share = max(maxBufferedBytes / tenants holding bytes now, maxBufferedBytes / 16)
 *
 * A tenant may hold more than its share while the total is under the budget (nobody else needs
 * the memory). When a charge takes the total over the budget, connections of tenants over their
 * share are closed (shed), the tenant furthest over first and its largest connection first,
 * until the total fits again; when no tenant is over its share (only possible through the
 * floor), the connection that charged is shed. So one tenant's slow readers or floods can never
 * make another tenant wait or fail for memory: the bytes are simply taken back from them.
 *
 * Bytes that already exist (a chunk just read from a socket) are always recorded: `charge` says
 * whether the charging account survived. Pure: no sockets or timers; shedding calls back.
 *
 * Garbage: a released buffer is still resident until V8's next full collection, and V8 paces
 * those by its own heuristics, not by this budget: under a flood of big messages measured RSS
 * ran hundreds of MiB over the budget in dead request copies and socket chunks. So released
 * bytes are counted as garbage too, and when they reach `garbageMark` (an eighth of the budget,
 * at least GARBAGE_FLOOR_BYTES) `onGarbage` is told once, so the proxy collects (memory-return.ts)
 * and calls `collected()`.
 *
 * Drains: when the total falls to an eighth of a high-water mark of at least DRAIN_MARK_BYTES (8 MiB)
 * (a burst of big messages or slow readers is over), `onDrained` is told once per such peak, so
 * the proxy can give the burst's memory back (memory-return.ts) instead of waiting for traffic.
 * A connection that held at least DRAIN_MARK_BYTES at once reports the same when it closes: its
 * socket's native handle, decoder and chunks stay allocated until a full collection finds its
 * objects dead, and glibc cannot trim its heap below the highest of them (after a flood of 14 MB
 * finds the connections closed after the drain's collection, and 26 MiB of free glibc heap stayed
 * resident until the next full collection).
 */

/**
 * Released bytes are collected once they reach an eighth of the budget, but not fewer than this.
 * (A quarter let 200 connections of 10 MB finds take RSS 7-10 MiB past idle + budget + 128 MiB;
 * an eighth kept it 46-50 MiB under: docs/testing.md.)
 */
export const GARBAGE_FLOOR_BYTES = 16 * 1024 * 1024;
const GARBAGE_DIVISOR = 8;

/** The account of connections without an established tenant (cannot be a tenant: contains NUL). */
export const UNAUTHENTICATED_ACCOUNT = '\u0000unauthenticated';

/** The floor of a tenant's share, as a fraction of the budget. */
const SHARE_FLOOR_DIVISOR = 16;

/** A peak of buffered bytes this high (one big message is enough) is a burst whose end is reported to `onDrained`. */
export const DRAIN_MARK_BYTES = 8 * 1024 * 1024;
/** The burst is over when the total is back to this fraction of its peak. */
const DRAINED_DIVISOR = 8;

interface TenantBytes {
  bytes: number;
  accounts: Set<BufferAccount>;
}

export class BufferBudget {
  #maxBytes: number;
  #total = 0;
  readonly #tenants = new Map<string, TenantBytes>();
  /** The highest total since the last drain was reported. */
  #peak = 0;
  readonly #onDrained: ((peakBytes: number) => void) | undefined;
  readonly #onGarbage: ((garbageBytes: number) => void) | undefined;
  /** Bytes released since the last collection (dead, still resident). */
  #garbage = 0;
  /** `onGarbage` was told and no collection followed yet. */
  #garbageReported = false;
  /** Accounts shed since start (for tests; the connection reports its own metric). */
  shed = 0;

  constructor(
    maxBytes: number,
    options: { onDrained?: (peakBytes: number) => void; onGarbage?: (garbageBytes: number) => void } = {},
  ) {
    this.#maxBytes = maxBytes;
    this.#onDrained = options.onDrained;
    this.#onGarbage = options.onGarbage;
  }

  /** Bytes released since the last `collected()`. */
  get garbage(): number {
    return this.#garbage;
  }

  /** Released bytes that make a collection worth its time. */
  get garbageMark(): number {
    return Math.max(Math.floor(this.#maxBytes / GARBAGE_DIVISOR), GARBAGE_FLOOR_BYTES);
  }

  /** A collection ran or is under way: what was released before it is gone, or about to be. */
  collected(): void {
    this.#garbage = 0;
    this.#garbageReported = false;
  }

  get maxBytes(): number {
    return this.#maxBytes;
  }

  /** Bytes held over every connection now. */
  get total(): number {
    return this.#total;
  }

  /** Bytes a tenant's connections hold now. */
  bytesOf(key: string): number {
    return this.#tenants.get(key)?.bytes ?? 0;
  }

  /** Tenants holding bytes now. */
  get activeTenants(): number {
    return this.#tenants.size;
  }

  /** The most a tenant may hold while others need memory. */
  get share(): number {
    const active = Math.max(1, this.#tenants.size);
    return Math.max(Math.floor(this.#maxBytes / active), Math.floor(this.#maxBytes / SHARE_FLOOR_DIVISOR));
  }

  /** Hot reload: a smaller budget is enforced at the next charge. */
  reconfigure(maxBytes: number): void {
    this.#maxBytes = maxBytes;
  }

  /**
   * A connection's account, under `key` (its tenant, or UNAUTHENTICATED_ACCOUNT); `owner` is told
   * when the budget sheds it (an object, not a closure per connection: issue 16).
   */
  open(key: string, owner: ShedOwner): BufferAccount {
    return new BufferAccount(this, key, owner);
  }

  /** @internal */
  add(account: BufferAccount, bytes: number): void {
    if (bytes === 0) return;
    let tenant = this.#tenants.get(account.key);
    if (tenant === undefined) {
      tenant = { bytes: 0, accounts: new Set() };
      this.#tenants.set(account.key, tenant);
    }
    tenant.bytes += bytes;
    tenant.accounts.add(account);
    this.#total += bytes;
    if (bytes < 0) this.discarded(-bytes);
    if (tenant.bytes <= 0) this.#tenants.delete(account.key);
    else if (account.bytes + bytes <= 0) tenant.accounts.delete(account);
    if (this.#total > this.#peak) this.#peak = this.#total;
    else if (this.#peak >= DRAIN_MARK_BYTES && this.#total <= this.#peak / DRAINED_DIVISOR) {
      const peak = this.#peak;
      this.#peak = this.#total;
      this.#onDrained?.(peak);
    }
  }

  /**
   * `bytes` became garbage without being released (a frame reassembled from socket chunks: the
   * chunks are dead, their charge now stands for the copy).
   */
  discarded(bytes: number): void {
    this.#garbage += bytes;
    if (this.#garbage >= this.garbageMark && !this.#garbageReported && this.#onGarbage !== undefined) {
      this.#garbageReported = true;
      this.#onGarbage(this.#garbage);
    }
  }

  /** @internal An account that held a burst's worth of bytes at once was closed. */
  accountEnded(peakBytes: number): void {
    if (peakBytes >= DRAIN_MARK_BYTES) this.#onDrained?.(peakBytes);
  }

  /** @internal Sheds over-share accounts until the total fits; false when `charging` itself was shed. */
  enforce(charging: BufferAccount): boolean {
    while (this.#total > this.#maxBytes && !charging.closed) {
      const share = this.share;
      let victim: TenantBytes | undefined;
      for (const tenant of this.#tenants.values()) {
        if (tenant.bytes > share && (victim === undefined || tenant.bytes > victim.bytes)) victim = tenant;
      }
      let largest: BufferAccount | undefined;
      for (const account of victim?.accounts ?? []) {
        if (largest === undefined || account.bytes > largest.bytes) largest = account;
      }
      this.shed += 1;
      // Nobody over its share: the charge itself does not fit.
      (largest ?? charging).shedNow();
    }
    return !charging.closed;
  }
}

/** Who is told when the budget sheds an account (its connection, which then closes). */
export interface ShedOwner {
  accountShed(account: BufferAccount): void;
}

/** One connection's bytes in the budget. */
export class BufferAccount {
  #bytes = 0;
  /** The most this connection held at once. */
  #peak = 0;
  #closed = false;

  constructor(
    private readonly budget: BufferBudget,
    public key: string,
    private readonly owner: ShedOwner,
  ) {}

  get bytes(): number {
    return this.#bytes;
  }

  /** Closed: shed by the budget or closed by its connection; charges and releases are ignored. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Records `bytes` more held by this connection. Returns false when this connection was shed
   * for it (its connection is being closed: drop whatever the bytes were for).
   */
  charge(bytes: number): boolean {
    if (this.#closed) return false;
    if (bytes <= 0) return true;
    this.budget.add(this, bytes);
    this.#bytes += bytes;
    if (this.#bytes > this.#peak) this.#peak = this.#bytes;
    return this.budget.enforce(this);
  }

  /** The connection no longer holds `bytes` of what it charged. */
  release(bytes: number): void {
    if (this.#closed || bytes <= 0) return;
    const released = Math.min(bytes, this.#bytes);
    this.budget.add(this, -released);
    this.#bytes -= released;
  }

  /** The connection's tenant was established: what it holds now counts for that tenant. */
  moveTo(key: string): void {
    if (this.#closed || key === this.key) return;
    const bytes = this.#bytes;
    this.budget.add(this, -bytes);
    this.key = key;
    this.#bytes = 0;
    this.budget.add(this, bytes);
    this.#bytes = bytes;
  }

  /** The connection closed: everything it held is released. */
  close(): void {
    if (this.#closed) return;
    this.budget.add(this, -this.#bytes);
    this.#bytes = 0;
    this.#closed = true;
    this.budget.accountEnded(this.#peak);
  }

  /** @internal Called by the budget: releases everything, then tells the connection to close. */
  shedNow(): void {
    this.close();
    this.owner.accountShed(this);
  }
}
