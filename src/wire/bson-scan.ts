/**
 * BSON validation and element lookup over raw bytes, decoding nothing it is not asked for.
 *
 * `validateDocument` is iterative (an explicit stack of open documents), so nesting depth costs
 * heap, never call stack: a client cannot crash the process with a deeply nested document.
 * Spec: https://bsonspec.org/spec.html. Depth follows the server's BSONDepth: the top-level
 * document is depth 0 and a document nested deeper than `maxDepth` fails with Overflow.
 */

import { isUtf8 } from 'node:buffer';
import { BsonValidationError, ErrorCodes } from '../errors.js';
import { readInt32LE } from './header.js';
import { retainShape } from './retained-shapes.js';

/** BSON element type bytes. */
export const BsonType = {
  double: 0x01,
  string: 0x02,
  document: 0x03,
  array: 0x04,
  binary: 0x05,
  undefined: 0x06,
  objectId: 0x07,
  boolean: 0x08,
  date: 0x09,
  null: 0x0a,
  regex: 0x0b,
  dbPointer: 0x0c,
  javascript: 0x0d,
  symbol: 0x0e,
  javascriptWithScope: 0x0f,
  int32: 0x10,
  timestamp: 0x11,
  int64: 0x12,
  decimal128: 0x13,
  minKey: 0xff,
  maxKey: 0x7f,
} as const;

export type BsonTypeValue = (typeof BsonType)[keyof typeof BsonType];

const TYPE_NAMES: ReadonlyMap<number, string> = new Map(Object.entries(BsonType).map(([name, t]) => [t, name]));

export function bsonTypeName(type: number): string {
  return TYPE_NAMES.get(type) ?? `0x${type.toString(16).padStart(2, '0')}`;
}

/** Value sizes of the fixed-width types; -1 marks variable-width ones. Index = type byte. */
const FIXED_SIZE = new Int8Array(256).fill(-2); // -2: unknown type
for (const [type, size] of [
  [BsonType.double, 8],
  [BsonType.undefined, 0],
  [BsonType.objectId, 12],
  [BsonType.boolean, 1],
  [BsonType.date, 8],
  [BsonType.null, 0],
  [BsonType.int32, 4],
  [BsonType.timestamp, 8],
  [BsonType.int64, 8],
  [BsonType.decimal128, 16],
  [BsonType.minKey, 0],
  [BsonType.maxKey, 0],
  [BsonType.string, -1],
  [BsonType.document, -1],
  [BsonType.array, -1],
  [BsonType.binary, -1],
  [BsonType.regex, -1],
  [BsonType.dbPointer, -1],
  [BsonType.javascript, -1],
  [BsonType.symbol, -1],
  [BsonType.javascriptWithScope, -1],
] as const) {
  FIXED_SIZE[type] = size;
}
/** The same table for other scanners over raw BSON (read only). */
export const FIXED_VALUE_SIZE: Readonly<Int8Array> = FIXED_SIZE;

const MIN_DOCUMENT_SIZE = 5;
const BINARY_OLD_SUBTYPE = 0x02;

export interface ValidateOptions {
  /** Deepest allowed nesting; the top-level document is depth 0 (server: BSONDepth). */
  maxDepth: number;
  /** Reject a key repeated within one document or array, at any depth. */
  rejectDuplicateKeys?: boolean;
}

const NATIVE_UTF8_THRESHOLD = 64;

function invalid(message: string, offset: number, code: number = ErrorCodes.InvalidBSON): never {
  throw new BsonValidationError(message, offset, code);
}

/**
 * True when `buf[start, end)` is well-formed UTF-8: no overlong forms, no surrogates, nothing
 * above U+10FFFF (the same rules as `TextDecoder('utf-8', { fatal: true })`, without allocating).
 */
