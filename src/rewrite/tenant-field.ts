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
import { readInt32LE, writeInt32LE } from '../wire/header.js';
import { bodyWithFrameRoom, framedBody, hasFrameRoom } from '../wire/op-msg.js';
import {
  BsonType,
  checkDocumentEnd,
  documentEnd,
  elementEnd,
  elements,
  findElement,
  findElements,
  isValidUtf8,
  type BsonElement,
} from '../wire/bson-scan.js';
import { retainShape } from '../wire/retained-shapes.js';
import type { TenantDocuments } from '../policy/types.js';

/**
 * The reply without the tenant field in `documents`, or undefined when there was none to remove
 * (or the reply is not well-formed BSON: it then goes out as the upstream sent it, and the
 * client's driver reports it; the field is the caller's own tenant, never another's).
 */
export function hideTenantField(body: Uint8Array, field: string, documents: TenantDocuments): Uint8Array | undefined {
  if (documents.joined === undefined || documents.joined.length === 0) {
    const needle = needleOf(field);
    if (needle !== undefined) {
      try {
        return new TopLevelCuts(body, needle).hide(documents.in);
      } catch (error) {
        if (error instanceof BsonValidationError) return undefined;
        throw error;
      }
    }
  }
  return hideTenantFieldGeneral(body, field, documents);
}

