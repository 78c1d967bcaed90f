/**
 * A lossless, shallow view of BSON documents for the rewriter: a document is its list of
 * elements, each keeping its raw value bytes. Nothing is decoded unless asked, so rewriting a
 * command never changes a client value (int64 stays int64, key order and numeric-looking keys
 * stay as sent, doubles keep their bits). Documents must already have passed validateDocument.
 *
 * Build new documents by listing elements; new scalar values come from `valueOf` (encoded once
 * by the bson serializer) and existing ones are reused as they were.
 */
import { ErrorCodes, ProxyError } from '../errors.js';
import { serialize } from './bson.js';
import type { CopyJob } from './copy-job.js';
import { BsonType, elementValues, elements as scanElements, readString, type BsonElement } from './bson-scan.js';

/** One element: its name, BSON type and the exact bytes of its value. */
export interface RawElement {
  readonly name: string;
  readonly type: number;
  readonly value: Uint8Array;
  /** A spliced value's pieces (see RawValue). */
  readonly pieces?: readonly Uint8Array[] | undefined;
}

/**
 * A BSON value without a name: what `valueOf` makes and `RawElement` carries.
 *
 * A spliced value (`pieces` set) is the concatenation of its pieces, written only where it finally
 * goes (a frame): wrapping a client's 10 MB filter in the tenant predicate must not copy it into
 * an array, then a document, then the frame (issue 15: those copies were live memory outside the
 * byte budget). Reading `value` joins the pieces once, so every reader sees the exact bytes.
 */
export interface RawValue {
  readonly type: number;
  readonly value: Uint8Array;
  readonly pieces?: readonly Uint8Array[] | undefined;
}

export class RawDocument {
  readonly elements: readonly RawElement[];

  constructor(elements: readonly RawElement[]) {
    this.elements = elements;
  }

  /** Splits a (validated) BSON document into its top-level elements; values are views. */
  static parse(bytes: Uint8Array): RawDocument {
    const found: BsonElement[] = scanElements(bytes);
    return new RawDocument(
      found.map((element) => ({
        name: element.name,
        type: element.type,
        value: bytes.subarray(element.offset, element.offset + element.length),
      })),
    );
  }

  get(name: string): RawElement | undefined {
    return this.elements.find((element) => element.name === name);
  }

  has(name: string): boolean {
    return this.elements.some((element) => element.name === name);
  }

  get names(): string[] {
    return this.elements.map((element) => element.name);
  }

  /** The first element (a command's name). */
  get first(): RawElement | undefined {
    return this.elements[0];
  }

  /** A copy with `name` set to `value`, replacing it in place or appending it at the end. */
  with(name: string, value: RawValue): RawDocument {
    const element = elementOf(name, value);
    const index = this.elements.findIndex((existing) => existing.name === name);
    if (index < 0) return new RawDocument([...this.elements, element]);
    const next = [...this.elements];
    next[index] = element;
    return new RawDocument(next);
  }

  /** A copy with `name` first (replacing any existing element of that name). */
  withFirst(name: string, value: RawValue): RawDocument {
    return new RawDocument([elementOf(name, value), ...this.elements.filter((e) => e.name !== name)]);
  }

  /** A copy without the named elements. */
  without(...names: string[]): RawDocument {
    return new RawDocument(this.elements.filter((element) => !names.includes(element.name)));
  }

  /**
   * The document's BSON bytes (in memory from `allocate` when given). With `copies`, the values
   * are copied in by that job (copy-job.ts): the bytes are not complete until it has run.
   */
  toBytes(allocate?: Allocate, copies?: CopyJob): Uint8Array {
    return encodeElements(this.elements, allocate, copies);
  }

  /** This document as a value (type 0x03) for another document or array (spliced when an element is). */
  toValue(): RawValue {
    if (this.elements.some(isSpliced)) return splicedDocument(this.elements);
    return { type: BsonType.document, value: this.toBytes() };
  }
}

/** Where an encoding's bytes go: a Buffer of exactly `length` bytes. */
export type Allocate = (length: number) => Buffer;

/**
 * BSON bytes of a document made of these elements (one allocation, from `allocate` when given);
 * with `copies`, the values are copied in by that job, later.
 */
