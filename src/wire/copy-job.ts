/**
 * Byte copies put off until later (issue 15, "~48 MB inserts"): the writes of a rewritten request
 * that are proportional to its size (stamped documents spliced together, the array and the frame
 * they go into) are recorded here while the rewrite runs, and carried out afterwards, all at once
 * or in slices between which other work runs (server/validation-scheduler.ts). Only the copies
 * are put off: every check and every decision was made by the time they are recorded, and the
 * small writes (lengths, keys, headers) are done at once.
 *
 * The copies run strictly in the order they were added, so a copy may read bytes that an earlier
 * one writes. The buffers written to must not be read by anyone else before the job is finished;
 * the sources must not change meanwhile (they are the request's own bytes, held until it is
 * answered).
 *
 * A region can also be `define`d as the concatenation of pieces without being written: a copy
 * of exactly that region added later copies the pieces instead. So a stamped document put into
 * an array put into a frame is copied once, from the client's bytes straight into the frame, not
 * once per step. A defined region that no copy took is written when the job finishes; one that
 * was taken stays unwritten (its bytes exist only where it was copied to): with a job, the
 * rewritten body and sequences are only read through the frame built from them.
 */

/** A region of a buffer defined as pieces (`define`). */
interface Region {
  readonly view: Uint8Array;
  readonly pieces: readonly Uint8Array[];
  /** A copy took it (its pieces were copied elsewhere), or it was filled. */
  used: boolean;
}

export class CopyJob {
  /** Defined regions by buffer and byte offset. */
  readonly #defined = new Map<ArrayBufferLike, Map<number, Region>>();
  readonly #regions: Region[] = [];
  /** Defined regions not yet taken by a copy nor written. */
  #unused = 0;
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

  /** Whether every copy recorded has run (and every defined region no copy took is written). */
  get finished(): boolean {
    return this.#next === this.#sources.length && this.#unused === 0;
  }

  /**
   * Defines `view` as the concatenation of `pieces` (final bytes, or regions defined here in
   * turn), to be written only where it is copied to (see the file comment).
   */
  define(view: Uint8Array, pieces: readonly Uint8Array[]): void {
    let length = 0;
    for (const piece of pieces) length += piece.length;
    if (length !== view.length) throw new RangeError('a region defined by pieces of another length');
    let regions = this.#defined.get(view.buffer);
    if (regions === undefined) this.#defined.set(view.buffer, (regions = new Map()));
    if (regions.has(view.byteOffset)) throw new RangeError('a region defined twice');
    const region: Region = { view, pieces, used: false };
    regions.set(view.byteOffset, region);
    this.#regions.push(region);
    this.#unused++;
  }

  /** Records a copy of `source` to `target` at `offset` (checked now: it must fit). */
  add(source: Uint8Array, target: Uint8Array, offset: number): void {
    if (offset < 0 || offset + source.length > target.length) throw new RangeError('copy out of the target buffer');
    if (source.length === 0) return;
    const region = this.#defined.get(source.buffer)?.get(source.byteOffset);
    if (region !== undefined && region.view.length === source.length && !region.used) {
      // Its pieces, straight to where it goes.
      region.used = true;
      this.#unused--;
      let at = offset;
      for (const piece of region.pieces) {
        this.add(piece, target, at);
        at += piece.length;
      }
      return;
    }
    if (region !== undefined && region.view.length === source.length)
      throw new RangeError('a defined region copied twice');
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
    if (this.#next === sources.length) this.#fillUnused();
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
        if (this.#next === sources.length) this.#fillUnused();
      } else {
        this.#partial = from + length;
      }
    }
    this.#copied += done;
    return done;
  }

  /** The defined regions no copy took are written in place, last (so the job ends with them whole). */
  #fillUnused(): void {
    for (const region of this.#regions) {
      if (region.used) continue;
      region.used = true;
      this.#unused--;
      let at = 0;
      for (const piece of region.pieces) {
        this.add(piece, region.view, at);
        at += piece.length;
      }
    }
    this.#regions.length = 0;
  }

  /** Runs every copy left. */
  runAll(): void {
    this.step(Infinity);
  }
}