/** The general walk (joined paths too); hideTenantField's answer for every input. Exported as the tests' oracle. */
export function hideTenantFieldGeneral(
  body: Uint8Array,
  field: string,
  documents: TenantDocuments,
): Uint8Array | undefined {
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

// ---------------------------------------------------------------------------------------------
// The common case, no joined paths (find, getMore, findAndModify): the same walk as Cuts, in
// document order, allocating nothing per document. Walking in order, every byte removed before
// a document or array is known when its walk starts, so its new length and its offset in the
// output are known when its walk ends: no sort, no search. Accepts and refuses (BsonValidationError)
// exactly the bodies Cuts does, with the same result (test/unit/rewrite/tenant-field-fast.test.ts).

const fieldNeedles = new Map<string, Uint8Array | undefined>();

/** The field's UTF-8 bytes; undefined (the general walk) for a name the byte comparison cannot take. */
function needleOf(field: string): Uint8Array | undefined {
  let needle = fieldNeedles.get(field);
  if (needle === undefined && !fieldNeedles.has(field)) {
    const bytes = new TextEncoder().encode(field);
    needle = bytes.length === 0 || bytes.includes(0) ? undefined : bytes;
    if (fieldNeedles.size >= 64) fieldNeedles.clear();
    fieldNeedles.set(field, needle);
  }
  return needle;
}

class TopLevelCuts {
  /** Removed element ranges, flat: start, end, start, end… in ascending order. */
  private readonly removals: number[] = [];
  /** Lengths to lower, flat: offset of the int32, bytes removed before it, bytes removed inside. */
  private readonly lengths: number[] = [];
  /** Bytes removed so far (all before the walk's position). */
  private removed = 0;

  constructor(
    private readonly buf: Uint8Array,
    private readonly needle: Uint8Array,
  ) {}

  hide(where: TenantDocuments['in']): Uint8Array | undefined {
    const buf = this.buf;
    if (where === 'cursor') {
      const cursor = findElement(buf, 'cursor');
      if (cursor !== null && cursor.type === BsonType.document) {
        // Cuts looks up every firstBatch, then every nextBatch: both walk the whole cursor document.
        const start = this.removed;
        const end = documentEnd(buf, cursor.offset);
        let pos = cursor.offset + 4;
        while (pos < end) {
          const next = elementEnd(buf, pos, end);
          const name = batchNameLength(buf, pos + 1);
          if (name > 0) this.documents(buf[pos]!, pos + 1 + name);
          pos = next;
        }
        checkDocumentEnd(buf, pos, end);
        this.inside(cursor.offset, start);
      }
    } else {
      const value = findElement(buf, 'value');
      if (value !== null) this.documents(value.type, value.offset);
    }
    if (this.removed === 0) return undefined;
    this.inside(0, 0);
    return this.apply();
  }

  /** The length at `at` is lowered by what was removed since `before` (the count when its walk began). */
  private inside(at: number, before: number): void {
    const removed = this.removed - before;
    if (removed > 0) this.lengths.push(at, before, removed);
  }

  /** A checked value of `type` at `offset` holding tenant documents: one document, or an array of them. */
  private documents(type: number, offset: number): void {
    const buf = this.buf;
    if (type === BsonType.document) {
      this.document(offset);
      return;
    }
    if (type !== BsonType.array) return;
    const before = this.removed;
    const end = documentEnd(buf, offset);
    let pos = offset + 4;
    while (pos < end) {
      const itemEnd = elementEnd(buf, pos, end);
      // Cuts decodes the item names (strictly): an index name that is not UTF-8 is refused there too.
      let nul = pos + 1;
      let ascii = true;
      for (; buf[nul] !== 0; nul++) if (buf[nul]! >= 0x80) ascii = false;
      if (!ascii && !isValidUtf8(buf, pos + 1, nul)) throw new BsonValidationError('invalid UTF-8', pos + 1);
      if (buf[pos] === BsonType.document) this.document(nul + 1);
      pos = itemEnd;
    }
    checkDocumentEnd(buf, pos, end);
    this.inside(offset, before);
  }

  /** Every top-level element named exactly the field out of the document at `at`. */
  private document(at: number): void {
    const buf = this.buf;
    const needle = this.needle;
    const length = needle.length;
    const before = this.removed;
    const end = documentEnd(buf, at);
    let pos = at + 4;
    while (pos < end) {
      const next = elementEnd(buf, pos, end);
      let same = buf[pos + 1 + length] === 0;
      for (let i = 0; same && i < length; i++) same = buf[pos + 1 + i] === needle[i];
      if (same) {
        this.removals.push(pos, next);
        this.removed += next - pos;
      }
      pos = next;
    }
    checkDocumentEnd(buf, pos, end);
    this.inside(at, before);
  }

  private apply(): Uint8Array {
    const { buf, removals, lengths } = this;
    // A body its holder owns (a reply just read) is compacted where it is; any other is copied
    // once. Then each kept range moves down in place (no view per range).
    let out: Uint8Array;
    if (hasFrameRoom(buf)) out = buf;
    else {
      out = bodyWithFrameRoom(buf.length);
      out.set(buf);
    }
    // The new lengths, read before any byte moves.
    const values: number[] = [];
    for (let i = 0; i < lengths.length; i += 3) values.push(readInt32LE(buf, lengths[i]!) - lengths[i + 2]!);
    let written = removals[0]!;
    for (let i = 1; i < removals.length; i += 2) {
      const from = removals[i]!;
      const to = i + 1 < removals.length ? removals[i + 1]! : buf.length;
      out.copyWithin(written, from, to);
      written += to - from;
    }
    for (let i = 0; i < lengths.length; i += 3) writeInt32LE(out, lengths[i]! - lengths[i + 1]!, values[i / 3]!);
    return framedBody(out, written);
  }
}

// One held so that its class's maps outlive collections that find no reply being cut
// (retained-shapes.ts).
retainShape(new TopLevelCuts(new Uint8Array([5, 0, 0, 0, 0]), new Uint8Array([0x74])));

const FIRST_BATCH = new TextEncoder().encode('firstBatch\0');
const NEXT_BATCH = new TextEncoder().encode('nextBatch\0');

/** The name's length with its NUL when the name at `at` (of a checked element) is firstBatch or nextBatch, else 0. */
function batchNameLength(buf: Uint8Array, at: number): number {
  if (startsWith(buf, at, FIRST_BATCH)) return FIRST_BATCH.length;
  return startsWith(buf, at, NEXT_BATCH) ? NEXT_BATCH.length : 0;
}

function startsWith(buf: Uint8Array, at: number, bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (buf[at + i] !== bytes[i]) return false;
  return true;
}