export function encodeElements(
  elements: readonly RawElement[],
  allocate: Allocate = Buffer.allocUnsafe,
  copies?: CopyJob,
): Uint8Array {
  // Names are nearly always short ASCII: written char by char, no Buffer per name (issue 16). Any
  // other name is encoded as UTF-8 first; both give the bytes Buffer.from(name, 'utf8') gives.
  const names: Array<Buffer | undefined> = elements.map((element) =>
    isAscii(element.name) ? undefined : Buffer.from(element.name, 'utf8'),
  );
  let length = 5;
  elements.forEach((element, index) => {
    length += 1 + (names[index]?.length ?? element.name.length) + 1 + lengthOf(element);
  });
  const out = allocate(length);
  out.writeInt32LE(length, 0);
  let at = 4;
  elements.forEach((element, index) => {
    out[at++] = element.type;
    const encoded = names[index];
    if (encoded !== undefined) at += encoded.copy(out, at);
    else {
      const { name } = element;
      for (let i = 0; i < name.length; i++) out[at++] = name.charCodeAt(i);
    }
    out[at++] = 0;
    const { pieces } = element;
    if (pieces === undefined) {
      if (copies === undefined) out.set(element.value, at);
      else copies.add(element.value, out, at);
      at += element.value.length;
      return;
    }
    for (const piece of pieces) {
      if (copies === undefined) out.set(piece, at);
      else copies.add(piece, out, at);
      at += piece.length;
    }
  });
  out[at] = 0;
  return out;
}

/** Whether every UTF-16 unit of `text` is ASCII (its UTF-8 bytes are its char codes). */
function isAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) >= 0x80) return false;
  return true;
}

/** A document value from named values, in order. */
export function documentOf(entries: ReadonlyArray<readonly [string, RawValue]>): RawValue {
  const elements = entries.map(([name, v]) => elementOf(name, v));
  if (elements.some(isSpliced)) return splicedDocument(elements);
  return { type: BsonType.document, value: encodeElements(elements) };
}

/**
 * Values shorter than this are copied rather than spliced: for a few KiB a copy costs less than
 * the pieces (a findOne's rewrite took 31 µs spliced instead of 18 µs copied, bench/request-path.mjs).
 */
export const BY_REFERENCE_MIN_BYTES = 16 * 1024;

/**
 * `value` to be written by reference wherever it goes (a document or array made of it is spliced,
 * see RawValue): a client's big value kept as it is until the frame is written. Shorter than
 * `minBytes`, the value itself (copied as any other).
 */
export function byReference(value: RawValue, minBytes = BY_REFERENCE_MIN_BYTES): RawValue {
  if (value.pieces !== undefined || value.value.length < minBytes) return value;
  return { type: value.type, value: value.value, pieces: [value.value] };
}

/** The byte length of a value or element, spliced or not (without joining its pieces). */
export function lengthOf(value: RawValue): number {
  const { pieces } = value;
  if (pieces === undefined) return value.value.length;
  let length = 0;
  for (const piece of pieces) length += piece.length;
  return length;
}

function isSpliced(value: RawValue): boolean {
  return value.pieces !== undefined;
}

/** An element named `name` holding `value` (a spliced value stays spliced). */
export function elementOf(name: string, value: RawValue): RawElement {
  if (value.pieces === undefined) return { name, type: value.type, value: value.value };
  return {
    name,
    type: value.type,
    pieces: value.pieces,
    get value() {
      return value.value;
    },
  };
}

/** A spliced value of `type` made of `pieces`; reading `value` joins them once. */
function splicedValue(type: number, pieces: readonly Uint8Array[]): RawValue {
  let joined: Uint8Array | undefined;
  return {
    type,
    pieces,
    get value() {
      if (joined === undefined) joined = Buffer.concat(pieces);
      return joined;
    },
  };
}

/** Values this short are copied into the glue: fewer pieces for a few bytes copied. */
const INLINE_MAX_BYTES = 64;

/**
 * A document or array of these values, spliced: its own bytes (length, types, names, the short
 * values, the terminator) are written into one small buffer, the long and spliced values are
 * pieces between them, flattened. `names` undefined: an array (names "0", "1", …).
 */
