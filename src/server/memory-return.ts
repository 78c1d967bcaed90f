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
 * The collection is `collect`: `globalThis.gc`, present when Node runs with `--expose-gc` (the
 * image's entrypoint passes it). Without it nothing is scheduled and memory comes back at V8's
 * next collection, as before.
 */
import type { Logger } from 'pino';

/** How long after a burst drained the collection runs (unless another burst drains meanwhile). */
export const MEMORY_RETURN_DELAY_MS = 1_000;

export interface MemoryReturnOptions {
  /** A full garbage collection; undefined: never scheduled. */
  collect: (() => void) | undefined;
  delayMS?: number;
  logger?: Logger | undefined;
}

export class MemoryReturn {
  readonly #collect: (() => void) | undefined;
  readonly #delayMS: number;
  readonly #logger: Logger | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Another burst drained while the timer ran: wait a whole delay again. */
  #drainedAgain = false;
  #closed = false;
  /** Collections run since start (for tests). */
  collections = 0;

  constructor(options: MemoryReturnOptions) {
    this.#collect = options.collect;
    this.#delayMS = options.delayMS ?? MEMORY_RETURN_DELAY_MS;
    this.#logger = options.logger;
  }

  /** Whether collections can be scheduled (a `collect` function was given). */
  get enabled(): boolean {
    return this.#collect !== undefined;
  }

  /** The byte budget's `onDrained`: a burst of `peakBytes` is over. */
  drained(peakBytes: number): void {
    if (this.#collect === undefined || this.#closed) return;
    if (this.#timer !== undefined) {
      this.#drainedAgain = true;
      return;
    }
    this.#arm(peakBytes);
  }

  close(): void {
    this.#closed = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #arm(peakBytes: number): void {
    this.#drainedAgain = false;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      // Bursts still follow each other: V8 collects while they allocate; wait for the quiet.
      if (this.#drainedAgain) return this.#arm(peakBytes);
      const started = process.hrtime.bigint();
      this.#collect?.();
      this.collections++;
      this.#logger?.debug(
        { peakBytes, ms: Number(process.hrtime.bigint() - started) / 1e6 },
        'burst of buffered bytes over: full garbage collection run',
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
