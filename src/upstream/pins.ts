/**
 * Where a command MUST go, when the pool may not choose freely (issue 5, "pinning where
 * correctness needs it"):
 *
 * - a multi-statement transaction runs on one upstream connection, from the command carrying
 *   `startTransaction` until `commitTransaction`/`abortTransaction` is answered or the client
 *   connection that started it leaves (keyed by the upstream lsid, which the rewrite already made
 *   tenant-specific, so tenants can never share a pin);
 * - a cursor continues (getMore, killCursors) on the server that opened it, keyed by namespace and
 *   cursor id (ids are only unique per server: mongobetween#45);
 * - the connection a cursor was opened on stays open while the cursor lives (CursorHomes): some
 *   servers (FerretDB v1) close a connection's cursors with it, and pool connections are shared.
 *
 * Exhaust streams and passthrough-authenticated clients need no table: the request holds its
 * connection until the last reply, and a passthrough client owns its connection outright.
 * `decidePin` is the pure decision; the tables hold state but no sockets of their own.
 */
import type { ReplyScan } from '../wire/reply-scan.js';
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

/** What CursorHomes needs of a connection: to hear that it closed. */
export interface CursorHome {
  once(event: 'close', listener: () => void): unknown;
}

/** A cursor not continued for this long is forgotten (the proxy's own cursor idle timeout). */
export const CURSOR_HOME_IDLE_MS = 10 * 60_000;

/**
 * Cursor → the upstream connection it was opened on (its home). FerretDB v1 ties a cursor's life
 * to that connection: closing it closes every cursor opened on it, although getMores work from any
 * connection. Pool connections serve every tenant one request at a time, so a connection the proxy
 * closes on purpose (no idle room, idle timeout, lifetime, a client leaving in the middle of a
 * command) could be the home of another tenant's cursor: the pool and the forwarding path ask
 * `holds` first. Servers that do not tie cursors to connections (MongoDB) lose nothing: such a
 * connection is only kept a little longer. A cursor leaves the table when a getMore exhausts it, a
 * killCursors names it, a getMore fails on it, its home closes, or it was not continued for
 * CURSOR_HOME_IDLE_MS; the table is bounded (least recently used first).
 */
export class CursorHomes<C extends CursorHome> {
  readonly #cursors = new Map<string, { home: C; touched: number }>();
  readonly #byHome = new Map<C, Set<string>>();
  readonly #capacity: number;
  readonly #idleMS: number;
  readonly #now: () => number;

  constructor(options: { capacity?: number; idleMS?: number; now?: () => number } = {}) {
    this.#capacity = options.capacity ?? 100_000;
    this.#idleMS = options.idleMS ?? CURSOR_HOME_IDLE_MS;
    this.#now = options.now ?? Date.now;
  }

  get size(): number {
    return this.#cursors.size;
  }

  /**
   * A reply to a command with `traits` came on `connection`: a cursor opened, continued or ended.
   * `reply`: the scan of the reply the forwarding layer made (none for a killCursors whose reply
   * is not read).
   */
  observe(traits: Pick<CommandTraits, 'name' | 'cursors'>, reply: ReplyScan | undefined, connection: C): void {
    if (traits.name === 'killCursors') {
      for (const cursor of traits.cursors) this.#forget(cursor);
      return;
    }
    const cursor = reply?.cursorKey;
    if (traits.name === 'getMore') {
      // Still open: continued (its home stays the connection that opened it); else exhausted or failed.
      for (const named of traits.cursors) {
        if (cursor === named) this.#touch(named);
        else this.#forget(named);
      }
      return;
    }
    if (cursor !== undefined) this.#remember(cursor, connection);
  }

  /** Whether open cursors were opened on `connection` (closing it would close them). */
  holds(connection: C): boolean {
    const cursors = this.#byHome.get(connection);
    if (cursors === undefined) return false;
    const stale = this.#now() - this.#idleMS;
    for (const cursor of cursors) {
      const entry = this.#cursors.get(cursor);
      if (entry === undefined || entry.touched < stale) this.#forget(cursor);
    }
    return (this.#byHome.get(connection)?.size ?? 0) > 0;
  }

  #remember(cursor: string, home: C): void {
    this.#forget(cursor);
    this.#cursors.set(cursor, { home, touched: this.#now() });
    let cursors = this.#byHome.get(home);
    if (cursors === undefined) {
      cursors = new Set();
      this.#byHome.set(home, cursors);
      // Its cursors are gone with it (and a closed connection is never asked about again).
      home.once('close', () => {
        for (const gone of this.#byHome.get(home) ?? []) this.#cursors.delete(gone);
        this.#byHome.delete(home);
      });
    }
    cursors.add(cursor);
    if (this.#cursors.size > this.#capacity) {
      const oldest = this.#cursors.keys().next().value;
      if (oldest !== undefined) this.#forget(oldest);
    }
  }

  #touch(cursor: string): void {
    const entry = this.#cursors.get(cursor);
    if (entry === undefined) return;
    this.#cursors.delete(cursor);
    entry.touched = this.#now();
    this.#cursors.set(cursor, entry);
  }

  #forget(cursor: string): void {
    const entry = this.#cursors.get(cursor);
    if (entry === undefined) return;
    this.#cursors.delete(cursor);
    // The home's set stays (possibly empty) until the home closes: its close listener is registered once.
    this.#byHome.get(entry.home)?.delete(cursor);
  }
}