function splice(type: number, names: readonly Uint8Array[] | undefined, values: readonly RawValue[]): RawValue {
  let length = 5;
  let glueLength = 5;
  for (let index = 0; index < values.length; index++) {
    const value = values[index] as RawValue;
    const name = 2 + (names === undefined ? digitCount(index) : (names[index] as Uint8Array).length);
    const bytes = lengthOf(value);
    length += name + bytes;
    glueLength += name + (bytes <= INLINE_MAX_BYTES ? bytes : 0);
  }
  const glue = Buffer.allocUnsafe(glueLength);
  glue.writeInt32LE(length, 0);
  const pieces: Uint8Array[] = [];
  let at = 4;
  let from = 0;
  for (let index = 0; index < values.length; index++) {
    const value = values[index] as RawValue;
    glue[at++] = value.type;
    if (names === undefined) {
      const digits = digitCount(index);
      for (let v = index, k = digits - 1; k >= 0; v = Math.floor(v / 10), k--) glue[at + k] = 0x30 + (v % 10);
      at += digits;
    } else {
      const name = names[index] as Uint8Array;
      glue.set(name, at);
      at += name.length;
    }
    glue[at++] = 0;
    const own = value.pieces ?? [value.value];
    if (lengthOf(value) <= INLINE_MAX_BYTES) {
      for (const piece of own) {
        glue.set(piece, at);
        at += piece.length;
      }
      continue;
    }
    pieces.push(glue.subarray(from, at), ...own);
    from = at;
  }
  glue[at++] = 0;
  pieces.push(glue.subarray(from, at));
  return splicedValue(type, pieces);
}

function splicedDocument(elements: readonly RawElement[]): RawValue {
  return splice(
    BsonType.document,
    elements.map((element) => Buffer.from(element.name, 'utf8')),
    elements,
  );
}

/** Decimal digits of a non-negative integer. */
function digitCount(n: number): number {
  let count = 1;
  for (let v = n; v >= 10; v = Math.floor(v / 10)) count++;
  return count;
}

/**
 * An array value from values, in order: written straight into one buffer, keys "0", "1", …
 * `source`, the array the values were read from, is returned itself when it already is exactly
 * those bytes (an insert whose documents all went through unchanged): no copy of the batch.
 * With `copies`, the values are copied in by that job (copy-job.ts), later.
 */
export function arrayOf(values: readonly RawValue[], source?: RawValue, copies?: CopyJob): RawValue {
  const spliced = values.some(isSpliced);
  if (source !== undefined && !spliced && holdsExactly(source, values)) return source;
  if (spliced && copies === undefined) return splice(BsonType.array, undefined, values);
  let length = 5;
  for (let index = 0; index < values.length; index++) {
    length += 2 + digitCount(index) + lengthOf(values[index] as RawValue);
  }
  const out = Buffer.allocUnsafe(length);
  out.writeInt32LE(length, 0);
  // With a copy job the array is defined as its pieces (headers written here, the values), written only where it goes.
  // (An empty array is its header alone, written here: nothing to put off.)
  const pieces: Uint8Array[] | undefined = copies === undefined || values.length === 0 ? undefined : [];
  let at = 4;
  let from = 0;
  for (let index = 0; index < values.length; index++) {
    const item = values[index] as RawValue;
    out[at++] = item.type;
    const digits = digitCount(index);
    for (let v = index, k = digits - 1; k >= 0; v = Math.floor(v / 10), k--) out[at + k] = 0x30 + (v % 10);
    at += digits;
    out[at++] = 0;
    if (pieces === undefined) out.set(item.value, at);
    else pieces.push(out.subarray(from, at), ...(item.pieces ?? [item.value]));
    at += lengthOf(item);
    from = at;
  }
  out[at] = 0;
  if (pieces !== undefined) {
    pieces.push(out.subarray(from, at + 1));
    copies!.define(out, pieces);
  }
  return { type: BsonType.array, value: out };
}

/**
 * Whether `arrayOf(values)` would write exactly `array`'s bytes: an array whose elements are, in
 * order, each value's type, the canonical key ("0", "1", …) and the value itself, a view of that
 * very place in `array`'s memory; nothing before, between or after.
 */
function holdsExactly(array: RawValue, values: readonly RawValue[]): boolean {
  const bytes = array.value;
  if (array.type !== BsonType.array || bytes.length < 5) return false;
  let at = 4;
  for (let index = 0; index < values.length; index++) {
    const item = values[index] as RawValue;
    if (at >= bytes.length || bytes[at] !== item.type) return false;
    at++;
    const digits = digitCount(index);
    for (let v = index, k = digits - 1; k >= 0; v = Math.floor(v / 10), k--) {
      if (bytes[at + k] !== 0x30 + (v % 10)) return false;
    }
    at += digits;
    if (bytes[at] !== 0) return false;
    at++;
    const value = item.value;
    if (value.buffer !== bytes.buffer || value.byteOffset !== bytes.byteOffset + at) return false;
    at += value.length;
  }
  return (
    at + 1 === bytes.length &&
    bytes[at] === 0 &&
    (bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24)) === bytes.length
  );
}

