/**
 * The pool's queue of requests waiting for a connection, fair across tenants: each tenant has
 * its own FIFO and the queue serves the tenants round-robin, so a tenant with a thousand waiters
 * gets one connection in turn with a tenant that has one (issue 5, "one noisy tenant cannot
 * starve the others"). Pure: no timers, no sockets.
 */

/** The key for waiters with no tenant (pre-authentication commands, internal work). */
export const NO_TENANT = '';

export class FairWaitQueue<T> {
  /** Per-tenant FIFOs, in the order the round-robin visits them (Map keeps insertion order). */
  readonly #queues = new Map<string, T[]>();
  #length = 0;
  #lastServed: string | undefined;

  get length(): number {
    return this.#length;
  }

  /** Tenants with at least one waiter. */
  get tenants(): number {
    return this.#queues.size;
  }

  push(tenant: string, waiter: T): void {
    const queue = this.#queues.get(tenant);
    if (queue === undefined) this.#queues.set(tenant, [waiter]);
    else queue.push(waiter);
    this.#length++;
  }

  /**
   * The next waiter: the oldest of the tenant whose turn it is. That tenant then goes to the back
   * of the rotation, and it is skipped once if it was also served last while another tenant waits
   * (a tenant that starts waiting behind a busy one is served next, not after it again).
   * Tenants for which `eligible` is false (at their share cap) are passed over but keep their
   * place, so they are served first once they may be again.
   */
  shift(eligible?: (tenant: string) => boolean): T | undefined {
    const entry = this.#next(eligible);
    if (entry === undefined) return undefined;
    const [tenant, queue] = entry;
    const waiter = queue.shift() as T;
    this.#queues.delete(tenant);
    if (queue.length > 0) this.#queues.set(tenant, queue);
    this.#length--;
    this.#lastServed = tenant;
    return waiter;
  }

  /** Whether some waiter's tenant is eligible (shift would return a waiter). */
  hasEligible(eligible: (tenant: string) => boolean): boolean {
    for (const tenant of this.#queues.keys()) if (eligible(tenant)) return true;
    return false;
  }

  /** The queue of the first eligible tenant in turn (the last served one only when alone). */
  #next(eligible: ((tenant: string) => boolean) | undefined): [string, T[]] | undefined {
    let lastServed: [string, T[]] | undefined;
    for (const entry of this.#queues) {
      if (eligible !== undefined && !eligible(entry[0])) continue;
      if (lastServed === undefined && entry[0] === this.#lastServed) {
        lastServed = entry;
        continue;
      }
      if (lastServed !== undefined) {
        // Passed over: to the back of the rotation.
        this.#queues.delete(lastServed[0]);
        this.#queues.set(lastServed[0], lastServed[1]);
      }
      return entry;
    }
    return lastServed;
  }

  /** Removes one waiter (timed out, cancelled); false when it was not queued. */
  remove(tenant: string, waiter: T): boolean {
    const queue = this.#queues.get(tenant);
    if (queue === undefined) return false;
    const index = queue.indexOf(waiter);
    if (index < 0) return false;
    queue.splice(index, 1);
    if (queue.length === 0) this.#queues.delete(tenant);
    this.#length--;
    return true;
  }

  /** Empties the queue, returning every waiter (oldest tenant first). */
  drain(): T[] {
    const all = [...this.#queues.values()].flat();
    this.#queues.clear();
    this.#length = 0;
    return all;
  }
}
