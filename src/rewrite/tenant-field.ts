/**
 * `isolation.tenantFieldInReplies: hide`: the tenant field taken out of the documents a tenant
 * reads, so applications see exactly what they wrote (issue 14).
 *
 * Works on the reply's raw bytes in one walk: the elements named exactly the tenant field at the
 * top level of each returned document (and of each joined document at the plan's `joined`
 * paths) are cut out, and the length of every enclosing document and array is lowered by what
 * was cut inside it. Nothing is decoded or re-encoded: every other byte of the reply is kept.
 * Fields named like the tenant field deeper inside a document are the application's own and stay.
 */
import { BsonValidationError } from '../errors.js';
import { BsonType, elements, findElement, findElements, type BsonElement } from '../wire/bson-scan.js';
import type { TenantDocuments } from '../policy/types.js';

/**
 * The reply without the tenant field in `documents`, or undefined when there was none to remove
 * (or the reply is not well-formed BSON: it then goes out as the upstream sent it, and the
 * client's driver reports it; the field is the caller's own tenant, never another's).
 */
export function hideTenantField(body: Uint8Array, field: string, documents: TenantDocuments): Uint8Array | undefined {
  const cut = new Cuts(body, field);
  const joined = [...new Set(documents.joined ?? [])].map((path) => path.split('.'));
  try {
    let removed = 0;
    if (documents.in === 'cursor') {
      const cursor = findElement(body, 'cursor');
      if (cursor !== null && cursor.type === BsonType.document) {
        let inCursor = 0;
        for (const name of ['firstBatch', 'nextBatch']) {
          for (const batch of findElements(body, name, cursor.offset)) inCursor += cut.documents(batch, joined);
        }
        removed += cut.inside(cursor.offset, inCursor);
      }
    } else {
      const value = findElement(body, 'value');
      if (value !== null) removed += cut.documents(value, joined);
    }
    if (removed === 0) return undefined;
    cut.inside(0, removed);
    return cut.apply();
  } catch (error) {
    if (error instanceof BsonValidationError) return undefined;
    throw error;
  }
}

class Cuts {
  /** Element byte ranges [start, end) to remove. */
  private readonly removals: Array<[number, number]> = [];
  /** Lengths to lower: [offset of the int32 length, bytes removed inside]; several per offset add up. */
  private readonly lengths: Array<[number, number]> = [];

  constructor(
    private readonly buf: Uint8Array,
    private readonly field: string,
  ) {}

  /** Records `removed` bytes cut inside the document or array whose length is at `at`; returns `removed`. */
  inside(at: number, removed: number): number {
    if (removed > 0) this.lengths.push([at, removed]);
    return removed;
  }

  /** A value holding tenant documents: one document, or an array of them (other items are left). */
  documents(value: BsonElement, joined: readonly string[][]): number {
    if (value.type === BsonType.document) return this.inside(value.offset, this.document(value.offset, joined));
    if (value.type !== BsonType.array) return 0;
    let removed = 0;
    for (const item of elements(this.buf, value.offset)) {
      if (item.type === BsonType.document) removed += this.inside(item.offset, this.document(item.offset, joined));
    }
    return this.inside(value.offset, removed);
  }

  /** The tenant field out of the top level of the document at `at`, then its joined paths (lengths: the caller's). */
  private document(at: number, joined: readonly string[][]): number {
    let removed = 0;
    for (const element of findElements(this.buf, this.field, at)) {
      const end = element.offset + element.length;
      this.removals.push([element.start, end]);
      removed += end - element.start;
    }
    for (const path of joined) removed += this.follow(at, path);
    return removed;
  }

  /** Follows `path` from the document at `at` (through arrays of documents too) to joined documents. */
  private follow(at: number, path: readonly string[]): number {
    const [head, ...rest] = path;
    if (head === undefined || head === this.field) return 0;
    const element = findElement(this.buf, head, at);
    if (element === null) return 0;
    if (rest.length === 0) return this.documents(element, []);
    if (element.type === BsonType.document) return this.inside(element.offset, this.follow(element.offset, rest));
    if (element.type !== BsonType.array) return 0;
    let removed = 0;
    for (const item of elements(this.buf, element.offset)) {
      if (item.type === BsonType.document) removed += this.inside(item.offset, this.follow(item.offset, rest));
    }
    return this.inside(element.offset, removed);
  }

  /** The new bytes: everything but the removed ranges, lengths lowered. */
  apply(): Uint8Array {
    // One document in a reply (findOne, findAndModify) is the common case: nothing to sort.
    const removals = this.removals.length > 1 ? [...this.removals].sort((a, b) => a[0] - b[0]) : this.removals;
    let total = 0;
    for (const [start, end] of removals) total += end - start;
    // Every byte is written below: no need to zero it first.
    const out: Uint8Array = Buffer.allocUnsafe(this.buf.length - total);
    const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
    const source = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    // Where each original offset lands: cumulative bytes removed before it.
    const starts = removals.map(([start]) => start);
    const before: number[] = [];
    let written = 0;
    let from = 0;
    for (const [start, end] of removals) {
      out.set(this.buf.subarray(from, start), written);
      written += start - from;
      before.push(end - start + (before.at(-1) ?? 0));
      from = end;
    }
    out.set(this.buf.subarray(from), written);
    const shift = (offset: number): number => {
      // The number of removals starting before `offset` (a length field is never inside a removal).
      let low = 0;
      let high = starts.length;
      while (low < high) {
        const mid = (low + high) >> 1;
        if (starts[mid]! < offset) low = mid + 1;
        else high = mid;
      }
      return low === 0 ? 0 : before[low - 1]!;
    };
    const lowered = new Map<number, number>();
    for (const [at, removed] of this.lengths) lowered.set(at, (lowered.get(at) ?? 0) + removed);
    for (const [at, removed] of lowered) {
      view.setInt32(at - shift(at), source.getInt32(at, true) - removed, true);
    }
    return out;
  }
}