/** Encodes one JavaScript / BSON-class value (use bson's Long, ObjectId, UUID… for exact types). */
export function valueOf(value: unknown): RawValue {
  // An int32-range integer (a maxTimeMS cap, a limit) is what the serializer makes an int32: the
  // four bytes directly, without a serializer call per command. -0 goes to the serializer.
  if (typeof value === 'number' && Number.isInteger(value) && value >= -0x80000000 && value <= 0x7fffffff) {
    if (!Object.is(value, -0)) {
      const bytes = new Uint8Array(4);
      new DataView(bytes.buffer).setInt32(0, value, true);
      return { type: BsonType.int32, value: bytes };
    }
  }
  const bytes = serialize({ v: value });
  // Layout: int32 size, type byte, "v\0", value…, 0x00.
  const type = bytes[4]!;
  return { type, value: bytes.subarray(7, bytes.length - 1) };
}

/** The array or document value as its own RawDocument (arrays: names "0", "1", …). */
export function childDocument(value: RawValue): RawDocument {
  if (value.type !== BsonType.document && value.type !== BsonType.array) {
    throw new ProxyError(ErrorCodes.TypeMismatch, 'expected a document or an array');
  }
  return RawDocument.parse(value.value);
}

/** Array items in order (the element names of a valid array are "0", "1", … and are not kept). */
export function arrayItems(value: RawValue): RawValue[] {
  if (value.type !== BsonType.array) throw new ProxyError(ErrorCodes.TypeMismatch, 'expected an array');
  return elementValues(value.value);
}

export function isDocument(value: RawValue | undefined): value is RawValue {
  return value?.type === BsonType.document;
}

export function isArray(value: RawValue | undefined): value is RawValue {
  return value?.type === BsonType.array;
}

/**
 * The element as bson-scan's typed readers take it, relative to its own value bytes: read it with
 * `readString(element.value, bsonElementOf(element))` and the like (errors name the field).
 */
export function bsonElementOf(element: RawElement): BsonElement {
  return { type: element.type, name: element.name, start: 0, offset: 0, length: lengthOf(element) };
}

/** A string value's text (NUL inside is refused by the reader, catalogue item 52). */
export function stringOf(value: RawValue): string {
  if (value.type !== BsonType.string) throw new ProxyError(ErrorCodes.TypeMismatch, 'expected a string');
  // A well-framed value (its int32 length matches its bytes) is read in place: same NUL and
  // UTF-8 checks. Anything else goes through the wrapper, whose scan reports it as before.
  const bytes = value.value;
  if (bytes.length >= 5) {
    const length = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getInt32(0, true);
    if (length >= 1 && length === bytes.length - 4) {
      return readString(bytes, { type: BsonType.string, name: 's', start: 0, offset: 0, length: bytes.length });
    }
  }
  const wrapper = encodeElements([{ name: 's', type: value.type, value: value.value }]);
  const element = scanElements(wrapper)[0]!;
  return readString(wrapper, element);
}

/** A numeric value (int32, int64 when safe, double) as a JS number; undefined for other types. */
export function numberOf(value: RawValue): number | undefined {
  const bytes = new DataView(value.value.buffer, value.value.byteOffset, value.value.byteLength);
  switch (value.type) {
    case BsonType.int32:
      return bytes.getInt32(0, true);
    case BsonType.double:
      return bytes.getFloat64(0, true);
    case BsonType.int64: {
      const big = bytes.getBigInt64(0, true);
      return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : undefined;
    }
    default:
      return undefined;
  }
}

/** A boolean-ish value as drivers send flags: bool, or a number (non-zero is true). */
export function truthy(value: RawValue | undefined): boolean {
  if (value === undefined) return false;
  if (value.type === BsonType.boolean) return value.value[0] === 1;
  const n = numberOf(value);
  return n !== undefined && n !== 0;
}

/** Byte-exact equality of two values (type and bytes). */
export function sameValue(a: RawValue, b: RawValue): boolean {
  return a.type === b.type && Buffer.compare(Buffer.from(a.value), Buffer.from(b.value)) === 0;
}
