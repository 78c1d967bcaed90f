/**
 * Byte copies put off until later (issue 15, "~48 MB inserts"): the writes of a rewritten request
 * that are proportional to its size (stamped documents spliced together, the array and the frame
 * they go into) are recorded here while the rewrite runs, and carried out afterwards, all at once
 * or in slices between which other work runs (server/validation-scheduler.ts). Only the copies
 * are put off: every check and every decision was made by the time they are recorded, and the
 * small writes (lengths, keys, headers) are done at once.
 *
 * The copies run strictly in the order they were added, so a copy may read bytes that an earlier
 * one writes (a stamped document copied into the frame after being spliced together). The
 * buffers written to must not be read by anyone else before the job is finished; the sources
 * must not change meanwhile (they are the request's own bytes, held until it is answered).
 */

export class CopyJob {
  readonly #sources: Uint8Array[] = [];
  readonly #targets: Uint8Array[] = [];
  readonly #offsets: number[] = [];
  /** The next copy to run, and how much of it is already done. */
  #next = 0;
  #partial = 0;
  /** Bytes recorded, and bytes copied so far. */
  #bytes = 0;
  #copied = 0;

  /** Bytes of all the copies recorded. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Bytes still to copy. */
  get remaining(): number {
    return this.#bytes - this.#copied;
  }

  /** Whether every copy recorded has run. */
  get finished(): boolean {
    return this.#next === this.#sources.length;
  }

  /** Records a copy of `source` to `target` at `offset` (checked now: it must fit). */
  add(source: Uint8Array, target: Uint8Array, offset: number): void {
    if (offset < 0 || offset + source.length > target.length) throw new RangeError('copy out of the target buffer');
    if (source.length === 0) return;
    this.#sources.push(source);
    this.#targets.push(target);
    this.#offsets.push(offset);
    this.#bytes += source.length;
  }

  /**
   * Runs copies, in order, until about `budget` bytes have been copied (a copy longer than the
   * budget is split; at least one byte when any remain); returns the bytes copied.
   */
  step(budget: number): number {
    const sources = this.#sources;
    let left = Math.max(1, budget);
    let done = 0;
    while (left > 0 && this.#next < sources.length) {
      const source = sources[this.#next] as Uint8Array;
      const from = this.#partial;
      const length = Math.min(source.length - from, left);
      const target = this.#targets[this.#next] as Uint8Array;
      const at = (this.#offsets[this.#next] as number) + from;
      if (from === 0 && length === source.length) target.set(source, at);
      else target.set(source.subarray(from, from + length), at);
      done += length;
      left -= length;
      if (from + length === source.length) {
        this.#next++;
        this.#partial = 0;
      } else {
        this.#partial = from + length;
      }
    }
    this.#copied += done;
    return done;
  }

  /** Runs every copy left. */
  runAll(): void {
    this.step(Infinity);
  }
}
