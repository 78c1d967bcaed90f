/**
 * Turns of the event loop shared between tenants (issue 15, "connection flood"): each tenant's
 * work on small requests is bounded per turn, and what is over waits for the tenant's turn.
 *
 * Node handles every socket that became readable in one poll phase before it runs anything
 * else: when one tenant opens two thousand connections and sends a hello on each, the proxy
 * decodes and answers two thousand hellos before it reads the next request of anyone else, and
 * a bystander's command (or its upstream's reply) waits for all of them. Large requests are
 * already validated in slices (validation-scheduler.ts); this covers the many small ones.
 *
 * How: the synchronous work of each request (decode, route, rewrite, the forward's write) and
 * of setting a connection up is measured (two clock reads) and added to its tenant's count for
 * the current turn (`note`). While a tenant's count is under `turnMS` and none of its requests
 * wait, its requests run at once, as before. Past it, its requests wait (`wait`, the caller not
 * reading its socket meanwhile) in its queue; at the end of the turn (setImmediate: after the
 * pending I/O of the poll phase) the counts start again and the queues are served one request
 * at a time, round-robin across tenants, for at most `turnMS`; the rest wait for the next turn.
 * So a flooding tenant gets about `turnMS` of the poll phase and a share of `turnMS` after it,
 * per turn, and a tenant that is not over its share never waits for it: nothing changes for a
 * proxy that is not flooded, and no one waits while the proxy has nothing else to do.
 *
 * Pure scheduling: no sockets or metrics; `defer` and `now` are injectable for tests.
 */

export interface TurnShareOptions {
  /** Milliseconds of a tenant's request work per turn of the event loop before its requests queue. Default 4. */
  turnMS?: number;
  /** Runs the end of the turn (default setImmediate: after pending I/O). */
  defer?: (run: () => void) => void;
  /** Milliseconds, monotonic (default performance.now). */
  now?: () => number;
  /** A request waits for a later turn (metrics). */
  onWait?: () => void;
}

/** Default work per turn: long enough that an unflooded proxy never queues, short next to a request's round trip. */
export const DEFAULT_TURN_MS = 4;

export class TurnShare {
  /** Waiting requests per account (FIFO), in the order accounts take turns. */
  private readonly queues = new Map<string, Array<() => void>>();
  private waitingCount = 0;
  /** Work noted per account since the last end of a turn, in ms (only accounts that worked in the turn). */
  private readonly used = new Map<string, number>();
  private endScheduled = false;
  private serving = false;
  private readonly turnMS: number;
  private readonly defer: (run: () => void) => void;
  readonly now: () => number;
  private readonly onWait: (() => void) | undefined;
  /** Requests that waited for a later turn, since start (tests, metrics). */
  queued = 0;

  constructor(options: TurnShareOptions = {}) {
    this.turnMS = options.turnMS ?? DEFAULT_TURN_MS;
    this.defer = options.defer ?? ((run) => void setImmediate(run));
    this.now = options.now ?? (() => performance.now());
    this.onWait = options.onWait;
  }

  /** Requests waiting for a turn. */
  get waiting(): number {
    return this.waitingCount;
  }

  /** Whether a request of `account` may run now: the account has work left in this turn and none of its requests waits. */
  mayRunNow(account: string): boolean {
    return (this.used.get(account) ?? 0) < this.turnMS && !this.queues.has(account);
  }

  /** `ms` of `account`'s work just done: counted against its share of the current turn. */
  note(account: string, ms: number): void {
    this.used.set(account, (this.used.get(account) ?? 0) + ms);
    this.scheduleEnd();
  }

  /** Resolves when it is `account`'s turn to run one request. Never rejects. */
  wait(account: string): Promise<void> {
    return new Promise((resolve) => {
      let queue = this.queues.get(account);
      if (queue === undefined) this.queues.set(account, (queue = []));
      queue.push(resolve);
      this.waitingCount++;
      this.queued++;
      this.onWait?.();
      this.scheduleEnd();
    });
  }

  private scheduleEnd(): void {
    if (this.endScheduled) return;
    this.endScheduled = true;
    this.defer(this.endTurn);
  }

  private readonly endTurn = (): void => {
    this.endScheduled = false;
    this.used.clear();
    if (this.waitingCount > 0 && !this.serving) void this.serve();
  };

  /**
   * Lets waiting requests run, one per account in turn, each to its first wait (its synchronous
   * work runs in the microtask after its promise resolves, before this continues), until the
   * turn's time is spent (at least one runs); what is left waits for the next turn.
   */
  private async serve(): Promise<void> {
    this.serving = true;
    const started = this.now();
    try {
      while (this.waitingCount > 0) {
        const [account, queue] = this.queues.entries().next().value as [string, Array<() => void>];
        const resolve = queue.shift()!;
        this.queues.delete(account);
        // Back of the line: the next account in turn goes first.
        if (queue.length > 0) this.queues.set(account, queue);
        this.waitingCount--;
        resolve();
        await Promise.resolve();
        // At least one request per turn, whatever its cost.
        if (this.waitingCount > 0 && this.now() - started >= this.turnMS) {
          this.scheduleEnd();
          return;
        }
      }
    } finally {
      this.serving = false;
    }
  }
}
