/**
 * Gives the memory of a burst back once it is over (issue 15, "memory returns after the abuse").
 *
 * The buffers of big messages are dead as soon as they are answered, but V8 frees a dead Buffer's
 * native memory only at its next full collection, and it runs one only when JavaScript allocates:
 * after a burst followed by silence the proxy's RSS stays near its peak for as long as it stays
 * idle. So when the byte budget reports that a burst drained (buffer-budget.ts: the buffered total
 * fell to an eighth of a peak of at least 8 MiB), one full collection is scheduled `delayMS`
 * later, and runs only if no other burst drained meanwhile (a steady stream of big messages is
 * collected by V8 on its own; this is for the quiet after it). What the collection frees goes back
 * to the C allocator, which returns it to the system when it was mmapped (docs/deploy.md, Memory:
 * the image fixes glibc's mmap threshold for that).
 *
 * A connection that held a burst's worth of bytes at once closing reports the same
 * (buffer-budget.ts): its socket and decoder become garbage only then, usually after the drain's
 * collection ran, and they kept glibc from trimming its heap until the next one.
 *
 * A flood of connections ending is such a burst too (listener.ts: the open connections fell to a
 * quarter of a peak of at least 128): each closed connection leaves its objects, socket buffers
 * and observer behind as garbage that an idle proxy would otherwise keep until traffic resumes.
 *
 * The collection is `collect`: `globalThis.gc`, present when Node runs with `--expose-gc` (the
 * image's entrypoint passes it). Without it nothing is scheduled and memory comes back at V8's
 * next collection, as before. The collections asked for during a burst (`collectSoon`) start
 * incrementally instead where V8's API is reachable (heap-pressure.ts): other tenants are being
 * served then, and a full collection is one long pause for all of them.
 */
import type { Logger } from 'pino';
import type { IncrementalCollection } from './heap-pressure.js';

/** How long after a burst drained the collection runs (unless another burst drains meanwhile). */
export const MEMORY_RETURN_DELAY_MS = 1_000;

export interface MemoryReturnOptions {
  /** A full garbage collection; undefined: never scheduled. */
  collect: (() => void) | undefined;
  /**
   * Gives the C heap's free pages back (malloc-trim.ts), after a burst's collections; undefined:
   * not available here.
   */
  trim?: (() => void) | undefined;
  /**
   * Incremental collections (heap-pressure.ts): used during a burst, where `collect`'s atomic
   * pause would stall every tenant, unless the one started last is still running (garbage is
   * outgrowing it: `collect` then); undefined: `collect` there too.
   */
  incremental?: IncrementalCollection | undefined;
  delayMS?: number;
  logger?: Logger | undefined;
}

export class MemoryReturn {
  readonly #collect: (() => void) | undefined;
  readonly #trim: (() => void) | undefined;
  readonly #incremental: IncrementalCollection | undefined;
  readonly #delayMS: number;
  readonly #logger: Logger | undefined;
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  /** Another burst drained while the timer ran: wait a whole delay again. */
  #drainedAgain = false;
  #closed = false;
  /** Collections run since start (for tests). */
  collections = 0;
  /** Of `collections`, those started incrementally (for tests). */
  incrementalCollections = 0;
  /** Trims of the C heap run since start (for tests). */
  trims = 0;

  constructor(options: MemoryReturnOptions) {
    this.#collect = options.collect;
    this.#trim = options.trim;
    this.#incremental = options.incremental;
    this.#delayMS = options.delayMS ?? MEMORY_RETURN_DELAY_MS;
    this.#logger = options.logger;
  }

  /** Whether collections can be scheduled (a `collect` function was given). */
  get enabled(): boolean {
    return this.#collect !== undefined;
  }

  /** The byte budget's `onDrained`: a burst of `peak` bytes (or connections) is over. */
  drained(peak: number, what: 'bytes' | 'connections' = 'bytes'): void {
    if (this.#collect === undefined || this.#closed) return;
    if (this.#timer !== undefined) {
      this.#drainedAgain = true;
      return;
    }
    this.#arm(peak, what);
  }

  /**
   * The byte budget's `onGarbage`: released buffers add up to a good part of the budget; they are
   * collected at the next turn of the event loop (not inside the charge that reported them), then
   * `done` is called. This is during a burst, while other tenants wait on the event loop: an
   * incremental collection when one can be started (`done` then means it is under way, and V8
   * finishes it within a few turns), else a full one; a full one too when the incremental one
   * started last has not finished yet, since garbage then grows faster than it is collected (a
   * full-size flood of big finds took RSS past its limit with incremental collections alone).
   * Without a collector, `done` is called at once (V8 collects on its own).
   */
  collectSoon(done: () => void): void {
    const incremental = this.#incremental;
    if ((incremental === undefined && this.#collect === undefined) || this.#closed) return done();
    if (this.#immediate !== undefined) return;
    this.#immediate = setImmediate(() => {
      this.#immediate = undefined;
      if (!this.#closed) {
        if (incremental !== undefined && (!incremental.pending || this.#collect === undefined)) {
          incremental.start();
          this.incrementalCollections++;
        } else {
          this.#collect?.();
        }
        this.collections++;
      }
      done();
    });
  }

  /** The connection registry's `onFell`: a flood of `peak` connections is over. */
  connectionsFell(peak: number): void {
    this.drained(peak, 'connections');
  }

  close(): void {
    this.#closed = true;
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#immediate = undefined;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * What the collections freed in glibc's heap below blocks still in use stays resident until
   * trimmed (malloc-trim.ts). Once per burst, after it: trimming during one would only make glibc
   * ask the system for the same pages again.
   */
  #trimHeap(): void {
    if (this.#trim === undefined || this.#closed) return;
    this.#trim();
    this.trims++;
  }

  #arm(peak: number, what: 'bytes' | 'connections'): void {
    this.#drainedAgain = false;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      // Bursts still follow each other: V8 collects while they allocate; wait for the quiet.
      if (this.#drainedAgain) return this.#arm(peak, what);
      const started = process.hrtime.bigint();
      this.#collect?.();
      this.collections++;
      // Some memory is freed only after the collection that found it dead (finalizers run then): after
      // a connection flood of 2,000, this one collection left RSS 26 MiB over its baseline, where
      // three with a turn of the event loop between brought it back to 14 MiB over. So a second one.
      setImmediate(() => {
        if (this.#closed) return;
        this.#collect?.();
        this.collections++;
        // The young generation a burst grew stays at its peak size through any number of full
        // collections; only one that reduces memory shrinks it (heap-pressure.ts): started now,
        // the heap has little left to mark. The C heap is trimmed once it finished.
        const incremental = this.#incremental;
        if (incremental !== undefined) {
          incremental.start(() => this.#trimHeap());
          this.collections++;
          this.incrementalCollections++;
        } else {
          this.#trimHeap();
        }
      }).unref();
      this.#logger?.debug(
        { peak, of: what, ms: Number(process.hrtime.bigint() - started) / 1e6 },
        'burst of buffered bytes or connections over: full garbage collection run',
      );
    }, this.#delayMS);
    this.#timer.unref();
  }
}

/** `globalThis.gc` when Node runs with `--expose-gc`, else undefined. */
export function exposedGc(): (() => void) | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? () => (gc as () => void)() : undefined;
}