export function isValidUtf8(buf: Uint8Array, start: number, end: number): boolean {
  // Long runs go to Node's SIMD validator; a view costs more than a JS loop over short ones.
  if (end - start >= NATIVE_UTF8_THRESHOLD) return isUtf8(buf.subarray(start, end));
  let i = start;
  while (i < end) {
    const b0 = buf[i] as number;
    if (b0 < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b0 >= 0xc2 && b0 <= 0xdf) {
      need = 1;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
      need = 2;
      if (b0 === 0xe0)
        lo = 0xa0; // overlong
      else if (b0 === 0xed) hi = 0x9f; // UTF-16 surrogates
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
      need = 3;
      if (b0 === 0xf0)
        lo = 0x90; // overlong
      else if (b0 === 0xf4) hi = 0x8f; // above U+10FFFF
    } else {
      return false;
    }
    if (i + need >= end) return false; // truncated sequence
    const b1 = buf[i + 1] as number;
    if (b1 < lo || b1 > hi) return false;
    for (let k = 2; k <= need; k++) {
      const b = buf[i + k] as number;
      if (b < 0x80 || b > 0xbf) return false;
    }
    i += need + 1;
  }
  return true;
}

/** Index of the first 0x00 in `buf[start, end)`, or -1. */
function findNul(buf: Uint8Array, start: number, end: number): number {
  // Names are short: a loop beats a native call (Buffer#indexOf) per name by far. Past a few
  // dozen bytes, the native search.
  const near = Math.min(end, start + 64);
  for (let i = start; i < near; i++) if (buf[i] === 0) return i;
  if (near === end) return -1;
  const at = buf.indexOf(0, near);
  return at === -1 || at >= end ? -1 : at;
}

const NO_NUL = -1;
const BAD_UTF8 = -2;

/**
 * Finds the NUL ending the cstring at `start` (before `limit`) and validates its UTF-8 in the
 * same pass; returns the NUL's offset, NO_NUL or BAD_UTF8. Keys are short and mostly ASCII, so
 * a JS loop beats a native call per key.
 */
function scanCString(buf: Uint8Array, start: number, limit: number): number {
  for (let i = start; i < limit; i++) {
    const b = buf[i] as number;
    if (b === 0) return i;
    if (b >= 0x80) {
      const nul = findNul(buf, i, limit);
      if (nul === -1) return NO_NUL;
      return isValidUtf8(buf, i, nul) ? nul : BAD_UTF8;
    }
  }
  return NO_NUL;
}

/** Set by scanKey: the key it just scanned has a `$` in it; a `.` in it. */
let keyHasDollar = false;
let keyHasDot = false;

/** scanCString for element names, noting in `keyHasDollar` and `keyHasDot` whether the name has a `$`, a `.`. */
function scanKey(buf: Uint8Array, start: number, limit: number): number {
  let dollar = false;
  let dot = false;
  for (let i = start; i < limit; i++) {
    const b = buf[i] as number;
    if (b === 0) {
      keyHasDollar = dollar;
      keyHasDot = dot;
      return i;
    }
    if (b === 0x24) dollar = true;
    else if (b === 0x2e) dot = true;
    else if (b >= 0x80) {
      const nul = findNul(buf, i, limit);
      if (nul === -1) return NO_NUL;
      if (!isValidUtf8(buf, i, nul)) return BAD_UTF8;
      const at = buf.indexOf(0x24, i);
      keyHasDollar = dollar || (at !== -1 && at < nul);
      const period = buf.indexOf(0x2e, i);
      keyHasDot = dot || (period !== -1 && period < nul);
      return nul;
    }
  }
  return NO_NUL;
}

/**
 * What `validateDocumentFacts` saw on its way through a document (bits), so that a caller that
 * needs to know does not walk the document again.
 */
export const DocumentFact = {
  /** A JavaScript value (code, code with scope) at some depth. */
  code: 1,
  /** An element name with a `$` in it below the top level (at depth 1 or deeper). */
  nestedDollarKey: 2,
  /** An element name with a `.` in it, at any depth. */
  dottedKey: 4,
  /** An element name with a `$` in it at the top level. */
  topDollarKey: 8,
} as const;

