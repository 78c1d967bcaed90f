/**
 * Where a command MUST go, when the pool may not choose freely (issue 5, "pinning where
 * correctness needs it"):
 *
 * - a multi-statement transaction runs on one upstream connection, from the command carrying
 *   `startTransaction` until `commitTransaction`/`abortTransaction` is answered or the client
 *   connection that started it leaves (keyed by the upstream lsid, which the rewrite already made
 *   tenant-specific, so tenants can never share a pin);
 * - a cursor continues (getMore, killCursors) on the server that opened it, keyed by namespace and
 *   cursor id (ids are only unique per server: mongobetween#45).
 *
 * Exhaust streams and passthrough-authenticated clients need no table: the request holds its
 * connection until the last reply, and a passthrough client owns its connection outright.
 * `decidePin` is the pure decision; the tables hold state but no sockets of their own.
 */
import type { CommandTraits } from './command-traits.js';

/** How one command relates to its session's transaction pin. */
export type PinDecision =
  /** Not a transaction command: any connection. */
  | { kind: 'none' }
  /** Starts (or restarts) a transaction: run anywhere, then keep the connection pinned. */
  | { kind: 'start'; lsid: string }
  /** Inside a transaction: the pinned connection when there is one. */
  | { kind: 'continue'; lsid: string }
  /** commitTransaction / abortTransaction: the pinned connection, then unpin once answered. */
  | { kind: 'end'; lsid: string };

export function decidePin(
  traits: Pick<CommandTraits, 'name' | 'lsid' | 'inTransaction' | 'startTransaction'>,
): PinDecision {
  const { lsid } = traits;
  if (lsid === undefined || !traits.inTransaction) return { kind: 'none' };
  if (traits.name === 'commitTransaction' || traits.name === 'abortTransaction') return { kind: 'end', lsid };
  if (traits.startTransaction) return { kind: 'start', lsid };
  return { kind: 'continue', lsid };
}

/** Transaction pins: lsid → a held resource (an upstream connection), owned by a client connection. */
export class TransactionPins<C, O> {
  readonly #pins = new Map<string, { resource: C; owner: O }>();

  get size(): number {
    return this.#pins.size;
  }

  get(lsid: string): C | undefined {
    return this.#pins.get(lsid)?.resource;
  }

  /** Pins `resource` for `lsid`; returns the resource it replaces (to be released), if another. */
  set(lsid: string, resource: C, owner: O): C | undefined {
    const previous = this.#pins.get(lsid);
    this.#pins.set(lsid, { resource, owner });
    return previous !== undefined && previous.resource !== resource ? previous.resource : undefined;
  }

  /** Unpins `lsid`; returns what was pinned. */
  delete(lsid: string): C | undefined {
    const pin = this.#pins.get(lsid);
    this.#pins.delete(lsid);
    return pin?.resource;
  }

  /** Unpins every lsid whose pin uses `resource` (it closed). */
  forget(resource: C): void {
    for (const [lsid, pin] of this.#pins) if (pin.resource === resource) this.#pins.delete(lsid);
  }

  /** Unpins everything `owner` started (the client connection left); returns the resources. */
  releaseOwner(owner: O): C[] {
    const released: C[] = [];
    for (const [lsid, pin] of this.#pins) {
      if (pin.owner !== owner) continue;
      this.#pins.delete(lsid);
      released.push(pin.resource);
    }
    return released;
  }

  /** Whether some pin holds `resource`. */
  holds(resource: C): boolean {
    for (const pin of this.#pins.values()) if (pin.resource === resource) return true;
    return false;
  }
}

/**
 * Cursor → server, bounded (least recently used entries go first): an entry is only needed while
 * the cursor lives, and the proxy cannot see every cursor end (timeouts, server restarts).
 */
export class CursorServers {
  readonly #entries = new Map<string, string>();
  readonly #capacity: number;

  constructor(capacity = 100_000) {
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#entries.size;
  }

  remember(cursor: string, server: string): void {
    this.#entries.delete(cursor);
    this.#entries.set(cursor, server);
    if (this.#entries.size > this.#capacity) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
  }

  serverOf(cursor: string): string | undefined {
    const server = this.#entries.get(cursor);
    if (server !== undefined) {
      this.#entries.delete(cursor);
      this.#entries.set(cursor, server);
    }
    return server;
  }

  forget(cursor: string): void {
    this.#entries.delete(cursor);
  }

  /** A server left the topology: its cursors are gone with it. */
  forgetServer(server: string): void {
    for (const [cursor, owner] of this.#entries) if (owner === server) this.#entries.delete(cursor);
  }
}