/** A Buffer view of the same bytes (no copy), for Node's endian-safe readers. */
function asBuffer(buf: Uint8Array): Buffer {
  return Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** True when the key at [start, end) spells `index` in decimal, as every driver writes arrays. */
function isIndexKey(buf: Uint8Array, start: number, end: number, index: number): boolean {
  if (index === 0) return end - start === 1 && buf[start] === 0x30;
  let i = end - 1;
  for (let v = index; v > 0; v = Math.floor(v / 10), i--) {
    if (i < start || buf[i] !== 0x30 + (v % 10)) return false;
  }
  return i === start - 1;
}

/** Keys compared linearly up to this many per document, then through a Set. */
const LINEAR_KEY_LIMIT = 16;

/** A document or array still open on the validation stack. */
class OpenDocument {
  /** Next expected array index (arrays only, duplicate checking only). */
  index = 0;
  /** [start, end) offsets of the keys seen so far, while few. */
  keys: number[] | null = null;
  /** The keys as byte strings once there are many (latin1 keeps one code unit per byte). */
  keySet: Set<string> | null = null;

  constructor(
    /** Offset of the document's terminating 0x00. */
    public end: number,
    public isArray: boolean,
  ) {}

  /** Made ready for another document (a validation reuses the ones it closed). */
  reset(end: number, isArray: boolean): this {
    this.end = end;
    this.isArray = isArray;
    this.index = 0;
    if (this.keys !== null) this.keys.length = 0;
    this.keySet = null;
    return this;
  }

  /** Records the key at [start, end); false when it was already there (byte comparison). */
  addKey(buf: Buffer, start: number, end: number): boolean {
    if (this.keySet !== null) {
      const key = buf.toString('latin1', start, end);
      if (this.keySet.has(key)) return false;
      this.keySet.add(key);
      return true;
    }
    const keys = (this.keys ??= []);
    const length = end - start;
    for (let k = 0; k < keys.length; k += 2) {
      const s = keys[k] as number;
      if ((keys[k + 1] as number) - s !== length) continue;
      let j = 0;
      while (j < length && buf[s + j] === buf[start + j]) j++;
      if (j === length) return false;
    }
    keys.push(start, end);
    if (keys.length > 2 * LINEAR_KEY_LIMIT) {
      this.keySet = new Set();
      for (let k = 0; k < keys.length; k += 2) this.keySet.add(buf.toString('latin1', keys[k], keys[k + 1]));
      this.keys = null;
    }
    return true;
  }
}

/**
 * Validates the document at `offset` and everything nested in it; returns its length.
 * Throws BsonValidationError (InvalidBSON, or Overflow when too deep) carrying the byte offset.
 *
 * With `rejectDuplicateKeys`, array keys must also be exactly "0", "1", ... in order: the server
 * reads arrays by position and ignores their keys, so any other key is a way for two readers to
 * see different arrays (and it makes duplicate checking of arrays free).
 */
export function validateDocument(buf: Uint8Array, offset: number, options: ValidateOptions): number {
  validateDocumentFacts(buf, offset, options);
  return readInt32LE(buf, offset);
}

/** validateDocument, returning the DocumentFact bits of what it saw instead of the length. */
export function validateDocumentFacts(buf: Uint8Array, offset: number, options: ValidateOptions): number {
  const validation = new DocumentValidation(buf, offset, options);
  validation.step(Infinity);
  return validation.facts;
}

/**
 * validateDocumentFacts in steps: the same walk, stopped at an element boundary once `step` has
 * gone `bytes` past where it started, and resumed by the next `step` (for a large message checked
 * in slices between which other work runs; the buffer must not change meanwhile). The checks and
 * their order are the same as in one pass, so a validation done in steps throws the error the
 * whole check throws (same message and offset) or ends with the same facts.
 */
export class DocumentValidation {
  readonly #bytes: Buffer;
  readonly #maxDepth: number;
  readonly #dupes: boolean;
  readonly #stack: OpenDocument[];
  /** Closed documents, reused for the next ones opened (a batch of a thousand allocates a few). */
  readonly #closed: OpenDocument[] = [];
  #pos: number;
  #facts = 0;
  /** Offset just past the document. */
  readonly end: number;

  /** Throws BsonValidationError at once when the document's length does not fit in `buf`. */
  constructor(buf: Uint8Array, offset: number, options: ValidateOptions) {
    this.#maxDepth = options.maxDepth;
    this.#dupes = options.rejectDuplicateKeys === true;
    const bytes = (this.#bytes = asBuffer(buf));
    if (!Number.isInteger(offset) || offset < 0 || offset > bytes.length)
      invalid('document offset out of range', offset);
    const length = documentLength(bytes, offset, bytes.length, BsonType.document);
    this.#stack = [new OpenDocument(offset + length - 1, false)];
    this.#pos = offset + 4;
    this.end = offset + length;
  }

  /** Whether the whole document has been validated. */
  get done(): boolean {
    return this.#stack.length === 0;
  }

  /** Where the next step starts (an offset in the buffer). */
  get position(): number {
    return this.#pos;
  }

  /** The DocumentFact bits seen so far (all of them once done). */
  get facts(): number {
    return this.#facts;
  }

  /**
   * Validates on from where the last step stopped, for about `budget` bytes (whole elements; a
   * nested document's header counts as its element); returns whether the document is done.
   * Throws BsonValidationError as validateDocumentFacts would.
   */
  step(budget: number): boolean {
    const maxDepth = this.#maxDepth;
    const dupes = this.#dupes;
    const stack = this.#stack;
    const closed = this.#closed;
    const bytes = this.#bytes;
    let pos = this.#pos;
    let facts = this.#facts;
    const stop = pos + budget;
    while (stack.length > 0 && pos < stop) {
      const top = stack[stack.length - 1] as OpenDocument;
      const limit = top.end; // every element must end before the terminator of its document
      if (pos === limit) {
        closed.push(stack.pop() as OpenDocument);
        pos++;
        continue;
      }
      const type = bytes[pos] as number;
      if (type === 0) invalid('unexpected 0x00 before the end of the document (length too long)', pos);
      const fixed = FIXED_SIZE[type] as number;
      if (fixed === -2) invalid(`unknown BSON type ${bsonTypeName(type)}`, pos);

      const keyStart = pos + 1;
      const keyEnd = scanKey(bytes, keyStart, limit);
      if (keyEnd === NO_NUL) invalid('element name runs past the end of its document', keyStart);
      if (keyEnd === BAD_UTF8) invalid('element name is not valid UTF-8', keyStart);
      if (keyHasDollar) facts |= stack.length > 1 ? DocumentFact.nestedDollarKey : DocumentFact.topDollarKey;
      if (keyHasDot) facts |= DocumentFact.dottedKey;
      if (dupes) {
        if (top.isArray) {
          if (!isIndexKey(bytes, keyStart, keyEnd, top.index)) {
            invalid(`array key "${bytes.toString('utf8', keyStart, keyEnd)}" is not the index ${top.index}`, pos);
          }
          top.index++;
        } else if (!top.addKey(bytes, keyStart, keyEnd)) {
          invalid(`duplicate key "${bytes.toString('utf8', keyStart, keyEnd)}"`, pos);
        }
      }
      pos = keyEnd + 1;

      if (fixed >= 0) {
        if (pos + fixed > limit) invalid(`${bsonTypeName(type)} value runs past the end of its document`, pos);
        if (type === BsonType.boolean && (bytes[pos] as number) > 1) invalid('boolean value is not 0 or 1', pos);
        pos += fixed;
        continue;
      }

      switch (type) {
        case BsonType.document:
        case BsonType.array: {
          const size = documentLength(bytes, pos, limit, type);
          if (stack.length > maxDepth) {
            invalid(`document nesting deeper than the allowed ${maxDepth} levels`, pos, ErrorCodes.Overflow);
          }
          const end = pos + size - 1;
          const isArray = type === BsonType.array;
          stack.push(closed.pop()?.reset(end, isArray) ?? new OpenDocument(end, isArray));
          pos += 4;
          break;
        }
        case BsonType.javascript:
          facts |= DocumentFact.code;
          pos = stringEnd(bytes, pos, limit, type);
          break;
        case BsonType.string:
        case BsonType.symbol:
          pos = stringEnd(bytes, pos, limit, type);
          break;
        case BsonType.binary: {
          if (pos + 5 > limit) invalid('binary header runs past the end of its document', pos);
          const size = readInt32LE(bytes, pos);
          if (size < 0 || pos + 5 + size > limit) invalid(`invalid binary length ${size}`, pos);
          if (bytes[pos + 4] === BINARY_OLD_SUBTYPE) {
            // Subtype 2 repeats the length inside the payload; a mismatch means two readers disagree.
            if (size < 4 || readInt32LE(bytes, pos + 5) !== size - 4)
              invalid('invalid binary subtype 2 length', pos + 5);
          }
          pos += 5 + size;
          break;
        }
        case BsonType.regex:
          pos = cstringEnd(bytes, pos, limit, 'regex pattern');
          pos = cstringEnd(bytes, pos, limit, 'regex options');
          break;
        case BsonType.dbPointer:
          pos = stringEnd(bytes, pos, limit, type);
          if (pos + 12 > limit) invalid('dbPointer id runs past the end of its document', pos);
          pos += 12;
          break;
        case BsonType.javascriptWithScope: {
          facts |= DocumentFact.code;
          // int32 total, string code, document scope; the total must match its parts exactly.
          if (pos + 4 > limit) invalid('javascriptWithScope length runs past the end of its document', pos);
          const total = readInt32LE(bytes, pos);
          if (total < 4 + 5 + MIN_DOCUMENT_SIZE || pos + total > limit) {
            invalid(`invalid javascriptWithScope length ${total}`, pos);
          }
          const scopeStart = stringEnd(bytes, pos + 4, pos + total, type);
          const size = documentLength(bytes, scopeStart, pos + total, type);
          if (scopeStart + size !== pos + total) invalid('javascriptWithScope length does not match its parts', pos);
          if (stack.length > maxDepth) {
            invalid(`document nesting deeper than the allowed ${maxDepth} levels`, scopeStart, ErrorCodes.Overflow);
          }
          stack.push(
            closed.pop()?.reset(scopeStart + size - 1, false) ?? new OpenDocument(scopeStart + size - 1, false),
          );
          pos = scopeStart + 4;
          break;
        }
      }
    }
    // Not reached after a throw: a validation that threw is not stepped again.
    this.#pos = pos;
    this.#facts = facts;
    return stack.length === 0;
  }
}

// A finished validation of {a: {b: 1}} (two OpenDocuments with keys, closed), held so that the
// maps of both classes outlive collections that find no validation running (retained-shapes.ts).
retainShape(
  new DocumentValidation(
    Buffer.from([20, 0, 0, 0, BsonType.document, 0x61, 0, 12, 0, 0, 0, BsonType.int32, 0x62, 0, 1, 0, 0, 0, 0, 0]),
    0,
    { maxDepth: 2, rejectDuplicateKeys: true },
  ),
).step(Infinity);

/** Checks the int32 length of a document at `pos` fits in `[pos, limit)`; returns the length. */
function documentLength(buf: Uint8Array, pos: number, limit: number, type: number): number {
  if (pos + 4 > limit) invalid(`${bsonTypeName(type)}: length runs past the end of the buffer`, pos);
  const size = readInt32LE(buf, pos);
  if (size < MIN_DOCUMENT_SIZE) invalid(`${bsonTypeName(type)}: invalid document length ${size}`, pos);
  if (pos + size > limit) {
    invalid(`${bsonTypeName(type)}: document of ${size} bytes runs past the end of the available ${limit - pos}`, pos);
  }
  if (buf[pos + size - 1] !== 0) invalid(`${bsonTypeName(type)}: document is not terminated by 0x00`, pos + size - 1);
  return size;
}

/** Checks a BSON string (int32 length, bytes, 0x00) at `pos` ending by `limit`; returns its end. */
function stringEnd(buf: Uint8Array, pos: number, limit: number, type: number): number {
  if (pos + 4 > limit) invalid(`${bsonTypeName(type)}: length runs past the end of its document`, pos);
  const size = readInt32LE(buf, pos);
  if (size < 1) invalid(`${bsonTypeName(type)}: invalid string length ${size}`, pos);
  const end = pos + 4 + size;
  if (end > limit) invalid(`${bsonTypeName(type)}: string of ${size} bytes runs past the end of its document`, pos);
  if (buf[end - 1] !== 0) invalid(`${bsonTypeName(type)}: string is not NUL-terminated`, end - 1);
  if (!isValidUtf8(buf, pos + 4, end - 1)) invalid(`${bsonTypeName(type)}: string is not valid UTF-8`, pos + 4);
  return end;
}

/** Checks a cstring at `pos` ending before `limit`; returns the offset after its NUL. */
function cstringEnd(buf: Uint8Array, pos: number, limit: number, what: string): number {
  const nul = scanCString(buf, pos, limit);
  if (nul === NO_NUL) invalid(`${what}: missing NUL terminator`, pos);
  if (nul === BAD_UTF8) invalid(`${what}: not valid UTF-8`, pos);
  return nul + 1;
}

// ---------------------------------------------------------------------------------------------
// Element lookup. These expect a validated document but still never read out of bounds.

export interface BsonElement {
  /** Type byte (see BsonType). */
  type: number;
  name: string;
  /** Offset of the element's type byte (where a splice of the whole element starts). */
  start: number;
  /** Offset of the value, absolute within the buffer passed in. */
  offset: number;
  /** Length of the value in bytes. */
  length: number;
}

/** Byte length of the value of `type` at `pos`, bounded by `limit`. */
function valueLength(buf: Uint8Array, type: number, pos: number, limit: number): number {
  const fixed = FIXED_SIZE[type] as number;
  let size: number;
  if (fixed >= 0) {
    size = fixed;
  } else if (fixed === -2) {
    invalid(`unknown BSON type ${bsonTypeName(type)}`, pos);
  } else {
    switch (type) {
      case BsonType.string:
      case BsonType.javascript:
      case BsonType.symbol:
        size = 4 + readLength(buf, pos, limit, 1);
        break;
      case BsonType.dbPointer:
        size = 4 + readLength(buf, pos, limit, 1) + 12;
        break;
      case BsonType.binary:
        size = 5 + readLength(buf, pos, limit, 0);
        break;
      case BsonType.regex: {
        const first = findNul(buf, pos, limit);
        const second = first === -1 ? -1 : findNul(buf, first + 1, limit);
        if (second === -1) invalid('regex runs past the end of its document', pos);
        size = second + 1 - pos;
        break;
      }
      default: // document, array, javascriptWithScope: the int32 counts itself
        size = readLength(buf, pos, limit, MIN_DOCUMENT_SIZE);
    }
  }
  if (pos + size > limit) invalid(`${bsonTypeName(type)} value runs past the end of its document`, pos);
  return size;
}

function readLength(buf: Uint8Array, pos: number, limit: number, min: number): number {
  if (pos + 4 > limit) invalid('length runs past the end of its document', pos);
  const length = readInt32LE(buf, pos);
  if (length < min) invalid(`invalid length ${length}`, pos);
  return length;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Names and short strings up to this many bytes are built directly when they are ASCII. */
const SHORT_ASCII = 32;

function decodeUtf8(buf: Uint8Array, start: number, end: number): string {
  // Field names are short ASCII nearly always: building them directly costs far less than a
  // subarray and TextDecoder call. Any byte ≥ 0x80 takes the strict decoder (invalid UTF-8 throws).
  if (end - start <= SHORT_ASCII) {
    let text = '';
    for (let i = start; i < end; i++) {
      const byte = buf[i]!;
      if (byte >= 0x80) return decodeUtf8Strict(buf, start, end);
      text += String.fromCharCode(byte);
    }
    return text;
  }
  return decodeUtf8Strict(buf, start, end);
}

function decodeUtf8Strict(buf: Uint8Array, start: number, end: number): string {
  try {
    return utf8.decode(buf.subarray(start, end));
  } catch {
    return invalid('invalid UTF-8', start);
  }
}

/**
 * Calls `visit` for each element of the document at `docOffset`, with the offsets of its name,
 * type byte and value; stops early when `visit` returns false. Names are not decoded here.
 */
function scan(
  doc: Uint8Array,
  docOffset: number,
  visit: (type: number, nameStart: number, nameEnd: number, start: number, offset: number, length: number) => boolean,
): void {
  const end = documentEnd(doc, docOffset);
  let pos = docOffset + 4;
  while (pos < end) {
    const type = doc[pos] as number;
    const nameStart = pos + 1;
    const nameEnd = findNul(doc, nameStart, end);
    if (nameEnd === -1) invalid('element name runs past the end of its document', nameStart);
    const offset = nameEnd + 1;
    const length = valueLength(doc, type, offset, end);
    if (!visit(type, nameStart, nameEnd, pos, offset, length)) return;
    pos = offset + length;
  }
  checkDocumentEnd(doc, pos, end);
}

// The three steps of scan() for walks that allocate nothing per element (the reply splices of
// rewrite/tenant-field.ts): the same checks, so such a walk accepts and refuses what scan() does.

/** The offset of the terminating 0x00 of the document at `docOffset`, its length checked like scan(). */
export function documentEnd(doc: Uint8Array, docOffset: number): number {
  if (docOffset < 0 || docOffset + 4 > doc.length) invalid('document runs past the end of the buffer', docOffset);
  const size = readInt32LE(doc, docOffset);
  if (size < MIN_DOCUMENT_SIZE || docOffset + size > doc.length) invalid(`invalid document length ${size}`, docOffset);
  return docOffset + size - 1;
}

/** The offset after the element whose type byte is at `pos`, in a document ending at `end` (documentEnd), checked like scan(). */
export function elementEnd(doc: Uint8Array, pos: number, end: number): number {
  const nameEnd = findNul(doc, pos + 1, end);
  if (nameEnd === -1) invalid('element name runs past the end of its document', pos + 1);
  return nameEnd + 1 + valueLength(doc, doc[pos] as number, nameEnd + 1, end);
}

/** After the last element: the walk must end exactly at the document's terminating 0x00. */
export function checkDocumentEnd(doc: Uint8Array, pos: number, end: number): void {
  if (pos !== end || doc[end] !== 0) invalid('document is not terminated by 0x00', end);
}

/** Every element of the document at `docOffset`, in order. */
export function elements(doc: Uint8Array, docOffset = 0): BsonElement[] {
  const out: BsonElement[] = [];
  scan(doc, docOffset, (type, nameStart, nameEnd, start, offset, length) => {
    out.push({ type, name: decodeUtf8(doc, nameStart, nameEnd), start, offset, length });
    return true;
  });
  return out;
}

/**
 * The type and value bytes (views) of every element of the document at `docOffset`, in order,
 * without decoding the names: an array's items, whose names are only their positions.
 */
export function elementValues(doc: Uint8Array, docOffset = 0): Array<{ type: number; value: Uint8Array }> {
  const out: Array<{ type: number; value: Uint8Array }> = [];
  scan(doc, docOffset, (type, _nameStart, _nameEnd, _start, offset, length) => {
    out.push({ type, value: doc.subarray(offset, offset + length) });
    return true;
  });
  return out;
}

/** The first element (for a command body: the command), or null for an empty document. */
export function firstElement(doc: Uint8Array, docOffset = 0): BsonElement | null {
  let found: BsonElement | null = null;
  scan(doc, docOffset, (type, nameStart, nameEnd, start, offset, length) => {
    found = { type, name: decodeUtf8(doc, nameStart, nameEnd), start, offset, length };
    return false;
  });
  return found;
}

const utf8Encoder = new TextEncoder();
/** The UTF-8 bytes of the names looked up (a few dozen constants in practice); bounded all the same. */
const needles = new Map<string, Uint8Array>();
const MAX_NEEDLES = 1024;

function needleOf(name: string): Uint8Array {
  let needle = needles.get(name);
  if (needle === undefined) {
    needle = utf8Encoder.encode(name);
    if (needles.size >= MAX_NEEDLES) needles.clear();
    needles.set(name, needle);
  }
  return needle;
}

/** The first element named exactly `name` (byte comparison), or null. */
export function findElement(doc: Uint8Array, name: string, docOffset = 0): BsonElement | null {
  const needle = needleOf(name);
  let found: BsonElement | null = null;
  scan(doc, docOffset, (type, nameStart, nameEnd, start, offset, length) => {
    if (nameEnd - nameStart !== needle.length) return true;
    for (let i = 0; i < needle.length; i++) if (doc[nameStart + i] !== needle[i]) return true;
    found = { type, name, start, offset, length };
    return false;
  });
  return found;
}

/** Every element named exactly `name`; more than one means a duplicate key. */
export function findElements(doc: Uint8Array, name: string, docOffset = 0): BsonElement[] {
  const needle = needleOf(name);
  const out: BsonElement[] = [];
  scan(doc, docOffset, (type, nameStart, nameEnd, start, offset, length) => {
    if (nameEnd - nameStart !== needle.length) return true;
    for (let i = 0; i < needle.length; i++) if (doc[nameStart + i] !== needle[i]) return true;
    out.push({ type, name, start, offset, length });
    return true;
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Typed readers. Each checks the element's type and throws TypeMismatch otherwise.

function expectType(element: BsonElement, ...types: number[]): void {
  if (!types.includes(element.type)) {
    invalid(
      `field "${element.name}" is ${bsonTypeName(element.type)}, expected ${types.map(bsonTypeName).join(' or ')}`,
      element.start,
      ErrorCodes.TypeMismatch,
    );
  }
}

export interface ReadStringOptions {
  /** Allow 0x00 inside the string. Off by default: names with NUL read differently as C strings. */
  allowNul?: boolean;
}

/** A string value, decoded strictly (invalid UTF-8 throws); embedded NUL rejected by default. */
export function readString(doc: Uint8Array, element: BsonElement, options: ReadStringOptions = {}): string {
  expectType(element, BsonType.string);
  const start = element.offset + 4;
  const end = element.offset + element.length - 1;
  if (options.allowNul !== true && findNul(doc, start, end) !== -1) {
    invalid(`field "${element.name}" contains a NUL byte`, start, ErrorCodes.BadValue);
  }
  return decodeUtf8(doc, start, end);
}

export function readInt32(doc: Uint8Array, element: BsonElement): number {
  expectType(element, BsonType.int32);
  return readInt32LE(doc, element.offset);
}

export function readInt64(doc: Uint8Array, element: BsonElement): bigint {
  expectType(element, BsonType.int64);
  return readBigInt64LE(doc, element.offset);
}

export function readDouble(doc: Uint8Array, element: BsonElement): number {
  expectType(element, BsonType.double);
  return readFloat64LE(doc, element.offset);
}

export function readBoolean(doc: Uint8Array, element: BsonElement): boolean {
  expectType(element, BsonType.boolean);
  return doc[element.offset] === 1;
}

/** int32, int64 or double as a number; an int64 outside the safe-integer range throws Overflow. */
export function readNumber(doc: Uint8Array, element: BsonElement): number {
  expectType(element, BsonType.int32, BsonType.int64, BsonType.double);
  if (element.type === BsonType.int32) return readInt32LE(doc, element.offset);
  if (element.type === BsonType.double) return readFloat64LE(doc, element.offset);
  const value = readBigInt64LE(doc, element.offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
    invalid(`field "${element.name}" does not fit a safe integer`, element.offset, ErrorCodes.Overflow);
  }
  return Number(value);
}

/** The bytes of an embedded document or array value (a view, not a copy). */
export function subDocument(doc: Uint8Array, element: BsonElement): Uint8Array {
  expectType(element, BsonType.document, BsonType.array);
  return doc.subarray(element.offset, element.offset + element.length);
}

function readBigInt64LE(buf: Uint8Array, offset: number): bigint {
  return asBuffer(buf).readBigInt64LE(offset);
}

function readFloat64LE(buf: Uint8Array, offset: number): number {
  return asBuffer(buf).readDoubleLE(offset);
}
